"""``rewire``: offline structural rewiring onto labelled synapse rows.

The row model (BrainScaleS-2's synapse array; a per-core synapse memory on
the digital targets): a *row* is driven by one event source group; every
synapse of the row (one per target neuron = column) stores a weight and a
``label``; an event reaches the synapse only if its label matches, so one row
can serve up to ``sources_per_row`` (64 with 6-bit labels) sources, but a
column can hold only one of them per row. A row has one sign.

For every neuron node fed by Affine/Linear weight nodes (all of them together:
the feed-forward and recurrent inputs of a neuron share its column), the pass

1. keeps the strongest ``fan_in`` inputs of each neuron (|w|);
2. splits the sources into label groups of ≤ ``sources_per_row``, greedily
   (sources with the most connections first, each into the group where it
   raises the row count least), then improves the grouping by local moves
   (a source moves to another group with a free label when that lowers the
   rows); the sequential grouping is taken instead if it needs fewer rows;
3. gives each (group, sign) as many rows as the largest number of kept inputs
   any neuron takes from that group with that sign, and assigns each kept
   synapse a row and its source a label;
4. refills the free synapses of those rows with the strongest pruned
   candidates of the same group and sign (free: no extra rows; a neuron may
   then exceed the budget, never the rows; ``refill=false`` keeps the budget
   strict);
5. zeroes the weights that did not survive (and their ``Quant.w_int``) and
   reports the weight error.

Lower bounds (reported beside the rows used, for the fan-in-pruned matrix the
grouping had to place): per sign s, rows_s ≥ the largest per-sign in-degree
d_s (a neuron's d_s synapses of sign s need d_s distinct rows of that sign)
and rows_s ≥ ⌈sources_s/``sources_per_row``⌉ (a row serves one group); rows
≥ Σ_s max(d_s, ⌈sources_s/per_row⌉), which is at least each of the issue's
two bounds (largest per-sign in-degree; ⌈sources/64⌉ per label group). The
baseline of sequential grouping (sources in index order, 64 per group) is
reported beside. Parameters come from the HardwareSpec
(``synapse_array.fan_in_signed``, ``.sources_per_row``, ``.rows``) unless
given as options. Annotation ``RowMap`` holds per source its group and label
and per synapse its row (−1 when pruned); row numbers are shared by all the
weight nodes into one neuron node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nmc.annotations import Quant, RowMap
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import is_dense, is_neuron, is_weight

from .manager import Pass, PassContext, register


def _spec_value(ctx, key, default):
    if ctx.spec is not None and ctx.spec.has(key):
        return int(ctx.spec.get(key))
    return default


def rows_needed(signs: np.ndarray, group: np.ndarray) -> int:
    """Σ over (group, sign) of the largest per-neuron synapse count: the rows a
    labelling needs. ``signs`` (out, in) in {−1, 0, 1}."""
    n_groups = int(group.max(initial=-1)) + 1
    tot = 0
    for sgn in (1, -1):
        onehot = np.zeros((signs.shape[1], max(n_groups, 1)))
        onehot[np.arange(signs.shape[1]), group] = 1
        tot += int(((signs == sgn).astype(float) @ onehot).max(axis=0, initial=0).sum())
    return tot


def sequential_groups(n_in: int, per_row: int) -> np.ndarray:
    return np.arange(n_in) // per_row


def group_sources(signs: np.ndarray, per_row: int, sweeps: int = 2) -> np.ndarray:
    """Greedy grouping plus local moves. ``signs``: (out, in) in {−1, 0, 1}.
    Returns the group id of every source (groups hold ≤ ``per_row`` sources).

    ``counts[g, s, j]``: synapses of sign s that neuron j takes from group g;
    the rows of (g, s) are ``M[g, s] = max_j counts[g, s, j]``. Adding source i
    to g raises M[g, s] to max(M[g, s], 1 + max over i's targets j of
    counts[g, s, j]) — evaluated on i's targets only (sparse columns)."""
    n_out, n_in = signs.shape
    n_groups = max(1, math.ceil(n_in / per_row))
    tgt = [(np.flatnonzero(signs[:, i] > 0), np.flatnonzero(signs[:, i] < 0)) for i in range(n_in)]
    counts = np.zeros((n_groups, 2, n_out), dtype=np.int64)
    M = np.zeros((n_groups, 2), dtype=np.int64)
    size = np.zeros(n_groups, dtype=np.int64)
    group = np.zeros(n_in, dtype=np.int64)

    def raised(i):  # (G, 2): M after adding source i to each group
        out = M.copy()
        for sg in (0, 1):
            t = tgt[i][sg]
            if t.size:
                out[:, sg] = np.maximum(M[:, sg], counts[:, sg][:, t].max(1) + 1)
        return out

    def move(i, g, d):
        for sg in (0, 1):
            counts[g, sg, tgt[i][sg]] += d
            M[g, sg] = counts[g, sg].max(initial=0)
        size[g] += d

    order = np.argsort(-(np.abs(signs).sum(0)), kind="stable")
    for i in order:
        cost = (raised(i) - M).sum(1).astype(float)
        cost[size >= per_row] = np.inf
        gsel = int(np.argmin(cost))
        group[i] = gsel
        move(i, gsel, 1)
    for _ in range(sweeps):  # local moves: take a source out of its group if another group absorbs it for less
        moved = False
        for i in order:
            if not (tgt[i][0].size or tgt[i][1].size):
                continue
            g0 = group[i]
            before = M[g0].sum()
            move(i, g0, -1)
            gain = before - M[g0].sum()
            add = (raised(i) - M).sum(1).astype(float)
            add[size >= per_row] = np.inf
            add[g0] = gain  # staying costs what leaving saved
            gsel = int(np.argmin(add))
            if add[gsel] >= gain:
                gsel = g0
            moved |= gsel != g0
            group[i] = gsel
            move(i, gsel, 1)
        if not moved:
            break
    return group


