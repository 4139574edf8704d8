"""The LIF neuron update of the SpiNNaker 2 emulator fused into one compiled pass.

For the ``lif``, ``lif_no_delay`` and ``lif_conv2d`` models, per neuron j of
sample b, every operation float32 and rounded as written, left to right (the
emulator's numpy expressions, bit for bit; no fused multiply-add)::

    v ← alpha_decay·v + (syn_exc + syn_inh) + i_offset
    s ← 1 if v > threshold (strict) else 0
    reset_by_subtraction: v ← v − s·threshold      reset_to_v_reset: v ← v_reset where s

One pass over the (B, n) state instead of ~10 numpy passes with temporaries.
:func:`step1` takes one synaptic sum in place of syn_exc + syn_inh (the conv-fed and
signed-matmul populations of the emulator, whose sums are exact integers).
Used by :class:`~.emulator.S2Emulator` when numba is importable and the
population's parameters are float32 (:data:`ENABLED` switches it off, so the
tests can compare both).
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy expressions stay usable without it
    njit = None

#: whether the emulator uses the fused update (numba importable)
ENABLED = njit is not None

#: the models it updates, and the parameters it takes (float32 (n,) each)
MODELS = ("lif", "lif_no_delay", "lif_conv2d")
KEYS = ("alpha_decay", "i_offset", "threshold", "v_reset")

if njit is not None:

    @njit(cache=True)
    def _lif(v, se, si, alpha, i_off, thr, v_reset, subtract, two):
        B, n = v.shape
        vo = np.empty((B, n), np.float32)
        s = np.empty((B, n), np.float32)
        one, zero = np.float32(1.0), np.float32(0.0)
        for b in range(B):
            for j in range(n):
                syn = (se[b, j] + si[b, j]) if two else se[b, j]
                x = alpha[j] * v[b, j] + syn + i_off[j]
                f = x > thr[j]
                sf = one if f else zero
                if subtract:
                    x = x - sf * thr[j]
                elif f:
                    x = v_reset[j]
                vo[b, j] = x
                s[b, j] = sf
        return vo, s


def params(pop) -> tuple | None:
    """The population's parameters as contiguous float32 (n,) arrays, or None when the fused
    update does not apply (another model, a parameter not float32, or numba missing)."""
    if not ENABLED or pop.model not in MODELS or not all(
            np.asarray(pop.params[k]).dtype == np.float32 for k in KEYS):
        return None
    return tuple(np.ascontiguousarray(np.broadcast_to(pop.params[k], (pop.size,)), np.float32) for k in KEYS)


def step(v, se, si, prm, subtract: bool):
    """(v, s) after one step: ``v``, ``se``, ``si`` (B, n) float32; ``prm`` from :func:`params`."""
    c = np.ascontiguousarray
    return _lif(c(v, np.float32), c(se, np.float32), c(si, np.float32), *prm, bool(subtract), True)


def step1(v, syn, prm, subtract: bool):
    """:func:`step` with one synaptic sum ``syn`` (B, n) float32 in place of ``se + si``: the same
    float32 value wherever that sum is exact (integer sums below 2²⁴, :mod:`.conv_lif`)."""
    c = np.ascontiguousarray
    syn = c(syn, np.float32)
    return _lif(c(v, np.float32), syn, syn, *prm, bool(subtract), False)
