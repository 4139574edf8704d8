"""Learning on the BrainScaleS-2 emulator: the plasticity processor's fixed-point model
(backends/brainscales2/ppu.py) driven by the emulator's own spikes — bit-exact with the documented
model recomputed from those spikes, on its cadence; close to the float reference learner on the same
spikes (a stated tolerance from the 6-bit weights); the reward's sign sets the direction; rewiring
keeps the fan-in exactly constant; what the processor cannot run is refused naming the projection."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

import nmc
from nmc.backends.brainscales2 import ppu, ppu_spore
from nmc.backends.brainscales2.emulator import BSS2Emulator
from nmc.errors import OptionError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.plasticity import Plasticity
from nmc.reference_plasticity import Learner

W = [[0.2, 0.2, 0.2, 1.0], [1.0, 0.2, 0.2, 0.2]]
STDP = Plasticity(tau_plus=10e-3, tau_minus=10e-3, a_plus=0.03, a_minus=0.03, w_min=0.0, w_max=1.0)


def net(w, rule, *, n_post_only=False):
    """in → Affine w (plastic) → IF (r·dt = 1) → out."""
    w = np.asarray(w, float)
    n_out, n_in = w.shape
    g = Graph(meta={"dt": 1e-3})
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    g.add_node("w", nir.Affine(weight=w, bias=np.zeros(n_out)))
    g.add_node("n", nir.IF(r=np.full(n_out, 1000.0), v_threshold=np.ones(n_out)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("in", "w"), ("w", "n"), ("n", "out")):
        g.add_edge(*e)
    g.annotate("w", rule)
    return PassManager(parse_pipeline("normalize")).run(g, PassContext(options={}))


def compile_(g, **opts):
    return nmc.compile(g, target="brainscales2", fidelity_check=False, **opts)


def inputs(T=300, n=4, p=0.2, seed=0):
    return (np.random.default_rng(seed).random((T, n)) < p).astype(float)


def model_from_spikes(rule: ppu.PPURule, w0, x, post, sign=1, rewards=None, proj=None):
    """The documented PPU model recomputed from the spikes: float sensors with all-to-all traces,
    CADC reads every period, the fixed-point update (weights (post, pre) in codes). SPORE draws its
    noise in the array's row-major order (``proj``: the synapses' rows and columns)."""
    w = np.asarray(w0, np.int64).copy()
    order = np.lexsort((proj.col.ravel(), proj.rows.ravel())) if proj is not None else np.arange(w.size)
    xs, ys = np.zeros(x.shape[1]), np.zeros(post.shape[1])
    C, A = np.zeros(w.shape), np.zeros(w.shape)
    e = np.zeros(w.shape, np.int64)
    hist = []
    theta, state = np.asarray(rule.th_init, np.int64)[w] if rule.rule == "spore" else None, ppu.seed_state(rule.seed)
    for t in range(len(x)):
        xs *= rule.decay_plus
        ys *= rule.decay_minus
        C += np.outer(post[t], xs)
        A += np.outer(ys, x[t])
        xs += x[t]
        ys += post[t]
        if (t + 1) % rule.period == 0:
            m = 0 if rewards is None else rewards[t]
            if rule.rule == "spore":   # row-major order, as the learner's synapses
                o = order
                th, w2, e2, state = ppu_spore.update(rule, theta.ravel()[o], w.ravel()[o], ppu.read_sensor(C).ravel()[o],
                                                     ppu.read_sensor(A).ravel()[o], e.ravel()[o], m, state)
                theta, w = theta.ravel().copy(), w.ravel().copy()
                theta[o], w[o] = th, w2
                theta, w = theta.reshape(w0.shape), w.reshape(w0.shape)
                if e2 is not None:
                    e_ = e.ravel().copy()
                    e_[o] = e2
                    e2 = e_.reshape(w0.shape)
            else:
                w, e2 = ppu.update_row(rule, w, ppu.read_sensor(C), ppu.read_sensor(A), sign, e, m)
            e = e if e2 is None else e2
            C[:], A[:] = 0.0, 0.0
        hist.append(w.copy())
    return np.stack(hist)


def run_stepwise(b, x, reward=None):
    """Run bundle ``b``'s emulator one step at a time on spikes ``x`` (T, n), giving it the host's
    reward ``reward(t)`` before step t (``reward=None``: none given). Returns the device, the post
    neurons' spikes (T, n_post) and the reward codes the PPU read per step (0 without a reward)."""
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    posts, rewards = [], []
    for t in range(len(x)):
        if reward is not None:
            dev.modulate(reward(t))
        dev.advance({"in": x[t][None, None]})
        posts.append(dev._stream["st"]["n"]["s"][0].copy())
        rewards.append(ppu.reward_code(reward(t)) if reward is not None else 0)
    return dev, np.array(posts), rewards


