"""``place``: map logical cores (``Placement.core``) to physical positions
(chip, mesh x, mesh y, slot) minimising Σ traffic × hops.

Geometry (all from the target model's :class:`~nmc.target_model.CoreLimits`, i.e. the spec): a
chip is a ``mesh_x × mesh_y`` grid of router nodes with ``cores_per_node``
cores each, of which the first ``cores_per_chip`` slots (node order
row-major, y then x) are usable; chips tile a ``chips_x × chips_y`` board grid.
A router node's global coordinate is ``(chip_x·mesh_x + x, chip_y·mesh_y + y)``
and a packet's hop count is the Manhattan distance between the global
coordinates (dimension-order routing; cores on one node are 0 hops apart).
The host link attaches at global (0, 0).

Algorithm: (1) cores → chips: one chip if they fit, else pymetis k-way on the
core traffic graph into ``⌈K / cores_per_chip⌉`` chips, then repair of
over-full chips; chips go to board positions in snake order. (2) On each chip,
cores start in logical order along a snake over the usable slots. (3)
Simulated annealing with position swaps (and moves to empty slots) within a
chip (the move loop compiled with numba: :mod:`nmc.passes.anneal_loop`),
minimising Σ_{a,b} T[a,b]·hops(a,b) over the core traffic T
(rate-weighted multicast packets from core a reaching core b; host = a fixed
pseudo-core at (0, 0)). The baseline reported beside it is the sequential
layout of step (2) alone with cores → chips in logical order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from nmc.annotations import Placement
from nmc.errors import DesignRuleError, OptionError, PassError, Violation
from nmc.ir import Graph, array_digest
from nmc.target_model import CoreLimits

from . import rules
from .manager import Pass, PassContext, register
from .anneal_loop import run_moves
from .netmodel import Network, activity_inputs, network_for
from .partition import group_incidence


# ------------------------------------------------------------ core traffic
@dataclass
class CoreGraph:
    net: Network
    ucore: np.ndarray        # core per unit (-1 host inputs)
    K: int                   # logical cores
    T: sp.csr_matrix         # (K+1 × K+1) rate-weighted packets a → b; index K = host
    Hc: sp.csr_matrix        # (N × K) source unit → target core pattern


def core_graph(g: Graph, limits: CoreLimits, data: dict | None, ctx: PassContext | None = None) -> CoreGraph:
    """Rebuild the network from the Placement annotations and aggregate its
    multicast traffic per (source core, target core). With ``ctx``, the network
    structure and the core graph are shared through ``ctx.cache`` (place and
    route use the same one), keyed on the graph structure, the cores and the rates."""
    net = network_for(g, limits, ctx, data, from_placement=True)
    ucore = np.full(net.n_units, -1, dtype=np.int64)
    for k, name in enumerate(net.pop_names):
        ucore[net.pop_slice(k)] = np.asarray(g.ann(name, Placement).core, dtype=np.int64)
    if ctx is None:
        return _core_graph(net, ucore)
    key = (net.key, array_digest(ucore), array_digest(net.rate))
    return ctx.cached("coregraph", key, lambda: _core_graph(net, ucore))


def _core_graph(net: Network, ucore: np.ndarray) -> CoreGraph:
    K = int(ucore.max()) + 1 if ucore.size and ucore.max() >= 0 else 0
    Hc = group_incidence(net.AT, ucore, K)
    src = np.where(ucore >= 0, ucore, K)
    S = sp.csr_matrix((net.rate, (src, np.arange(net.n_units))), shape=(K + 1, net.n_units))
    T = (S @ Hc).tocsr()
    T.resize((K + 1, K + 1))
    T.setdiag(0)
    T.eliminate_zeros()
    return CoreGraph(net, ucore, K, T.tocsr(), Hc)


# --------------------------------------------------------------- geometry
def chip_slots(lim: CoreLimits) -> np.ndarray:
    """(cores_per_chip, 3) usable (x, y, slot) of one chip, snake order."""
    xs = []
    for y in range(lim.mesh_y):
        row = range(lim.mesh_x) if y % 2 == 0 else range(lim.mesh_x - 1, -1, -1)
        for x in row:
            for s in range(lim.cores_per_node):
                xs.append((x, y, s))
    n = lim.cores_per_chip or len(xs)
    return np.asarray(xs[:n], dtype=np.int64)


def chip_order(lim: CoreLimits) -> np.ndarray:
    """(chips, 2) board positions (cx, cy) in snake order."""
    out = []
    for cy in range(lim.chips_y):
        row = range(lim.chips_x) if cy % 2 == 0 else range(lim.chips_x - 1, -1, -1)
        out += [(cx, cy) for cx in row]
    return np.asarray(out, dtype=np.int64)


def global_xy(lim: CoreLimits, chip_xy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([chip_xy[:, 0] * lim.mesh_x + x, chip_xy[:, 1] * lim.mesh_y + y], 1)


def hops_cost(T: sp.csr_matrix, gxy: np.ndarray) -> tuple[float, int]:
    """Σ T[a,b]·hops(a,b) and the largest hop count of any used pair."""
    c = T.tocoo()
    h = np.abs(gxy[c.row] - gxy[c.col]).sum(1)
    return float(np.dot(c.data, h)), int(h.max(initial=0))


# ---------------------------------------------------------------- placing
def assign_chips(cg: CoreGraph, lim: CoreLimits, seed: int, rates_from: str = "") -> np.ndarray:
    K = cg.K
    cpc = lim.cores_per_chip or max(K, 1)
    n_chips = max(1, math.ceil(K / cpc))
    if n_chips > lim.chips:
        raise DesignRuleError([Violation(
            "board.cores", "<graph>", lim.chips * cpc, K,
            f"a bigger spec with ≥ {n_chips} chips (e.g. --hw spinnaker2-48chip), or quantize/sparsify to need fewer cores"
            + rules.activity_hint(rates_from),
            "logical cores after partitioning")], target=lim.target)
    if n_chips == 1:
        return np.zeros(K, dtype=np.int64)
    import pymetis

    S = cg.T[:K, :K]
    S = (S + S.T).tocsr()
    S.setdiag(0)
    S.eliminate_zeros()
    if S.nnz == 0:
        chip = np.arange(K) // cpc
    else:
        ew = np.maximum(1, np.round(S.data / S.data.max() * 10000)).astype(np.int64)
        adj = pymetis.CSRAdjacency(S.indptr.astype(np.int64), S.indices.astype(np.int64))
        _, parts = pymetis.part_graph(n_chips, adj,
                                      eweights=ew, options=pymetis.Options(seed=int(seed) % (2 ** 31), ufactor=10))
        chip = np.asarray(parts, dtype=np.int64)
    # repair: move the least-connected cores of over-full chips to chips with room
    count = np.bincount(chip, minlength=n_chips)
    for c in np.nonzero(count > cpc)[0]:
        members = np.nonzero(chip == c)[0]
        inside = np.asarray(S[members][:, members].sum(1)).reshape(-1)
        for a in members[np.argsort(inside, kind="stable")][: count[c] - cpc]:
            room = np.nonzero(count < cpc)[0]
            row = S[a]
            gain = np.bincount(chip[row.indices], weights=row.data, minlength=n_chips)[room]
            d = int(room[np.argmax(gain)]) if room.size else int(np.argmin(count))
            chip[a] = d
            count[c] -= 1
            count[d] += 1
    # chips in order of their smallest logical core: keeps the pipeline order on the board
    first = np.array([np.min(np.nonzero(chip == c)[0]) if np.any(chip == c) else K for c in range(n_chips)])
    rank = np.empty(n_chips, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_chips)
    return rank[chip]


def initial_positions(chip: np.ndarray, lim: CoreLimits) -> np.ndarray:
    """Slot index (into chip_slots) per core: logical order along the snake."""
    slot = np.zeros(chip.size, dtype=np.int64)
    for c in np.unique(chip):
        m = np.nonzero(chip == c)[0]
        slot[m] = np.arange(m.size)
    return slot


def anneal(cg: CoreGraph, lim: CoreLimits, chip: np.ndarray, slot: np.ndarray, rng: np.random.Generator,
           max_moves: int = 30000) -> np.ndarray:
    """Swap/move cores between slots of the same chip to lower Σ T·hops."""
    K = cg.K
    slots = chip_slots(lim)
    ns = slots.shape[0]
    order = chip_order(lim)
    S = (cg.T + cg.T.T).tocsr()
    n_chips = int(chip.max()) + 1 if K else 0
    # occupant[c, s] = core index or -1
    occ = np.full((max(n_chips, 1), ns), -1, dtype=np.int64)
    occ[chip, slot] = np.arange(K)
    cxy = order[chip]

    def gpos(core_chip, core_slot):
        return np.stack([order[core_chip, 0] * lim.mesh_x + slots[core_slot, 0],
                         order[core_chip, 1] * lim.mesh_y + slots[core_slot, 1]], -1)

    pos = np.zeros((K + 1, 2), dtype=np.int64)
    pos[:K] = gpos(chip, slot)
    pos[K] = (0, 0)  # host
    del cxy
    deg = np.diff(S.indptr)
    movable = np.nonzero(deg[:K] > 0)[0]
    if movable.size == 0 or ns < 2:
        return slot

    def delta(a, new_a):
        nb = S.indices[S.indptr[a]:S.indptr[a + 1]]
        w = S.data[S.indptr[a]:S.indptr[a + 1]]
        return float(np.dot(w, np.abs(pos[nb] - new_a).sum(1) - np.abs(pos[nb] - pos[a]).sum(1)))

    n_moves = int(min(max_moves, 40 * movable.size))
    samples = []
    for _ in range(min(200, n_moves)):
        a = int(rng.choice(movable))
        s2 = int(rng.integers(ns))
        samples.append(abs(delta(a, gpos(np.array(chip[a]), np.array(s2)))))
    temp0 = (np.mean(samples) if samples else 1.0) or 1.0
    picks = rng.integers(movable.size, size=n_moves)
    targets = rng.integers(ns, size=n_moves)
    u = rng.random(n_moves)
    chip64 = chip.astype(np.int64)
    run_moves(S, pos, chip64, slot, occ, movable, slots, order, lim.mesh_x, lim.mesh_y, picks, targets, u, temp0)
    return slot


def run_place(g: Graph, limits: CoreLimits, data: dict | None = None, seed: int = 0,
              anneal_moves: int = 30000, plot: bool = False, ctx: PassContext | None = None) -> tuple[dict, dict]:
    """Place; returns ({chip, x, y, slot: per-core arrays}, report)."""
    cg = core_graph(g, limits, data, ctx)
    rng = np.random.default_rng(seed)
    chip = assign_chips(cg, limits, seed, (ctx.reports.get("placement", {}).get("rates", "") if ctx else ""))
    slot0 = initial_positions(chip, limits)
    slots, order = chip_slots(limits), chip_order(limits)

    def gxy(ch, sl):
        g_ = global_xy(limits, order[ch], slots[sl, 0], slots[sl, 1])
        return np.vstack([g_, [[0, 0]]])

    seq_chip = np.arange(cg.K) // max(limits.cores_per_chip or cg.K or 1, 1)
    seq_cost, seq_hops = hops_cost(cg.T, gxy(seq_chip, initial_positions(seq_chip, limits)))
    slot = anneal(cg, limits, chip, slot0.copy(), rng, anneal_moves) if anneal_moves else slot0
    cost, max_h = hops_cost(cg.T, gxy(chip, slot))
    cost0, max_h0 = hops_cost(cg.T, gxy(chip, slot0))
    if cost0 < cost:  # annealing ends where it ends; keep the better layout
        slot, cost, max_h = slot0, cost0, max_h0
    pos = {"chip": chip.astype(np.int32), "x": slots[slot, 0].astype(np.int32),
           "y": slots[slot, 1].astype(np.int32), "slot": slots[slot, 2].astype(np.int32)}
    neurons = np.bincount(cg.ucore[cg.ucore >= 0], minlength=cg.K).astype(np.float64)
    tsum = np.asarray(cg.T.sum(0)).reshape(-1)[:cg.K] + np.asarray(cg.T.sum(1)).reshape(-1)[:cg.K]
    rep = {"chips_used": int(np.unique(chip).size) if cg.K else 0,
           "traffic_hops": round(cost, 6), "traffic_hops_sequential": round(seq_cost, 6),
           "max_hops_placed": max_h,
           "core_positions": {"chip": pos["chip"].tolist(), "x": pos["x"].tolist(), "y": pos["y"].tolist(),
                              "slot": pos["slot"].tolist()}}
    if plot:
        from .placement_report import placement_png

        rep["_png"] = placement_png(limits, gxy(chip, slot)[:cg.K], neurons, tsum,
                                    f"{cg.K} cores on {rep['chips_used']} chip(s)")
    return pos, rep


def annotate_positions(g: Graph, pos: dict, names: list[str]) -> None:
    """Add the positions of the per-core arrays ``pos`` to the Placement of the nodes ``names``
    (the neuron nodes: the units, whose cores the core graph holds). A node the partition gave a core of its
    own though it is no unit (``TargetModel.own_core_nodes``: no traffic of it is modelled) keeps
    its logical core and chip."""
    for name in names:
        p = g.ann(name, Placement)
        if p is None or p.core is None:
            continue
        core = np.asarray(p.core, dtype=np.int64)
        g.annotate(name, replace(p, **{k: np.asarray(v)[core].astype(np.int32) for k, v in pos.items()}))


def geometry_for(ctx: PassContext, mesh: tuple[int, ...] = ()) -> CoreLimits:
    """Limits with the chip geometry: from the spec, or (no spec) from an explicit
    ``mesh=(x;y)`` or ``(x;y;cores_per_node)`` option describing one chip."""
    if mesh:
        if len(mesh) not in (2, 3) or min(mesh) < 1:
            raise OptionError(f"mesh must be (x;y) or (x;y;cores_per_node) with positive sizes, not {mesh}")
        cpn = mesh[2] if len(mesh) == 3 else 1
        base = ctx.target_model().limits
        return replace(base, mesh_x=mesh[0], mesh_y=mesh[1], cores_per_node=cpn,
                       cores_per_chip=mesh[0] * mesh[1] * cpn)
    if ctx.spec is None:
        raise OptionError("placing cores on a mesh needs a hardware spec or an explicit mesh",
                          hint="compile for a hardware target, or give place{mesh=(8;8)}")
    return ctx.target_model().limits


@register
@dataclass(frozen=True)
class Place(Pass):
    """Logical cores → (chip, x, y, slot), minimising rate-weighted hops."""

    name = "place"
    summary = "logical cores → chip mesh positions (metis over chips, annealing on the mesh), Σ traffic·hops"
    requires = ("placement",)
    provides = ("placement",)

    seed: int | None = None
    anneal_moves: int = 30000
    bounds = {"seed": (0, 2 ** 63 - 1), "anneal_moves": (0, None)}
    mesh: tuple[int, ...] = ()
    plot: bool = True

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        limits = geometry_for(ctx, self.mesh)
        seed = ctx.seed if self.seed is None else self.seed
        from nmc.nodes import is_neuron

        for name, node in graph.nodes.items():
            if is_neuron(node) and graph.ann(name, Placement) is None:
                raise PassError("neuron node has no Placement", node=name, hint="run partition before place")
        pos, rep = run_place(graph, limits, activity_inputs(graph, ctx)[0], seed, self.anneal_moves, self.plot, ctx)
        png = rep.pop("_png", None)
        if png is not None:   # binary report: written by the bundle as reports/placement.png
            ctx.reports["placement.png"] = png
        annotate_positions(graph, pos, [k for k, node in graph.nodes.items() if is_neuron(node)])
        ctx.reports["placement"] = {**ctx.reports.get("placement", {}), **rep}
        return graph
