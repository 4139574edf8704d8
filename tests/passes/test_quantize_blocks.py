"""The ``int`` scheme of ``quantize_weights`` runs one row block at a time (so a dense
10⁸-synapse layer needs no whole-matrix float64 temporaries); it must give the same bits as
the whole-array formulas, written out here as they were. Exact equality: only elementwise
operations and maxima are blockwise."""
from __future__ import annotations

import numpy as np
import pytest

from nmc import rowblocks
from nmc.passes.quantize import _levels, quantize_weights, round_half_away


def whole_array(w, bits, per_channel, qmax=None, clip=None, mask=None):
    w = np.asarray(w, dtype=np.float64)
    m = None if mask is None else np.asarray(mask, bool).reshape(w.shape)
    axes = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else None
    keep = dict(axis=axes, keepdims=axes is not None)
    a = np.abs(w) if m is None else np.where(m, np.abs(w), 0.0)
    q = int(qmax) if qmax is not None else 2 ** (bits - 1) - 1
    if clip is None:
        clip = a.max(**keep, initial=0.0)
    clip = np.asarray(clip, dtype=np.float64)
    clip = np.where(clip > 0, clip, a.max(**keep, initial=0.0))
    scale = clip / q
    mx = a.max(**keep, initial=0.0) / q
    scale = np.where(scale > 0, scale, np.where(mx > 0, mx, 1.0))
    w_int = round_half_away(w / scale)
    np.clip(w_int, -q, q, out=w_int)
    if m is not None:
        w_int[~m] = 0
    return w_int.astype(np.int32), scale


CASES = [((40, 13), False), ((40, 13), True), ((6, 3, 3, 3), True), ((6, 3, 3, 3), False), ((17,), False),
         ((17,), True), ((0, 5), False), ((0, 5), True)]


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
@pytest.mark.parametrize("shape,per_channel", CASES)
@pytest.mark.parametrize("variant", ["plain", "masked", "clip", "qmax", "zero_row"])
def test_int_blocks_equal_whole_array(monkeypatch, block, shape, per_channel, variant):
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(len(shape) * 7 + block)
    w = rng.normal(0, 0.3, shape).astype(np.float32)
    kw = {}
    if variant == "masked":
        kw["mask"] = rng.random(shape) < 0.6
        w = np.where(kw["mask"], w, 0).astype(np.float32)
    if variant == "clip":
        kw["clip"] = 0.5 * np.abs(w).max(initial=0.0)
    if variant == "qmax":
        kw["qmax"] = 100
    if variant == "zero_row" and w.ndim and w.shape[0]:
        w[0] = 0
    got, s = quantize_weights(w, 8, "int", per_channel, "maxabs", **kw)
    want, s0 = whole_array(w, 8, per_channel, **kw)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert s.shape == s0.shape
    np.testing.assert_array_equal(s, s0)


def test_levels_counts_distinct_values_across_blocks(monkeypatch):
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", 3)
    w = np.array([[-5, 0, 3], [3, 3, -5], [7, 0, 0], [1, 1, 1]], np.int32)
    assert _levels(w) == len(np.unique(w)) == 5


@pytest.mark.parametrize("order", ["C", "F"])
def test_int_blocks_keep_the_memory_order(monkeypatch, order):
    """Bundles store arrays with their memory order (npz ``fortran_order``): the result must be laid
    out as ``astype`` of the whole-array formula lays it out (a backend passes transposed matrices)."""
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", 7)
    w = np.asarray(np.random.default_rng(5).normal(0, 1, (9, 4)), order=order)
    got, _ = quantize_weights(w, 8, "int", False, "maxabs", clip=0.8)
    want, _ = whole_array(w, 8, False, clip=0.8)
    assert got.flags.f_contiguous == want.flags.f_contiguous and got.flags.c_contiguous == want.flags.c_contiguous
