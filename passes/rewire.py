"""``rewire``: offline structural rewiring onto labelled synapse rows.

The row model (BrainScaleS-2's synapse array; a per-core synapse memory on
the digital targets): a *row* is driven by one event source group; every
synapse of the row (one per target neuron = column) stores a weight and a
``label``; an event reaches the synapse only if its label matches, so one row
can serve up to ``sources_per_row`` (64 with 6-bit labels) sources, but a
column can hold only one of them per row. A row has one sign.

For every Affine/Linear weight node feeding a neuron node, the pass

1. keeps the strongest ``fan_in`` inputs of each neuron (|w|);
2. splits the sources into label groups of ≤ ``sources_per_row``, greedily
   (sources with the most connections first, each into the group where it
   raises the row count least);
3. gives each (group, sign) as many rows as the largest number of kept inputs
   any neuron takes from that group with that sign, and assigns each kept
   synapse a row and its source a label;
4. refills the free synapses of those rows with the strongest pruned
   candidates of the same group and sign (free: no extra rows);
5. zeroes the weights that did not survive and reports the weight error.

Lower bounds (reported beside the rows used): rows ≥ max over signs of the
largest per-sign in-degree; rows ≥ Σ_groups ⌈sources/``sources_per_row``⌉ ×
(signs used) — the second counts what any labelling needs for the sources
that have synapses. Annotation ``RowMap`` holds per source its group and
label and per synapse its row (−1 when pruned).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import RowMap
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import is_neuron

from .manager import Pass, PassContext, register


def _spec_value(ctx, key, default):
    if ctx.spec is not None and ctx.spec.has(key):
        return int(ctx.spec.get(key))
    return default


def group_sources(signs: np.ndarray, per_row: int) -> np.ndarray:
    """Greedy grouping. ``signs``: (out, in) in {−1, 0, 1}. Returns group id per source."""
    n_out, n_in = signs.shape
    n_groups = max(1, math.ceil(n_in / per_row))
    pos, neg = (signs > 0), (signs < 0)
    counts = np.zeros((n_groups, 2, n_out), dtype=np.int64)
    size = np.zeros(n_groups, dtype=np.int64)
    group = np.zeros(n_in, dtype=np.int64)
    order = np.argsort(-(pos.sum(0) + neg.sum(0)), kind="stable")
    for i in order:
        p, q = pos[:, i], neg[:, i]
        cur = counts.max(axis=2).sum(1)
        new = np.maximum(counts[:, 0].max(1), (counts[:, 0] + p).max(1)) + \
            np.maximum(counts[:, 1].max(1), (counts[:, 1] + q).max(1))
        cost = (new - cur).astype(float)
        cost[size >= per_row] = np.inf
        gsel = int(np.argmin(cost))
        group[i] = gsel
        size[gsel] += 1
        counts[gsel, 0] += p
        counts[gsel, 1] += q
    return group


def rewire_matrix(W: np.ndarray, fan_in: int, per_row: int) -> dict:
    """Rewire one weight matrix (out, in). Returns the kept weights, row map and statistics."""
    n_out, n_in = W.shape
    mag = np.abs(W)
    kept = np.zeros_like(W, dtype=bool)
    if n_in:
        k = min(fan_in, n_in)
        top = np.argsort(-mag, axis=1, kind="stable")[:, :k]
        kept[np.arange(n_out)[:, None], top] = True
    kept &= W != 0
    signs = np.sign(W) * kept
    group = group_sources(signs, per_row)
    n_groups = int(group.max()) + 1 if n_in else 0
    label = np.zeros(n_in, dtype=np.int64)
    for gid in range(n_groups):
        idx = np.flatnonzero(group == gid)
        label[idx] = np.arange(idx.size)
    rows_of: dict[tuple[int, int], int] = {}
    row_base: dict[tuple[int, int], int] = {}
    synapse_row = np.full((n_out, n_in), -1, dtype=np.int64)
    total = 0
    refilled = 0
    for gid in range(n_groups):
        src = group == gid
        for si, sgn in enumerate((1, -1)):
            sel = kept & src[None, :] & (np.sign(W) == sgn)
            deg = sel.sum(1)
            r = int(deg.max(initial=0))
            if r == 0:
                continue
            rows_of[(gid, sgn)] = r
            row_base[(gid, sgn)] = total
            # refill: free synapses (r − deg per neuron) take the strongest pruned candidates of this group/sign
            cand = src[None, :] & ~kept & (np.sign(W) == sgn)
            free = r - deg
            if free.any() and cand.any():
                cm = np.where(cand, mag, -1.0)
                order = np.argsort(-cm, axis=1, kind="stable")
                for j in np.flatnonzero(free):
                    take = [i for i in order[j, : free[j]] if cm[j, i] > 0]
                    kept[j, take] = True
                    sel[j, take] = True
                    refilled += len(take)
            jj, ii = np.nonzero(sel)
            # row within the (group, sign) block: the rank of the synapse among its column's synapses
            rank = np.zeros_like(jj)
            if jj.size:
                o = np.lexsort((ii, jj))
                jj, ii = jj[o], ii[o]
                starts = np.r_[0, np.flatnonzero(np.diff(jj)) + 1]
                rank = np.arange(jj.size) - np.repeat(starts, np.diff(np.r_[starts, jj.size]))
            synapse_row[jj, ii] = total + rank
            total += r
    new_W = np.where(kept, W, 0.0)
    ref = np.linalg.norm(W)
    indeg = [int(((np.sign(W) == s) & kept).sum(1).max(initial=0)) for s in (1, -1)]
    used_sources = (kept.any(0))
    lb_groups = 0
    for s in (1, -1):
        n_src = int(((np.sign(W) == s) & kept).any(0).sum())
        lb_groups += math.ceil(n_src / per_row)
    return {"W": new_W, "group": group, "label": label, "synapse_row": synapse_row,
            "rows": total, "rows_lower_bound": max(max(indeg), lb_groups),
            "lb_in_degree": max(indeg), "lb_label_groups": lb_groups,
            "weight_error": float(np.linalg.norm(W - new_W) / ref) if ref > 0 else 0.0,
            "kept": int(kept.sum()), "refilled": int(refilled), "sources_used": int(used_sources.sum()),
            "groups": n_groups}


@register
@dataclass(frozen=True)
class Rewire(Pass):
    name = "rewire"
    summary = "fan-in budget, label groups and synapse rows (structural rewiring), rows vs lower bounds"
    provides = ("rowmap",)
    fan_in: int | None = None
    sources_per_row: int | None = None
    rows_max: int | None = None

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        fan_in = self.fan_in or _spec_value(ctx, "synapse_array.fan_in_signed", None)
        per_row = self.sources_per_row or _spec_value(ctx, "synapse_array.sources_per_row", None)
        rows_max = self.rows_max or _spec_value(ctx, "synapse_array.rows", None)
        if fan_in is None or per_row is None:
            raise OptionError("rewire needs a fan-in budget and sources per row",
                              hint="compile for a target whose spec has [synapse_array], or pass "
                                   "rewire{fan_in=128,sources_per_row=64}")
        report = {"fan_in": fan_in, "sources_per_row": per_row, "rows_max": rows_max, "layers": {}, "skipped": {}}
        for name, node in list(g.nodes.items()):
            if not isinstance(node, (nir.Affine, nir.Linear)):
                if isinstance(node, (nir.Conv1d, nir.Conv2d)):
                    report["skipped"][name] = "convolution: expand it to a dense layer to rewire it"
                continue
            if not any(is_neuron(g.nodes[s]) for s in g.succs(name)):
                report["skipped"][name] = "does not feed a neuron node"
                continue
            r = rewire_matrix(np.asarray(node.weight, dtype=float), fan_in, per_row)
            node.weight = r["W"]
            g.annotate(name, RowMap(group=r["group"], label=r["label"], synapse_row=r["synapse_row"], rows=r["rows"]))
            st = {k: r[k] for k in ("rows", "rows_lower_bound", "lb_in_degree", "lb_label_groups", "weight_error",
                                    "kept", "refilled", "sources_used", "groups")}
            st["gap"] = r["rows"] - r["rows_lower_bound"]
            report["layers"][name] = st
            if rows_max is not None and r["rows"] > rows_max:
                ctx.warnings.add(f"layer '{name}' needs {r['rows']} synapse rows, more than the {rows_max} of one "
                                 f"array (lower the fan-in budget, e.g. rewire{{fan_in={max(1, fan_in // 2)}}})",
                                 node=name, source="rewire")
        ctx.reports["rewire"] = report
        return g