@pytest.mark.parametrize("period", [1, 10])
def test_emulator_is_bit_exact_with_the_model_on_its_cadence(period):
    b = compile_(net(W, STDP), ppu_period=period)
    rule = ppu.PPURule.from_json(b.program.plasticity[0])
    assert rule.period == period and rule.node == "w"
    x = inputs()
    r = b.run({"in": x}, record=["w", "n"])
    w_emu = np.rint(r["w.w"] / rule.lsb).astype(np.int64)
    w6 = b.program.projections[0].w6
    want = model_from_spikes(rule, w6, x, r["n.spikes"])
    np.testing.assert_array_equal(w_emu, want)
    changed = np.flatnonzero(np.any(np.diff(np.concatenate([w6[None], w_emu]), axis=0) != 0, axis=(1, 2)))
    assert changed.size > 3 and np.all((changed + 1) % period == 0)    # only at the end of a period


def test_emulator_follows_the_float_reference_within_the_6bit_tolerance():
    # Same spikes into both learners (the emulator's own). The PPU applies the period's summed change
    # rounded to whole 6-bit codes (±0.5 LSB per run) from a start rounded to a code (±0.5 LSB), the CADC
    # reads the sensors in 1/16 steps, and both clamp at w_max = 63 codes: over 30 runs the rounding
    # errors (σ ≈ 0.29 LSB each) leave ≈ 1.6 LSB; tolerance 4 LSB. Every synapse the reference moves by
    # ≥ 4 LSB moves the same way on the emulator.
    b = compile_(net(W, STDP))
    rule = ppu.PPURule.from_json(b.program.plasticity[0])
    x = inputs()
    r = b.run({"in": x}, record=["w", "n"])
    lr = Learner("w", STDP, net(W, STDP), torch.tensor(np.asarray(W, float)), 1e-3)
    for t in range(len(x)):
        lr.update(torch.tensor(x[t][None]), torch.tensor(r["n.spikes"][t][None], dtype=torch.float64))
    d_ref = (lr.w.numpy() - np.asarray(W)) / rule.lsb
    d_emu = (r["w.w"][-1] - np.asarray(W)) / rule.lsb
    assert np.abs(d_emu - d_ref).max() <= 4.0
    big = np.abs(d_ref) >= 4.0
    assert big.sum() >= 3 and np.all(np.sign(d_emu[big]) == np.sign(d_ref[big]))


def test_reward_sets_the_direction_and_holds():
    rule = Plasticity(tau_plus=10e-3, tau_minus=10e-3, a_plus=0.03, a_minus=0.0, w_min=0.0, w_max=1.0,
                      third_factor="reward", tau_e=50e-3, lr=5.0)
    b = compile_(net(W, rule))
    x = inputs(T=100)
    w0 = b.program.projections[0].w6
    finals = {}
    for reward in (1.0, -1.0, 0.0):
        dev = BSS2Emulator(b.program)
        dev.reset(1)
        assert dev.takes_modulator
        dev.modulate(reward)
        dev.advance({"in": x[:, None]})
        finals[reward] = dev._stream["ppu"][0].weights()
    assert np.array_equal(finals[0.0], w0)                       # no reward, no change
    up, down = finals[1.0] - w0, finals[-1.0] - w0
    assert up.sum() > 0 and down.sum() < 0 and np.all(up >= 0) and np.all(down <= 0)
    with pytest.raises(OptionError):
        dev.modulate([1.0, 2.0])                                 # one reward for the chip


def test_reward_run_is_bit_exact_with_the_model():
    rule = Plasticity(tau_plus=10e-3, tau_minus=15e-3, a_plus=0.03, a_minus=0.02, w_min=0.0, w_max=1.0,
                      third_factor="reward", tau_e=40e-3, lr=2.0)
    b = compile_(net(W, rule), ppu_period=5)
    pr = ppu.PPURule.from_json(b.program.plasticity[0])
    x = inputs(T=120, seed=2)
    dev, posts, rewards = run_stepwise(b, x, lambda t: 0.75 if t < 60 else -0.5)
    want = model_from_spikes(pr, b.program.projections[0].w6, x, posts, rewards=rewards)
    np.testing.assert_array_equal(dev._stream["ppu"][0].weights(), want[-1])
    assert not np.array_equal(want[-1], b.program.projections[0].w6)


