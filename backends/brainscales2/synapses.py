"""Synapse-array configuration of one projection: rows, columns, labels, signs.

The row model (halco's synapse array, HARDWARE.md): a *row* is driven by one
synapse driver with the events of one source **group** (≤ 64 sources, each
with a 6-bit **label**); every synapse of the row sits in one *column* (one
neuron circuit), stores a 6-bit magnitude and a label, and conducts only for
events whose label matches. A row has **one sign** (excitatory/inhibitory).
A logical neuron of k merged circuits owns k columns, so it can take k
synapses from the same row.

:func:`array_config` takes the signed 6-bit matrix ``w6`` (post, pre), a
labelling (``group``/``label`` per source, from the ``rewire`` pass's
``RowMap`` or :func:`nmc.passes.rewire.rewire_matrix`) and the circuits per
neuron, and assigns every synapse a row and a column:

* synapses are grouped into blocks (source group, sign); within a block each
  neuron's synapses are ranked (by the given row order, if any), and rank r of
  a neuron with k circuits goes to block row ⌊r/k⌋, column (its first circuit
  + r mod k);
* a block gets as many rows as its deepest neuron needs; blocks are stacked.

So (row, column) holds at most one synapse, a row serves one group and one
sign, and the emulator can rebuild the weight matrix from the array alone
(:func:`effective_matrix`, the label-matching rule).
"""
from __future__ import annotations

import math

import numpy as np


def array_config(w6: np.ndarray, group: np.ndarray, label: np.ndarray, circuits: np.ndarray,
                 order: np.ndarray | None = None, signs: np.ndarray | None = None) -> dict:
    """Rows/columns for the non-zero synapses of ``w6`` (post, pre).

    ``order`` (post, pre): a row index per synapse whose relative order ranks
    the synapses of a neuron inside a block (e.g. the RowMap's); default: by
    source index. Returns rows (post, pre; −1 = no synapse), col (post, pre;
    local column), n_rows, row_sign, row_group, arr_w (rows, columns) magnitudes,
    arr_label (rows, columns; −1 = empty). ``signs`` (post, pre; −1/0/+1): which synapses
    exist and their row sign, default sign(w6) (a plastic projection places weight-0
    synapses too, :mod:`.ppu_lower`)."""
    n_post, n_pre = w6.shape
    circuits = np.asarray(circuits, np.int64)
    cstart = np.concatenate([[0], np.cumsum(circuits)[:-1]]).astype(np.int64)
    n_cols = int(circuits.sum())
    sg = np.sign(w6) if signs is None else np.asarray(signs)
    jj, ii = np.nonzero(sg)
    sgn = (sg[jj, ii] < 0).astype(np.int64)  # 0 = excitatory, 1 = inhibitory
    block = np.asarray(group, np.int64)[ii] * 2 + sgn
    key = order[jj, ii] if order is not None else ii
    o = np.lexsort((key, jj, block))
    jj, ii, sgn, block = jj[o], ii[o], sgn[o], block[o]
    rows = np.full((n_post, n_pre), -1, np.int64)
    col = np.full((n_post, n_pre), -1, np.int64)
    if jj.size == 0:
        return {"rows": rows, "col": col, "n_rows": 0, "row_sign": np.zeros(0, np.int64),
                "row_group": np.zeros(0, np.int64), "arr_w": np.zeros((0, n_cols), np.int64),
                "arr_label": np.zeros((0, n_cols), np.int64)}
    new = np.r_[True, (block[1:] != block[:-1]) | (jj[1:] != jj[:-1])]
    starts = np.flatnonzero(new)
    rank = np.arange(jj.size) - np.repeat(starts, np.diff(np.r_[starts, jj.size]))
    k = circuits[jj]
    local = rank // k
    blocks, inv = np.unique(block, return_inverse=True)
    depth = np.zeros(blocks.size, np.int64)
    np.maximum.at(depth, inv, local + 1)
    base = np.concatenate([[0], np.cumsum(depth)[:-1]])
    r = base[inv] + local
    c = cstart[jj] + rank % k
    rows[jj, ii], col[jj, ii] = r, c
    n_rows = int(depth.sum())
    row_sign = np.repeat(np.where(blocks % 2 == 0, 1, -1), depth)
    row_group = np.repeat(blocks // 2, depth)
    arr_w = np.zeros((n_rows, n_cols), np.int64)
    arr_label = np.full((n_rows, n_cols), -1, np.int64)
    arr_w[r, c] = np.abs(w6[jj, ii])
    arr_label[r, c] = np.asarray(label, np.int64)[ii]
    return {"rows": rows, "col": col, "n_rows": n_rows, "row_sign": row_sign, "row_group": row_group,
            "arr_w": arr_w, "arr_label": arr_label}


def effective_matrix(arr_w, arr_label, row_sign, row_group, group, label, circuits, n_pre) -> np.ndarray:
    """The signed integer matrix (post, pre) the array realises: an event of
    source i (group g, label ℓ) is sent on every row serving g; the synapse at
    (row, column) conducts iff its stored label is ℓ; a neuron sums its columns."""
    circuits = np.asarray(circuits, np.int64)
    col_neuron = np.repeat(np.arange(circuits.size), circuits)
    n_groups = int(np.max(group, initial=-1)) + 1
    src = np.full((max(n_groups, 1), 64 if n_pre == 0 else max(64, int(np.max(label, initial=0)) + 1)), -1, np.int64)
    src[np.asarray(group, np.int64), np.asarray(label, np.int64)] = np.arange(n_pre)
    rr, cc = np.nonzero(arr_label >= 0)
    i = src[row_group[rr], arr_label[rr, cc]]
    if np.any(i < 0):
        raise ValueError("a synapse label matches no source of its row's group")
    W = np.zeros((circuits.size, n_pre), np.int64)
    np.add.at(W, (col_neuron[cc], i), row_sign[rr] * arr_w[rr, cc])
    return W


def rows_lower_bound(w6: np.ndarray, circuits: np.ndarray, per_row: int) -> int:
    """Rows any row/label assignment needs for this projection, given the
    circuits per neuron. Rows of the two signs are disjoint, and for each sign
    s: a column holds one synapse per row, so rows_s ≥ max_j ⌈deg_s(j)/k_j⌉;
    a row serves ≤ per_row sources, so rows_s ≥ ⌈sources with an s-synapse/per_row⌉.
    The bound is Σ_s of the larger of the two."""
    k = np.asarray(circuits, np.int64)
    total = 0
    for s in (1, -1):
        m = (w6 * s) > 0
        deg = int(np.max(-(-m.sum(1) // k), initial=0))
        total += max(deg, math.ceil(int(m.any(0).sum()) / per_row))
    return total
