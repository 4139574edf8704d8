"""The fused (numba) LIF update of the SpiNNaker 2 emulator equals its numpy expressions bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import conv_pool, ff_lif, spikes
from nmc.backends.spinnaker2 import lif_step

pytestmark = pytest.mark.skipif(not lif_step.ENABLED, reason="numba not importable")


@pytest.mark.parametrize("build,shape,layer,reset", [(ff_lif, (8,), "lif1", "zero"),
                                                      (ff_lif, (8,), "lif1", "subtract"),
                                                      (lambda: conv_pool(2, 8, 4, 5), (2, 8, 8), "if1", "zero")])
def test_fused_lif_update_equals_numpy(monkeypatch, build, shape, layer, reset):
    b = nmc.compile(build(), target="spinnaker2", dt=1e-3, integrator="euler", reset=reset)
    x = spikes(shape, T=30, p=0.4, seed=3, batch=4)
    fused = b.run({"input": x}, record=[layer])
    monkeypatch.setattr(lif_step, "ENABLED", False)
    plain = b.run({"input": x}, record=[layer])
    assert fused[f"{layer}.spikes"].sum() > 0
    assert fused.keys() == plain.keys()
    for k in fused:
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_conv_scatter_into_fused_update_equals_im2col_and_numpy(monkeypatch, reset):
    """From batch 8 on a conv-fed population takes the batch-innermost scatter's (2n, B) sums straight
    into the fused update (step_t); equal bit for bit to im2col + matmul and the numpy update."""
    from nmc.backends.spinnaker2 import conv

    b = nmc.compile(conv_pool(2, 8, 4, 5), target="spinnaker2", dt=1e-3, integrator="euler", reset=reset)
    x = spikes((2, 8, 8), T=30, p=0.4, seed=5, batch=12)
    calls = []
    step_t = lif_step.step_t
    monkeypatch.setattr(lif_step, "step_t", lambda *a: calls.append(1) or step_t(*a))
    fused = b.run({"input": x}, record=["if1"])
    assert len(calls) > 0
    monkeypatch.setattr(lif_step, "ENABLED", False)
    monkeypatch.setattr(conv, "use_events", lambda s: False)
    plain = b.run({"input": x}, record=["if1"])
    assert fused["if1.spikes"].sum() > 0 and fused.keys() == plain.keys()
    for k in fused:
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)


def test_kernel_by_hand():
    """Two neurons: one crosses (strictly) and resets, one stays; float32 throughout."""
    f = np.float32
    prm = tuple(np.array(a, f) for a in ([0.5, 0.5], [0.25, 0.0], [1.0, 1.0], [-1.0, -1.0]))
    v, s = lif_step.step(np.array([[2.0, 1.0]], f), np.array([[0.0, 0.5]], f), np.zeros((1, 2), f), prm, False)
    # 0.5·2 + 0 + 0.25 = 1.25 > 1 → spike, v_reset; 0.5·1 + 0.5 + 0 = 1.0, not > 1
    assert s.tolist() == [[1.0, 0.0]] and v.tolist() == [[-1.0, 1.0]] and v.dtype == np.float32
    v, s = lif_step.step(np.array([[2.0]], f), np.zeros((1, 1), f), np.zeros((1, 1), f),
                         tuple(a[:1] for a in prm), True)
    assert s.tolist() == [[1.0]] and v.tolist() == [[0.25]]   # 1.25 − 1
