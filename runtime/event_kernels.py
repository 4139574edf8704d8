"""Compiled (numba) fast paths of the event conversions a session runs every window.

:func:`nmc.runtime.events.to_dense` and :func:`~nmc.runtime.events.from_dense`
are a dozen numpy calls each (field views, range checks, ``bincount``,
``nonzero``, fancy indexing, casts): at a window of 4 steps × 1024 channels
with ~400 events those fixed costs are most of a local session's time. The
kernels here do each conversion in one pass with the checks folded in
(``from_dense``: a branch-free, vectorised count of the non-zeros, then one pass
writing them straight into the event array's fields), and
check and convert a whole array of wire records in one pass when it is
packed or read (:func:`encode`, :func:`decode`, writing the u32 words or the
event fields in place), and check a window before it is sent
(:func:`window_kind`: in range, finite, binary or graded). They
only ever take the *accepting* path: when an event or value would be refused
(out of range, not finite, a payload the caller said is binary) they return
``None`` and the caller runs the numpy code, which raises the usual error
naming the first bad event. Results are the same bits: payloads are summed
in float64 in event order, as ``bincount`` does, and events come out in the
row-major (t, ch) order of ``nonzero``.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy paths stay usable without it
    njit = None

if njit is not None:

    @njit(cache=True)
    def _scatter(t, ch, v, steps, n, out):
        """out[t·n + ch] += v in event order; False at the first event a check refuses."""
        for i in range(t.shape[0]):
            ti, ci, vi = t[i], ch[i], v[i]
            if ti < 0 or ti >= steps or ci >= n or not np.isfinite(vi):
                return False
            out[ti * n + ci] += np.float64(vi)
        return True

    @njit(cache=True)
    def _count_nonzero(flat):
        """Non-zeros of a (T, n) array, or -1 when a value is not finite (branch-free: vectorised)."""
        T, n = flat.shape
        k = 0
        finite = True
        for i in range(T):
            for j in range(n):
                x = flat[i, j]
                k += x != 0
                finite &= x - x == 0   # False for inf and NaN
        return k if finite else -1

    @njit(cache=True)
    def _gather(flat, binary_only, t, c, v):
        """The non-zeros of a (T, n) array in row-major order into the event fields t, ch, v (sized
        by :func:`_count_nonzero`); False at the first value refused (not 1 with ``binary_only``,
        over float32)."""
        T, n = flat.shape
        k = 0
        for i in range(T):
            for j in range(n):
                x = flat[i, j]
                if x != 0:
                    if binary_only and x != 1:
                        return False
                    v32 = np.float32(x)
                    if not np.isfinite(v32):   # overflows the float32 payload
                        return False
                    t[k], c[k], v[k] = i, j, v32
                    k += 1
        return True


    @njit(cache=True)
    def _window_kind(t, ch, v, steps, n):
        """0 when an event would be refused (t outside [0, steps), ch >= n, payload not finite),
        else 1 (every payload 1.0: binary records) or 2 (graded records)."""
        graded = False
        for i in range(t.shape[0]):
            if t[i] < 0 or t[i] >= steps or ch[i] >= n or not np.isfinite(v[i]):
                return 0
            graded |= v[i] != 1.0
        return 2 if graded else 1

    @njit(cache=True)
    def _encode(t, ch, v, graded, u, f):
        """Wire records into the u32 words ``u`` (``f``: the same words as float32): per event
        t, ch[, v]; False at the first event that does not fit (the caller lets pack raise)."""
        w = 3 if graded else 2
        for i in range(t.shape[0]):
            ti, vi = t[i], v[i]
            if ti < 0 or ti > 4294967295 or not np.isfinite(vi) or (not graded and vi != 1.0):
                return False
            u[i * w] = ti
            u[i * w + 1] = ch[i]
            if graded:
                f[i * w + 2] = vi
        return True

    @njit(cache=True)
    def _decode(u, f, graded, steps, n, t, ch, v):
        """Wire records (u32 words ``u``, the same as float32 ``f``) into the event fields; False at
        the first record refused (t >= steps, ch >= n, payload not finite; -1: no bound)."""
        w = 3 if graded else 2
        for i in range(t.shape[0]):
            ti, ci = u[i * w], u[i * w + 1]
            if (steps >= 0 and ti >= steps) or (n >= 0 and ci >= n):
                return False
            t[i], ch[i] = ti, ci
            if graded:
                vi = f[i * w + 2]
                if not np.isfinite(vi):
                    return False
                v[i] = vi
            else:
                v[i] = 1.0
        return True


def available() -> bool:
    return njit is not None


def to_dense_f64(t: np.ndarray, ch: np.ndarray, v: np.ndarray, steps: int, n: int) -> np.ndarray | None:
    """Flat float64 (steps·n) sums of the payloads, or None when an event would be refused."""
    out = np.zeros(steps * n, np.float64)
    return out if _scatter(t, ch, v, steps, n, out) else None


def nonzero_events(flat: np.ndarray, binary_only: bool, dtype: np.dtype) -> np.ndarray | None:
    """The non-zeros of a float (T, n) array as an event array of ``dtype`` (fields t, ch, v),
    written in place by the kernel, or None when a value would be refused (not finite, over
    float32, or not 1 with ``binary_only``)."""
    k = _count_nonzero(flat)
    if k < 0:
        return None
    out = np.empty(k, dtype)
    return out if _gather(flat, binary_only, out["t"], out["ch"], out["v"]) else None


def window_kind(ev: np.ndarray, steps: int, n: int) -> int:
    """0: an event of ``ev`` would be refused in a window of ``steps`` × ``n`` channels (let the
    numpy checks raise); 1: all binary; 2: graded payloads."""
    return int(_window_kind(ev["t"], ev["ch"], ev["v"], int(steps), int(n)))


def encode(ev: np.ndarray, graded: bool) -> bytes | None:
    """Wire records of ``ev`` (little-endian u32 t, u32 ch[, f32 v]), or None when one does not fit."""
    u = np.empty(len(ev) * (3 if graded else 2), "<u4")
    return u.tobytes() if _encode(ev["t"], ev["ch"], ev["v"], bool(graded), u, u.view("<f4")) else None


def decode(data, graded: bool, steps: int | None, n: int | None, dtype: np.dtype) -> np.ndarray | None:
    """Wire records (a whole number of them) → an event array of ``dtype``, or None when a record
    would be refused (the caller's checks then raise, naming it)."""
    u = np.frombuffer(data, "<u4")
    out = np.empty(len(u) // (3 if graded else 2), dtype)
    ok = _decode(u, u.view("<f4"), bool(graded), -1 if steps is None else int(steps), -1 if n is None else int(n),
                 out["t"], out["ch"], out["v"])
    return out if ok else None
