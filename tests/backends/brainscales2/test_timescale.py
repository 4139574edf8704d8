"""BrainScaleS-2 time scale and DAC codes chosen by the compiler (backends/brainscales2/
timescale.py, issue #15). Before: the speed-up was fixed at 1000×, so a τ_syn below
0.2 ms of model time was clipped to the DAC range (warned) and the recurrent CubaLIF's
current kernels were matched only in their integral."""
from __future__ import annotations

import nir
import numpy as np
import pytest

import nmc
from nmc.backends.brainscales2 import calibration as C
from nmc.errors import UnsupportedNodeError
from nmc.hw import HardwareSpec
from nets import perturb, strong_bias_cubalif

DT = 1e-4


def test_recurrent_cubalif_fits_every_tau_and_agrees():
    g, x, _ = strong_bias_cubalif(alpha=(0.4, 0.9))          # τ_syn down to 0.11 ms: 0.11 µs at 1000×
    xp = perturb(x)
    b = nmc.compile(g, target="brainscales2", dt=DT, reset="zero", integrator="euler")
    msgs = [w["message"] for w in b.report("compile")["warnings"]]
    assert not any("outside the DAC range" in m for m in msgs), msgs
    spec = HardwareSpec.load("brainscales2")
    lo_s, hi_s = spec.get("timing.speedup_range")
    ts = b.report("mapping")["timescale"]
    assert lo_s <= ts["speedup"] <= hi_s and ts["speedup"] == b.program.speedup
    rng = C.ranges(spec)
    for l in b.program.layers:
        for p in ("tau_mem", "tau_syn"):
            v = l.params[p]
            assert np.all(v >= rng[p][0] * (1 - 1e-9)) and np.all(v <= rng[p][1] * (1 + 1e-9)), (l.name, p)
    ref = nmc.compile(g, target="reference", dt=DT, reset="zero", integrator="euler").run({"input": xp})["output"]
    out = b.run({"input": xp})["output"]                        # noiseless emulator (mismatch off)
    agree = float(np.mean(out.mean(0).argmax(-1) == ref.mean(0).argmax(-1)))
    assert agree >= 0.9, agree


def _two_layer(tau_a, tau_b):
    n = 2
    lif = lambda tau: nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n),  # noqa: E731
                              v_threshold=np.ones(n), v_reset=np.zeros(n))
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "w1": nir.Linear(weight=np.eye(n)), "fast": lif(tau_a),
        "w2": nir.Linear(weight=np.eye(n)), "slow": lif(tau_b),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "w1"), ("w1", "fast"), ("fast", "w2"), ("w2", "slow"), ("slow", "output")])


def test_refused_only_when_no_time_scale_fits_all_tau():
    # τ from 0.5 ms to 2 s: a ratio of 4000 against the DAC's 1000 (0.2..200 µs)
    with pytest.raises(UnsupportedNodeError, match="no time scale fits every tau_mem") as e:
        nmc.compile(_two_layer(5e-4, 2.0), target="brainscales2", dt=DT, reset="zero", integrator="exact")
    msg = str(e.value)
    assert "'fast'" in msg and "'slow'" in msg and "[2e-07, 0.0002]" in msg and "speed-up range" in msg
    # a spread of 400 fits: the longest τ goes to the top of the range
    b = nmc.compile(_two_layer(5e-4, 0.2), target="brainscales2", dt=DT, reset="zero", integrator="exact")
    assert b.program.speedup == pytest.approx(0.2 / 200e-6, rel=1e-3)
    assert b.program.layer("slow").params["tau_mem"] == pytest.approx(200e-6, rel=1e-3)


def test_user_speedup_is_an_override_and_checked():
    b = nmc.compile(_two_layer(5e-4, 0.02), target="brainscales2", dt=DT, reset="zero", integrator="exact",
                    speedup=1000)
    assert b.program.speedup == 1000
    with pytest.raises(UnsupportedNodeError, match="--option speedup=10000"):
        nmc.compile(_two_layer(5e-4, 0.02), target="brainscales2", dt=DT, reset="zero", integrator="exact",
                    speedup=10000)


def test_a_large_bias_is_split_over_repeated_sources_not_the_lsb():
    """A bias 5× the largest weight: before, it set the layer's 6-bit LSB (the weights kept
    ≤ 13 of 63 levels); now it is split over k ≤ bias_repeat_max bias sources firing every step."""
    from nmc.backends.brainscales2.program import BIAS_SOURCE

    rng = np.random.default_rng(0)
    n = 8
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([6])}),
        "fc": nir.Affine(weight=rng.uniform(0.2, 1.0, (n, 6)), bias=np.full(n, 5.0)),
        "lif": nir.LIF(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.full(n, 50.0),
                       v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    b = nmc.compile(g, target="brainscales2", dt=DT, reset="zero", integrator="euler")
    qs = {q.pre: q for q in b.program.projections if q.post == "lif"}
    assert int(np.abs(qs["input"].w6).max()) == 63                      # the weights keep their 6 bits
    k = len(b.program.constant_inputs)
    assert k > 1 and all(s.startswith(BIAS_SOURCE) for s in b.program.constant_inputs)
    total = sum(qs[s].w6 for s in b.program.constant_inputs).reshape(-1) * b.program.layer("lif").scale
    drive = qs["input"].w6.astype(float) * b.program.layer("lif").scale
    W = np.asarray(g.nodes["fc"].weight, float)
    # the bias per step in the same units as the weights: 5/W ratio preserved within 6-bit rounding
    c = W.argmax(1)                                     # each neuron's largest weight: 6-bit exact to 1/126
    ratio = total / (drive[np.arange(n), c] / W[np.arange(n), c] * 5.0)
    assert np.all(np.abs(ratio - 1) < 0.05), ratio


def test_discrete_time_if_network_is_refused_naming_dt():
    """An IF network in discrete time (dt = 1, as sinabs exports) on BrainScaleS-2: IF neurons become
    leaky with the longest τ the DAC reaches (0.2 s of model time at the nominal speed-up), which a
    1 s step exceeds. Refused naming the IF node, dt and the fix (before: "τ = 0.2 s is shorter than
    the step ... --tau-scale", about a τ the model does not have)."""
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}),
                            "fc": nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
                            "h": nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3)),
                            "output": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("input", "fc"), ("fc", "h"), ("h", "output")])
    with pytest.raises(nmc.errors.UnsupportedNodeError, match="IF neurons need a circuit.*dt = 1 s") as e:
        nmc.compile(g, target="brainscales2", exporter="sinabs", fidelity_check=False)
    assert e.value.node == "h" and "digital target" in str(e.value)
