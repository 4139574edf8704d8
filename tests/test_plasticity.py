"""Learning rules on projections (nmc.plasticity) and the float reference running them
(nmc.reference_plasticity): hand-computed STDP, three-factor rules, rewiring under a constant
fan-in, SPORE's Langevin statistics, validation, saving, and the targets' refusals."""
import math

import nir
import numpy as np
import pytest

import nmc
from nmc import serialize
from nmc.errors import OptionError, PlasticityError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.plasticity import Plasticity
from nmc.reference import ReferenceSimulator


def net(w, rule=None, *, r=1000.0, thr=1.0, dt=1e-3, normalize=True):
    """in (n_in) → Affine w → IF (r·dt = 1: v += input) → out; ``rule`` on the Affine."""
    w = np.asarray(w, float)
    n_out, n_in = w.shape
    g = Graph(meta={"dt": dt})
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    g.add_node("w", nir.Affine(weight=w, bias=np.zeros(n_out)))
    g.add_node("n", nir.IF(r=np.full(n_out, r), v_threshold=np.full(n_out, thr)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("in", "w"), ("w", "n"), ("n", "out")):
        g.add_edge(*e)
    if rule is not None:
        g.annotate("w", rule)
    return PassManager(parse_pipeline("normalize")).run(g, PassContext(options={})) if normalize else g


def test_stdp_pair_hand_computed():
    # pre 0 at step 2 (weight 0: no effect), pre 1 at step 5 drives the post spike at step 5,
    # pre 0 again at step 8. ΔW[0,0]: +A+·e^(−3ms/τ+) at step 5, then −A−·e^(−3ms/τ−) at step 8;
    # W[0,1]: its pre and the post spike share step 5, which pairs with nothing.
    rule = Plasticity(tau_plus=10e-3, tau_minus=20e-3, a_plus=0.1, a_minus=0.2, w_min=-10, w_max=10)
    sim = ReferenceSimulator(net([[0.0, 5.0]], rule))
    x = np.zeros((10, 2))
    x[2, 0] = x[5, 1] = x[8, 0] = 1
    r = sim.run({"in": x}, record=["w"])
    assert r["out"].ravel().tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    w = r["w.w"][:, 0]
    ltp = 0.1 * math.exp(-0.3)
    assert w[4, 0] == 0 and w[5, 0] == pytest.approx(ltp, rel=1e-12)
    assert w[8, 0] == pytest.approx(ltp - 0.2 * math.exp(-0.15), rel=1e-12)
    assert np.all(w[:, 1] == 5.0)


def test_weight_bounds_clip():
    # w_max = 2 clips W[0,1] = 5 after the first step and the +10·e^(−0.3) jump of W[0,0]
    rule = Plasticity(tau_plus=10e-3, a_plus=10.0, a_minus=0.0, w_min=0.0, w_max=2.0)
    x = np.zeros((8, 2))
    x[2, 0] = x[5, 1] = 1
    r = ReferenceSimulator(net([[0.0, 5.0]], rule)).run({"in": x}, record=["w"])
    assert r["out"][5, 0] == 1
    assert r["w.w"][0, 0, 1] == 2.0 and r["w.w"][4, 0, 0] == 0.0 and r["w.w"][5, 0, 0] == 2.0


def test_reward_modulated_stdp_needs_and_scales_with_reward():
    # the pair leaves eligibility e = A+·e^(−3ms/τ+) (decaying with τe); the weight moves by lr·r·e per step
    rule = Plasticity(tau_plus=10e-3, a_plus=0.1, a_minus=0.0, third_factor="reward", tau_e=50e-3, lr=2.0,
                      w_min=-10, w_max=10)
    x = np.zeros((7, 2))
    x[2, 0] = x[5, 1] = 1
    sim = ReferenceSimulator(net([[0.0, 5.0]], rule))
    assert sim.run({"in": x}, record=["w"])["w.w"][-1, 0, 0] == 0.0    # no reward: no change
    sim.reset()
    sim.modulate(0.5)
    import torch
    ws = []
    for t in range(7):
        sim.step({"in": torch.as_tensor(x[t][None])})
        ws.append(float(sim.learners["w"].w[0, 0]))
    e5 = 0.1 * math.exp(-0.3)
    assert ws[5] == pytest.approx(2.0 * 0.5 * e5, rel=1e-12)
    assert ws[6] - ws[5] == pytest.approx(2.0 * 0.5 * e5 * math.exp(-1e-3 / 50e-3), rel=1e-12)


def test_error_rule_is_the_delta_rule_on_presynaptic_traces():
    rule = Plasticity(third_factor="error", tau_e=1e-3 / math.log(2), lr=0.5, w_min=-10, w_max=10)
    sim = ReferenceSimulator(net([[0.0, 0.0], [0.0, 0.0]], rule))
    sim.reset(2)
    sim.modulate(np.array([[1.0, -1.0], [3.0, 0.0]]))    # (B, out) errors
    import torch
    sim.step({"in": torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)})
    # mean over the batch of E_bj · s_bi: row 0: (1·[1,0] + 3·[1,1])/2, row 1: (−1·[1,0])/2
    np.testing.assert_allclose(sim.learners["w"].w.numpy(), 0.5 * np.array([[2.0, 1.5], [-0.5, 0.0]]))
    with pytest.raises(OptionError, match="shape"):
        sim.modulate(np.ones(3))


