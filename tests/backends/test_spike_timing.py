"""A plain LIF under constant input spikes within one step of the exact solution on
every target (issue #15). Before: brainscales2 fired 5 steps early per period (its
τ_mem DAC step at the fixed 1000× speed-up, 1.7 % of τ, and the threshold's DAC step)."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest

import nmc

DT, TAU = 1e-4, 5e-3
TSTAR = 110.5                                  # first-passage time in steps: mid-step, ½ step either side
RI = 1.0 / (1.0 - math.exp(-TSTAR * DT / TAU))  # the constant drive R·I giving it (threshold 1)


def _lif():
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1])}),
        "fc": nir.Affine(weight=np.zeros((1, 1)), bias=np.array([RI])),   # constant input: a bias
        "lif": nir.LIF(tau=np.array([TAU]), r=np.array([1.0]), v_leak=np.zeros(1), v_threshold=np.ones(1),
                       v_reset=np.zeros(1)),
        "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


@pytest.mark.parametrize("target", ["reference", "spinnaker2", "loihi2", "brainscales2"])
def test_lif_trace_spikes_within_one_step_of_exact(target):
    # exact solution: v(t) = RI·(1 − e^{−t/τ}) from v = 0 crosses 1 at t* = 110.5 steps; row k holds the
    # state after k + 1 steps, so the first spike is row 110; reset to 0 at that step boundary, the next
    # period starts there: rows 110, 221, 332
    exact = np.array([110, 221, 332])
    b = nmc.compile(_lif(), target=target, dt=DT, reset="zero", integrator="exact")
    out = b.run({"input": np.zeros((340, 1))})["output"][:, 0]
    got = np.nonzero(out)[0]
    assert len(got) == 3, got
    # one step: the targets' own errors (Loihi's 12-bit decay: 0.13 % of τ here, 0.15 step per period;
    # BrainScaleS-2's DAC step of the longest τ and of the threshold: exact codes; SpiNNaker 2 float32)
    # must stay below the ½ step between the exact crossing and the step boundaries
    assert np.abs(got - exact).max() <= 1, (got, exact)


def _lif_at(tau: float, tstar: float):
    """The same trace with time constant ``tau`` and first passage at ``tstar`` steps."""
    g = _lif()
    g.nodes["lif"].tau = np.array([tau])
    g.nodes["fc"].bias = np.array([1.0 / (1.0 - math.exp(-tstar * DT / tau))])
    return g


@pytest.mark.parametrize("tstar", [30.5, 110.5])
def test_loihi2_decay_drift_is_bounded_and_reported(tstar):
    """Lava's LIF decays by q = 1 − dv/4096 with an integer dv: at τ = 20 ms, dt = 1e-4 (dv = 20.43
    rounds to 20) the time constant is 2.2 % long, and no threshold or gain choice removes that for
    every drive (the gain already uses Lava's rate, so steady states are exact). The fidelity report
    states the bound per layer: an interval of t steps comes out within ⌈ε·t⌉ steps, ε =
    |ln(1 − rate)/ln q − 1| (within one step for t ≤ 1/ε = 46 steps here). Before: not reported."""
    tau = 20e-3
    g = _lif_at(tau, tstar)
    ref = nmc.compile(g, target="reference", dt=DT, reset="zero", integrator="exact", fidelity_check=False)
    b = nmc.compile(g, target="loihi2", dt=DT, reset="zero", integrator="exact")
    timing = b.report("fidelity")["layers"]["lif"]["timing"]
    rate, q = 1 - math.exp(-DT / tau), 1 - round(4096 * (1 - math.exp(-DT / tau))) / 4096
    eps = abs(math.log(1 - rate) / math.log(q) - 1)                     # 0.0215
    assert timing["drift_per_step"] == pytest.approx(eps, rel=1e-4)
    assert timing["one_step_within_steps"] == int(1 / eps) == 46
    x = np.zeros((340, 1))
    want = np.nonzero(ref.run({"input": x})["output"][:, 0])[0]
    got = np.nonzero(b.run({"input": x})["output"][:, 0])[0]
    assert len(want) >= 3 and len(got) >= 3
    # first spike (t = tstar steps from v = 0) and every inter-spike interval: within ⌈ε·t⌉ steps
    assert abs(got[0] - want[0]) <= math.ceil(eps * tstar)
    n = min(len(got), len(want))
    isi_want, isi_got = np.diff(want[:n]), np.diff(got[:n])
    assert np.all(np.abs(isi_got - isi_want) <= np.ceil(eps * isi_want))
    if tstar < timing["one_step_within_steps"]:                        # inside the stated horizon: one step
        assert abs(got[0] - want[0]) <= 1 and np.all(np.abs(isi_got - isi_want) <= 1)
