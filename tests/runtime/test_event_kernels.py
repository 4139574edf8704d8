"""The compiled event conversions (``nmc.runtime.event_kernels``) give exactly what the numpy
code gives — same arrays, same bytes — and hand every refused input back to it, so the errors
are the same too. Each case runs twice in one test: kernels on, then off."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.errors import EventFormatError
from nmc.runtime import event_kernels, events as ev

pytestmark = pytest.mark.skipif(not event_kernels.available(), reason="numba not installed")


def both(fn):
    """(result with the kernels, result with numpy), or the two exceptions' messages."""
    out = []
    for on in (True, False):
        ev._EK = None if on else False
        try:
            out.append(fn())
        except EventFormatError as e:
            out.append(("error", str(e)))
        finally:
            ev._EK = None
    return out


def random_events(rng, n, steps, ch, graded):
    e = ev.events(rng.integers(0, steps, n), rng.integers(0, ch, n),
                  rng.normal(0, 2, n).astype(np.float32) if graded else None)
    return e


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_dense_same_bits(graded, dtype):
    rng = np.random.default_rng(1)
    e = random_events(rng, 500, 6, 37, graded)   # duplicates (t, ch) included: they are summed
    a, b = both(lambda: ev.to_dense(e, 6, (37,), dtype=dtype))
    assert a.dtype == b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("graded", [None, True, False])
@pytest.mark.parametrize("values", ["binary", "counts", "real"])
def test_from_dense_same_events(dtype, graded, values):
    rng = np.random.default_rng(2)
    x = (rng.random((5, 3, 11)) < 0.2).astype(dtype)
    if values == "counts":
        x *= rng.integers(1, 3, x.shape)
    elif values == "real":
        x *= rng.normal(0, 1, x.shape).astype(dtype)
    a, b = both(lambda: ev.from_dense(x, graded=graded))
    if isinstance(b, tuple):          # refused (graded=False with values other than 1): the same error
        assert a == b
        return
    assert a.dtype == b.dtype == ev.EVENT_DTYPE
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("skew", [0, 1, 3])
def test_pack_unpack_same_bytes(graded, skew):
    rng = np.random.default_rng(3)
    e = random_events(rng, 300, 9, 100, graded)
    wa, wb = both(lambda: ev.pack(e, graded=graded))
    assert wa == wb
    buf = memoryview(bytearray(skew) + wa)[skew:]   # records read in place at any byte offset
    a, b = both(lambda: ev.unpack(buf, graded=graded, steps=9, n_channels=100))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("case", ["t_out", "ch_out", "nan", "negative_t", "binary_payload"])
def test_refused_input_raises_the_same_error(case):
    e = ev.events([0, 1, 2], [3, 4, 5], [1.0, 1.0, 1.0])
    if case == "t_out":
        r = both(lambda: ev.to_dense(e, 2, (8,)))
        w = ev.pack(e, graded=False)
        r += both(lambda: ev.unpack(w, graded=False, steps=2, n_channels=8))
    elif case == "ch_out":
        r = both(lambda: ev.to_dense(e, 3, (5,)))
        w = ev.pack(e, graded=False)
        r += both(lambda: ev.unpack(w, graded=False, steps=3, n_channels=5))
    elif case == "nan":
        e["v"][1] = np.nan
        r = both(lambda: ev.to_dense(e, 3, (8,))) + both(lambda: ev.pack(e, graded=True))
        x = np.zeros((2, 3))
        x[1, 2] = np.inf
        r += both(lambda: ev.from_dense(x))
        g = bytearray(ev.pack(ev.events([0], [1], [2.0]), graded=True))
        g[8:12] = np.array([np.nan], "<f4").tobytes()
        r += both(lambda: ev.unpack(bytes(g), graded=True))
    elif case == "negative_t":
        e["t"][2] = -1
        r = both(lambda: ev.to_dense(e, 3, (8,))) + both(lambda: ev.pack(e, graded=False))
    else:
        e["v"][0] = 0.5
        r = both(lambda: ev.pack(e, graded=False)) + both(lambda: ev.to_dense(e, 3, (8,), graded=False))
    for a, b in zip(r[::2], r[1::2]):
        assert isinstance(a, tuple) and a == b, (a, b)


def test_float32_overflow_of_a_sum_is_refused_on_both_paths():
    e = ev.events([0, 0], [1, 1], [3e38, 3e38])
    a, b = both(lambda: ev.to_dense(e, 1, (2,), dtype=np.float32))
    assert isinstance(a, tuple) and a == b


def test_warm_kernels_runs():
    ev.warm_kernels()
