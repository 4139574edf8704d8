"""Placement as hypergraph partitioning (the ``kahypar`` method of
:mod:`nmc.passes.partition`).

**The hypergraph.** Vertices are the partitioner's blocks (consecutive neurons,
or a pixel tile, of one node, :func:`~nmc.passes.partition.make_blocks`); every source unit s
with rate r_s > 0 is a net whose pins are the blocks holding its targets plus,
when s is a placed neuron, its own block. For an assignment of blocks to cores
let λ_s be the number of cores the net's pins span. Then the multicast traffic
of :mod:`nmc.passes.partition` is exactly the connectivity metric

    traffic = Σ_s r_s · (λ_s − 1)  +  Σ_{s host input with a target} r_s

Proof, per placed s with target cores C_s: with its own core in C_s the net
spans |C_s| cores and costs |C_s| − 1; without, it spans |C_s| + 1 and costs
|C_s| — both are |C_s| − [core(s) ∈ C_s]. A host input has no own pin: its
net spans |C_s| cores and pays |C_s| packets, one more than λ − 1, a constant
of the network (:func:`host_constant`). So minimising the km1 (λ − 1) objective
minimises the traffic.

**The partitioner.** Mt-KaHyPar (package ``mtkahypar``) with the km1 objective,
one thread and a fixed seed (deterministic: same network, same seed, same
cores). Net weights are the rates scaled to integers (:data:`RATE_SCALE`,
at least 1 for a non-zero rate); identical nets are merged with their weights
added (conv layers: neighbouring sources reach the same blocks). Balance: a
block's weight is its largest fraction of a core's neurons, bytes and work in
units of 1/:data:`CORE_WEIGHT`, rounded up, and every part may hold :data:`CORE_WEIGHT` (one
core), so a part within its weight fits a core in all three; the input-axon
limit and rounding are left to the packer's repair
(:func:`~nmc.passes.partition.fill_parts`), as for METIS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: rate → integer net weight: w = max(1, round(r · RATE_SCALE)) for r > 0
RATE_SCALE = 1000
#: a core's capacity in block-weight units (block weight = ⌈CORE_WEIGHT · largest load fraction⌉):
#: 2¹⁶, so the rounding adds at most 1/65536 of a core per block (exact for blocks of a power-of-two
#: neuron limit), and 4096 cores of weight stay far below Mt-KaHyPar's 32-bit weights
CORE_WEIGHT = 1 << 16


def available() -> str:
    """"" when mtkahypar imports, else why not (the reason the report gives for the METIS fallback)."""
    try:
        import mtkahypar  # noqa: F401
    except ImportError as e:   # pragma: no cover - mtkahypar is a dependency; kept for a clean clone without it
        return f"mtkahypar not importable ({e})"
    return ""


def net_pins(H: sp.csr_matrix, own_block: np.ndarray) -> sp.csr_matrix:
    """(sources × blocks) 0/1 pins: the blocks of a source's targets plus its own block (placed sources)."""
    n, nb = H.shape
    placed = np.nonzero(own_block >= 0)[0]
    O = sp.csr_matrix((np.ones(placed.size, np.float32), (placed, own_block[placed])), shape=(n, nb))
    P = (sp.csr_matrix((np.ones(H.nnz, np.float32), H.indices, H.indptr), shape=H.shape) + O).tocsr()
    P.data[:] = 1
    P.sort_indices()
    return P


def host_constant(H: sp.csr_matrix, own_block: np.ndarray, rate: np.ndarray) -> float:
    """Σ r_s over host inputs with at least one target: traffic − km1 for every assignment."""
    has = np.diff(H.indptr) > 0
    return float(rate[has & (own_block < 0)].sum())


