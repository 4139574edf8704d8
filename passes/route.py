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

from . import rules
from .manager import Pass, PassContext, register
from .partition import _ranges
from .place import CoreGraph, chip_order, core_graph, geometry_for


def core_positions(g: Graph, cg: CoreGraph, lim: rules.CoreLimits) -> np.ndarray:
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
    """Vectorised XY multicast trees for every (source core a, target core b)
    with T[a, b] > 0. Returns per-router entry counts and path statistics."""
    c = T.tocoo()
    a, b = c.row.astype(np.int64), c.col.astype(np.int64)
    if a.size == 0:
        return {"entries": {}, "max_hops": 0, "pairs": 0, "tree_links": 0, "link_traffic": 0.0}
    sx, sy, dx, dy = pos[a, 0], pos[a, 1], pos[b, 0], pos[b, 1]
    lx, ly = np.abs(dx - sx), np.abs(dy - sy)
    L = lx + ly
    n = L + 1
    pair = np.repeat(np.arange(a.size), n)
    j = _ranges(n)
    lxp, sgx, sgy = lx[pair], np.sign(dx - sx)[pair], np.sign(dy - sy)[pair]
    inx = j <= lxp
    gx = np.where(inx, sx[pair] + sgx * j, dx[pair])
    gy = np.where(inx, sy[pair], sy[pair] + sgy * (j - lxp))
    last = j == L[pair]
    # directions: 0 +x, 1 −x, 2 +y, 3 −y, 4 + slot = local port
    out = np.where(last, 4 + pos[b, 2][pair], np.where(j < lxp, np.where(sgx > 0, 0, 1), np.where(sgy > 0, 2, 3)))
    ind = np.where(j == 0, -1, np.where(j <= lxp, np.where(sgx > 0, 0, 1), np.where(sgy > 0, 2, 3)))
    src = a[pair]
    node = (gy * grid_x + gx).astype(np.int64)
    # (source core, router, output port) packed into one int64 so np.unique sorts scalars, not rows
    n_nodes = int(node.max()) + 1
    ports = int(out.max()) + 1
    key = (src * n_nodes + node) * ports + out
    ukey, first = np.unique(key, return_index=True)
    uin = ind[first]
    uout = ukey % ports
    sn_key = ukey // ports                       # source core × router
    sn, idx, cnt = np.unique(sn_key, return_index=True, return_counts=True)
    o1 = uout[idx]
    in1 = uin[idx]
    need = (in1 == -1) | (cnt > 1) | (o1 >= 4) | (o1 != in1)
    routers, ent = np.unique(sn[need] % n_nodes, return_counts=True)
    return {"entries": dict(zip(routers.tolist(), ent.tolist())), "max_hops": int(L.max()),
            "pairs": int(a.size), "tree_links": int((uout < 4).sum())}


def node_routes(cg: CoreGraph) -> dict[str, Route]:
    """Route annotation per neuron node: destination cores of each of its cores."""
    out = {}
    Hc = cg.Hc
    for k, name in enumerate(cg.net.pop_names):
        sl = cg.net.pop_slice(k)
        sub = Hc[sl]
        rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
        sc = cg.ucore[sl][rows]
        pairs = np.unique(np.stack([sc, sub.indices.astype(np.int64)], 1), axis=0) if rows.size else np.zeros((0, 2), np.int64)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        cores = np.unique(cg.ucore[sl])
        ptr = np.searchsorted(pairs[:, 0], cores, side="left")
        ptr = np.append(ptr, pairs.shape[0]).astype(np.int64)
        out[name] = Route(cores=cores.astype(np.int32), dest_ptr=ptr, dest=pairs[:, 1].astype(np.int32))
    return out


def run_route(g: Graph, limits: rules.CoreLimits, data: dict | None = None,
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
        rep, routes = run_route(graph, limits, ctx.data, ctx)
        for name, r in routes.items():
            graph.annotate(name, r)
        ctx.reports["placement"] = {**ctx.reports.get("placement", {}), **rep}
        return graph
