"""``partition``: assign every neuron of every neuron node to a core, under
every per-core limit of the HardwareSpec, minimising rate-weighted traffic.

Pipeline of the pass:

1. build the neuron-level :class:`~nmc.passes.netmodel.Network` (synapses,
   bytes, fan-in, work, rates);
2. run the design rules (:mod:`nmc.passes.rules`): any violation raises
   :class:`~nmc.errors.DesignRuleError` listing them all, before placement;
3. cut every neuron node into **blocks** of consecutive neurons (at most
   ``max_blocks`` in all; a block size divides the node's per-core capacity so
   blocks pack cores exactly) — the partitioner works on blocks, which keeps a
   10⁷-synapse network at a few thousand vertices. Where a block holds several
   neurons, a conv-shaped node ((C, H, W) or (C, L)) is cut into pixel-major
   blocks instead (all channels of a tile of pixels, :func:`make_blocks`), so a
   block is a local window of the image; sequential fill alone keeps blocks of
   consecutive neurons (the vendors' default it stands for);
4. assign blocks to cores with ``method``:

   - ``sequential``: fill cores in node order, a new core per node (the
     default of py-spinnaker2's ``set_max_atoms_per_core`` and of Lava);
   - ``greedy``: blocks in node order, each onto the open core it sends/receives
     the most rate-weighted spikes to/from that still has room, else a new core;
   - ``metis``: pymetis k-way on the block graph (edge weight = rate-weighted
     *multicast* connections: a source counts once per target block, not once
     per synapse), then repair of any over-full core, then (``refine``)
     Kernighan–Lin-style greedy moves accepted only when the exact traffic drops;
     the result is the best (traffic, then cores) of this and the two baselines
     computed in the same run (reported as ``chosen``). METIS splits into the
     lower-bound core count; when that is far from feasible (over a tenth of
     the blocks do not fit their part) it splits again into sequential fill's
     core count.
   - ``kahypar`` (default): Mt-KaHyPar on the block *hypergraph* (one net per
     source, its pins the blocks of its targets and its own block, weighted by
     its rate) with the km1 objective, which is exactly the traffic below
     (:mod:`nmc.passes.hypergraph`), one part per core with the core's
     capacity as the balance constraint, one thread and a fixed seed
     (deterministic); then the same repair and refinement as ``metis``. METIS
     runs beside it and the best of both and the baselines is kept (on equal
     traffic and cores: sequential, metis, greedy, kahypar in that order).
     Mt-KaHyPar is skipped (METIS alone, the report's ``portfolio`` entry says
     why) when the hypergraph has more than ``kahypar_max_pins`` pins
     (:data:`KAHYPAR_MAX_PINS`), when the split needs more than ``kahypar_max_parts``
     parts (:data:`KAHYPAR_MAX_PARTS`; the parts are the cores of sequential fill, the
     k-way split's retry, else the cores' lower bound) or ``mtkahypar`` does not import.

   Baselines (option ``baselines``): ``auto`` (default) computes sequential
   fill always and greedy up to ``baseline_max_neurons`` placed neurons
   (:data:`BASELINE_MAX_NEURONS`); above it greedy is skipped and the report's
   ``baselines`` entry says so and why (``traffic_greedy`` is then null).
   ``all`` computes both at any size, ``none`` neither.

   Blocks whose block graph has more than ``max_block_edges`` edges are
   coarsened first (see :func:`block_model`; reported as ``blocks_coarsened``).

   **Unit moves** (``metis`` and ``kahypar``, with ``refine``, where a block
   holds several neurons): the portfolio's best assignment is the start of a
   neuron-level stage (:mod:`nmc.passes.unit_moves`): single neurons move, or
   swap pairwise, between the cores their nets touch when the exact traffic
   drops and both cores stay within every limit, within a work budget of
   ``unit_visits`` pin visits per synapse and unit, at least
   :data:`UNIT_VISITS_MIN` (:func:`unit_visit_budget`; deterministic); it
   returns at once where no neuron lies on a net of at most ``BIG_NET`` pins
   spanning two cores (it would visit none: e.g. dense layers). The
   block partitioners cut only at block boundaries and cannot separate a
   ring's or a random layer's neurons by their own draw; this stage can. It
   is kept only when the recomputed traffic is strictly lower (report entry
   ``unit_moves``: start, moves, swaps, traffic; ``chosen`` still names the
   start); the result is then one block per (node, core) (:func:`unit_blocks`).

5. write ``Placement(core, chip)`` on every neuron node and the metrics to
   ``ctx.reports["placement"]``; then on every node the target model runs on a core
   of its own though it is no unit (``TargetModel.own_core_nodes``, e.g. SpiNNaker 2's
   LayerNorm), one core each after the units' cores (:func:`annotate_own_cores`; the
   report's core counts and traffic are the units').

A target model whose placement granularity is a ``"logical neuron"``
(BrainScaleS-2: merged circuits on hemispheres with a row budget) is placed
by :mod:`nmc.passes.hemispheres` instead (same pass, same Placement
annotation; the block packer's options do not apply and are refused).

**Traffic** (the objective and the reported metric, multicast-aware): for
every source unit s with rate r_s, the packets it causes per step are the
number of distinct cores holding its targets, less one when its own core is
among them (local delivery needs no packet); host inputs pay for every core.
``traffic = Σ_s r_s · (|cores(targets(s))| − [core(s) ∈ cores(targets(s))])``
— the hypergraph connectivity − 1 metric.

**Lower bounds**: ``cores ≥`` :func:`~nmc.passes.rules.cores_lower_bound`;
traffic ≥ the per-net bound of :func:`nmc.passes.hypergraph.traffic_lower_bound`
(each source's targets and itself span at least as many cores as their
neurons, bytes and work need; derivation in its docstring), or for the sources
of a full-window stride-1 convolution the larger window bound that couples the
layer's nets (:func:`nmc.passes.hypergraph.window_bound`), or the LP over core
types that lets consecutive conv layers share each core's capacity
(:mod:`nmc.passes.window_lp`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from nmc.annotations import Placement
from nmc.errors import DesignRuleError, OptionError
from nmc.ir import Graph
from nmc.target_model import CoreLimits

from . import hemispheres, rules
from .manager import Pass, PassContext, register
from .netmodel import Network, activity_inputs, network_for


# -------------------------------------------------------------------- blocks
@dataclass
class Blocks:
    start: np.ndarray      # first position of each block in ``order``
    stop: np.ndarray
    pop: np.ndarray        # placed-node index of each block
    of_unit: np.ndarray    # block of each unit (-1 for host inputs)
    neurons: np.ndarray
    bytes_: np.ndarray
    work: np.ndarray
    order: np.ndarray | None = None   # placed units in block order (None: consecutive, block = a unit range)
    tiles: dict = field(default_factory=dict)   # placed node index -> (channels, pixels per dim) of its tiles

    @property
    def tiled(self) -> bool:
        """Some node is cut into pixel-major tiles (:func:`tile_shape`)."""
        return bool(self.tiles)

    @property
    def n(self) -> int:
        return int(self.start.size)


def tile_shape(channels: int, spatial: tuple, per_block: int) -> tuple[int, tuple] | None:
    """(channels per block, pixels per spatial dim) of the pixel-major blocks of a
    (C, *spatial) node with ``per_block`` neurons per block, or None when blocks of
    consecutive neurons are kept (1 neuron per block, or not 1 or 2 spatial dims).

    A block is all C channels (at most ``per_block`` of them: ``cg``) of a tile of
    at most p = ``per_block // cg`` pixels. A 2-d tile th × tw (th ≤ H, tw ≤ W, tw =
    min(⌊p / th⌋, W)) is chosen among the near-square ones (the longer side at most
    twice the shorter, or a side as long as the image's) with the most pixels, so
    blocks fill cores; ties: the smallest halo per pixel (th + tw + 2) / (th · tw)
    (the pixels a 3×3 window adds around the tile), then the smaller th."""
    if per_block <= 1 or len(spatial) not in (1, 2) or math.prod(spatial) <= 1:
        return None
    cg = min(channels, per_block)
    p = max(1, per_block // cg)
    if len(spatial) == 1:
        return cg, (min(p, spatial[0]),)
    H, W_ = spatial
    best = None
    for th in range(1, min(p, H) + 1):
        tw = min(p // th, W_)
        if max(th, tw) > 2 * min(th, tw) and th != H and tw != W_:
            continue
        key = (-th * tw, (th + tw + 2) / (th * tw), th)
        if best is None or key < best:
            best = key
    th = best[2]
    return cg, (th, min(p // th, W_))


def _tile_keys(shape: tuple, cg: int, tile: tuple) -> np.ndarray:
    """Block of each neuron (C-order flat index) of a (C, *spatial) node cut into tiles of
    ``tile`` pixels × ``cg`` channels; blocks numbered tile-row-major, channel group innermost."""
    c, *sp_ = shape
    idx = np.indices(shape, sparse=True)
    ncg = -(-c // cg)
    key = idx[0] // cg
    mult = ncg
    for d in range(len(sp_) - 1, -1, -1):
        key = key + (idx[1 + d] // tile[d]) * mult
        mult *= -(-sp_[d] // tile[d])
    return np.broadcast_to(key, shape).reshape(-1)


def block_size(cap: int, want: int) -> int:
    """Neurons per block of a node whose core holds ``cap`` of them, blocks of at least ``want``
    neurons wanted (the block budget): the least divisor of ``cap`` from ``want`` up, so whole
    blocks fill a core exactly (blocks of 32 pack 256 per core, where blocks of ⌈256 / 10⌉ = 26
    would leave a core at 9 × 26 = 234); where that divisor is over twice ``want`` (a cap with few
    divisors), ⌈cap / ⌊cap / want⌋⌉ as before (about ``want``, the core's last block may not fit)."""
    want = max(1, min(int(want), int(cap)))
    d = next(d for d in range(want, cap + 1) if cap % d == 0)
    return d if d <= 2 * want else math.ceil(cap / max(1, cap // want))


def make_blocks(net: Network, caps: np.ndarray, max_blocks: int, shapes: list | None = None) -> Blocks:
    """Cut each placed node into blocks whose size divides its per-core capacity.
    A node whose units pay bytes once per run on a core (``Network.run_bytes``,
    from the target model) is cut into blocks of a whole core's capacity, each
    charged those bytes: a core holds no more runs of it than blocks, so the
    block bytes bound what the core really stores.

    ``shapes`` (per placed node its output shape, C-order): a node of shape
    (C, H, W) or (C, L) whose blocks hold more than one neuron (and that pays no
    per-run bytes) is cut into **pixel-major** blocks instead, all channels of a
    tile of pixels (:func:`tile_shape`) with at most the same neurons per block:
    a conv layer's block is then a local window of the image, whose 3×3 inputs
    lie in the neighbouring tiles, where a block of consecutive neurons (C×H×W
    order) is a strip of one channel's rows. Without ``shapes`` every block is
    consecutive neurons."""
    total = max(net.placed_count, 1)
    want = max(1, math.ceil(total / max(max_blocks, 1)))
    orders, lens_, pops, runs = [], [], [], []
    tiles = {}
    for k in range(len(net.pop_names)):
        sl = net.pop_slice(k)
        cap = max(int(caps[k]), 1)
        run = net.run_bytes_of(k)
        bs = cap if run else block_size(cap, want)
        shape = tuple(int(x) for x in shapes[k]) if shapes is not None else ()
        tile = tile_shape(shape[0], shape[1:], bs) if (shape and not run
                                                       and math.prod(shape) == sl.stop - sl.start) else None
        if tile is None:
            s = np.arange(sl.start, sl.stop, bs, dtype=np.int64)
            orders.append(np.arange(sl.start, sl.stop, dtype=np.int64))
            lens_.append(np.minimum(s + bs, sl.stop) - s)
        else:
            tiles[k] = tile
            key = _tile_keys(shape, *tile)
            orders.append(sl.start + np.argsort(key, kind="stable"))
            lens_.append(np.bincount(key))
        pops.append(np.full(lens_[-1].size, k, dtype=np.int64))
        runs.append(np.full(lens_[-1].size, run, dtype=np.float64))
    lens = np.concatenate(lens_).astype(np.int64) if lens_ else np.zeros(0, np.int64)
    order = np.concatenate(orders) if orders else np.zeros(0, np.int64)
    stop = np.cumsum(lens)
    start = stop - lens
    pop = np.concatenate(pops) if pops else np.zeros(0, np.int64)
    of_unit = np.full(net.n_units, -1, dtype=np.int64)
    of_unit[order] = np.repeat(np.arange(start.size), lens)
    csum = lambda a: np.add.reduceat(a[order], start) if start.size else np.zeros(0)  # noqa: E731
    run = np.concatenate(runs) if runs else np.zeros(0)
    byts = csum(net.bytes_)
    if run.any():
        byts = byts + run
    return Blocks(start, stop, pop, of_unit, lens.astype(np.float64), byts, csum(net.work),
                  order if tiles else None, tiles)


def group_incidence(M: sp.csr_matrix, group: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """(rows × n_groups) 0/1 pattern: row r has a non-zero in a column of group g.
    ``group`` maps each column of ``M`` to its group (-1: ignored). One sparse
    product (no sort), so it stays linear in ``M.nnz``; column indices of the
    result are not sorted."""
    cols = np.nonzero(group >= 0)[0]
    G = sp.csr_matrix((np.ones(cols.size, np.float32), (cols, group[cols])), shape=(M.shape[1], n_groups))
    P = sp.csr_matrix((np.ones(M.nnz, np.float32), M.indices, M.indptr), shape=M.shape)
    out = (P @ G).tocsr()
    out.eliminate_zeros()
    out.data[:] = 1
    return out


def block_incidence(net: Network, blocks: Blocks) -> sp.csr_matrix:
    """H (N × blocks): H[s, b] = 1 when source unit s has a target in block b."""
    return group_incidence(net.AT, blocks.of_unit, blocks.n)


def block_graph(net: Network, blocks: Blocks, H: sp.csr_matrix) -> sp.csr_matrix:
    """Symmetric block graph: W[a, b] = Σ_{s∈a} r_s [s → b] + (a ↔ b), no self loops."""
    placed = blocks.of_unit >= 0
    src_block = sp.csr_matrix((net.rate[placed], (blocks.of_unit[placed], np.nonzero(placed)[0])),
                              shape=(blocks.n, net.n_units))
    W = (src_block @ H).tocsr()
    W = (W + W.T).tocsr()
    W.setdiag(0)
    W.eliminate_zeros()
    W.sort_indices()   # METIS' result depends on the adjacency order: keep it canonical
    return W


def _block_sources_max(H: sp.csr_matrix, n_blocks: int) -> int:
    """The most distinct sources any one block has (its input axons alone)."""
    return int(np.bincount(H.indices, minlength=n_blocks).max(initial=0)) if H.nnz else 0


def _block_edges_at_least(net: Network, blocks: Blocks, H: sp.csr_matrix) -> int:
    """A lower bound on the block graph's entries (:func:`block_graph`) without building it:
    row a of W holds every block but a that one placed source in a reaches, so W has at
    least Σ_a max_{s∈a} (|blocks s reaches| − 1) entries (exact for dense connectivity)."""
    placed = np.nonzero(blocks.of_unit >= 0)[0]
    if placed.size == 0 or blocks.n == 0:
        return 0
    reach = np.diff(H.indptr)[placed] - 1
    most = np.zeros(blocks.n, np.int64)
    np.maximum.at(most, blocks.of_unit[placed], reach)
    return int(most.sum())


def block_model(net: Network, caps: np.ndarray, max_blocks: int, max_edges: int, min_cores: int,
                axons: int | None = None, shapes: list | None = None):
    """Blocks, their source incidence H and block graph W.

    Every block must fit a core alone: its neurons do by construction
    (:func:`make_blocks`), and when one block's distinct sources exceed the
    input-axon limit ``axons`` the blocks are made finer until none does. Then,
    while W has more than ``max_edges`` entries (dense connectivity: W grows
    with blocks², and METIS, greedy and refinement with W), the blocks are made
    coarser (by √(edges / max_edges), at least half as many), down to two
    blocks per lower-bound core, and never so coarse that a block alone
    exceeds ``axons``. When a lower bound on W's entries
    (:func:`_block_edges_at_least`) is already over ``max_edges``, the first W is
    not built (at 10⁸ dense synapses it would be 10⁷ entries) and the bound sets
    the first step. ``shapes``: pixel-major blocks for (C, H, W) / (C, L)
    nodes (:func:`make_blocks`). Returns (blocks, H, W, note); note says what
    was coarsened and why ("" when nothing was)."""
    blocks = make_blocks(net, caps, max_blocks, shapes)
    H = block_incidence(net, blocks)
    mb = max_blocks
    while axons and _block_sources_max(H, blocks.n) > axons and blocks.neurons.max(initial=0) > 1:
        mb *= 2
        finer = make_blocks(net, caps, mb, shapes)
        if finer.n == blocks.n:   # nothing left to cut finer (whole-core blocks): the packer decides
            break
        blocks = finer
        H = block_incidence(net, blocks)
    floor = 2 * max(min_cores, 1)
    at_least = _block_edges_at_least(net, blocks, H)
    # sure to be coarsened (dense connectivity): the block graph of these blocks is never built
    W = None if max_edges and at_least > max_edges and blocks.n > floor else block_graph(net, blocks, H)
    edges = at_least if W is None else int(W.nnz)
    first = (blocks.n, edges, "at least " if W is None else "")
    stop = ""
    while max_edges and edges > max_edges and blocks.n > floor:
        # W grows up to blocks² (dense connectivity): aim straight at the budget, at least halving
        shrink = max(2.0, math.sqrt(edges / max_edges))
        target = max(int(blocks.n / shrink), floor)
        nb = make_blocks(net, caps, target, shapes)
        if nb.n >= blocks.n:
            break
        nH = block_incidence(net, nb)
        if axons and _block_sources_max(nH, nb.n) > axons:
            stop = f"; not coarser: a block of {nb.n} would have more than {axons} input axons alone"
            break
        blocks, H = nb, nH
        W = block_graph(net, blocks, H)
        edges = int(W.nnz)
    if W is None:   # coarsening stopped before its first step
        W = block_graph(net, blocks, H)
    note = ""
    if blocks.n != first[0] or stop:
        note = (f"{first[0]} blocks had {first[2]}{first[1]} block-graph edges (over max_block_edges={max_edges}); "
                f"coarsened to {blocks.n} blocks with {int(W.nnz)} edges{stop}")
    return blocks, H, W, note


# ------------------------------------------------------------------- packer
class Packer:
    """Assignment of blocks to cores with incremental feasibility checks.

    Neurons, bytes and work are additive per core. Input axons are the distinct
    sources of a core's blocks; each core keeps them as a sorted array with a
    per-source count of the core's blocks that use it, so adding or removing a
    block is a merge over the core's sources (no set unions, no re-scan of the
    core's other blocks)."""

    def __init__(self, blocks: Blocks, H: sp.csr_matrix, limits: CoreLimits):
        self.b, self.lim = blocks, limits
        self.part = np.full(blocks.n, -1, dtype=np.int64)
        self._load = np.zeros((16, 3))
        self._k = 0
        self.bl = np.stack([blocks.neurons, blocks.bytes_, blocks.work], 1) if blocks.n else np.zeros((0, 3))
        L = limits
        self.cap = np.array([L.neurons_max or np.inf, L.memory_bytes or np.inf, L.work_max or np.inf], dtype=float)
        self._capt = self.cap * (1 + 1e-9)
        self.axons = limits.fan_in_max
        self.src = None
        if self.axons:   # blocks × sources, sorted per block
            self.src = H.T.tocsr()
            if not self.src.has_sorted_indices:
                self.src.sort_indices()
        self.core_src: list[np.ndarray] = []
        self.core_cnt: list[np.ndarray] = []

    def reset(self) -> None:
        """Back to no block placed and no core open."""
        self.part[:] = -1
        self._load[:] = 0
        self._k = 0
        self.core_src, self.core_cnt = [], []

    @property
    def n_cores(self) -> int:
        return self._k

    @property
    def load(self) -> np.ndarray:
        return self._load[:self._k]

    def block_load(self, b: int) -> np.ndarray:
        return self.bl[b]

    def _cap(self) -> np.ndarray:
        return self.cap

    def _sources(self, b: int) -> np.ndarray:
        return self.src.indices[self.src.indptr[b]:self.src.indptr[b + 1]]

    def _lookup(self, s: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``s`` in the sorted ``cs`` and whether each is present. The same sources
        as the core's (dense layers: every block of a node reads the whole previous layer) are
        found by one comparison instead of a search per source."""
        if s.size == cs.size and s.size and s[0] == cs[0] and s[-1] == cs[-1] and np.array_equal(s, cs):
            return np.arange(s.size), np.ones(s.size, dtype=bool)
        pos = np.searchsorted(cs, s)
        if cs.size == 0:
            return pos, np.zeros(s.size, dtype=bool)
        return pos, cs[np.minimum(pos, cs.size - 1)] == s

    def fits(self, b: int, c: int) -> bool:
        if np.any(self._load[c] + self.bl[b] > self._capt):
            return False
        if self.axons:
            s = self._sources(b)
            cs = self.core_src[c]
            if cs.size + s.size > self.axons:
                _, present = self._lookup(s, cs)
                if cs.size + s.size - int(np.count_nonzero(present)) > self.axons:
                    return False
        return True

    def new_core(self) -> int:
        if self._k == self._load.shape[0]:
            self._load = np.vstack([self._load, np.zeros_like(self._load)])
        self._k += 1
        self.core_src.append(np.zeros(0, np.int64))
        self.core_cnt.append(np.zeros(0, np.int32))
        return self._k - 1

    def add(self, b: int, c: int) -> None:
        self.part[b] = c
        self._load[c] += self.bl[b]
        if self.axons:
            s = self._sources(b)
            cs, cnt = self.core_src[c], self.core_cnt[c]
            if cs.size == 0:   # an empty core takes the block's sources as they are (sorted, one use each)
                self.core_src[c], self.core_cnt[c] = s.astype(np.int64), np.ones(s.size, np.int32)
                return
            pos, present = self._lookup(s, cs)
            cnt[pos[present]] += 1
            if not present.all():
                new = ~present
                self.core_src[c] = np.insert(cs, pos[new], s[new])
                self.core_cnt[c] = np.insert(cnt, pos[new], 1)

    def remove(self, b: int) -> None:
        c = int(self.part[b])
        self.part[b] = -1
        self._load[c] -= self.bl[b]
        if self.axons:
            s = self._sources(b)
            cs, cnt = self.core_src[c], self.core_cnt[c]
            pos = np.searchsorted(cs, s)
            cnt[pos] -= 1
            keep = cnt > 0
            if not keep.all():
                self.core_src[c], self.core_cnt[c] = cs[keep], cnt[keep]

    def axons_of(self, c: int) -> int:
        return int(self.core_src[c].size) if self.axons else 0


def pack_sequential(blocks: Blocks, P: Packer) -> np.ndarray:
    cur, pop = -1, -1
    for b in range(blocks.n):
        if cur < 0 or blocks.pop[b] != pop or not P.fits(b, cur):
            cur = P.new_core()
            pop = blocks.pop[b]
        P.add(b, cur)
    return P.part


#: at most this many connected cores (best gain first) get the exact input-axon check
#: when placing one block; past them the block goes to the last core or a new one.
MAX_TRIES = 16


def _place_best(b: int, W: sp.csr_matrix, P: Packer, order_pref=None) -> None:
    """Put block b on the open core it is most connected to that has room (trying
    at most :data:`MAX_TRIES` of them), else on the last core, else a new one."""
    nb = W.indices[W.indptr[b]:W.indptr[b + 1]]
    wt = W.data[W.indptr[b]:W.indptr[b + 1]]
    pc = P.part[nb]
    ok = pc >= 0
    if ok.any():
        gain = np.bincount(pc[ok], weights=wt[ok], minlength=P.n_cores)
        cand = np.nonzero(gain > 0)[0]
        order = cand[np.argsort(-gain[cand], kind="stable")]
        if order.size:  # capacity of every candidate at once; the axon check only for those with room
            room = np.all(P.load[order] + P.block_load(b) <= P._capt, axis=1)
            for c in order[room][:MAX_TRIES]:
                if P.fits(b, int(c)):
                    P.add(b, int(c))
                    return
    # no connected core has room: the last core if it fits, else a new one
    if P.n_cores and P.fits(b, P.n_cores - 1):
        P.add(b, P.n_cores - 1)
    else:
        P.add(b, P.new_core())


def pack_greedy(blocks: Blocks, W: sp.csr_matrix, P: Packer) -> np.ndarray:
    for b in range(blocks.n):
        _place_best(b, W, P)
    return P.part


def pack_metis(blocks: Blocks, W: sp.csr_matrix, P: Packer, k: int, seed: int, k_retry: int = 0) -> np.ndarray:
    """pymetis k-way on the block graph, then repair over-full cores. When more
    than a tenth of the blocks do not fit their part (the k-part split is far
    from feasible, e.g. input axons bind far above the lower bound) and
    ``k_retry`` (a core count known to be feasible, e.g. sequential fill's) is
    larger, the split is redone with ``k_retry`` parts; when ``k_retry`` is over
    twice ``k`` it is used from the start."""
    import pymetis

    if k <= 1 or blocks.n <= 1:
        for b in range(blocks.n):
            _place_best(b, W, P)
        return P.part
    if k_retry > 2 * k:   # the lower-bound split is hopeless (a feasible packing needs over twice as many cores)
        k, k_retry = k_retry, 0
    k = min(k, blocks.n)
    cap = P._cap()
    frac = np.stack([blocks.neurons, blocks.bytes_, blocks.work], 1) / cap
    vw = np.maximum(1, np.round(1000 * np.nan_to_num(frac.max(1), posinf=1.0))).astype(np.int64)
    ew = W.data
    ew = np.maximum(1, np.round(ew / max(ew.max(initial=1), 1e-12) * 10000)).astype(np.int64) if ew.size else ew
    opts = pymetis.Options(seed=int(seed) % (2 ** 31), ufactor=30)
    if W.nnz == 0 or k == blocks.n:   # nothing to cut, or one block per part
        parts = np.arange(blocks.n) % k
    else:
        adj = pymetis.CSRAdjacency(W.indptr.astype(np.int64), W.indices.astype(np.int64))
        _, parts = pymetis.part_graph(k, adj,
                                      vweights=vw, eweights=ew, options=opts)
        parts = np.asarray(parts, dtype=np.int64)
    if not fill_parts(parts, k, W, P, k_retry):
        P.reset()
        return pack_metis(blocks, W, P, k_retry, seed)
    return P.part


def fill_parts(parts: np.ndarray, k: int, W: sp.csr_matrix, P: Packer, k_retry: int = 0) -> bool:
    """Open ``k`` cores and put each block on its part's core when it fits;
    the blocks that do not are placed by :func:`_place_best` (the repair).
    Returns False (nothing repaired; the caller resets and splits again into
    ``k_retry`` parts) when over a tenth of the blocks did not fit and
    ``k_retry`` > ``k``."""
    for _ in range(k):
        P.new_core()
    pending = []
    for b in range(P.b.n):
        c = int(parts[b])
        if P.fits(b, c):
            P.add(b, c)
        else:
            pending.append(b)
    if k_retry > k and len(pending) > P.b.n / 10:
        return False
    for b in pending:
        _place_best(b, W, P)
    return True


def pack_kahypar(blocks: Blocks, nets: tuple, W: sp.csr_matrix, P: Packer, k: int,
                 seed: int, k_retry: int = 0) -> np.ndarray:
    """Mt-KaHyPar km1 partition of the block hypergraph ``nets`` (pins, weights:
    :func:`nmc.passes.hypergraph.nets`) into ``k`` cores (at least the parts
    the block weights need), then the repair of :func:`fill_parts`; split again
    into ``k_retry`` parts when the ``k``-way split is far from feasible (as
    :func:`pack_metis`)."""
    from . import hypergraph as hgp

    if k <= 1 or blocks.n <= 1:
        for b in range(blocks.n):
            _place_best(b, W, P)
        return P.part
    if k_retry > 2 * k:
        k, k_retry = k_retry, 0
    vw = hgp.block_weights(P.bl, P._cap())
    k = min(max(k, hgp.parts_needed(vw)), blocks.n)
    pins, w = nets
    # nothing to cut: no net, one block per part, or every net spanning every block (a dense
    # single layer: each net's λ is then the parts used, the same km1 for every k-way split)
    if pins.shape[0] == 0 or k == blocks.n or pins.nnz == pins.shape[0] * blocks.n:
        parts = np.arange(blocks.n) % k
    else:
        parts, _ = hgp.partition(pins, w, vw, k, seed)
    if not fill_parts(parts, k, W, P, k_retry):
        P.reset()
        return pack_kahypar(blocks, nets, W, P, k_retry, seed)
    return P.part


def refine(part: np.ndarray, W: sp.csr_matrix, P: Packer, rng: np.random.Generator, sweeps: int = 4,
           score=None) -> np.ndarray:
    """KL-style moves: each block (random order) moves to the core it is most
    connected to when the gain is positive and the core has room. A sweep is
    kept only when ``score`` (exact traffic) does not get worse."""
    best = score(P.part) if score else None
    for _ in range(sweeps):
        before = P.part.copy()
        moved = 0
        for b in rng.permutation(P.b.n):
            nb = W.indices[W.indptr[b]:W.indptr[b + 1]]
            if nb.size == 0:
                continue
            wt = W.data[W.indptr[b]:W.indptr[b + 1]]
            gain = np.bincount(P.part[nb], weights=wt, minlength=P.n_cores)
            p = int(P.part[b])
            q = int(np.argmax(gain))
            if q == p or gain[q] <= gain[p]:
                continue
            P.remove(b)
            if P.fits(b, q):
                P.add(b, q)
                moved += 1
            else:
                P.add(b, p)
        if not moved:
            break
        if score:
            s = score(P.part)
            if s > best:   # revert the sweep
                for b in np.nonzero(P.part != before)[0]:
                    P.remove(b)
                for b in np.nonzero(before != P.part)[0]:
                    P.add(b, int(before[b]))
                break
            best = s
    return P.part


def compact(part: np.ndarray) -> np.ndarray:
    """Renumber cores 0..K−1 in order of first use (drops empty cores)."""
    _, first = np.unique(part, return_index=True)
    order = np.unique(part)[np.argsort(first)]
    remap = np.empty(order.max() + 1 if order.size else 0, dtype=np.int64)
    remap[order] = np.arange(order.size)
    return remap[part]


# ------------------------------------------------------------------ metrics
def unit_cores(blocks: Blocks, part: np.ndarray) -> np.ndarray:
    """Core of every unit (-1 for host inputs)."""
    out = np.full(blocks.of_unit.size, -1, dtype=np.int64)
    m = blocks.of_unit >= 0
    out[m] = part[blocks.of_unit[m]]
    return out


def source_core_incidence(H: sp.csr_matrix, part: np.ndarray, n_cores: int) -> sp.csr_matrix:
    """(N × cores) pattern: source s has a target on core c."""
    return group_incidence(H, part, n_cores)


def traffic(net: Network, H: sp.csr_matrix, blocks: Blocks, part: np.ndarray) -> float:
    """The multicast traffic metric (module docstring), events per step."""
    K = int(part.max()) + 1 if part.size else 0
    Hc = source_core_incidence(H, part, K)
    lam = np.diff(Hc.indptr).astype(np.float64)
    own = _own_hit(Hc, unit_cores(blocks, part))
    return float(np.dot(net.rate, lam - own))


def _own_hit(Hc: sp.csr_matrix, ucore: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(Hc.shape[0]), np.diff(Hc.indptr))
    hit = Hc.indices == ucore[rows]
    return np.bincount(rows[hit], minlength=Hc.shape[0]).astype(np.float64)


def traffic_lower_bound(net: Network, caps: np.ndarray) -> float:
    """The bound before issue #19 (``⌈targets / largest capacity⌉ − [placed]`` per source), kept
    for comparison; the report's bound is :func:`nmc.passes.hypergraph.traffic_lower_bound`."""
    AT = net.AT
    t = np.diff(AT.indptr).astype(np.float64)
    if AT.nnz == 0:
        return 0.0
    upop = net.unit_pop()
    tcap = caps[upop[AT.indices]].astype(np.float64)
    nz = t > 0
    capmax = np.zeros(net.n_units)
    capmax[nz] = np.maximum.reduceat(tcap, AT.indptr[:-1][nz])
    lb = np.zeros(net.n_units)
    lb[nz] = np.ceil(t[nz] / np.maximum(capmax[nz], 1)) - net.placed_mask[nz]
    return float(np.dot(net.rate, np.maximum(lb, 0)))


def _hypergraph_bound(net: Network, limits: CoreLimits, g: Graph | None = None) -> float:
    from .hypergraph import traffic_lower_bound as per_net_bound

    return per_net_bound(net, limits, rules.max_per_core(net, limits, upper=True), g)


def core_table(net: Network, blocks: Blocks, part: np.ndarray, H: sp.csr_matrix) -> dict:
    K = int(part.max()) + 1 if part.size else 0
    neurons = np.bincount(part, weights=blocks.neurons, minlength=K)
    byts = np.bincount(part, weights=blocks.bytes_, minlength=K)
    work = np.bincount(part, weights=blocks.work, minlength=K)
    Hc = source_core_incidence(H, part, K)
    axons = np.bincount(Hc.indices, minlength=K)
    return {"neurons": neurons.astype(np.int64), "synapse_bytes": byts.astype(np.int64),
            "work_per_step": work, "input_axons": axons.astype(np.int64)}


def check_cores(table: dict, limits: CoreLimits) -> list[str]:
    """Names of the limits some core exceeds (empty when all fit)."""
    bad = []
    for key, lim in (("neurons", limits.neurons_max), ("synapse_bytes", limits.memory_bytes),
                     ("work_per_step", limits.work_max), ("input_axons", limits.fan_in_max)):
        if lim and np.any(table[key] > lim * (1 + 1e-9)):
            bad.append(key)
    return bad


#: the neuron-level stage after the portfolio (:mod:`nmc.passes.unit_moves`) stops after this many
#: pin visits per pin of the network's hypergraph (synapses + units): a work budget proportional to
#: the network, so the result does not depend on the machine's speed; 0: off
UNIT_VISITS_PER_PIN = 16
#: ... and at least this many (1–3 s on one core of the bench machine at 10⁵ neurons, 5–15 s at 10⁶)
UNIT_VISITS_MIN = 300_000_000


def unit_visit_budget(net: Network, per_pin: int) -> int:
    """Pin visits the unit-move stage may spend: ``per_pin`` per synapse pattern entry and unit,
    at least :data:`UNIT_VISITS_MIN` (0 when ``per_pin`` is 0: the stage is off)."""
    return max(int(per_pin) * (net.A.nnz + net.n_units), UNIT_VISITS_MIN) if per_pin else 0


def unit_blocks(net: Network, ucore: np.ndarray) -> tuple[Blocks, np.ndarray]:
    """Blocks of an assignment of single units: one block per (placed node, core), its units in
    index order, and the core of each block (the form the metrics and the annotation read)."""
    upop = net.unit_pop()
    placed = np.nonzero(ucore >= 0)[0]
    key = np.lexsort((placed, ucore[placed], upop[placed]))
    order = placed[key]
    kp, kc = upop[order], ucore[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (kp[1:] != kp[:-1]) | (kc[1:] != kc[:-1])
    start = np.nonzero(new)[0].astype(np.int64)
    stop = np.append(start[1:], order.size).astype(np.int64)
    of_unit = np.full(net.n_units, -1, dtype=np.int64)
    of_unit[order] = np.repeat(np.arange(start.size), stop - start)
    red = (lambda a: np.add.reduceat(a[order], start)) if start.size else (lambda a: np.zeros(0))  # noqa: E731
    blocks = Blocks(start, stop, kp[start], of_unit, (stop - start).astype(np.float64), red(net.bytes_),
                    red(net.work), order)
    return blocks, kc[start].astype(np.int64)


def refine_unit_moves(net: Network, limits: CoreLimits, blocks: Blocks, part: np.ndarray,
                      max_visits: int) -> tuple[Blocks, np.ndarray, dict] | None:
    """The neuron-level stage (:mod:`nmc.passes.unit_moves`) seeded with ``part`` on ``blocks``:
    returns (blocks, part, summary) of the refined assignment, or None when nothing moved. Nodes
    that pay bytes per run on a core keep their whole-core blocks (the stage is skipped)."""
    from .unit_moves import refine_units

    if any(net.run_bytes_of(k) for k in range(len(net.pop_names))):
        return None
    uc = unit_cores(blocks, part)
    placed = uc >= 0
    K = int(part.max()) + 1 if part.size else 0
    ul = np.stack([placed.astype(np.float64), net.bytes_, net.work], 1)
    ul[~placed] = 0
    core_load = np.stack([np.bincount(uc[placed], weights=ul[placed, d], minlength=K) for d in range(3)], 1)
    L = limits
    cap = np.array([L.neurons_max or np.inf, L.memory_bytes or np.inf, L.work_max or np.inf], dtype=float)
    new, summary = refine_units(net.A, net.AT, net.placed_mask, placed, uc, net.rate, ul, core_load, cap,
                                L.fan_in_max, max_visits=max_visits)
    if not (summary["moves"] or summary["swaps"]):
        return None
    nb, npart = unit_blocks(net, new)
    return nb, npart, summary


# --------------------------------------------------------------- the pass
@dataclass
class Partitioning:
    """Everything one partition run decided and measured (used by the pass,
    place/route and the benchmark)."""

    net: Network
    limits: CoreLimits
    blocks: Blocks
    H: sp.csr_matrix
    W: sp.csr_matrix
    caps: np.ndarray
    part: np.ndarray
    seconds: dict


def run_partition(g: Graph, limits: CoreLimits, *, method: str = "kahypar", refine_moves: bool = True,
                  seed: int = 0, data: dict | None = None, max_blocks: int = 4096, rate_steps: int = 200,
                  baselines: tuple[str, ...] = ("sequential", "greedy"), max_block_edges: int = 1_000_000,
                  baseline_max_neurons: int | None = None, kahypar_max_pins: int | None = None,
                  unit_visits: int = UNIT_VISITS_PER_PIN, kahypar_max_parts: int | None = None,
                  ctx: PassContext | None = None, data_source: str | None = None) -> tuple[Partitioning, dict]:
    """Partition ``g`` under ``limits``; returns the chosen partitioning and the
    report (with the baselines' traffic computed in the same run: sequential fill
    on blocks of consecutive neurons, the others on the pixel-major blocks of
    :func:`make_blocks` where a node has them)."""
    if method not in METHODS:
        raise OptionError(f"unknown partition method {method!r}", hint=f"use {', '.join(METHODS)}")
    t = {}
    t0 = time.perf_counter()
    net = network_for(g, limits, ctx, data, rate_steps, data_source=data_source)
    t["model"] = time.perf_counter() - t0
    violations = rules.check(net, limits)
    if violations:
        raise DesignRuleError(violations, target=limits.target)
    caps = rules.max_per_core(net, limits)
    lb = rules.cores_lower_bound(net, limits)
    t0 = time.perf_counter()
    shapes = [tuple(g.shape_out(k)) for k in net.pop_names]
    blocks, H, W, coarsened = block_model(net, caps, max_blocks, max_block_edges, lb["value"],
                                          limits.fan_in_max, shapes)
    # sequential fill is the vendors' default: consecutive neurons, whatever the blocks of the others
    consecutive = (blocks, H, W, coarsened) if not blocks.tiled else \
        block_model(net, caps, max_blocks, max_block_edges, lb["value"], limits.fan_in_max)
    t["graph"] = time.perf_counter() - t0
    rng = np.random.default_rng(seed)

    main = (blocks, H, W)

    def score(p):
        return traffic(net, main[1], main[0], p)

    def model_of(m):   # (blocks, H, W) a method's result is on
        return consecutive[:3] if m == "sequential" else main

    def score_of(m, p):
        b, h, _ = model_of(m)
        return traffic(net, h, b, p)

    results = {}
    skipped = {}
    if "greedy" in baselines and method != "greedy" and baseline_max_neurons is not None \
            and net.placed_count > baseline_max_neurons:
        skipped["greedy"] = (f"skipped: {net.placed_count} placed neurons > baseline_max_neurons="
                             f"{baseline_max_neurons} (compute it with partition{{baselines=all}})")
        baselines = tuple(b for b in baselines if b != "greedy")
    unavailable = {}
    methods = [method]
    hnets = None
    if method == "kahypar":   # METIS runs beside it (the portfolio), and stands in when Mt-KaHyPar cannot
        from . import hypergraph as hgp

        why = hgp.available()
        if not why:
            hnets = hgp.nets(H, blocks.of_unit, net.rate)
            if kahypar_max_pins is not None and hnets[0].nnz > kahypar_max_pins:
                why = (f"skipped: the block hypergraph has {hnets[0].nnz} pins > kahypar_max_pins="
                       f"{kahypar_max_pins} (raise it for Mt-KaHyPar on this network)")
        if why:
            unavailable["kahypar"] = f"{why}; METIS used instead"
            methods = ["metis"]
        elif _has_pymetis():
            methods = ["metis", "kahypar"]
    # sequential first (cheap): its core count is METIS' fallback part count; on equal
    # (traffic, cores) the portfolio keeps the first in this order (kahypar last)
    for m in sorted(dict.fromkeys((*methods, *baselines)), key=lambda m: ORDER.index(m)):
        if m == "kahypar" and kahypar_max_parts is not None and "metis" in methods:
            parts = int(results["sequential"].max()) + 1 if results.get("sequential") is not None \
                and results["sequential"].size else max(lb["value"], 1)
            if parts > kahypar_max_parts:   # the same budget as the pins': METIS' result stands
                unavailable["kahypar"] = (f"skipped: the split needs {parts} parts > kahypar_max_parts="
                                          f"{kahypar_max_parts} (raise it for Mt-KaHyPar on this network); "
                                          "METIS used instead")
                continue
        t0 = time.perf_counter()
        P = Packer(*model_of(m)[:2], limits)
        if m == "sequential":
            part = pack_sequential(model_of(m)[0], P)
        elif m == "greedy":
            part = pack_greedy(blocks, W, P)
        else:
            k_seq = int(results["sequential"].max()) + 1 if "sequential" in results and blocks.n else 0
            if m == "metis":
                part = pack_metis(blocks, W, P, max(lb["value"], 1), seed, k_retry=k_seq)
            else:
                part = pack_kahypar(blocks, hnets, W, P, max(lb["value"], 1), seed, k_retry=k_seq)
            if refine_moves:
                part = refine(part, W, P, rng, score=score)
        part = compact(part.copy())
        t[m] = time.perf_counter() - t0
        results[m] = part
    chosen = method if method in results else methods[0]
    if method in ("metis", "kahypar"):  # portfolio: never report worse than a baseline computed in the same run
        scores = {m: (score_of(m, p), int(p.max()) + 1 if p.size else 0) for m, p in results.items()}
        chosen = min(scores, key=lambda m: scores[m])
    part = results[chosen]
    tiles = {net.pop_names[k]: {"channels": int(c), "pixels": list(tl)} for k, (c, tl) in blocks.tiles.items()}
    blocks, H, W = model_of(chosen)
    traffic_chosen = score_of(chosen, part)
    units = None
    # neuron-level moves and swaps seeded with the portfolio's best, where its blocks hold several
    # neurons (with one neuron per block the partitioners and refine() already move single units)
    if refine_moves and unit_visits and method in ("metis", "kahypar") and blocks.neurons.max(initial=0) > 1:
        t0 = time.perf_counter()
        got = refine_unit_moves(net, limits, blocks, part, unit_visit_budget(net, unit_visits))
        if got is not None:
            nb, npart, summary = got
            nH = block_incidence(net, nb)
            tr = traffic(net, nH, nb, npart)
            ok = not check_cores(core_table(net, nb, npart, nH), limits)
            units = {"from": chosen, "traffic_before": round(traffic_chosen, 6), "traffic": round(tr, 6),
                     **summary, "kept": bool(ok and tr < traffic_chosen)}
            if units["kept"]:
                blocks, H, part, traffic_chosen = nb, nH, npart, tr
                W = block_graph(net, blocks, H)
        else:
            units = {"from": chosen, "traffic_before": round(traffic_chosen, 6), "moves": 0, "swaps": 0,
                     "kept": False}
        t["units"] = time.perf_counter() - t0
    table = core_table(net, blocks, part, H)
    bad = check_cores(table, limits)
    if bad:  # the packer guarantees this never happens; a failure here is a bug
        raise AssertionError(f"partition left cores over {bad}")
    K = int(part.max()) + 1 if part.size else 0
    report = {
        "method": method,
        "chosen": chosen,
        "rates": net.rates_from,
        "neurons": net.placed_count,
        "synapses": int(net.A.sum()),
        "blocks": blocks.n,
        "block_edges": int(W.nnz),
        **({"blocks_coarsened": coarsened} if coarsened else {}),
        **({"blocks_pixel_major": tiles} if tiles else {}),
        "cores_used": K,
        "cores_lower_bound": lb["value"],
        "cores_lower_bound_terms": lb["terms"],
        "traffic": round(traffic_chosen, 6),
        **({"unit_moves": units} if units is not None else {}),
        "traffic_lower_bound": round(_hypergraph_bound(net, limits, g), 6),
        **{f"traffic_{m}": round(score_of(m, p), 6) for m, p in results.items()},
        **{f"cores_{m}": int(p.max()) + 1 if p.size else 0 for m, p in results.items()},
        **{f"traffic_{m}": None for m in skipped}, **{f"cores_{m}": None for m in skipped},
        "baselines": {**{m: "computed" for m in results if m not in methods}, **skipped},
        "portfolio": {**{m: "computed" for m in methods}, **unavailable},
        "limits": {k: v for k, v in limits.__dict__.items()},
        "per_core": {k: v.tolist() if k != "work_per_step" else np.round(v, 6).tolist() for k, v in table.items()},
        "per_node_capacity": {n: int(c) for n, c in zip(net.pop_names, caps)},
    }
    pt = Partitioning(net, limits, blocks, H, W, caps, part, t)
    return pt, report


def annotate(g: Graph, pt: Partitioning, positions: dict | None = None) -> None:
    """Write Placement on every neuron node from a partitioning; ``positions``
    (from the place pass) maps "chip", "x", "y", "slot" to per-core arrays."""
    uc = unit_cores(pt.blocks, pt.part)
    cpc = max(pt.limits.cores_per_chip or (int(pt.part.max()) + 1 if pt.part.size else 1), 1)
    for k, name in enumerate(pt.net.pop_names):
        sl = pt.net.pop_slice(k)
        core = uc[sl].astype(np.int32)
        pos = {f: np.asarray(v)[core].astype(np.int32) for f, v in (positions or {}).items()}
        pos.setdefault("chip", (core // cpc).astype(np.int32))
        g.annotate(name, Placement(core=core, rate=pt.net.rate[sl].astype(np.float32), **pos))


def annotate_own_cores(g: Graph, target, pt: Partitioning) -> list[str]:
    """Write Placement on the nodes the target runs on a core of their own though they are no
    partition unit (:meth:`~nmc.target_model.TargetModel.own_core_nodes`, in schedule order):
    the i-th gets core K + i for all its elements, K the cores the units use, and chip
    core // ``cores_per_chip`` (chip 0 without that limit); no rate (its elements are no units of
    the network model, so place and route leave them alone). Returns their names."""
    names = list(target.own_core_nodes(g)) if target is not None else []
    K = int(pt.part.max()) + 1 if pt.part.size else 0
    cpc = max(pt.limits.cores_per_chip or (K + len(names)), 1)
    for i, name in enumerate(names):
        core = np.full(int(np.prod(g.shape_out(name))), K + i, dtype=np.int32)
        g.annotate(name, Placement(core=core, chip=(core // cpc).astype(np.int32)))
    return names


#: the partition methods (option ``method``); ORDER is the order they run in, and the
#: portfolio's preference on equal (traffic, cores)
METHODS = ("kahypar", "metis", "greedy", "sequential")
ORDER = ("sequential", "metis", "greedy", "kahypar")


def _has_pymetis() -> bool:
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


#: ``partition{baselines=auto}`` computes the greedy baseline only up to this many
#: placed neurons (above it the placement report says it was skipped and why);
#: sequential fill is always computed (it is cheap and METIS falls back to its core count).
BASELINE_MAX_NEURONS = 250_000
#: ``partition{method=kahypar}`` runs Mt-KaHyPar only on block hypergraphs up to this many
#: pins (about 10 s on one loaded core of the benchmark machine at 4.5·10⁵ pins); above it METIS
#: alone runs and the report's ``portfolio`` entry says so and why.
KAHYPAR_MAX_PINS = 300_000
#: ... and only on splits into up to this many parts (cores): at a fixed pin count its time grows
#: with the parts (measured on the dense 10⁸-synapse compile for Hala Point: 245,903 pins, 1,496
#: blocks, 15 s CPU at 765 parts and 22 s at 1,488, where a core holds one or two blocks and
#: there is little left to split); above it METIS alone runs, as above the pin budget.
KAHYPAR_MAX_PARTS = 1024
BASELINE_MODES = {"auto": "auto", "all": "all", "true": "all", "on": "all", "none": "none", "false": "none",
                  "off": "none"}


@register
@dataclass(frozen=True)
class Partition(Pass):
    """Partition neurons into cores (see module docstring)."""

    name = "partition"
    summary = "neurons → cores under every per-core limit (kahypar|metis|greedy|sequential), traffic vs lower bound"
    provides = ("placement",)
    default_for = ("placement",)

    method: str = "kahypar"
    max_neurons_per_core: int | None = None
    refine: bool = True
    seed: int | None = None
    max_blocks: int = 4096
    max_block_edges: int = 1_000_000
    rate_steps: int = 200
    baselines: str = "auto"
    baseline_max_neurons: int = BASELINE_MAX_NEURONS
    kahypar_max_pins: int = KAHYPAR_MAX_PINS
    unit_visits: int = UNIT_VISITS_PER_PIN
    kahypar_max_parts: int = KAHYPAR_MAX_PARTS
    bounds = {"unit_visits": (0, None), "max_neurons_per_core": (1, None), "seed": (0, 2 ** 63 - 1), "max_blocks": (1, None),
              "max_block_edges": (1, None), "rate_steps": (1, None), "baseline_max_neurons": (0, None),
              "kahypar_max_pins": (0, None), "kahypar_max_parts": (1, None)}

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        if getattr(ctx.target, "granularity", "neuron") == "logical neuron":
            self._refuse_block_options()
            hemispheres.partition(graph, ctx, ctx.target)
            return graph
        limits = rules.limits_for(ctx, neurons_max=self.max_neurons_per_core)
        seed = ctx.seed if self.seed is None else self.seed
        mode = str(self.baselines).lower()
        if mode not in BASELINE_MODES:
            raise OptionError(f"partition{{baselines={self.baselines}}} is not one of {', '.join(BASELINE_MODES)}",
                              hint="auto: greedy only up to baseline_max_neurons; all: always; none: never")
        mode = BASELINE_MODES[mode]
        data, source = activity_inputs(graph, ctx)
        pt, rep = run_partition(graph, limits, method=self.method, refine_moves=self.refine, seed=seed,
                                data=data, data_source=source, max_blocks=self.max_blocks, rate_steps=self.rate_steps,
                                baselines=("sequential", "greedy") if mode != "none" else (),
                                baseline_max_neurons=self.baseline_max_neurons if mode == "auto" else None,
                                max_block_edges=self.max_block_edges, kahypar_max_pins=self.kahypar_max_pins,
                                kahypar_max_parts=self.kahypar_max_parts, unit_visits=self.unit_visits, ctx=ctx)
        annotate(graph, pt)
        own = annotate_own_cores(graph, ctx.target_model(), pt)
        if own:       # cores that are no unit of the network model: counted apart, named with their cores
            K = rep["cores_used"]
            rep["cores_own"] = {
                "count": len(own), "nodes": {name: K + i for i, name in enumerate(own)},
                "note": f"{len(own)} core(s) of their own after the {K} in cores_used (cores {K}..{K + len(own) - 1},"
                        " e.g. LayerNorm kernels): not in cores_used, the traffic or its bounds, and the place "
                        "pass gives them no mesh position (their chip is core // cores_per_chip)"}
        rep.setdefault("chips_used", len(np.unique(pt.part // max(limits.cores_per_chip or 1 << 30, 1))))
        ctx.reports["placement"] = {**ctx.reports.get("placement", {}), **rep}
        return graph

    def _refuse_block_options(self) -> None:
        """The options of the block packer mean nothing to the hemisphere packer: refuse them."""
        set_ = [f.name for f in fields(self) if getattr(self, f.name) != f.default and f.name != "seed"]
        if set_:
            raise OptionError(f"partition{{{', '.join(set_)}}} does not apply to this target: its placement "
                              "granularity is a logical neuron on hemispheres (nmc.passes.hemispheres)",
                              hint="use plain 'partition'")
