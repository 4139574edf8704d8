"""A conv projection and the LIF update of the population it feeds, as one step with no
per-step allocation of its sums.

For a ``lif``/``lif_no_delay``/``lif_conv2d`` population fed by exactly one
:mod:`conv <.conv>` projection, each step:

1. ``I = Σ K·P`` with the **signed** integer kernel K (one pass, not W⁺ and W⁻ apart): the
   batch-innermost scatter of :func:`.conv.scatter_t` into a (n, B) float32 array kept across
   steps (each nonzero tap read once for the whole batch);
2. I transposed into a second kept (B, n) array (numpy's blocked copy; a compiled tile loop
   was slower, and reading the (n, B) sums from the update's loop does not vectorise);
3. the LIF update of :func:`.lif_step.step1`, float32, every operation rounded as written::

       v ← alpha_decay·v + I + i_offset;  s ← v > threshold;  reset (subtract or v_reset)

**Exactness.** Every product K·P is an integer (integer kernel, pooled spike counts) and every
partial sum's magnitude stays at or below p²·Σ_{c,ky,kx} |K[o, c, ky, kx]|; below 2²⁴ (checked
by :func:`fits`) every sum is exact in float32 in any order, so I equals the unfused path's
``Σ W⁺·s + Σ W⁻·s`` (each exact, their sum exact) bit for bit and the update that follows is
the same float32 expression. A kernel with a non-integer entry or a larger bound keeps the
unfused path.

Measured on the bench's conv_pool (2×16×16 → 8×16×16, batch 64): the stacked [W⁺; W⁻]
scatter's (2n, B) result, its two transposed (B, n) copies and the update's fresh arrays made
~3 MB of allocations per step, and their page faults cost about a quarter of the step.
"""
from __future__ import annotations

import numpy as np

from . import conv, lif_step

#: float32 represents every integer up to this magnitude exactly
EXACT = 2 ** 24


def fits(kernel: np.ndarray, pool: int) -> bool:
    """Whether ``kernel`` (C_out, C_in, kh, kw) has integer entries and every output's sum stays
    below :data:`EXACT` (p²·Σ|K| per output channel), so the fused sum is exact; and numba
    is importable."""
    k = np.asarray(kernel, np.float64)
    return (conv.njit is not None and bool(np.all(k == np.round(k)))
            and float(np.abs(k).reshape(k.shape[0], -1).sum(axis=1).max(initial=0.0)) * pool * pool < EXACT)


def step(kernel_f32: np.ndarray, geo: dict, s: np.ndarray, v: np.ndarray, prm: tuple, subtract: bool,
         scratch: tuple | None = None):
    """(v, s) of the conv-fed population after one step: ``kernel_f32`` the signed integer kernel
    (C_out, C_in, kh, kw) float32 (with :func:`fits`), ``s`` the source's spikes (B, C_in·H·W),
    ``v`` (B, n = C_out·Ho·Wo) float32, ``prm`` from :func:`.lif_step.params`; ``scratch`` the
    pair of float32 arrays (n, B) and (B, n) the sums go through (overwritten; from
    :func:`scratch_for` when None)."""
    y, yt = scratch if scratch is not None else scratch_for(v.shape[1], v.shape[0])
    np.copyto(yt, conv.scatter_t(kernel_f32, geo, s, y).T)   # numpy's blocked transpose (a compiled tile loop was slower)
    return lif_step.step1(v, yt, prm, subtract)


def scratch_for(n: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The (n, B) and (B, n) float32 arrays :func:`step` overwrites, kept by the caller across steps."""
    return np.empty((n, batch), np.float32), np.empty((batch, n), np.float32)
