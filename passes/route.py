"""``route``: multicast trees and routing-table entries for the placed cores.

Model (SpiNNaker-style key/mask multicast, shared by every target; limits
from the spec's ``chip.router_entries_max``):

* every core is one routing key (all neurons on a core share a key prefix),
  so a core's spikes follow one multicast tree to the union of the cores its
  neurons target; host inputs are one more source at global (0, 0);
* trees are unions of dimension-order (X then Y) paths over the global router
  grid (see :mod:`nmc.passes.place`); a spike to a core on the same router
  goes straight out of a local port; delivery inside one core needs no router;
* a router needs a table entry for a tree when the tree *starts* there, *ends*
  there (a local port), *branches* there or *turns* there; a packet passing
  straight through uses default routing and costs no entry;
* ``max_hops`` = the longest source → destination path of any tree.

Raises :class:`~nmc.errors.DesignRuleError` naming every router over the limit.
Writes ``Route(cores, dest_ptr, dest)`` on every neuron node: for each core
holding neurons of the node, the destination cores of its spikes (CSR).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from nmc.annotations import Placement, Route
from nmc.errors import DesignRuleError, PassError, Violation
from nmc.ir import Graph
from nmc.target_model import CoreLimits

from .manager import Pass, PassContext, register
from .netmodel import activity_inputs
from .place import CoreGraph, chip_order, core_graph, geometry_for


def core_positions(g: Graph, cg: CoreGraph, lim: CoreLimits) -> np.ndarray:
    """(K+1, 3) global (gx, gy, slot) per core from the Placement annotations (host last, at (0, 0))."""
    pos = np.zeros((cg.K + 1, 3), dtype=np.int64)
    pos[cg.K] = (0, 0, -1)
    for name in cg.net.pop_names:
        p = g.ann(name, Placement)
        if p.x is None:
            raise PassError("Placement has no mesh position", node=name, hint="run place before route")
        core = np.asarray(p.core, dtype=np.int64)
        cxy = chip_order(lim)[np.asarray(p.chip, dtype=np.int64)]
        pos[core, 0] = cxy[:, 0] * lim.mesh_x + np.asarray(p.x)
        pos[core, 1] = cxy[:, 1] * lim.mesh_y + np.asarray(p.y)
        pos[core, 2] = np.asarray(p.slot)
    return pos


def route_trees(T: sp.csr_matrix, pos: np.ndarray, grid_x: int) -> dict:
    """XY multicast trees for every source core a over its targets b (T[a, b] > 0),
    computed per tree from its extents, not by walking paths. Returns per-router
    entry counts and path statistics.

    With dimension-order routing a tree is one row segment on the source's row
    y = sy (from sx to its leftmost and rightmost target columns) plus, for each
    target column dx, one column segment from (dx, sy) to that column's lowest
    and highest targets. A router of the tree therefore needs an entry exactly
    when it is the source's router (start), a target column's router on the row
    (a turn, a branch or a local port: a packet only passes straight through a
    row router with no target column) or a target's router (a local port);
    every other router of the tree passes the packet straight on."""
    c = T.tocoo()
    a, b = c.row.astype(np.int64), c.col.astype(np.int64)
    if a.size == 0:
        return {"entries": {}, "max_hops": 0, "pairs": 0, "tree_links": 0}
    sx, sy, dx, dy = pos[a, 0], pos[a, 1], pos[b, 0], pos[b, 1]
    n_nodes = int(max(grid_x, int(pos[:, 0].max()) + 1)) * (int(pos[:, 1].max()) + 1)
    node = lambda x, y: y * grid_x + x  # noqa: E731
    keys = np.concatenate([a * n_nodes + node(sx, sy), a * n_nodes + node(dx, sy), a * n_nodes + node(dx, dy)])
    routers, ent = np.unique(np.unique(keys) % n_nodes, return_counts=True)
    # links: the row segment's extent each way per source, the column segments' per (source, column)
    n_src = int(a.max()) + 1
    right, left = np.zeros(n_src, np.int64), np.zeros(n_src, np.int64)
    np.maximum.at(right, a, dx - sx)
    np.maximum.at(left, a, sx - dx)
    col, inv = np.unique(a * (grid_x + 1) + dx, return_inverse=True)
    up, down = np.zeros(col.size, np.int64), np.zeros(col.size, np.int64)
    np.maximum.at(up, inv, dy - sy)
    np.maximum.at(down, inv, sy - dy)
    links = int(right.sum() + left.sum() + up.sum() + down.sum())
    return {"entries": dict(zip(routers.tolist(), ent.tolist())), "max_hops": int((np.abs(dx - sx) + np.abs(dy - sy)).max()),
            "pairs": int(a.size), "tree_links": links}


def node_routes(cg: CoreGraph) -> dict[str, Route]:
    """Route annotation per neuron node: destination cores of each of its cores
    (one sparse product per node: its cores × the cores its neurons reach)."""
    out = {}
    Hc = cg.Hc
    for k, name in enumerate(cg.net.pop_names):
        sl = cg.net.pop_slice(k)
        sub = Hc[sl]
        cores, inv = np.unique(cg.ucore[sl], return_inverse=True)
        U = sp.csr_matrix((np.ones(inv.size, np.float32), (inv.reshape(-1), np.arange(inv.size))),
                          shape=(cores.size, inv.size))
        C = (U @ sub).tocsr()
        C.sort_indices()
        rows = np.repeat(np.arange(cores.size), np.diff(C.indptr))
        keep = C.indices != cores[rows]
        ptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=cores.size))]).astype(np.int64)
        out[name] = Route(cores=cores.astype(np.int32), dest_ptr=ptr, dest=C.indices[keep].astype(np.int32))
    return out


def run_route(g: Graph, limits: CoreLimits, data: dict | None = None,
              ctx: PassContext | None = None) -> tuple[dict, dict[str, Route]]:
    cg = core_graph(g, limits, data, ctx)
    pos = core_positions(g, cg, limits)
    gx = limits.chips_x * limits.mesh_x
    tr = route_trees(cg.T, pos, gx)
    ent = tr["entries"]
    emax = max(ent.values(), default=0)
    rep = {"max_hops": tr["max_hops"], "router_entries_max": int(emax),
           "router_entries_limit": limits.router_entries_max,
           "router_entries_total": int(sum(ent.values())), "routers_used": len(ent),
           "routes": tr["pairs"], "tree_links": tr["tree_links"],
           "router_entries": {f"{r % gx},{r // gx}": int(v) for r, v in sorted(ent.items())}}
    if limits.router_entries_max:
        bad = [(r, v) for r, v in sorted(ent.items()) if v > limits.router_entries_max]
        if bad:
            raise DesignRuleError([Violation(
                "router.entries", f"router ({r % gx},{r // gx})", limits.router_entries_max, v,
                "fewer cores per source (partition{max_neurons_per_core=...} larger), sparsify{density=0.1} "
                "to cut connections, or a bigger spec (e.g. --hw spinnaker2-48chip)",
                "routing-table entries") for r, v in bad], target=limits.target)
    return rep, node_routes(cg)


@register
@dataclass(frozen=True)
class RoutePass(Pass):
    """Multicast routing of the placed cores (see module docstring)."""

    name = "route"
    summary = "XY multicast trees, routing-table entries per router within the spec's limit, max hops"
    requires = ("placement",)
    provides = ("route",)

    mesh: tuple[int, ...] = ()

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        limits = geometry_for(ctx, self.mesh)
        rep, routes = run_route(graph, limits, activity_inputs(graph, ctx)[0], ctx)
        for name, r in routes.items():
            graph.annotate(name, r)
        ctx.reports["placement"] = {**ctx.reports.get("placement", {}), **rep}
        return graph
