"""Traffic lower bound of conv layers coupled through the per-core capacity: an LP over core types.

:func:`~nmc.passes.hypergraph.window_bound` bounds one (source node, conv layer) pair as if the
layer had every core to itself and every placed source saved a packet. Here the pairs of a group
of at most two placed nodes share the cores. A core holds x_i neurons of each node i of the group
(a *type* x, feasible under the per-core limits); for a pair j (sources S_j → layer L_j, C_in
input and C_out output channels, kernel K, stride 1, full window) the core's L_j neurons lie on
at least ⌈x_{L_j} / C_out⌉ pixels P, so they read C_in · |(P ⊕ K) ∩ grid| distinct sources, and
at most x_{S_j} of those (the S_j neurons on the same core; none for a host source) are local.

**Proof of validity.** For a source s of S_j with targets T_s, its packets are
|cores(T_s)| − [core(s) ∈ cores(T_s)] (a host source: |cores(T_s)|), at least the same count for
T_s ∩ L_j (restricting the targets never raises it: if core(s) holds a target outside L_j only,
that core is one more in cores(T_s)). Summed over s, Σ_s |cores(T_s ∩ L_j)| = Σ_c |sources of
L_j on c| and Σ_s [core(s) ∈ cores(T_s ∩ L_j)] ≤ Σ_c min(x_{S_j,c}, |sources of L_j on c|), so

    Σ_{s ∈ S_j} cost_s ≥ Σ_c max(0, C_in · |(P_c ⊕ K) ∩ grid| − x_{S_j,c}).

With G a non-decreasing lower bound on |(P ⊕ K) ∩ grid| over pixel sets of a given size, the
per-core cost is at least F(x) = Σ_j r_j · max(0, C_in G_j(⌈x_{L_j} / C_out⌉) − x_{S_j}) with r_j
the least rate of S_j (every cost is ≥ 0). An assignment with n_x cores of type x has
Σ_x n_x x_i = N_i (every neuron of node i placed once) and traffic ≥ Σ_x n_x F(x), so the
LP ``min Σ_x n_x F(x) s.t. Σ_x n_x x = N, n ≥ 0`` (solved exactly by HiGHS over every type)
is a lower bound on every feasible assignment. Other nodes' neurons on a core only use its
capacity, so leaving them out relaxes the types.

G is either the clipped growth of :func:`~nmc.passes.hypergraph.growth_table` (padding in
[1, k − 2], output grid the input's; a per-core bound), or the unbounded-plane growth g with the
border term subtracted once at the end: |(P ⊕ K) ∩ grid| = |P ⊕ K| − b_c, Σ_c b_c ≤ E_j (the
padded window positions, once per channel core: :func:`border_term`), and
max(0, C_in (g − b) − a) ≥ max(0, C_in g − a) − C_in b, so the LP with g, less Σ_j r_j C_in E_j,
is a bound too. The larger of the two is returned.

Types: every x with 0 ≤ x_i ≤ caps_upper[i] (the most neurons of node i any core holds),
Σ x_i ≤ neurons_max, Σ x_i · (node i's smallest bytes) + its per-run bytes ≤ memory_bytes, and
Σ x_i · (smallest work) ≤ work_max. A group whose type grid would exceed :data:`MAX_TYPES`
is not solved (the caller keeps the per-pair bound).
"""
from __future__ import annotations

import numpy as np

#: the most core types one LP enumerates (257² ≈ 66,000 for two nodes of 256 neurons per core)
MAX_TYPES = 400_000


def border_term(pair) -> int:
    """E: C_out · Σ_p |(p ⊕ K) outside the input grid| over the output pixels p (0 without padding)."""
    kh, kw = pair.kernel
    H, W = pair.out_hw
    Hi, Wi = pair.in_hw
    inside = [int(sum(max(0, min(o - pad + k, size) - max(o - pad, 0)) for o in range(out)))
              for out, size, pad, k in ((H, Hi, pair.padding[0], kh), (W, Wi, pair.padding[1], kw))]
    return pair.c_out * (kh * kw * H * W - inside[0] * inside[1])


def clipped_applies(pair) -> bool:
    """The clipped growth bounds |(P ⊕ K) ∩ grid| per core: same grid in and out, padding in [1, k − 2]."""
    return tuple(pair.in_hw) == tuple(pair.out_hw) and all(1 <= p <= k - 2 for p, k in zip(pair.padding, pair.kernel))