def nets(H: sp.csr_matrix, own_block: np.ndarray, rate: np.ndarray):
    """The weighted nets as (pins CSR with one row per distinct net, integer weights).

    Nets with one pin (cost 0 under any assignment) and zero-rate sources are
    dropped; identical pin sets are merged (weights added)."""
    P = net_pins(H, own_block)
    w = np.where(rate > 0, np.maximum(1, np.round(rate * RATE_SCALE)), 0).astype(np.int64)
    keep = np.nonzero((np.diff(P.indptr) >= 2) & (w > 0))[0]
    P, w = P[keep], w[keep]
    if P.shape[0] == 0:
        return P, w
    # merge identical pin sets: two independent 64-bit sums of random keys per pin, and the size
    rng = np.random.default_rng(0x6b6d31)
    keys = rng.integers(0, 2 ** 63, size=(2, P.shape[1]), dtype=np.uint64)
    starts = P.indptr[:-1]
    h = np.stack([np.add.reduceat(keys[0][P.indices], starts), np.add.reduceat(keys[1][P.indices], starts),
                  np.diff(P.indptr).astype(np.uint64)], 1)
    _, first, inv = np.unique(h, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")   # nets in order of first appearance (deterministic, input order)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    wsum = np.bincount(rank[inv.reshape(-1)], weights=w, minlength=order.size).astype(np.int64)
    return P[first[order]], wsum


def km1(pins: sp.csr_matrix, weights: np.ndarray, part: np.ndarray) -> int:
    """Σ_e w_e (λ_e − 1) of an assignment, computed directly (the check of Mt-KaHyPar's own value)."""
    if pins.shape[0] == 0:
        return 0
    blk = part[pins.indices]
    rows = np.repeat(np.arange(pins.shape[0]), np.diff(pins.indptr))
    pairs = np.unique(np.stack([rows, blk], 1), axis=0)
    lam = np.bincount(pairs[:, 0], minlength=pins.shape[0])
    return int(np.dot(weights, lam - 1))


def block_weights(load: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Integer vertex weights: ⌈CORE_WEIGHT · max_i load_i / cap_i⌉ (at least 1)."""
    frac = np.nan_to_num(load / cap, posinf=1.0).max(1) if load.size else np.zeros(0)
    return np.clip(np.ceil(CORE_WEIGHT * frac - 1e-9), 1, CORE_WEIGHT).astype(np.int64)


_INIT = None


def partition(pins: sp.csr_matrix, weights: np.ndarray, vweights: np.ndarray, k: int, seed: int):
    """Mt-KaHyPar km1 k-way partition of the blocks, every part ≤ CORE_WEIGHT.
    One thread, seed fixed: deterministic. Returns (part per block, km1 Mt-KaHyPar reports)."""
    global _INIT
    import mtkahypar

    if _INIT is None:
        _INIT = mtkahypar.initialize(1, False)
    mtkahypar.set_seed(int(seed) % (2 ** 31))
    ctx = _INIT.context_from_preset(mtkahypar.PresetType.DEFAULT)
    ctx.logging = False
    ctx.set_partitioning_parameters(int(k), 0.03, mtkahypar.Objective.KM1)
    ctx.set_individual_target_block_weights([CORE_WEIGHT] * int(k))
    edges = [pins.indices[a:b].tolist() for a, b in zip(pins.indptr[:-1], pins.indptr[1:])]
    hg = _INIT.create_hypergraph(ctx, int(vweights.size), len(edges), edges, vweights.tolist(), weights.tolist())
    phg = hg.partition(ctx)
    part = np.asarray(phg.get_partition(), dtype=np.int64)
    return part, int(phg.km1())


def parts_needed(vweights: np.ndarray) -> int:
    """Fewest parts whose weight limit can hold the total block weight."""
    return max(1, math.ceil(int(vweights.sum()) / CORE_WEIGHT))


def pin_sums(P: sp.csr_matrix, loads: np.ndarray) -> np.ndarray:
    """``P @ loads`` for an (n × m) array of loads, column j bit for bit ``P @ loads[:, j]``: scipy's
    CSR product with several vectors adds each row's terms in the same order (stored order, from
    0.0) as its product with one, so the m sums of a net cost one pass over the pins, not m."""
    return np.asarray(P @ np.ascontiguousarray(loads, dtype=np.float64))


def with_diagonal(AT: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """The 0/1 pattern of ``AT`` (column indices sorted) with (s, s) added for every s in ``rows``,
    data 1.0, indices sorted: the matrix ``pattern(AT) + I_rows`` with every entry set to 1, built
    by one insertion into the index array rather than a sparse sum (same indices, same order)."""
    ind, ptr = AT.indices, AT.indptr
    rows = np.asarray(rows, dtype=np.int64)
    pos = np.array([int(ptr[s]) + int(np.searchsorted(ind[ptr[s]:ptr[s + 1]], s)) for s in rows.tolist()],
                   dtype=np.int64)
    new = np.array([p >= ptr[s + 1] or ind[p] != s for s, p in zip(rows.tolist(), pos.tolist())], dtype=bool)
    rows, pos = rows[new], pos[new]
    added = np.zeros(AT.shape[0] + 1, dtype=np.int64)
    added[rows + 1] = 1
    indices = np.insert(ind, pos, rows.astype(ind.dtype))
    return sp.csr_matrix((np.ones(indices.size), indices, ptr + np.cumsum(added)), shape=AT.shape)


def traffic_lower_bound(net, limits, caps_upper: np.ndarray, graph=None) -> float:
    """A lower bound on the traffic of every feasible assignment, net by net.

    A net's pins (a source's targets plus itself when placed) must span λ_s
    cores, each holding at most: ``neurons_max`` neurons, ``memory_bytes``
    bytes, ``work_max`` work (all pins together, whatever nodes they belong
    to: the limits are per core and additive), and at most ``caps_upper[k]``
    neurons of node k (:func:`~nmc.passes.rules.max_per_core` with
    ``upper=True``: its smallest neurons, the most any core holds of it).
    So λ_s ≥ max(⌈Σ_pins load_r / limit_r⌉ over r, ⌈pins in k / caps_upper[k]⌉
    over k), and

        traffic ≥ Σ_{s placed} r_s (λ_s − 1) + Σ_{s host, targets} r_s λ_s

    (the km1 identity of this module's docstring). It is exact for a single
    net (one source, its targets in one node: ⌈t / cap⌉ cores are needed and
    filling cores one after the other reaches them) and never above any
    feasible assignment's traffic, since every term bounds its own net. What
    it cannot see: nets that fit a core alone but cannot all be kept whole at
    once (a conv layer's overlapping windows), where the optimum pays for the
    cut between cores and the bound pays nothing. With ``graph``, the sources of
    every conv-coupled node pair (:func:`conv_pairs`) are bounded together instead
    where that is larger (:func:`window_bound`: the nets of a layer coupled), and the pairs of up to
    two placed nodes together where their LP over core types is larger still
    (:mod:`nmc.passes.window_lp`: the layers share each core's capacity, and a source saves a
    packet only where its core holds one of its targets)."""
    AT = net.AT
    n = net.n_units
    if AT.nnz == 0:
        return 0.0
    placed = net.placed_mask
    pl = np.nonzero(placed)[0]
    P = with_diagonal(AT, pl)
    has_t = np.diff(AT.indptr) > 0
    pm = placed.astype(np.float64)
    upop = net.unit_pop()
    K = len(net.pop_names)
    loads = np.zeros((n, 3 + K))
    loads[:, 0], loads[:, 1], loads[:, 2] = pm, net.bytes_ * pm, net.work * pm
    loads[pl, 3 + upop[pl]] = 1.0
    sums = pin_sums(P, loads)
    lam = np.zeros(n)
    for j, lim in enumerate((limits.neurons_max, limits.memory_bytes, limits.work_max, *caps_upper)):
        if lim and lim > 0:
            lam = np.maximum(lam, np.ceil(sums[:, j] / lim - 1e-9))
    cost = np.where(placed, lam - 1, lam)
    cost = np.where(has_t, np.maximum(cost, 0), 0)
    pairs = conv_pairs(graph, net) if graph is not None else []
    coupled: dict[int, float] = {}   # source unit node -> the largest coupled bound of its sources
    for pair in pairs:
        k = net.pop_names.index(pair.layer)
        coupled[pair.src] = max(coupled.get(pair.src, 0.0), window_bound(net, pair, int(caps_upper[k])))
    if not coupled:
        return float(np.dot(net.rate, cost))
    per = net.rate * cost
    node = np.array([float(per[int(net.unit_offset[i]):int(net.unit_offset[i + 1])].sum())
                     for i in range(len(net.unit_names))])
    each = np.array([max(node[i], coupled.get(i, 0.0)) for i in range(len(node))])
    # the pairs of up to two placed nodes sharing the cores' capacity (passes/window_lp.py): per
    # group the larger of its LP and its source nodes' separate bounds (each bounds their cost)
    from .window_lp import group_bound, group_pairs

    joint = each.copy()
    for grp in group_pairs(net, pairs):
        srcs = sorted({p.src for p in grp})
        lp = group_bound(net, limits, caps_upper, grp)
        if lp is not None and lp > joint[srcs].sum():
            joint[srcs] = 0.0
            joint[srcs[0]] = lp
    return float(joint.sum())


# ----------------------------------------------------- conv layers: nets coupled by the window
@dataclass(frozen=True)
class ConvPair:
    """A neuron node ``layer`` fed from unit node ``src`` (unit-node index) through a conv
    node of stride 1, dilation 1, one group and every kernel weight a synapse."""
    src: int
    layer: str
    c_in: int
    in_hw: tuple
    c_out: int
    out_hw: tuple
    kernel: tuple
    padding: tuple


def conv_pairs(graph, net) -> list[ConvPair]:
    """Every (source unit node, neuron node) pair joined by an edge source → Conv2d → neuron node
    whose pattern is the full window (see :class:`ConvPair`; other paths only add sources)."""
    import nir

    from .netmodel import _pair, _padding, weight_mask

    units = {name: i for i, name in enumerate(net.unit_names)}
    out = []
    for layer in net.pop_names:
        for c in graph.preds(layer):
            node = graph.nodes[c]
            preds = graph.preds(c)
            if not isinstance(node, nir.Conv2d) or len(preds) != 1 or preds[0] not in units or preds[0] == layer:
                continue
            w = np.asarray(node.weight)
            si, so = graph.shape_in(c), graph.shape_out(c)
            if (w.ndim != 4 or int(node.groups) != 1 or _pair(node.stride) != (1, 1) or _pair(node.dilation) != (1, 1)
                    or len(si) != 3 or len(so) != 3 or tuple(graph.shape_out(layer)) != tuple(so)):
                continue
            m = weight_mask(graph, c)
            if m is not None and not m.all():
                continue
            ks = tuple(int(k) for k in w.shape[2:])
            out.append(ConvPair(units[preds[0]], layer, int(si[0]), tuple(int(x) for x in si[1:]), int(so[0]),
                                tuple(int(x) for x in so[1:]), ks, _padding(node.padding, ks, (1, 1), 2)))
    return out


def window_growth(n: int, hw: tuple, kernel: tuple, clipped: bool = False) -> int:
    """g(n) of :func:`growth_table` for one n."""
    t = growth_table(hw, kernel, clipped)
    return int(t[min(max(int(n), 0), t.size - 1)])


def growth_table(hw: tuple, kernel: tuple, clipped: bool = False, n_max: int | None = None) -> np.ndarray:
    """g(n) for n = 0 … n_max (default H·W; the table is computed to H·W either way): a lower bound on |P ⊕ K| for every set P of n
    pixels of an H × W grid, K the kh × kw window (on the unbounded plane):

        |P ⊕ K| ≥ n + (kw − 1)·r + (kh − 1)·c + (kh − 1)(kw − 1)

    with r, c the rows and columns P occupies (r ≤ H, c ≤ W, r·c ≥ n). Proof: dilate along x
    first: each occupied row A gives |A + [0, kw)| ≥ |A| + kw − 1 (its largest element plus
    kw − 1 new ones), r rows add (kw − 1)·r; the result occupies c + kw − 1 columns or more,
    and dilating it along y adds kh − 1 per column. g takes the least right side over r, c.
    Exact for an r × c rectangle.

    ``clipped``: the bound on |(P ⊕ K) ∩ grid| for a window reaching at least one pixel each
    way along both axes (padding ≥ 1 and ≤ k − 2, the input grid the output's). Dilate along x
    first: an occupied row A of fewer than W pixels gains at least one (above its largest
    element when that is not the last column, below its smallest when that is not the first,
    else inside a gap next to an element of A); a full row gains none. Let P occupy r rows, f of
    them full, and c columns. The x step adds ≥ r − f and its column projection is P's, dilated:
    W columns when c = W, else ≥ c + 1. The y step adds ≥ 1 to every column short of H pixels:
    all of them when r < H. So, with n ≤ f·W + (r − f)·min(c, W − 1) and n ≥ f·W + (r − f):

        r < H, c < W (so f = 0):  |…| ≥ n + r + c + 1,   r·c ≥ n
        r < H, c = W:             |…| ≥ n + (r − f) + W,  least at f = ⌊n / W⌋, r = f + [n mod W > 0]
        r = H:                    |…| ≥ n + H − f,        f ≤ ⌊n / W⌋ and f·W + (H − f) ≤ n

    g_x(n) is the least over the cases that a set of n pixels can meet; dilating along y first
    gives g_y (H and W swapped), and both hold, so |…| ≥ max(g_x, g_y). Exact for an r × c
    rectangle in a corner and for one full row along an edge. The table is made non-decreasing by
    a running minimum from the top (|P| ≥ n ⇒ |…| ≥ min_{m ≥ n} g(m)), as the callers need."""
    kh, kw = kernel
    H, W = int(hw[0]), int(hw[1])
    N = H * W
    n = np.arange(N + 1, dtype=np.int64)
    big = np.iinfo(np.int64).max // 4
    if not clipped:
        best = np.full(N + 1, big)
        for r in range(1, H + 1):
            c = -(-n // r)
            best = np.where(c <= W, np.minimum(best, (kw - 1) * r + (kh - 1) * c), best)
        out = n + best + (kh - 1) * (kw - 1)
    else:
        def one_order(H, W):
            best = np.full(N + 1, big)
            for r in range(1, H):                      # r < H, c < W: n + r + c + 1
                c = -(-n // r)
                best = np.where(c <= W - 1, np.minimum(best, r + c + 1), best)
            f = n // W                                 # r < H, c = W
            r = f + (n % W > 0)
            best = np.where(r <= H - 1, np.minimum(best, (r - f) + W), best)
            fmax = np.minimum(n // W, (n - H) // max(W - 1, 1)) if W > 1 else n // W   # r = H
            okc = (n >= H) & (fmax >= 0)
            best = np.where(okc, np.minimum(best, H - np.clip(fmax, 0, H)), best)
            return n + best
        out = np.maximum(one_order(H, W), one_order(W, H))
    out[0] = 0
    out = np.minimum(out, big)
    out = np.minimum.accumulate(out[::-1])[::-1]
    return out if n_max is None else out[:int(n_max) + 1]


def window_bound(net, pair: ConvPair, cap: int) -> float:
    """Lower bound on Σ r_s · cost_s over the sources s of ``pair.src`` (cost_s = λ_s − 1,
    a host source's λ_s), coupling the nets of ``pair.layer`` through its window.

    Count per core: core c holds X_c ⊂ layer, |X_c| ≤ ``cap`` (the most neurons of the
    layer any core holds), on the pixel set P_c, |P_c| ≥ ⌈|X_c| / C_out⌉. Its neurons'
    sources in ``src`` are C_in × ((P_c ⊕ K) ∩ grid) (all channels, full window). Summed
    over cores, Σ_c |sources(X_c)| = Σ_s |cores of s's targets in the layer|, and

        Σ_c |(P_c ⊕ K) ∩ grid| ≥ Σ_c g(|P_c|) − E ≥ N_layer · min_{x ≤ cap} g(⌈x / C_out⌉) / x − E

    with g = :func:`window_growth` (increasing) and E ≤ C_out · Σ_p |(p ⊕ K) outside the grid| (every
    padded window position of a pixel p, once per core holding a channel of p: at most
    C_out); or, without E, N_layer · min_x g_clipped(⌈x / C_out⌉) / x where the clipped
    growth applies (the larger of the two is used). A placed source saves one packet when its own core is among its targets'
    (at most one per source: at most N_src in all); a host source saves none; a source's
    other targets only add cores. So

        Σ_s cost_s ≥ C_in · (N_layer · ρ − E) − [src placed] · N_src,

    times the least rate of the source node. Rigorous for any assignment under the
    per-core limits; the slack is E's C_out (a border pixel whose channels share one core
    counts once) and the N_src saved packets (a source saves one only where its core also
    holds a target)."""
    kh, kw = pair.kernel
    H, W = pair.out_hw
    Hi, Wi = pair.in_hw
    n_layer = H * W * pair.c_out
    cap = max(1, min(int(cap), n_layer))
    x = np.arange(1, cap + 1)
    pix = np.minimum(-(-x // pair.c_out), H * W)

    def rho(clipped):   # min over x ≤ cap of g(⌈x / C_out⌉) / x
        grow = growth_table((H, W), (kh, kw), clipped, int(pix.max()))
        return float((grow[pix] / x).min())

    inside = [int(sum(max(0, min(o - pad + k, size) - max(o - pad, 0)) for o in range(out)))
              for out, size, pad, k in ((H, Hi, pair.padding[0], kh), (W, Wi, pair.padding[1], kw))]
    e = pair.c_out * (kh * kw * H * W - inside[0] * inside[1])
    pixels = n_layer * rho(False) - e
    if (Hi, Wi) == (H, W) and all(1 <= p <= k - 2 for p, k in zip(pair.padding, pair.kernel)):
        pixels = max(pixels, n_layer * rho(True))
    sl = slice(int(net.unit_offset[pair.src]), int(net.unit_offset[pair.src + 1]))
    n_src = sl.stop - sl.start
    count = pair.c_in * pixels - (n_src if net.unit_placed[pair.src] else 0)
    r_min = float(net.rate[sl].min()) if n_src else 0.0
    return max(0.0, count) * r_min