def test_rewiring_keeps_the_fan_in_exactly_constant():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.0, 0.3, (5, 12))
    rule = Plasticity(tau_plus=10e-3, tau_minus=10e-3, a_plus=0.0, a_minus=0.05, w_min=0.0, w_max=1.0,
                      fan_in=4, prune_below=0.1, w_new=0.15, rewire_every=20, seed=5)
    b = compile_(net(w, rule))
    q = b.program.projections[0]
    pr = ppu.PPURule.from_json(b.program.plasticity[0])
    assert pr.fan_in == 4 and pr.rewire_runs == 2 and q.n_rows == 4
    keep = np.argsort(-w, axis=1, kind="stable")[:, :4]
    assert np.array_equal(np.sort(keep, 1), np.stack([np.flatnonzero(r) for r in q.rows >= 0]))
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    lr = dev._stream["ppu"][0]
    seen = set()
    for k in range(20):
        dev.advance({"in": inputs(T=20, n=12, p=0.3, seed=k)[:, None]})
        for j in range(5):
            labs = lr.lab[lr.j == j]
            assert labs.size == 4 and np.unique(labs).size == 4 and np.all(labs < 12)
            seen.update((j, int(x)) for x in labs)
        assert np.all((lr.weights() != 0).sum(1) <= 4)
    assert lr.runs == 40 and len(seen) > 5 * 4 + 10            # labels did move: the connectome rewired


@pytest.mark.parametrize("change, word", [(dict(rule="spore", fan_in=2, w_new=0.1), "spore"),
                                          (dict(third_factor="error"), "error"),
                                          (dict(third_factor="reward", tau_baseline=0.5), "tau_baseline"),
                                          (dict(decay=0.01), "decay")])
def test_what_the_ppu_cannot_run_is_refused_naming_the_projection(change, word):
    with pytest.raises(UnsupportedNodeError) as e:
        compile_(net(W, Plasticity(**change)))
    assert e.value.node == "w" and "brainscales2" in str(e.value) and word in str(e.value)


def test_rewiring_limits_are_refused_naming_the_projection():
    with pytest.raises(UnsupportedNodeError) as e:                 # an inhibitory weight
        compile_(net([[0.2, -0.1, 0.3]], Plasticity(fan_in=1, w_min=-1)))
    assert e.value.node == "w" and "excitatory" in str(e.value)
    with pytest.raises(UnsupportedNodeError) as e:                 # more sources than one label group
        compile_(net(np.full((1, 70), 0.01), Plasticity(fan_in=3, w_min=0)))
    assert e.value.node == "w" and "64" in str(e.value)


def test_bundle_keeps_the_rule_and_runs_the_same(tmp_path):
    b = compile_(net(W, STDP), output=tmp_path / "b")
    assert "ppu_rule_0.cpp" in b.program.files()
    loaded = nmc.load(tmp_path / "b")
    assert loaded.program.plasticity == b.program.plasticity
    x = inputs(T=80)
    a, c = b.run({"in": x}, record=["w"]), loaded.run({"in": x}, record=["w"])
    np.testing.assert_array_equal(a["w.w"], c["w.w"])
    assert not np.array_equal(a["w.w"][0], a["w.w"][-1])


def test_closed_loop_feeds_the_reward_to_the_plasticity_processor():
    pytest.importorskip("gymnasium")
    rule = Plasticity(third_factor="reward", a_plus=0.01, a_minus=0.01, w_min=0.0, w_max=0.2, lr=1.0)
    b = compile_(net(np.full((2, 32), 0.1), rule))
    with nmc.open(b, env="CartPole-v1", env_options={"max_steps": 30}) as loop:
        assert loop.learns
        lr = loop.session.device._stream["ppu"][0]
        w0 = lr.weights().copy()
        rep = loop.run(3)          # the episode's advantage reaches the rule from the second episode on
        assert len(rep.returns) == 3 and lr.runs > 0
        assert not np.array_equal(w0, lr.weights())