def lower_bounds(signs: np.ndarray, per_row: int) -> dict:
    """Rows any labelling needs for the synapses in ``signs`` (see the module docstring)."""
    out = {"lb_in_degree": 0, "lb_label_groups": 0, "rows_lower_bound": 0}
    for s in (1, -1):
        sel = signs == s
        d = int(sel.sum(1).max(initial=0))
        src = math.ceil(int(sel.any(0).sum()) / per_row)
        out["lb_in_degree"] = max(out["lb_in_degree"], d)
        out["lb_label_groups"] += src
        out["rows_lower_bound"] += max(d, src)
    return out


def rewire_matrix(W: np.ndarray, fan_in: int, per_row: int, sweeps: int = 2, refill: bool = True) -> dict:
    """Rewire one weight matrix (out, in). Returns the kept weights, row map and statistics.

    Without ``refill`` every neuron keeps ≤ ``fan_in`` synapses; with it a
    neuron may exceed the budget by synapses that fit rows already allocated
    (never more than ``rows``: one synapse per row and column)."""
    n_out, n_in = W.shape
    mag = np.abs(W)
    sgnW = np.sign(W)
    kept = np.zeros_like(W, dtype=bool)
    if n_in and fan_in > 0:
        k = min(fan_in, n_in)
        top = np.argsort(-mag, axis=1, kind="stable")[:, :k]
        kept[np.arange(n_out)[:, None], top] = True
    kept &= W != 0
    signs = (sgnW * kept).astype(np.int64)
    bounds = lower_bounds(signs, per_row)
    group = group_sources(signs, per_row, sweeps) if n_in else np.zeros(0, np.int64)
    seq = sequential_groups(n_in, per_row)
    rows_seq = rows_needed(signs, seq) if n_in else 0
    if n_in and rows_seq < rows_needed(signs, group):  # never worse than the baseline
        group = seq
    n_groups = int(group.max()) + 1 if n_in else 0
    label = np.zeros(n_in, dtype=np.int64)
    for gid in range(n_groups):
        idx = np.flatnonzero(group == gid)
        label[idx] = np.arange(idx.size)
    synapse_row = np.full((n_out, n_in), -1, dtype=np.int64)
    total = refilled = 0
    for gid in range(n_groups):
        cols = np.flatnonzero(group == gid)  # work on the group's columns only
        kg, sg, mg = kept[:, cols], sgnW[:, cols], mag[:, cols]
        for sgn in (1, -1):
            sel = kg & (sg == sgn)
            deg = sel.sum(1)
            r = int(deg.max(initial=0))
            if r == 0:
                continue
            # refill: the r − deg free synapses of each neuron take its strongest pruned candidates of this block
            if refill:
                cm = np.where(~kg & (sg == sgn), mg, -1.0)
                order = np.argsort(-cm, axis=1, kind="stable")
                rank = np.empty_like(order)
                np.put_along_axis(rank, order, np.arange(cols.size)[None, :].repeat(n_out, 0), axis=1)
                add = (cm > 0) & (rank < (r - deg)[:, None])
                kg |= add
                sel |= add
                refilled += int(add.sum())
            jj, ii = np.nonzero(sel)  # row-major: per neuron, sources ascending
            starts = np.r_[0, np.flatnonzero(np.diff(jj)) + 1] if jj.size else np.zeros(0, np.int64)
            within = np.arange(jj.size) - np.repeat(starts, np.diff(np.r_[starts, jj.size]))
            synapse_row[jj, cols[ii]] = total + within
            total += r
        kept[:, cols] = kg
    new_W = np.where(kept, W, 0.0)
    ref = np.linalg.norm(W)
    pruned = (W != 0) & (signs != 0)
    return {"W": new_W, "group": group, "label": label, "synapse_row": synapse_row, "rows": total, **bounds,
            "rows_sequential": rows_seq,
            "weight_error": float(np.linalg.norm(W - new_W) / ref) if ref > 0 else 0.0,
            "kept": int(kept.sum()), "kept_by_budget": int(pruned.sum()), "refilled": int(refilled),
            "sources_used": int(kept.any(0).sum()), "groups": n_groups,
            "max_fan_in": int(kept.sum(1).max(initial=0))}