def group_pairs(net, pairs) -> list[list]:
    """One pair per source node (the first), grouped in order so a group's pairs touch at most two placed nodes."""
    seen, groups, nodes = set(), [], []
    for p in pairs:
        if p.src in seen:
            continue
        seen.add(p.src)
        mine = {net.pop_names.index(p.layer)} | ({net.pop_units.index(p.src)} if net.unit_placed[p.src] else set())
        if groups and len(nodes[-1] | mine) <= 2:
            groups[-1].append(p)
            nodes[-1] |= mine
        else:
            groups.append([p])
            nodes.append(set(mine))
    return groups


def _types(net, limits, caps_upper, ks: list[int]) -> np.ndarray | None:
    """(types × len(ks)) every feasible per-core count vector of the nodes ``ks``, the empty core left out."""
    caps = [int(caps_upper[k]) for k in ks]
    if int(np.prod([c + 1 for c in caps])) > MAX_TYPES:
        return None
    X = np.stack(np.meshgrid(*[np.arange(c + 1) for c in caps], indexing="ij"), -1).reshape(-1, len(ks))
    ok = X.sum(1) > 0
    if limits.neurons_max:
        ok &= X.sum(1) <= limits.neurons_max
    if limits.memory_bytes:
        b = np.array([float(net.bytes_[net.pop_slice(k)].min(initial=0)) for k in ks])
        run = np.array([net.run_bytes_of(k) for k in ks])
        ok &= X @ b + (X > 0) @ run <= limits.memory_bytes + 1e-9
    if limits.work_max:
        w = np.array([float(net.work[net.pop_slice(k)].min(initial=0)) for k in ks])
        ok &= X @ w <= limits.work_max + 1e-9
    return X[ok]


def group_bound(net, limits, caps_upper, group) -> float | None:
    """The LP bound on Σ r_s cost_s over the source nodes of ``group`` (module docstring), or None
    where the type grid is too large or the LP fails."""
    from scipy.optimize import linprog

    from .hypergraph import growth_table

    ks = sorted({net.pop_names.index(p.layer) for p in group}
                | {net.pop_units.index(p.src) for p in group if net.unit_placed[p.src]})
    X = _types(net, limits, caps_upper, ks)
    if X is None or X.shape[0] == 0:
        return None
    col = {k: i for i, k in enumerate(ks)}
    N = np.array([net.pop_size(k) for k in ks], dtype=np.float64)
    best = None
    for clipped in ((False, True) if any(clipped_applies(p) for p in group) else (False,)):
        F = np.zeros(X.shape[0])
        less = 0.0
        for p in group:
            sl = slice(int(net.unit_offset[p.src]), int(net.unit_offset[p.src + 1]))
            r = float(net.rate[sl].min()) if sl.stop > sl.start else 0.0
            if r <= 0:
                continue
            H, W = p.out_hw
            clip = clipped and clipped_applies(p)
            grow = growth_table((H, W), p.kernel, clip).astype(np.float64)
            pix = np.minimum(-(-X[:, col[net.pop_names.index(p.layer)]] // p.c_out), H * W)
            local = X[:, col[net.pop_units.index(p.src)]] if net.unit_placed[p.src] else 0
            F += r * np.maximum(0.0, p.c_in * grow[pix] - local)
            if not clip:
                less += r * p.c_in * border_term(p)
        res = linprog(F, A_eq=X.T.astype(np.float64), b_eq=N, bounds=(0, None), method="highs")
        if res.status != 0:
            return None
        val = _dual_bound(res.eqlin.marginals, X, F, N) - less
        best = val if best is None else max(best, val)
    return max(0.0, best)


def _dual_bound(y: np.ndarray, X: np.ndarray, F: np.ndarray, N: np.ndarray) -> float:
    """A certified LP bound from HiGHS's duals y: with t = max(0, max_x (x·y − F(x)) / Σ_i x_i),
    y − t satisfies x·(y − t) ≤ F(x) for every type (x ≥ 0), so (y − t)·N ≤ Σ n_x F(x) for every
    n ≥ 0 with Σ n_x x = N (weak duality); solver tolerance never lifts the bound."""
    y = np.asarray(y, dtype=np.float64)
    t = max(0.0, float(((X @ y - F) / X.sum(1)).max()))
    return float((y - t) @ N)
