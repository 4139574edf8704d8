"""The fine-step integration of :class:`~.emulator.BSS2Emulator`, two ways.

One model step of a layer is ``S`` fine steps of hardware time. Per fine step
``k`` and neuron (float64, this order of operations — the two implementations
below are bit-identical, the tests check it)::

    cuba:   I ← I + drive[k];  v ← v_leak + (v − v_leak)·a + I·coef;  I ← I·b
            (exact over h for dv/dt = (v_leak − v + I)/τ_mem, dI/dt = −I/τ_syn)
    other:  v ← v_leak + (v − v_leak)·a + drive[k]
    noise:  v ← v + noise[k]                 (pre-drawn: N(0,1)·σ/√S)
    refractory (ref > 0):  v ← v_reset;  ref ← max(ref − h, 0)
    v > v_threshold:  fired[k] = 1;  spike = 1;  v ← v_reset;  ref ← t_refrac

:func:`fine_steps_numpy` runs it as array operations over (batch, neurons)
per fine step (a dozen array passes with temporaries each); :func:`fine_steps`
fuses the loop per neuron with numba, so a model step costs one pass over the
state. The emulator uses the compiled one when numba is importable.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path stays usable without it
    njit = None

#: parameter arrays a layer needs, in the order the kernels take them
PARAM_KEYS = ("v_leak", "a", "coef", "b", "v_reset", "v_threshold", "t_refrac")


def fine_steps_numpy(v, i, ref, drive, noise, cuba, P, h):
    """Array version: returns (v, i, ref, spikes (B, n), fired per fine step (S, B, n))."""
    S = drive.shape[0]
    spk = np.zeros(v.shape)
    fired_sub = np.zeros(drive.shape)
    for k in range(S):
        if cuba:
            i = i + drive[k]
            v = P["v_leak"] + (v - P["v_leak"]) * P["a"] + i * P["coef"]
            i = i * P["b"]
        else:
            v = P["v_leak"] + (v - P["v_leak"]) * P["a"] + drive[k]
        if noise is not None:
            v = v + noise[k]
        refr = ref > 0
        if refr.any():  # refractory: held at v_reset
            v = np.where(refr, P["v_reset"], v)
            ref = np.maximum(ref - h, 0.0)
        fired = v > P["v_threshold"]
        if fired.any():
            fired_sub[k] = fired
            spk = np.maximum(spk, fired)
            v = np.where(fired, P["v_reset"], v)
            ref = np.where(fired, P["t_refrac"], ref)
    return v, i, ref, spk, fired_sub


if njit is not None:

    @njit(cache=True)
    def _loop(v, i, ref, drive, noise, has_noise, cuba, vl, a, coef, b, vr, vth, tr, h):
        S, B, n = drive.shape
        spk = np.zeros((B, n))
        fired_sub = np.zeros((S, B, n))
        for bb in range(B):
            for j in range(n):
                vv, ii, rr = v[bb, j], i[bb, j], ref[bb, j]
                for k in range(S):
                    if cuba:
                        ii = ii + drive[k, bb, j]
                        vv = vl[j] + (vv - vl[j]) * a[j] + ii * coef[j]
                        ii = ii * b[j]
                    else:
                        vv = vl[j] + (vv - vl[j]) * a[j] + drive[k, bb, j]
                    if has_noise:
                        vv = vv + noise[k, bb, j]
                    if rr > 0:
                        vv = vr[j]
                        rr = max(rr - h, 0.0)
                    if vv > vth[j]:
                        fired_sub[k, bb, j] = 1.0
                        spk[bb, j] = 1.0
                        vv = vr[j]
                        rr = tr[j]
                v[bb, j], i[bb, j], ref[bb, j] = vv, ii, rr
        return v, i, ref, spk, fired_sub


def available() -> bool:
    return njit is not None


def pack(P, n: int) -> tuple:
    """A layer's parameters as the contiguous float64 (n,) arrays the compiled loop takes."""
    return tuple(np.ascontiguousarray(np.broadcast_to(np.asarray(P[k], np.float64), (n,))) for k in PARAM_KEYS)


def fine_steps(v, i, ref, drive, noise, cuba, P, h):
    """Compiled version of :func:`fine_steps_numpy` (same arguments and results;
    ``v``, ``i``, ``ref`` are updated in place and returned). ``P`` may be the
    parameter dict or its :func:`pack` (saves the packing per call)."""
    prm = P if isinstance(P, tuple) else pack(P, v.shape[1])
    v, i, ref = (np.ascontiguousarray(x, dtype=np.float64) for x in (v, i, ref))
    has_noise = noise is not None
    nz = np.ascontiguousarray(noise, dtype=np.float64) if has_noise else np.zeros((1, 1, 1))
    return _loop(v, i, ref, np.ascontiguousarray(drive, dtype=np.float64), nz, has_noise, bool(cuba), *prm, float(h))
