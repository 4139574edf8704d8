"""The fused per-sample kernel of a layer (:class:`fast.LayerInput`: every projection's input
and the neuron update in one pass per sample) is bit-identical to the separate passes
(:meth:`fast.Projection.add_to` per projection onto a zero drive, then
:func:`fast.fine_steps_step`), shared conv patterns and dense rows included."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.backends.brainscales2 import fast

pytestmark = pytest.mark.skipif(not fast.available(), reason="numba not importable")


def _conv_matrix(rng, c_in, c_out, side, k=3):
    """An expanded 'same' convolution (post c_out·side², pre c_in·side²) of integer weights."""
    wk = rng.integers(-63, 64, (c_out, c_in, k, k))
    w = np.zeros((c_out * side * side, c_in * side * side), np.int64)
    for co in range(c_out):
        for ci in range(c_in):
            for y in range(side):
                for x in range(side):
                    for dy in range(k):
                        for dx in range(k):
                            yy, xx = y + dy - k // 2, x + dx - k // 2
                            if 0 <= yy < side and 0 <= xx < side:
                                w[(co * side + y) * side + x, (ci * side + yy) * side + xx] += wk[co, ci, dy, dx]
    return w


def _layer(rng, n, cuba, S, h):
    P = {"v_leak": rng.uniform(-0.2, 0.2, n), "a": rng.uniform(0.8, 0.99, n), "b": rng.uniform(0.6, 0.95, n),
         "coef": rng.uniform(0.01, 0.2, n) if cuba else np.zeros(n), "v_reset": np.full(n, -0.1),
         "v_threshold": np.full(n, 0.6), "t_refrac": np.full(n, 2.5 * h)}
    return fast.pack_step(P, n, S)


@pytest.mark.parametrize("cuba", [False, True])
@pytest.mark.parametrize("closed", [True, False])
def test_fused_layer_step_equals_separate_passes(cuba, closed):
    rng = np.random.default_rng(4)
    B, S, h, side = 6, 10, 1e-7, 8
    conv = fast.Projection(_conv_matrix(rng, 2, 3, side), 0.0123)
    n = conv.n_post
    dense = fast.Projection(rng.integers(-63, 64, (n, 5)), 0.0123)       # dense rows (n ≥ ROWS_MIN_POST)
    sparse = fast.Projection(np.where(rng.random((n, 30)) < 0.1, rng.integers(-63, 64, (n, 30)), 0), 0.0123)
    assert conv.csr and sparse.csr and not dense.csr
    inp = fast.LayerInput([conv, dense, sparse])
    assert inp.walked
    assert len(fast.LayerInput([conv]).idx) < len(conv.idx) // 2     # the convolution's positions share patterns
    prm = _layer(rng, n, cuba, S, h)
    k_in = 0 if cuba else S - 1
    state = [rng.uniform(-0.3, 0.7, (B, n)), rng.normal(0, 1, (B, n)), np.where(rng.random((B, n)) < 0.2, 4 * h, 0.0)]
    want_state = [a.copy() for a in state]
    fired = 0
    for t in range(8):
        xs = [(rng.random((B, q.n_pre)) < 0.3).astype(float) for q in (conv, dense, sparse)]
        xs[1][0] = 2.0 * xs[1][0]     # a count above one takes the multiplied path
        d = np.zeros((B, n))
        for q, x in zip((conv, dense, sparse), xs):
            q.add_to(x, d)
        want = fast.fine_steps_step(*want_state, d, k_in, cuba, prm, h, S, closed=closed)
        got = inp.step(xs, *state, k_in, cuba, prm, h, S, closed=closed)
        np.testing.assert_array_equal(got, want)
        for a, b in zip(state, want_state):
            np.testing.assert_array_equal(a, b)
        fired += want.sum()
    assert fired > 0      # spikes, reset and refractoriness are covered


def test_matmul_projection_is_not_fused():
    """A small dense projection takes the matmul (another summation order): no fused kernel."""
    rng = np.random.default_rng(0)
    q = fast.Projection(rng.integers(-63, 64, (fast.ROWS_MIN_POST - 1, 50)), 0.5)
    assert not fast.LayerInput([q]).walked
