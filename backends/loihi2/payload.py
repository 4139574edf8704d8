"""Lava payloads from user inputs in one pass: the integer check, the port's range check and the
conversion to int64 (:func:`payload_of`).

A port's payloads are integers: 0/1 spikes (``bits == 0``) or signed ``bits``-bit graded payloads
(``−2^(bits−1) ≤ x < 2^(bits−1)``). The first rule broken anywhere in the array is reported, in this
order of precedence: a value that is not an integer (``x ≠ rint(x)``), then a binary port's value other
than 0/1, then a graded value out of range. One compiled pass (numba) over the array; without numba the
same checks as numpy expressions (same result).
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy form stays usable without it
    njit = None

OK, NOT_INTEGER, NOT_BINARY, OUT_OF_RANGE = 0, 1, 2, 3


def _numpy(a: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    if np.any(a != np.rint(a)):
        return np.zeros(0, np.int64), NOT_INTEGER
    if bits == 0 and np.any((a != 0) & (a != 1)):
        return np.zeros(0, np.int64), NOT_BINARY
    if bits > 0 and a.size and (a.min() < -(2 ** (bits - 1)) or a.max() >= 2 ** (bits - 1)):
        return np.zeros(0, np.int64), OUT_OF_RANGE
    return a.astype(np.int64), OK


if njit is not None:

    @njit(cache=True)
    def _compiled(a, lo, hi):
        out = np.empty(a.size, np.int64)
        not_int, bad = False, False
        for i in range(a.size):
            x = a[i]
            if x != np.rint(x):
                not_int = True
            elif x < lo or x > hi:
                bad = True
            else:
                out[i] = np.int64(x)
        return out, NOT_INTEGER if not_int else (OUT_OF_RANGE if bad else OK)


def payload_of(a: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``(int64 payloads of a's shape, OK)`` or ``(anything, the first rule broken)``."""
    a = np.asarray(a)
    if njit is None or a.dtype.kind not in "biuf":
        return _numpy(a, bits)
    # integers stay exact as int64, every other value as float64 (a uint beyond 2^63 fails the range)
    x = a.astype(np.int64, copy=False) if a.dtype.kind in "bi" else a.astype(np.float64, copy=False)
    lo, hi = (0, 1) if bits == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    out, code = _compiled(np.ascontiguousarray(x).reshape(-1), x.dtype.type(lo), x.dtype.type(hi))
    if code == OUT_OF_RANGE and bits == 0:
        code = NOT_BINARY
    return out.reshape(a.shape), code
