"""The move loop of the ``place`` pass's simulated annealing, compiled with
numba when it is installed (the same function runs as plain Python otherwise).

State: ``pos`` (K+1, 2) global router coordinates per core (row K = the host,
fixed), ``chip``/``slot`` per core, ``occ[chip, slot]`` = core or -1. The core
traffic graph is symmetric CSR (``indptr``, ``indices``, ``data``). Move i
takes core ``movable[picks[i]]`` to slot ``targets[i]`` of its chip (a swap
when that slot is occupied) and is accepted when the change of
Σ w·hops is ≤ 0 or ``u[i] < exp(−Δ/temp)``, temp = temp0·(1 − i/n)³.
All random draws are made by the caller (seeded numpy), so the result is the
same with and without numba.
"""
from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; plain Python keeps the pass usable without it
    njit = None


def _delta(indptr, indices, data, pos, a, nx, ny):
    """Change of Σ w·hops over a's edges when a moves to (nx, ny)."""
    d = 0.0
    ax, ay = pos[a, 0], pos[a, 1]
    for j in range(indptr[a], indptr[a + 1]):
        q = indices[j]
        qx, qy = pos[q, 0], pos[q, 1]
        d += data[j] * ((abs(qx - nx) + abs(qy - ny)) - (abs(qx - ax) + abs(qy - ay)))
    return d


def _weight(indptr, indices, data, a, b):
    for j in range(indptr[a], indptr[a + 1]):
        if indices[j] == b:
            return data[j]
    return 0.0


def _loop(indptr, indices, data, pos, chip, slot, occ, movable, slot_xy, chip_xy, mesh_x, mesh_y,
          picks, targets, u, temp0):
    n = picks.shape[0]
    for i in range(n):
        temp = temp0 * (1.0 - i / n) ** 3 + 1e-9
        a = movable[picks[i]]
        c = chip[a]
        s_new = targets[i]
        s_old = slot[a]
        if s_new == s_old:
            continue
        b = occ[c, s_new]
        nx = chip_xy[c, 0] * mesh_x + slot_xy[s_new, 0]
        ny = chip_xy[c, 1] * mesh_y + slot_xy[s_new, 1]
        d = _delta(indptr, indices, data, pos, a, nx, ny)
        if b >= 0:
            d += _delta(indptr, indices, data, pos, b, pos[a, 0], pos[a, 1])
            w_ab = _weight(indptr, indices, data, a, b)
            if w_ab != 0.0:  # a swap keeps the a–b distance; both deltas counted it as a loss
                d += 2.0 * w_ab * (abs(pos[a, 0] - pos[b, 0]) + abs(pos[a, 1] - pos[b, 1]))
        if d <= 0.0 or u[i] < math.exp(-d / temp):
            occ[c, s_old] = b
            occ[c, s_new] = a
            slot[a] = s_new
            if b >= 0:
                slot[b] = s_old
                pos[b, 0] = pos[a, 0]
                pos[b, 1] = pos[a, 1]
            pos[a, 0] = nx
            pos[a, 1] = ny


if njit is not None:
    _delta = njit(cache=True)(_delta)
    _weight = njit(cache=True)(_weight)
    _loop = njit(cache=True)(_loop)


def run_moves(S, pos, chip, slot, occ, movable, slot_xy, chip_xy, mesh_x, mesh_y, picks, targets, u, temp0) -> None:
    """Apply the moves in place (see module docstring)."""
    _loop(S.indptr.astype(np.int64), S.indices.astype(np.int64), S.data.astype(np.float64), pos, chip, slot, occ,
          movable.astype(np.int64), slot_xy.astype(np.int64), chip_xy.astype(np.int64), int(mesh_x), int(mesh_y),
          picks.astype(np.int64), targets.astype(np.int64), u.astype(np.float64), float(temp0))
