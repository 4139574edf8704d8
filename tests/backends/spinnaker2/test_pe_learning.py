"""SpiNNaker 2 learning (backends/spinnaker2/plasticity.py): the generated C kernel bit-exact with
the emulator's learner on the weights after N steps (STDP, reward, error, rewiring, SPORE), the
emulator against the float reference within the float32/int8 rounding, fan-in constant, the
generator and exp32 as stated, and the refusals."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch

import nmc
from nmc.backends.spinnaker2.ckernels import compiler
from nmc.backends.spinnaker2.emulator import S2Emulator
from nmc.backends.spinnaker2.plasticity import exp32, normal, learner
from nmc.backends.spinnaker2.program import load_program, pe_slices
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.plasticity import Plasticity
from nmc.reference_plasticity import Learner

OPTS = dict(fidelity_check=False)
needs_cc = pytest.mark.skipif(compiler() is None, reason="no host C compiler")
STDP = dict(tau_plus=10e-3, tau_minus=20e-3, a_plus=0.05, a_minus=0.06, w_min=-1.0, w_max=1.0)
RULES = {
    "stdp": Plasticity(**STDP),
    "stdp_decay": Plasticity(**STDP, decay=0.01),
    "reward": Plasticity(**STDP, third_factor="reward", tau_e=50e-3, lr=0.5, tau_baseline=20e-3),
    "error": Plasticity(**STDP, third_factor="error", tau_e=30e-3, lr=0.002),
    "rewire": Plasticity(**STDP, fan_in=4, prune_below=0.05, w_new=0.2, rewire_every=3, seed=7),
    "spore": Plasticity(rule="spore", third_factor="reward", beta=0.5, temperature=0.2, prior_mean=1.0,
                        prior_std=1.0, theta0=2.0, theta_max=3.0, theta_min=-2.0, tau_e=50e-3, seed=11),
    "spore_rewire": Plasticity(rule="spore", beta=50.0, temperature=0.5, prior_mean=0.0, theta0=2.0, theta_max=3.0,
                               theta_min=-3.0, fan_in=3, w_new=0.3, rewire_every=2, seed=4),
}


def net(w, rule, *, tau=None, thr=0.5, dt=1e-3, integrator=None):
    """in → Affine w (plastic) → IF (r·dt = 1) or LIF (τ = ``tau``) → out."""
    w = np.asarray(w, float)
    n_out, n_in = w.shape
    g = Graph(meta={"dt": dt})
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    g.add_node("w", nir.Affine(weight=w, bias=np.zeros(n_out)))
    if tau is None:
        g.add_node("n", nir.IF(r=np.full(n_out, 1 / dt), v_threshold=np.full(n_out, thr)))
    else:
        g.add_node("n", nir.LIF(tau=np.full(n_out, tau), r=np.full(n_out, 1.0), v_leak=np.zeros(n_out),
                                v_threshold=np.full(n_out, thr)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("in", "w"), ("w", "n"), ("n", "out")):
        g.add_edge(*e)
    g.annotate("w", rule)
    opts = {"integrator": integrator} if integrator else {}
    return PassManager(parse_pipeline("normalize")).run(g, PassContext(options=opts))


def weights(name, n_out=6, n_in=10, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0 if name.startswith("spore") else -0.4, 0.6, (n_out, n_in))
    return w


def compiled(name, hw=None, **kw):
    b = nmc.compile(net(weights(name), RULES[name], **kw), target="spinnaker2", hw=hw or [], **OPTS)
    return b.program


class Recorder:
    """Wraps a learner's step: records (pre, post, modulator) of every update."""

    def __init__(self, lr):
        self.lr, self.calls, step = lr, [], lr.step

        def rec(pre, post):
            self.calls.append((np.array(pre), np.array(post), np.array(lr.m)))
            step(pre, post)
        lr.step = rec


