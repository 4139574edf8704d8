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