@register
@dataclass(frozen=True)
class Rewire(Pass):
    name = "rewire"
    summary = "fan-in budget, label groups and synapse rows (structural rewiring), rows vs lower bounds"
    provides = ("rowmap",)
    fan_in: int | None = None
    sources_per_row: int | None = None
    rows_max: int | None = None
    sweeps: int = 2
    bounds = {"fan_in": (1, None), "sources_per_row": (1, None), "rows_max": (1, None), "sweeps": (0, None)}
    refill: bool = True

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        fan_in = self.fan_in or _spec_value(ctx, "synapse_array.fan_in_signed", None)
        per_row = self.sources_per_row or _spec_value(ctx, "synapse_array.sources_per_row", None)
        rows_max = self.rows_max or _spec_value(ctx, "synapse_array.rows", None)
        if fan_in is None or per_row is None:
            raise OptionError("rewire needs a fan-in budget and sources per row",
                              hint="compile for a target whose spec has [synapse_array], or pass "
                                   "rewire{fan_in=128,sources_per_row=64}")
        if fan_in < 1 or per_row < 1:
            raise OptionError(f"fan_in and sources_per_row must be ≥ 1, got {fan_in} and {per_row}")
        report = {"fan_in": fan_in, "sources_per_row": per_row, "rows_max": rows_max, "neurons": {},
                  "layers": {}, "skipped": {}}
        for name, node in g.nodes.items():
            if is_weight(node) and not is_dense(node):     # a convolution
                report["skipped"][name] = "convolution: expand it to a dense layer to rewire it"
            elif is_dense(node) and not any(is_neuron(g.nodes[s]) for s in g.succs(name)):
                report["skipped"][name] = "does not feed a neuron node"
        for n, node in list(g.nodes.items()):
            if not is_neuron(node):
                continue
            ws = [p for p in g.preds(n) if is_dense(g.nodes[p]) and g.succs(p) == [n]]
            for p in g.preds(n):
                if is_dense(g.nodes[p]) and p not in ws:
                    report["skipped"][p] = "feeds several nodes (no single neuron column)"
            if not ws:
                continue
            mats = [np.asarray(g.nodes[p].weight, dtype=float) for p in ws]
            r = rewire_matrix(np.concatenate(mats, axis=1), fan_in, per_row, self.sweeps, self.refill)
            off = 0
            for p, m in zip(ws, mats):
                sl = slice(off, off + m.shape[1])
                off += m.shape[1]
                g.nodes[p].weight = r["W"][:, sl]
                g.annotate(p, RowMap(group=r["group"][sl], label=r["label"][sl],
                                     synapse_row=r["synapse_row"][:, sl], rows=r["rows"]))
                q = g.ann(p, Quant)
                if q is not None and q.w_int is not None:
                    g.annotate(p, Quant(bits=q.bits, scheme=q.scheme, scale=q.scale, method=q.method,
                                        w_int=np.where(r["W"][:, sl] != 0, q.w_int, 0).astype(np.asarray(q.w_int).dtype)))
                g.annotations[p].pop("sparsity", None)  # stale: sparsify after rewire recomputes it
                report["layers"][p] = {"neuron": n, "kept": int((r["W"][:, sl] != 0).sum()),
                                       "weight_error": float(np.linalg.norm(m - r["W"][:, sl]) /
                                                             (np.linalg.norm(m) or 1.0))}
            st = {k: r[k] for k in ("rows", "rows_lower_bound", "lb_in_degree", "lb_label_groups", "rows_sequential",
                                    "weight_error", "kept", "kept_by_budget", "refilled", "sources_used", "groups",
                                    "max_fan_in")}
            st["gap"] = r["rows"] - r["rows_lower_bound"]
            st["inputs"] = ws
            report["neurons"][n] = st
            if rows_max is not None and r["rows"] > rows_max:
                ctx.warnings.add(f"neuron node '{n}' needs {r['rows']} synapse rows, more than the {rows_max} of one "
                                 f"array (lower the fan-in budget, e.g. rewire{{fan_in={max(1, fan_in // 2)}}})",
                                 node=n, source="rewire")
        tot = report["neurons"].values()
        report["total"] = {"rows": sum(v["rows"] for v in tot), "rows_lower_bound": sum(v["rows_lower_bound"] for v in tot),
                           "rows_sequential": sum(v["rows_sequential"] for v in tot)}
        ctx.reports["rewire"] = report
        return g