def run_emulator(prog, T=60, windows=6, batch=1, seed=1, rate=0.3):
    """The emulator stepped window by window (align=False: no look-ahead), a new third factor before
    each window; returns the device and the recorder of its one learner."""
    dev = S2Emulator(prog, align=False)
    dev.reset(batch)
    (i, lr), = dev.learn.items()
    rec = Recorder(lr)
    rng = np.random.default_rng(seed)
    n_in, n_out = lr.w.shape[1], lr.w.shape[0]
    x = (rng.random((T, batch, n_in)) < rate).astype(float)
    for k, xs in enumerate(np.array_split(x, windows)):
        if lr.rule.third_factor == "reward":
            dev.modulate(rng.normal(size=batch))
        elif lr.rule.third_factor == "error":
            dev.modulate(rng.normal(size=(batch, n_out)))
        dev.advance({"in": xs})
    return dev, lr, rec


@needs_cc
@pytest.mark.parametrize("name", sorted(RULES))
def test_c_kernel_bit_exact_with_emulator(name):
    from nmc.backends.spinnaker2.plasticity_kernel import CLearner

    prog = compiled(name)
    dev, lr, rec = run_emulator(prog)
    assert len(rec.calls) == 59 and any(c[1].any() for c in rec.calls)   # from the post latency tick 1; spikes
    q = dev.plastic[next(iter(dev.learn))]
    ck = CLearner(learner(q), pe_slices(prog.pop(q.post)))
    try:
        for pre, post, m in rec.calls:
            if lr.rule.third_factor != "none":
                ck.modulate(m[0])
            ck.step(pre[0], post[0])
        np.testing.assert_array_equal(ck.w.view(np.uint32), lr.w.view(np.uint32))
        np.testing.assert_array_equal(ck.q, lr.q)
        if lr.rule.rule == "spore":
            np.testing.assert_array_equal(ck.theta.view(np.uint32), lr.theta.view(np.uint32))
        if lr.mask is not None:
            np.testing.assert_array_equal(ck.mask, lr.mask)
            assert lr.rewired > 0
    finally:
        ck.close()
    assert np.any(lr.w != learner(q).w)   # it learned something
    # the emulator's synapse rows are the learner's integer weights
    wp = dev.W[id(q)][0][1].T + dev.W[id(q)][0][2].T
    np.testing.assert_array_equal(wp, lr.q)


@needs_cc
def test_c_kernel_split_over_pes_matches():
    """Rows split over several PEs: each PE's kernel draws its own rows' numbers (counter-based)."""
    from nmc.backends.spinnaker2.plasticity_kernel import CLearner

    prog = compiled("spore_rewire", hw=[{"core": {"neurons_max": 2}}])
    q = next(q for q in prog.projections if q.plastic)
    assert len(pe_slices(prog.pop(q.post))) == 3
    dev, lr, rec = run_emulator(prog, T=30)
    ck = CLearner(learner(q), pe_slices(prog.pop(q.post)))
    try:
        for pre, post, _ in rec.calls:
            ck.step(pre[0], post[0])
        np.testing.assert_array_equal(ck.theta.view(np.uint32), lr.theta.view(np.uint32))
        np.testing.assert_array_equal(ck.mask, lr.mask)
    finally:
        ck.close()
    assert "kernels/w_learn_pe0.c" in prog.files() or any(k.startswith("kernels/w_learn_pe") for k in prog.files())


@pytest.mark.parametrize("name", ["rewire", "spore_rewire"])
def test_fan_in_exactly_constant(name):
    prog = compiled(name)
    dev = S2Emulator(prog, align=False)
    dev.reset(2)
    (_, lr), = dev.learn.items()
    rng = np.random.default_rng(3)
    fan = RULES[name].fan_in
    for _ in range(20):
        dev.advance({"in": (rng.random((3, 2, 10)) < 0.4).astype(float)})
        assert np.all(lr.mask.sum(1) == fan)
        assert np.all(lr.q[~lr.mask] == 0) and np.all(lr.w[~lr.mask] == 0)
    assert lr.rewired > 0


def _tol(rule, n, bound):
    """|w_emulator − w_reference| after n updates on the same spikes: each update rounds ~8 float32
    operations on values bounded by ``bound`` (weights, traces times amplitudes, eligibility times
    the learning rate), each by at most 2⁻²⁴ relative; the float64 reference's own error is far smaller."""
    return n * 8 * 2.0 ** -24 * bound


