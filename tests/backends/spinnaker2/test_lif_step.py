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
@pytest.mark.parametrize("batch", [1, 12])
def test_conv_fused_with_its_update_equals_im2col_and_numpy(monkeypatch, reset, batch):
    """A conv-fed population runs its conv (signed integer kernel) and update in one pass (conv_lif), and
    the pooled LIF behind it one signed matmul (W⁺ + W⁻); equal bit for bit to im2col + matmul of W⁺ and
    W⁻ apart and the numpy update."""
    from nmc.backends.spinnaker2 import conv, conv_lif

    b = nmc.compile(conv_pool(2, 8, 4, 5), target="spinnaker2", dt=1e-3, integrator="euler", reset=reset)
    x = spikes((2, 8, 8), T=30, p=0.4, seed=5, batch=batch)
    calls = []
    step = conv_lif.step
    monkeypatch.setattr(conv_lif, "step", lambda *a: calls.append(1) or step(*a))
    fused = b.run({"input": x}, record=["if1", "lif"])
    assert len(calls) > 0
    monkeypatch.setattr(lif_step, "ENABLED", False)
    monkeypatch.setattr(conv, "use_events", lambda s: False)
    plain = b.run({"input": x}, record=["if1", "lif"])
    assert fused["if1.spikes"].sum() > 0 and fused["lif.spikes"].sum() > 0 and fused.keys() == plain.keys()
    for k in fused:
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)


def test_conv_fused_only_where_its_sums_are_exact():
    """fits: integer kernels whose p²·Σ|K| per output channel stays below 2²⁴; a fractional entry or a
    larger bound keeps the unfused path (W⁺ and W⁻ apart)."""
    from nmc.backends.spinnaker2 import conv_lif

    k = np.ones((2, 3, 3, 3))
    assert conv_lif.fits(k, 2)
    assert not conv_lif.fits(k + 0.5, 1)
    big = np.full((1, 64, 16, 16), 127.0)      # 127·64·256 = 2,080,768; ×p² = 8,323,072 at p = 2, 33·10⁶ at p = 4
    assert conv_lif.fits(big, 2) and not conv_lif.fits(big, 4)


def test_conv_fused_by_hand():
    """One input channel 3×3 image, kernel with both signs, padding 1: the sums and the update by hand."""
    from nmc.backends.spinnaker2 import conv_lif

    f = np.float32
    K = np.array([[[[0, 2, 0], [-1, 3, 0], [0, 0, 1]]]], f)
    s = np.zeros((1, 9), f)
    s[0, 4] = 1.0                                         # the centre pixel spikes
    geo = {"in_shape": [1, 3, 3], "out_shape": [1, 3, 3], "pool": 1, "stride": 1, "padding": [1, 1, 1, 1]}
    n = 9
    prm = (np.ones(n, f), np.zeros(n, f), np.full(n, 2.5, f), np.zeros(n, f))
    v, sp = conv_lif.step(K, geo, s, np.zeros((1, n), f), prm, False)
    # out[y, x] = Σ K[ky, kx]·s[y − 1 + ky, x − 1 + kx]: the centre reaches out[1 + 1 − ky, 1 + 1 − kx]
    want = np.array([[1, 0, 0], [0, 3, -1], [0, 2, 0]], f).reshape(-1)
    assert sp[0].tolist() == (want > 2.5).astype(f).tolist()
    assert v[0].tolist() == np.where(want > 2.5, 0, want).tolist()


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