def test_rewiring_keeps_fan_in_exactly_constant():
    rng = np.random.default_rng(1)
    n_out, n_in, k = 12, 40, 6
    rule = Plasticity(tau_plus=5e-3, tau_minus=5e-3, a_plus=0.02, a_minus=0.03, w_min=-1, w_max=1, fan_in=k,
                      prune_below=0.05, w_new=0.2, rewire_every=3, decay=0.02, seed=7)
    g = net(rng.uniform(-0.5, 0.5, (n_out, n_in)), rule, thr=0.3)
    sim = ReferenceSimulator(g)
    x = (rng.random((600, n_in)) < 0.15).astype(float)
    r = sim.run({"in": x}, record=["w"])
    lr = sim.learners["w"]
    assert lr.rewired > 100                          # the rule did rewire, many times
    nz = (r["w.w"] != 0).sum(axis=2)                 # synapses per post neuron at every step
    assert nz.max() <= k
    assert np.all(lr.mask.numpy().sum(axis=1) == k)  # exactly k labels per neuron, always
    labels = lr.labels()
    assert labels.shape == (n_out, k) and all(len(set(row)) == k for row in labels)
    # the same seed gives the same connectome; another seed another one
    again = ReferenceSimulator(g)
    again.run({"in": x})
    assert np.array_equal(again.learners["w"].labels(), labels)
    g2 = g.copy()
    g2.annotate("w", Plasticity(**{**rule.fields(), "seed": 8}))
    other = ReferenceSimulator(g2)
    other.run({"in": x})
    assert not np.array_equal(other.learners["w"].labels(), labels)


def test_spore_stationary_distribution_matches_langevin():
    """No reward: dθ = β(μ − θ)/σ² dt + sqrt(2βT) dW has the stationary law N(μ, Tσ²). Euler–Maruyama
    with κ = β·dt/σ² is the AR(1) θ' = (1 − κ)θ + κμ + sqrt(2βT·dt)ξ, stationary variance
    v = 2βT·dt/(1 − (1 − κ)²) = Tσ²/(1 − κ/2). N = 4000 independent synapses after 600 steps
    (start at θ = 0: bias μ(1 − κ)^600 < 1e-12): the sample mean has standard error sqrt(v/N),
    the sample variance v·sqrt(2/(N − 1)); the bounds are 5 of those."""
    N, mu, sd, T, beta, dt = 4000, 0.5, 1.2, 0.5, 50.0, 1e-3
    rule = Plasticity(rule="spore", beta=beta, temperature=T, prior_mean=mu, prior_std=sd, theta0=1.0, seed=3)
    sim = ReferenceSimulator(net(np.zeros((1, N)), rule, dt=dt))
    sim.run({"in": np.zeros((600, N))})
    theta = sim.learners["w"].theta.numpy().ravel()
    kappa = beta * dt / sd ** 2
    v = T * sd ** 2 / (1 - kappa / 2)
    assert abs(theta.mean() - mu) < 5 * math.sqrt(v / N)
    assert abs(theta.var(ddof=1) - v) < 5 * v * math.sqrt(2 / (N - 1))
    # a quarter of the temperature: a quarter of the variance (the noise scales as sqrt(2βT·dt))
    cold = ReferenceSimulator(net(np.zeros((1, N)), Plasticity(**{**rule.fields(), "temperature": T / 4}), dt=dt))
    cold.run({"in": np.zeros((600, N))})
    assert abs(cold.learners["w"].theta.numpy().var(ddof=1) - v / 4) < 5 * v / 4 * math.sqrt(2 / (N - 1))
    w = sim.learners["w"].w.numpy().ravel()
    # w = exp(θ − θ0) while θ > 0, else 0 (torch's and numpy's exp may differ in the last bit)
    np.testing.assert_array_equal(w > 0, theta > 0)
    np.testing.assert_allclose(w, np.where(theta > 0, np.exp(theta - 1.0), 0.0), rtol=4e-16, atol=0)