def test_set_rule_writes_new_constants_and_keeps_the_state():
    rule = Plasticity(third_factor="reward", a_plus=0.03, a_minus=0.0, w_min=0.0, w_max=1.0, lr=2.0)
    b = compile_(net(W, rule))
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    dev.modulate(1.0)
    dev.advance({"in": inputs(T=50)[:, None]})
    lr = dev._stream["ppu"][0]
    w, e = lr.weights().copy(), lr.e.copy()
    dev.set_rule(lr=0.5)
    want = ppu.compile_rule(Plasticity(**{**rule.__dict__, "lr": 0.5}), "w", 0, lr.rule.lsb, 1e-3, 10, 4)
    assert lr.rule == want and lr.rule.lr == 0.5 * 10 * 256
    assert np.array_equal(lr.weights(), w) and np.array_equal(lr.e, e)
    dev.set_rule("w", a_plus=0.01)                            # changes accumulate
    assert lr.rule.lr == want.lr and lr.rule.kp == round(0.01 * 4096 / (16 * lr.rule.lsb))
    for bad in (dict(fan_in=2), dict(nope=1), dict(decay=0.5)):
        with pytest.raises(OptionError):
            dev.set_rule(**bad)
    with pytest.raises(OptionError):
        dev.set_rule("x", lr=1.0)


SPORE = Plasticity(rule="spore", beta=2.0, temperature=0.2, prior_mean=2.5, prior_std=0.5, theta0=3.0, seed=3)


def test_spore_samples_its_prior_on_the_ppu():
    # No spikes: θ follows the prior and the noise alone, an AR(1) per run (κ = β·Δt/σ² = 0.08 at
    # Δt = 10 ms) with the stationary N(μ, Tσ²/(1 − κ/2)) = N(2.5, 0.0521); 128 synapses over 1300
    # runs after 200 of burn-in (≈ 13 000 independent samples): mean within 0.02, variance within 8 %
    b = compile_(net(np.full((8, 16), 0.5), SPORE))
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    lr = dev._stream["ppu"][0]
    th = []
    for k in range(1500):
        lr.run_ppu()
        if k >= 200:
            th.append(lr.theta / 4096)
            assert np.array_equal(lr.w, ppu_spore.weight_of(lr.rule, lr.theta))
    th = np.array(th)
    assert abs(th.mean() - 2.5) < 0.02
    assert abs(th.var() / (0.2 * 0.25 / (1 - 0.08 / 2)) - 1) < 0.08


def test_spore_retracts_where_theta_is_not_positive():
    rule = Plasticity(rule="spore", beta=2.0, temperature=0.5, prior_mean=0.2, prior_std=0.5, theta0=3.0, seed=1)
    b = compile_(net(np.full((8, 16), 0.5), rule))
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    lr = dev._stream["ppu"][0]
    for _ in range(300):
        lr.run_ppu()
    assert 0 < np.sum(lr.theta <= 0) < lr.theta.size
    assert np.all(lr.w[lr.theta <= 0] == 0)                                  # retracted
    assert np.all(lr.w[lr.theta >= max(1, lr.rule.w_table[0])] > 0)         # present


@pytest.mark.parametrize("third_factor", ["none", "reward"])
def test_spore_on_the_emulator_is_bit_exact_with_the_model(third_factor):
    rule = Plasticity(rule="spore", third_factor=third_factor, beta=1.0, temperature=0.05, prior_mean=2.8,
                      prior_std=1.0, theta0=3.0, c_reward=400.0, tau_plus=10e-3, a_plus=0.03, a_minus=0.02, seed=2)
    b = compile_(net(W, rule))
    pr = ppu.PPURule.from_json(b.program.plasticity[0])
    x = inputs(T=200, seed=4)
    reward = (lambda t: 1.0 if t < 100 else -0.5) if third_factor == "reward" else None
    dev, posts, rewards = run_stepwise(b, x, reward)
    q = b.program.projections[0]
    want = model_from_spikes(pr, q.w6, x, posts, rewards=rewards, proj=q)
    np.testing.assert_array_equal(dev._stream["ppu"][0].weights(), want[-1])
    assert not np.array_equal(want[-1], q.w6)


def test_spore_reward_drives_theta():
    rule = Plasticity(rule="spore", third_factor="reward", beta=1.0, temperature=0.0, prior_mean=3.0,
                      prior_std=3.0, theta0=3.0, c_reward=2000.0, tau_plus=10e-3, a_plus=0.05, a_minus=0.0)
    b = compile_(net(W, rule))
    means = {}
    for reward in (1.0, -1.0):
        dev = BSS2Emulator(b.program)
        dev.reset(1)
        dev.modulate(reward)
        dev.advance({"in": inputs(T=200, seed=5)[:, None]})
        means[reward] = dev._stream["ppu"][0].theta.mean()
    start = np.asarray(ppu.PPURule.from_json(b.program.plasticity[0]).th_init)[b.program.projections[0].w6].mean()
    assert means[1.0] > start > means[-1.0]
