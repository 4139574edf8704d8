"""The Loihi 2 weight arithmetic in row blocks (``nmc.rowblocks.row_blocks``, which keeps the
temporaries of a 10⁸-synapse matrix small) gives the same bits as the whole-array formulas
it replaced, written out here. Exact equality: every operation is elementwise, a maximum, or
a sum along one row (whose order the blocking does not change)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nmc import rowblocks
from nmc.backends.loihi2 import numerics as N


def whole_array(T, bits, lim):
    """The formulas as one pass over the whole matrix (the code before row blocks)."""
    m = float(np.abs(T).max())
    mixed = bool(T.min() < 0 < T.max())
    wb = lim.weight_bits
    q = 2 ** ((wb + 1 if mixed else wb) - bits)
    kmax = 2 ** (bits - 1) - 1 if mixed else 2 ** bits - 1
    e = math.ceil(math.log2(m / (q * kmax)))
    e = min(max(e, lim.weight_exp_min), lim.weight_exp_max)
    w = (np.clip(np.rint(T / 2.0 ** e / q), -kmax, kmax) * q).astype(np.int32)
    return w, int(e), float(np.abs(w * 2.0 ** e - T).max() / m)


@pytest.mark.parametrize("bits", [8, 6, 3])
@pytest.mark.parametrize("sign", ["mixed", "positive"])
@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_blocks_equal_whole_array(monkeypatch, bits, sign, block):
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", block)
    lim = N.LavaLimits.from_spec(None)
    rng = np.random.default_rng(bits)
    T = rng.normal(0, 37.0, (53, 29))
    if sign == "positive":
        T = np.abs(T)
    w, e, err = N.quantize_weights(T, bits, lim)
    w0, e0, err0 = whole_array(T, bits, lim)
    assert e == e0 and err == err0 and w.dtype == w0.dtype
    np.testing.assert_array_equal(w, w0)
    unit = 3.7
    assert N.max_row_error(w, e, T, unit) == float((np.abs(w0 * 2.0 ** e0 - T) / unit).sum(axis=1).max())


def test_row_blocks_cover_every_row_once():
    for shape in [(0, 5), (1, 3), (10, 1 << 21), (1000, 3), (17,)]:
        covered = np.concatenate([np.arange(shape[0])[s] for s in rowblocks.row_blocks(shape)])
        np.testing.assert_array_equal(covered, np.arange(shape[0]))


def test_all_zero_matrix():
    w, e, err = N.quantize_weights(np.zeros((4, 3)), 8, N.LavaLimits.from_spec(None))
    assert not w.any() and e == 0 and err == 0.0


def test_blocks_keep_the_memory_order(monkeypatch):
    """The weights are saved with their memory order: the same layout as the whole-array formula's."""
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", 5)
    lim = N.LavaLimits.from_spec(None)
    T = np.random.default_rng(0).normal(0, 9.0, (7, 12)).T   # a transposed (Fortran-ordered) matrix
    w, _, _ = N.quantize_weights(T, 8, lim)
    w0, _, _ = whole_array(T, 8, lim)
    assert w.flags.f_contiguous == w0.flags.f_contiguous and w.flags.c_contiguous == w0.flags.c_contiguous