@pytest.mark.parametrize("name", ["stdp", "stdp_decay", "reward", "error"])
def test_emulator_learner_matches_float_reference(name):
    """On the same pre/post spikes (a batch of 2: one learner, the batch mean), the float32 learner
    follows the float64 reference within the rounding bound; the rows are the nearest integers."""
    rule = Plasticity(**{**RULES[name].fields(), "a_plus": 0.01, "a_minus": 0.012,   # few weights at a bound
                         "lr": RULES[name].lr / (10 if name == "reward" else 1)})
    prog = nmc.compile(net(weights(name), rule), target="spinnaker2", **OPTS).program
    dev, lr, rec = run_emulator(prog, batch=2)
    q = dev.plastic[next(iter(dev.learn))]
    ref = Learner("w", rule, net(weights(name), rule), torch.tensor(weights(name)), 1e-3)
    ref.reset(2)
    for pre, post, m in rec.calls:
        if rule.third_factor != "none":
            ref.modulate(m.astype(np.float64))
        ref.update(torch.as_tensor(pre, dtype=torch.float64), torch.as_tensor(post, dtype=torch.float64))
    w_ref = ref.w.numpy()
    # bounds of the values each update rounds: the traces (≤ 1/(1 − decay)), the pair term, the
    # eligibility (≤ its input/(1 − de)) times the learning rate and the largest third factor fed
    x_max = 1 / (1 - math.exp(-1e-3 / max(rule.tau_plus, rule.tau_minus)))
    pair = (rule.a_plus + rule.a_minus) * x_max
    m_max = max(float(np.max(np.abs(m))) for _, _, m in rec.calls)
    e_in = {"none": 0.0, "reward": pair, "error": 1.0}[rule.third_factor]
    bound = 1.0 + pair + rule.lr * m_max * e_in / (1 - math.exp(-1e-3 / rule.tau_e))
    tol = _tol(rule, len(rec.calls), bound)
    assert np.max(np.abs(lr.w - w_ref)) <= tol
    assert np.mean(np.abs(w_ref) < 1) > 0.5   # most weights inside the bounds: the comparison means something
    k = q.plastic["k"][:, None]
    assert np.all(np.abs(lr.q - k * w_ref) <= 0.5 + k * tol + 1e-6)


def test_spore_without_noise_matches_float_reference():
    """SPORE at temperature 0 is deterministic: θ follows the reference's within the rounding bound
    (exp32 within 2 ulp)."""
    rule = Plasticity(**{**RULES["spore"].fields(), "temperature": 0.0})
    w0 = weights("spore")
    prog = nmc.compile(net(w0, rule), target="spinnaker2", **OPTS).program
    dev = S2Emulator(prog, align=False)
    dev.reset(1)
    (_, lr), = dev.learn.items()
    rec = Recorder(lr)
    ref = Learner("w", rule, net(w0, rule), torch.tensor(w0), 1e-3)
    ref.reset(1)
    rng = np.random.default_rng(5)
    for k in range(5):
        r = rng.normal()
        dev.modulate(r)
        dev.advance({"in": (rng.random((10, 1, 10)) < 0.3).astype(float)})
    for pre, post, m in rec.calls:
        ref.modulate(m.astype(np.float64))
        ref.update(torch.as_tensor(pre, dtype=torch.float64), torch.as_tensor(post, dtype=torch.float64))
    th = ref.theta.numpy()
    assert np.max(np.abs(lr.theta - th)) <= _tol(rule, 50, 4.0)
    np.testing.assert_allclose(lr.w, ref.w.numpy(), rtol=1e-5, atol=_tol(rule, 50, 4.0) * 30)


