"""Packed 2-bit ternary weights for the EGRU PE kernels (``quantize{scheme=ternary}``).

A ternary kernel's weights t ∈ {−1, 0, +1} (one float32 scale per gate row in
``sx``/``sh``, the absmean rule of :func:`nmc.passes.quantize.ternary_rows`) are
stored densely, four to a byte, column by column — no row indices, no column
pointers:

* **codes**: ``0b00`` → 0, ``0b01`` → +1, ``0b11`` → −1 (two's complement in
  two bits); ``0b10`` is never written;
* **order**: the PE's R = 3·n gate rows (gate-major: z rows, r rows, g rows of
  its n units) of input column i occupy the ``stride`` = ⌈R/4⌉ bytes
  ``val[i·stride .. (i+1)·stride)``; row r is in byte ``r / 4``, bits
  ``2·(r % 4)`` (least significant first) and ``2·(r % 4) + 1``.

An event on column i walks the column's R codes and adds its payload v to
``acc[r]`` for a +1, subtracts it for a −1 and skips a 0 — exactly
``acc[r] + (float)t·v`` of the int8 kernels and the emulator (±v is exact, and
an accumulator that starts at +0 is never −0, so a skipped 0 equals adding ±0).
The kernel dict of such a population carries ``wbits`` = 2 beside the
unpacked int8 ``wx``/``wh`` (what the emulator steps and the reports count).

SRAM per PE run of n units: ``(n_in + H)·⌈3n/4⌉`` bytes of codes (input and
recurrent columns) instead of 3 bytes (uint16 row + int8 weight) per kept
weight plus 4 bytes per column pointer. Work per event: the column's 3n codes
decoded (each counted as one MAC by the work model), zeros included.
"""
from __future__ import annotations

import numpy as np

from nmc.errors import InputFileError

#: 2-bit code of each ternary value (and back)
CODE = {0: 0b00, 1: 0b01, -1: 0b11}
VALUE = np.array([0, 1, 0, -1], np.int8)   # code → value (0b10 unused)
WBITS = 2


def is_packed(kernel: dict) -> bool:
    """Whether an EGRU kernel's weights are packed 2-bit ternary codes (``wbits`` = 2)."""
    return "wbits" in kernel and int(np.asarray(kernel["wbits"])) == WBITS


def stride(rows: int) -> int:
    """Bytes per column of a run with ``rows`` gate rows: ⌈rows / 4⌉."""
    return (int(rows) + 3) // 4


def pack(t: np.ndarray) -> np.ndarray:
    """(R, n_cols) ternary → uint8 (n_cols·⌈R/4⌉,), column by column, 4 rows per byte LSB first."""
    t = np.asarray(t)
    if t.size and (t.min() < -1 or t.max() > 1):
        raise InputFileError(f"packed 2-bit EGRU weights must be ternary (−1, 0, +1), found "
                             f"{int(t.min())}..{int(t.max())}", hint="quantize with scheme=ternary, or recompile")
    R, n = t.shape
    s = stride(R)
    codes = np.zeros((n, 4 * s), np.uint8)
    codes[:, :R] = np.where(t.T < 0, CODE[-1], np.where(t.T > 0, CODE[1], CODE[0]))
    q = codes.reshape(n, s, 4)
    return (q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)).astype(np.uint8).reshape(-1)


def unpack(b: np.ndarray, rows: int, n_cols: int) -> np.ndarray:
    """Inverse of :func:`pack`: int8 (rows, n_cols)."""
    s = stride(rows)
    b = np.asarray(b, np.uint8).reshape(n_cols, s)
    codes = np.stack([(b >> (2 * j)) & 3 for j in range(4)], axis=-1).reshape(n_cols, 4 * s)[:, :rows]
    return VALUE[codes].T.copy()


def weight_bytes(n_in: int, H: int, n_units: int) -> int:
    """Bytes of one run's packed codes: input and recurrent columns × ⌈3n/4⌉."""
    return (int(n_in) + int(H)) * stride(3 * int(n_units))


def unit_weight_bytes(n_columns) -> np.ndarray:
    """A unit's share of the codes (3 gate rows × 2 bits per column): 0.75 byte per column; a run
    rounds its columns up to whole bytes, at most 1 byte per column (:func:`round_up_bytes`)."""
    return 0.75 * np.asarray(n_columns, dtype=np.float64)


def round_up_bytes(n_in: int, H: int) -> int:
    """Bound on what a run adds to its units' shares by rounding each column up to whole bytes."""
    return int(n_in) + int(H)


def decoded_per_event(units: int) -> int:
    """Codes an event decodes on a PE run of ``units`` units (every gate row of its column)."""
    return 3 * int(units)


__all__ = ["CODE", "VALUE", "WBITS", "is_packed", "stride", "pack", "unpack", "weight_bytes", "unit_weight_bytes",
           "round_up_bytes", "decoded_per_event"]