def test_spore_reward_drives_theta():
    # a rewarded pair raises θ of that synapse above what the prior alone gives (noise off: T = 0)
    rule = Plasticity(rule="spore", third_factor="reward", beta=1.0, temperature=0.0, prior_mean=1.0, prior_std=1.0,
                      theta0=1.0, c_reward=100.0, tau_e=0.1, a_plus=1.0, a_minus=0.0)
    x = np.zeros((20, 2))
    x[2, 0] = x[5, 1] = 1
    w0 = [[1.0, 1.0]]   # θ = θ0 + log 1 = 1 = μ: without reward it stays
    still = ReferenceSimulator(net(w0, rule, thr=0.5))
    still.run({"in": x})
    np.testing.assert_allclose(still.learners["w"].theta.numpy(), [[1.0, 1.0]])
    sim = ReferenceSimulator(net(w0, rule, thr=0.5))
    sim.modulate(1.0)
    sim_x = x
    import torch
    for t in range(20):
        sim.step({"in": torch.as_tensor(sim_x[t][None])})
    th = sim.learners["w"].theta.numpy()
    assert th[0, 0] > 1.0 and th[0, 0] > th[0, 1]


@pytest.mark.parametrize("change, param", [
    ({"tau_plus": 0.0}, "tau_plus"), ({"a_plus": -1.0}, "a_plus"), ({"rule": "hebb"}, "rule"),
    ({"third_factor": "dopamine"}, "third_factor"), ({"fan_in": 2}, "fan_in"), ({"w_min": 2.0}, "w_min"),
    ({"temperature": float("nan")}, "temperature"), ({"decay": 1.0}, "decay"), ({"post": "nowhere"}, "post"), ({"theta_min": 11.0}, "theta_min"),
])
def test_bad_parameters_name_projection_and_parameter(change, param):
    g = net([[0.1, 0.2]], None)
    g.annotate("w", Plasticity(**change))
    with pytest.raises(PlasticityError) as e:
        g.verify()
    assert e.value.node == "w" and (param in str(e.value))


def test_rule_on_a_non_projection_or_without_post_spikes_is_refused():
    g = net([[0.1, 0.2]], None)
    g.annotate("n", Plasticity())
    with pytest.raises(PlasticityError, match="Affine or Linear"):
        g.verify()
    g = net([[0.1, 0.2]], None)
    g.replace_node("n", nir.LI(tau=np.ones(1) * 1e-2, r=np.ones(1), v_leak=np.zeros(1)))
    g.annotate("w", Plasticity())
    with pytest.raises(PlasticityError, match="not a spiking neuron"):
        g.verify()
    g = net([[0.1, 0.2]], None)
    g.annotate("w", Plasticity(rule="spore", third_factor="reward"))
    g.replace_node("w", nir.Affine(weight=np.array([[-0.1, 0.2]]), bias=np.zeros(1)))
    with pytest.raises(PlasticityError, match="weights ≥ 0"):
        g.verify()


def test_rule_saved_and_loaded(tmp_path):
    rule = Plasticity(rule="stdp", third_factor="reward", fan_in=1, prune_below=0.01, w_new=0.3, seed=5)
    g = net([[0.1, 0.2]], rule)
    serialize.write(tmp_path / "g.nir", g)
    back = serialize.read(tmp_path / "g.nir")
    assert back.ann("w", Plasticity) == rule
    assert serialize.from_data(serialize.to_data(g), "g.pt").ann("w", Plasticity) == rule   # nmc.save's form
    b = nmc.compile(g, target="reference", output=tmp_path / "b", fidelity_check=False)
    loaded = nmc.load(tmp_path / "b")
    assert loaded.graph.ann("w", Plasticity) == rule
    x = (np.random.default_rng(0).random((50, 2)) < 0.3).astype(float)
    a, c = b.run({"in": x}), loaded.run({"in": x})
    np.testing.assert_array_equal(a["out"], c["out"])


@pytest.mark.parametrize("target", ["spinnaker2", "brainscales2"])   # loihi2 runs pair STDP: tests/backends/loihi2
def test_targets_without_learning_refuse_with_reason(target):
    g = net([[0.1, 0.2]], Plasticity())
    with pytest.raises(UnsupportedNodeError) as e:
        nmc.compile(g, target=target, fidelity_check=False)
    assert e.value.node == "w" and target in str(e.value) and "plasticity" in str(e.value)


def test_reset_state_keeps_what_was_learned_and_reset_forgets_it():
    rule = Plasticity(tau_plus=10e-3, a_plus=0.1, a_minus=0.0, w_min=-10, w_max=10)
    sim = ReferenceSimulator(net([[0.0, 5.0]], rule))
    x = np.zeros((7, 2))
    x[2, 0] = x[5, 1] = 1
    sim.run({"in": x})
    learned = float(sim.learners["w"].w[0, 0])
    assert learned > 0
    sim.reset_state(3)                       # a new trial, batch of 3: traces empty, weights kept
    assert float(sim.learners["w"].w[0, 0]) == learned and sim.learners["w"].x.shape == (3, 2)
    assert float(sim.learners["w"].x.abs().sum()) == 0
    sim.reset()
    assert float(sim.learners["w"].w[0, 0]) == 0.0