def test_network_emulator_spikes_and_weights_track_reference():
    """A LIF with almost no memory (τ = dt/5, exact integrator: v keeps e⁻⁵ of itself) and one strong
    teacher input: input 0 alone fires every post neuron (threshold 0.5), the others together cannot,
    so the chip's spikes equal the reference's and the learned weights stay within the rounding bound."""
    rule = Plasticity(**{**STDP, "a_plus": 0.01, "a_minus": 0.012})
    w0 = np.full((3, 8), 0.02)
    w0[:, 0] = 0.9
    g = net(w0, rule, tau=2e-4, integrator="exact")
    b = nmc.compile(g, target="spinnaker2", integrator="exact", **OPTS)
    rng = np.random.default_rng(2)
    x = (rng.random((80, 8)) < 0.25).astype(float)
    from nmc.reference import ReferenceSimulator

    sim = ReferenceSimulator(g)
    r = sim.run({"in": x})
    dev = S2Emulator(b.program)
    o = dev.run({"in": x})
    np.testing.assert_array_equal(o["out"], r["out"])
    (_, lr), = dev.learn.items()
    assert np.max(np.abs(lr.w - sim.learners["w"].w.numpy())) <= _tol(rule, 80, 1.0 + 0.11 * 11)
    assert lr.t == 80


def test_exp32_and_generator_as_stated():
    z = np.linspace(-20, 8, 20001).astype(np.float32)
    got = exp32(z).astype(np.float64)
    want = np.exp(z.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2 * 2.0 ** -23     # within 2 ulp
    xi = normal(3, 0, 200, 500).astype(np.float64)
    assert abs(xi.mean()) < 0.01 and abs(xi.var() - 1) < 0.01 and np.abs(xi).max() <= 6
    assert not np.array_equal(normal(3, 0, 4, 4), normal(3, 1, 4, 4))
    np.testing.assert_array_equal(normal(3, 2, 4, 4), normal(3, 2, 4, 4))


def test_program_files_carry_the_rule_and_load_back():
    prog = compiled("reward")
    files = prog.files()
    assert "kernels/nmc_learn.h" in files and any(k.startswith("kernels/w_learn_pe") for k in files)
    back = load_program(files)
    q0 = next(q for q in prog.projections if q.plastic)
    q1 = next(q for q in back.projections if q.plastic)
    assert q1.plastic["rule"] == q0.plastic["rule"] and q1.plastic["node"] == "w"
    np.testing.assert_array_equal(q1.plastic["k"], q0.plastic["k"])
    np.testing.assert_array_equal(q1.plastic["w0"], q0.plastic["w0"])
    # the weight scale covers the rule's bounds: k·w_max ≤ 127
    assert np.all(q0.plastic["k"] * RULES["reward"].w_max <= 127 + 1e-9)


def test_modulate_and_refusals_of_the_device():
    dev = S2Emulator(compiled("stdp"))
    assert not dev.takes_modulator
    with pytest.raises(nmc.errors.DeviceError):
        dev.modulate(1.0)
    dev = S2Emulator(compiled("error"))
    dev.reset(1)
    assert dev.takes_modulator
    with pytest.raises(nmc.errors.OptionError):
        dev.modulate(np.zeros(5))       # 6 post neurons
    dev.set_rule("w", lr=0.2)
    assert dev.learn[next(iter(dev.learn))].c.lr == np.float32(0.2)


def test_refusals_name_the_projection():
    # a delay into the post layer: the lif model with synaptic delays
    rule = RULES["stdp"]
    g = Graph(meta={"dt": 1e-3})
    g.add_node("in", nir.Input(input_type={"input": np.array([4])}))
    g.add_node("d", nir.Delay(delay=np.full(4, 2e-3)))
    g.add_node("w", nir.Affine(weight=np.full((2, 4), 0.2), bias=np.zeros(2)))
    g.add_node("n", nir.IF(r=np.full(2, 1e3), v_threshold=np.full(2, 0.5)))
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    for e in (("in", "d"), ("d", "w"), ("w", "n"), ("n", "out")):
        g.add_edge(*e)
    g.annotate("w", rule)
    with pytest.raises(UnsupportedNodeError) as e:
        nmc.compile(g, target="spinnaker2", **OPTS)
    assert e.value.node == "w" and "plasticity" in str(e.value)
    # SPORE's bound exp(θmax − θ0) = e⁷ sets the weight scale: a warning says how much coarser
    prog = nmc.compile(net(weights("spore"), Plasticity(rule="spore")), target="spinnaker2", **OPTS).program
    assert any("weight bound" in w["message"] for w in prog.report["warnings"])
    # graded inputs (one event per quantum 0.5)
    with pytest.raises(UnsupportedNodeError, match="graded") as e:
        nmc.compile(net(weights("stdp"), rule), target="spinnaker2", input_quantum=0.5, **OPTS)
    assert e.value.node == "w"


def test_learning_state_in_the_byte_model_and_cost_report():
    """The partition charges each post neuron its row's learning state (float32 shadow, eligibility,
    mask byte) and each run the pre traces; the cost report counts the same per PE."""
    from nmc.hw import HardwareSpec
    from nmc.passes.netmodel import build_structure
    from nmc.backends.spinnaker2.target import target_model

    rule = RULES["rewire"].fields()
    tgt = target_model(HardwareSpec.load("spinnaker2"))
    plain = build_structure(net(weights("rewire"), Plasticity(**rule)), tgt)
    n_in = 10
    per_syn = 4 + 1                      # shadow weight, mask byte (no eligibility without a third factor)
    reward = build_structure(net(weights("rewire"), Plasticity(**{**rule, "third_factor": "reward"})), tgt)
    post = plain.unit_names.index("n")
    a, b = plain.unit_offset[post], plain.unit_offset[post + 1]
    extra = reward.bytes_[a:b] - plain.bytes_[a:b]
    np.testing.assert_allclose(extra, tgt.row_share * 4 * n_in)   # the eligibility, 4 bytes per synapse
    per_neuron, per_run = tgt.learning_bytes(Plasticity(**rule), n_in)
    assert per_neuron == pytest.approx(tgt.row_share * (per_syn * n_in + 4)) and per_run == 4 * n_in + 12
    rep = compiled("rewire").report["per_pe"]
    pe = next(d for d in rep.values() if "n" in d["populations"])
    assert pe["learning_bytes"] == 6 * (per_syn * n_in + 4) + 4 * n_in + 12
    assert pe["learning_updates"] == 6 * n_in and pe["sram_bytes"] >= pe["learning_bytes"]


def test_run_script_names_the_learning_kernel(tmp_path, monkeypatch):
    """The board script says which population runs which learning kernel and stops (stock py-spinnaker2
    cannot call it) unless --frozen; the vendor package is imported inside main() only."""
    from s2_script_standin import load_script

    x = (np.random.default_rng(0).random((20, 10)) < 0.3).astype(float)
    main, _, inp = load_script(tmp_path, monkeypatch, compiled("reward").files(), {"in": x})
    d = tmp_path / "prog"
    args = ["--board", "10.0.0.7", "--input", inp, "-o", str(tmp_path / "o.npz")]
    with pytest.raises(NotImplementedError, match=r"population 'n' learns on projection 'w'.*w_learn_pe\*\.c"):
        main(args)
    assert (d / "kernels" / "w_learn_pe0.c").exists() or any((d / "kernels").glob("w_learn_pe*.c"))
    main(args + ["--frozen"])
    assert (tmp_path / "o.npz").exists()


def test_streaming_windows_equal_run_with_learning():
    """advance() window by window gives run()'s rows; the look-ahead's learning is undone with the
    rest of its state (rows included)."""
    prog = compiled("stdp")
    rng = np.random.default_rng(4)
    x = (rng.random((40, 2, 10)) < 0.3).astype(float)
    full = S2Emulator(prog).run({"in": x})
    dev = S2Emulator(prog)
    dev.reset(2)
    rows = [dev.advance({"in": xs})["out"] for xs in np.array_split(x, 5)]
    np.testing.assert_array_equal(np.concatenate(rows), full["out"])
    (i, lr), = dev.learn.items()
    np.testing.assert_array_equal(dev.W[id(dev.plastic[i])][0][1].T + dev.W[id(dev.plastic[i])][0][2].T, lr.q)
    assert lr.t == 39 and np.any(lr.q != learner(dev.plastic[i]).q)


def test_closed_loop_reward_reaches_the_pe_learner():
    """nmc.open(bundle, env=...) on the spinnaker2 emulator: the reward goes to the learners
    (Device.modulate), a schedule changes the running rule, the weights move."""
    pytest.importorskip("gymnasium")
    w = np.full((2, 32), 0.1)
    rule = Plasticity(rule="spore", third_factor="reward", beta=1.0, temperature=0.1, theta0=3.0, prior_mean=2.5,
                      theta_max=4.0, tau_baseline=0.05, seed=1)
    g = net(w, rule, thr=1.0)
    b = nmc.compile(g, target="spinnaker2", **OPTS)
    with nmc.open(b, env="CartPole-v1", env_options={"max_steps": 10}) as loop:
        assert loop.learns
        lr = next(iter(loop.session.device.learn.values()))
        th0 = lr.theta.copy()
        loop.run(2, schedule=lambda ep, returns: {"temperature": 0.05})
        assert lr.rule.temperature == 0.05 and lr.t > 0
        assert not np.array_equal(th0, lr.theta)


def test_brian2_device_refuses_a_learning_program():
    from nmc.backends.spinnaker2 import BACKEND

    with pytest.raises(nmc.errors.DeviceError) as e:
        BACKEND.device("brian2", compiled("stdp"))
    assert e.value.node == "w" and "frozen" in str(e.value)


def test_reset_state_keeps_what_was_learned():
    """The rewiring-digits loop on the emulator: error fed each step, a new trial per sample keeps the
    weights, the connectome and the step count; reset() forgets them."""
    dev = S2Emulator(compiled("rewire"))
    dev.reset(2)
    (i, lr), = dev.learn.items()
    rng = np.random.default_rng(6)
    for _ in range(3):
        dev.reset_state(2)
        for t in range(8):
            dev.modulate(rng.normal(size=(2, 6))) if lr.rule.third_factor == "error" else None
            dev.advance({"in": (rng.random((1, 2, 10)) < 0.4).astype(float)})
    assert lr.t == 2 * 8 + 7   # the last step of the current trial reaches the learner on the next tick
    dev.reset_state(3)          # ... which finishing the trial runs
    assert lr.t == 3 * 8
    w, mask, t = lr.w.copy(), lr.mask.copy(), lr.t
    dev.reset_state(3)
    assert lr.t == t and np.array_equal(lr.w, w) and np.array_equal(lr.mask, mask) and lr.x.shape == (3, 10)
    assert not lr.x.any() and np.all(lr.mask.sum(1) == 4)
    np.testing.assert_array_equal(dev.W[id(dev.plastic[i])][0][1].T + dev.W[id(dev.plastic[i])][0][2].T, lr.q)
    dev.reset(1)
    assert lr.t == 0 and np.array_equal(lr.q, learner(dev.plastic[i]).q)


def test_a_learning_program_is_not_batched_by_slots():
    """Serve batching joins sessions as batch rows; a learning program's rows are one learner."""
    assert S2Emulator(compiled("stdp")).batch_slots is None
    g = net(weights("stdp"), RULES["stdp"])
    g.annotations["w"].pop(Plasticity.kind)
    assert S2Emulator(nmc.compile(g, target="spinnaker2", **OPTS).program).batch_slots == {"state": 0, "past": 0,
                                                                                          "t": 0}


@needs_cc
def test_kernel_names_are_c_identifiers():
    from nmc.backends.spinnaker2.plasticity_kernel import CLearner, tags

    assert tags("enc.0/w", [(3, slice(0, 4))]) == ["enc_0_w_learn_pe3"]
    lr = learner(next(q for q in compiled("stdp").projections if q.plastic))
    lr.name = "enc.0/w"
    ck = CLearner(lr, [(0, slice(0, 3)), (1, slice(3, 6))])
    try:
        ck.step(np.ones(10), np.ones(6))
        lr.step(np.ones((1, 10)), np.ones((1, 6)))
        np.testing.assert_array_equal(ck.w, lr.w)
    finally:
        ck.close()
