"""Neuron-level refinement of a placement: moves and pairwise swaps of single
units between cores, each accepted only when it lowers the exact multicast
traffic and keeps both cores within every per-core limit.

The block partitioners (:mod:`nmc.passes.partition`) place blocks of
consecutive neurons, so their cut between two cores can only fall on a block
boundary, and no block-level move changes which neurons of a ring's window
share a core. This stage starts from the portfolio's best assignment (e.g.
sequential fill, whose index order is a ring's locality) and works on units:

* **traffic** (the objective, events per step): for every source s with rate
  r_s, net e_s = its targets plus itself when placed; it pays r_s · (cores of
  e_s − 1) when placed, r_s · (cores of its targets) for a host input — the km1
  metric of :func:`nmc.passes.partition.traffic`. Moving unit v from core p to
  q changes only the nets containing v: with φ_e(c) the pins of e on core c
  other than v, the gain is Σ_e r_e ([φ_e(p) = 0] − [φ_e(q) = 0]) (the same for
  host nets, whose cost is λ instead of λ − 1).
* **limits**: neurons, synapse bytes and work per core are additive per unit;
  input axons are the distinct sources with a target on the core, counted
  exactly (a source frees an axon of p when v was its last target there and
  takes one of q when q held none of its targets).
* **moves**: units in index order, at first those on a net that spans two
  or more cores, later only those sharing a net with a unit that moved; each
  goes to the core (among those its nets touch) with the largest positive
  gain where it fits. Where it does not fit or gains nothing, and its move
  loses at most :data:`SWAP_FLOOR` × the largest rate, the swap with one of
  v's net neighbours on that core (the first :data:`SWAP_PARTNERS` found, the
  best gain to p first) is tried: v moves, the partner's gain to p is
  evaluated after it, and the pair is kept only when the two gains sum to a
  positive number and both cores fit; otherwise both moves are undone.
  Sweeps repeat while they improve, within a budget of pin visits
  (``max_visits``, deterministic: no clock decides anything), so the result
  depends only on the instance; the stage also ends once a tenth of the
  budget went by without a gain (:data:`STALL_PART`).
* **nothing to visit**: the first sweep visits exactly the movable units on a
  small net (at most :data:`BIG_NET` pins) whose pins lie on two or more
  cores, and a later one only units next to a move, so where no movable unit
  lies on such a net no unit is ever visited and none moves. This is checked
  first, in numpy on the small nets' pins alone (:func:`_visits_any`), and the
  stage then returns the start unchanged with 0 pin visits, before its tables
  are built or a compiled function is called: e.g. dense layers whose every
  net has more than :data:`BIG_NET` pins (a compiled function's first call in
  a process loads it from numba's cache, or compiles it where the cache is
  stale, and the tables cost a pass over every synapse: seconds at 10⁸). The
  result is the same as without the check: it only ends a run that would
  have visited nothing.

Nets with more than :data:`BIG_NET` pins (host inputs that reach every core)
keep a dense per-core pin count; everything else is counted by scanning the
net's pins. Gains are float64 sums of the rates; a move or swap is taken only
when its gain exceeds ``1e-9`` × the largest rate, and the caller keeps the
result only when the recomputed exact traffic is strictly lower than the
start's, so the stage never returns a worse placement.

Compiled with numba when installed (the same functions run as plain Python
otherwise, with the same result, much slower).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; plain Python keeps the pass usable without it
    njit = None

#: nets with more pins than this keep a dense per-core pin count (host inputs reaching every core)
BIG_NET = 512
#: swap partners tried per unit (v's net neighbours on the target core, best gain to v's core first)
SWAP_PARTNERS = 8
#: a swap is tried only when the unit's own move loses at most this many of the largest rate
SWAP_FLOOR = 1.0
#: the stage also stops once 1/STALL_PART of its budget went by without a gain
STALL_PART = 10
#: default work budget of one refinement, in pin visits (each gain evaluation, move and swap
#: charged the pins of the unit's nets)
MAX_VISITS = 300_000_000


def _pins_core_count(e, v, tp, ti, placed, core, big, tab, cnt, touched, nt):
    """Count the pins of net e other than v per core into cnt (touched cores appended); returns nt."""
    b = big[e]
    if b >= 0:
        return nt
    if placed[e] and e != v:
        c = core[e]
        if cnt[c] == 0:
            touched[nt] = c
            nt += 1
        cnt[c] += 1
    for k in range(tp[e], tp[e + 1]):
        t = ti[k]
        if t == v:
            continue
        c = core[t]
        if cnt[c] == 0:
            touched[nt] = c
            nt += 1
        cnt[c] += 1
    return nt


def _mult(e, v, placed, tp, ti):
    """Occurrences of v among net e's pins (own pin and as a target: 2 for a self-loop)."""
    m = 1 if (placed[e] and e == v) else 0
    lo, hi = tp[e], tp[e + 1]
    # targets are sorted: binary search for v
    while lo < hi:
        mid = (lo + hi) // 2
        if ti[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    if lo < tp[e + 1] and ti[lo] == v:
        m += 1
    return m


def _nets_of(v, tp, ap, ai, out):
    """Nets containing unit v: its own (when it has targets) and its sources'; returns their count."""
    n = 0
    if tp[v + 1] > tp[v]:
        out[n] = v
        n += 1
    for k in range(ap[v], ap[v + 1]):
        s = ai[k]
        if s != v:
            out[n] = s
            n += 1
    return n


def _gains(v, tp, ti, ap, ai, placed, core, w, big, tab, cnt, touched, B, nets, cand, visits):
    """Gains of moving v to every core its small nets touch. Returns (number of candidates, A − W_v,
    visits); candidate cores in cand[:n], their B (pins-present weight, big nets included) in B."""
    p = core[v]
    n_e = _nets_of(v, tp, ap, ai, nets)
    a_minus_w = 0.0
    nc = 0
    for i in range(n_e):
        e = nets[i]
        we = w[e]
        if we == 0.0:
            continue
        a_minus_w -= we
        if big[e] >= 0:
            if tab[big[e], p] - _mult(e, v, placed, tp, ti) == 0:
                a_minus_w += we
            continue
        nt = _pins_core_count(e, v, tp, ti, placed, core, big, tab, cnt, touched, 0)
        if cnt[p] == 0:
            a_minus_w += we
        for j in range(nt):
            c = touched[j]
            cnt[c] = 0
            if c != p:
                if B[c] == 0.0:
                    cand[nc] = c
                    nc += 1
                B[c] += we
    # big nets: add their weight to every candidate core they already reach
    for i in range(n_e):
        e = nets[i]
        if big[e] < 0 or w[e] == 0.0:
            continue
        for j in range(nc):
            c = cand[j]
            if tab[big[e], c] > 0:
                B[c] += w[e]
    return nc, a_minus_w, visits


def _gain_to(v, q, tp, ti, ap, ai, placed, core, w, big, tab, cnt, touched, nets, visits):
    """Gain of moving v to core q alone. It walks the pins :func:`_gains` walks, for one core: written
    as :func:`_gains` with q added to the candidates, the stage took 1.83–1.93 s instead of 1.54–1.71 s
    (best of 5, three runs each) on the placement benchmark's feed-forward 10⁵ net, whose swaps
    evaluate up to :data:`SWAP_PARTNERS` partners each (the big nets' weights then go to every
    candidate core, not to q alone), and the same 1.01–1.03 s on its ring 10⁵."""
    p = core[v]
    n_e = _nets_of(v, tp, ap, ai, nets)
    g = 0.0
    for i in range(n_e):
        e = nets[i]
        we = w[e]
        if we == 0.0:
            continue
        if big[e] >= 0:
            m = _mult(e, v, placed, tp, ti)
            if tab[big[e], p] - m == 0:
                g += we
            if tab[big[e], q] == 0:
                g -= we
            continue
        nt = _pins_core_count(e, v, tp, ti, placed, core, big, tab, cnt, touched, 0)
        if cnt[p] == 0:
            g += we
        if cnt[q] == 0:
            g -= we
        for j in range(nt):
            cnt[touched[j]] = 0
    return g, visits


def _target_count(s, c, v_skip, tp, ti, placed, core, big, tab, mult_v):
    """Targets of s on core c, not counting unit v_skip (counted with multiplicity mult_v in tab)."""
    b = big[s]
    if b >= 0:
        n = tab[b, c] - (1 if (placed[s] and core[s] == c) else 0)
        if v_skip >= 0 and core[v_skip] == c:
            n -= mult_v
        return n
    n = 0
    for k in range(tp[s], tp[s + 1]):
        t = ti[k]
        if t != v_skip and core[t] == c:
            n += 1
    return n


def _axon_delta(v, q, tp, ti, ap, ai, placed, core, big, tab):
    """(axons p frees, axons q takes) when v moves from its core p to q."""
    p = core[v]
    free, take = 0, 0
    for k in range(ap[v], ap[v + 1]):
        s = ai[k]
        # v is a target of s exactly once (A's pattern has no repeats)
        if _target_count(s, p, v, tp, ti, placed, core, big, tab, 1) == 0:
            free += 1
        if _target_count(s, q, -1, tp, ti, placed, core, big, tab, 0) == 0:
            take += 1
    return free, take


def _apply(v, q, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets):
    """Move v to core q, updating loads, axon counts and big-net tables."""
    p = core[v]
    free, take = _axon_delta(v, q, tp, ti, ap, ai, placed, core, big, tab)
    axons[p] -= free
    axons[q] += take
    for d in range(load.shape[1]):
        load[p, d] -= ul[v, d]
        load[q, d] += ul[v, d]
    n_e = _nets_of(v, tp, ap, ai, nets)
    for i in range(n_e):
        e = nets[i]
        if big[e] >= 0:
            m = _mult(e, v, placed, tp, ti)
            tab[big[e], p] -= m
            tab[big[e], q] += m
    core[v] = q


def _mark(x, tp, ti, ap, ai, placed, big, active, nets):
    """Mark for the next visits the units sharing a (small) net with x, and x."""
    active[x] = True
    n_e = _nets_of(x, tp, ap, ai, nets)
    for i in range(n_e):
        e = nets[i]
        if big[e] >= 0:
            continue
        if placed[e]:
            active[e] = True
        for k in range(tp[e], tp[e + 1]):
            active[ti[k]] = True


def _start(tp, ti, placed, core, big, K, active):
    """Input axons per core (distinct sources with a target there), and ``active`` set on the
    pins of every small net whose pins lie on more than one core (no other unit can gain)."""
    axons = np.zeros(K, np.int64)
    seen = np.full(K, -1, np.int64)
    for s in range(tp.size - 1):
        first = core[s] if placed[s] else -1
        cut = False
        for k in range(tp[s], tp[s + 1]):
            c = core[ti[k]]
            if seen[c] != s:
                seen[c] = s
                axons[c] += 1
            if first < 0:
                first = c
            elif c != first:
                cut = True
        if cut and big[s] < 0:
            if placed[s]:
                active[s] = True
            for k in range(tp[s], tp[s + 1]):
                active[ti[k]] = True
    return axons


def _cost(tp, ap, ai, big):
    """Per unit, the pins a gain evaluation scans: its own net (when it has targets) and its sources'
    (a big net counts 1: its count is looked up)."""
    n = ap.size - 1
    out = np.zeros(n, np.int64)
    for v in range(n):
        c = tp[v + 1] - tp[v]
        c = c + 1 if c > 0 else 0
        for k in range(ap[v], ap[v + 1]):
            s = ai[k]
            c += 1 if big[s] >= 0 else tp[s + 1] - tp[s] + 1
        out[v] = c
    return out


def _fits(c, load, capt, axons, ax_lim):
    for d in range(load.shape[1]):
        if load[c, d] > capt[d]:
            return False
    return ax_lim <= 0 or axons[c] <= ax_lim


def _add_partner(partners, npart, u):
    """``partners[:npart]`` with ``u`` appended unless it is there or the array is full; the new count."""
    for j in range(npart):
        if partners[j] == u:
            return npart
    if npart < partners.size:
        partners[npart] = u
        npart += 1
    return npart


def _sweep(tp, ti, ap, ai, placed, movable, core, w, big, tab, load, ul, capt, axons, ax_lim, eps,
           max_visits, visits, cnt, touched, B, nets, nets2, cand, partners, pgain, swap_floor, active, cost,
           stall, last):
    """One pass over the units in index order; returns (moves, swaps, total gain, visits, visits at the
    last gain). Stops at ``max_visits``, or ``stall`` visits after the last gain."""
    n = core.size
    moves, swaps = 0, 0
    total = 0.0
    for v in range(n):
        if visits > max_visits or visits - last > stall:
            break
        if not movable[v] or not active[v]:
            continue
        active[v] = False
        p = core[v]
        nc, amw, visits = _gains(v, tp, ti, ap, ai, placed, core, w, big, tab, cnt, touched, B, nets, cand,
                                 visits)
        visits += cost[v]
        if nc == 0:
            continue
        # the best candidate (lowest core on ties)
        q, gq = -1, -1e300
        for j in range(nc):
            c = cand[j]
            g = amw + B[c]
            if g > gq or (g == gq and c < q):
                q, gq = c, g
        for j in range(nc):
            B[cand[j]] = 0.0
        # a plain move where it fits (the input axons counted only for a move that gains)
        room = True
        for d in range(load.shape[1]):
            if load[q, d] + ul[v, d] > capt[d]:
                room = False
        if room and gq > eps and ax_lim > 0:
            free, take = _axon_delta(v, q, tp, ti, ap, ai, placed, core, big, tab)
            visits += cost[v]
            if axons[q] + take > ax_lim:
                room = False
        if gq > eps and room:
            _apply(v, q, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets)
            visits += 3 * cost[v]
            moves += 1
            total += gq
            last = visits
            _mark(v, tp, ti, ap, ai, placed, big, active, nets)
            continue
        if gq < -swap_floor:   # no partner's gain makes up for it (the caller's bound)
            continue
        # a swap with one of v's net neighbours on q: partners by their gain to p
        n_e = _nets_of(v, tp, ap, ai, nets)
        npart = 0
        for i in range(n_e):
            e = nets[i]
            if big[e] >= 0:
                continue
            if placed[e] and e != v and core[e] == q and movable[e]:
                npart = _add_partner(partners, npart, e)
            for k in range(tp[e], tp[e + 1]):
                t = ti[k]
                if t != v and core[t] == q and movable[t]:
                    npart = _add_partner(partners, npart, t)
        if npart == 0:
            continue
        _apply(v, q, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets)
        visits += 3 * cost[v]
        for j in range(npart):
            pgain[j], visits = _gain_to(partners[j], p, tp, ti, ap, ai, placed, core, w, big, tab, cnt, touched,
                                        nets2, visits)
            visits += cost[partners[j]]
        done = False
        for _ in range(npart):
            jb, gb = -1, -1e300
            for j in range(npart):
                if pgain[j] > gb:
                    jb, gb = j, pgain[j]
            if jb < 0 or gq + gb <= eps:
                break
            u = partners[jb]
            pgain[jb] = -1e300
            _apply(u, p, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets2)
            visits += 3 * cost[u]
            if _fits(p, load, capt, axons, ax_lim) and _fits(q, load, capt, axons, ax_lim):
                swaps += 1
                total += gq + gb
                last = visits
                done = True
                _mark(v, tp, ti, ap, ai, placed, big, active, nets)
                _mark(u, tp, ti, ap, ai, placed, big, active, nets2)
                break
            _apply(u, q, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets2)
            visits += 3 * cost[u]
        if not done:
            _apply(v, p, tp, ti, ap, ai, placed, core, big, tab, load, ul, axons, nets)
            visits += 3 * cost[v]
    return moves, swaps, total, visits, last


if njit is not None:
    _pins_core_count = njit(cache=True)(_pins_core_count)
    _mult = njit(cache=True)(_mult)
    _nets_of = njit(cache=True)(_nets_of)
    _gains = njit(cache=True)(_gains)
    _gain_to = njit(cache=True)(_gain_to)
    _target_count = njit(cache=True)(_target_count)
    _axon_delta = njit(cache=True)(_axon_delta)
    _apply = njit(cache=True)(_apply)
    _fits = njit(cache=True)(_fits)
    _mark = njit(cache=True)(_mark)
    _start = njit(cache=True)(_start)
    _cost = njit(cache=True)(_cost)
    _add_partner = njit(cache=True)(_add_partner)
    _sweep = njit(cache=True)(_sweep)


def _visits_any(tp: np.ndarray, ti: np.ndarray, placed: np.ndarray, movable: np.ndarray, core: np.ndarray,
                small: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether a movable unit lies on a small net whose pins lie on two or more cores: the units the
    first sweep visits (those :func:`_start` marks, less the unmovable ones). Nets of ``small`` sources
    (own pin when placed on a core, and targets; every target on a core) in chunks of about ``chunk``
    pins, stopping at the first such net: numpy only, no compiled function."""
    rows = np.nonzero(small & (np.diff(tp) > 0))[0]
    lens = np.diff(tp)[rows]
    ends = np.cumsum(lens)
    i = 0
    while i < rows.size:
        j = int(np.searchsorted(ends, (ends[i - 1] if i else 0) + chunk, side="right"))
        r, ln = rows[i:max(j, i + 1)], lens[i:max(j, i + 1)]
        i += r.size
        seg = np.concatenate(([0], np.cumsum(ln)[:-1]))
        idx = np.arange(int(ln.sum())) - np.repeat(seg, ln) + np.repeat(tp[r], ln)
        t = ti[idx]
        c = core[t]
        lo, hi = np.minimum.reduceat(c, seg), np.maximum.reduceat(c, seg)
        own = np.where(placed[r] & (core[r] >= 0), core[r], -1)
        has = own >= 0
        lo[has] = np.minimum(lo[has], own[has])
        hi[has] = np.maximum(hi[has], own[has])
        cut = hi > lo
        if np.any(cut & placed[r] & movable[r]) or np.any(movable[t] & np.repeat(cut, ln)):
            return True
    return False


def refine_units(A: sp.csr_matrix, AT: sp.csr_matrix, placed: np.ndarray, movable: np.ndarray,
                 ucore: np.ndarray, rate: np.ndarray, unit_load: np.ndarray, core_load: np.ndarray,
                 cap: np.ndarray, fan_in_max: int | None, max_visits: int = MAX_VISITS,
                 max_sweeps: int = 8) -> tuple[np.ndarray, dict]:
    """Refine ``ucore`` (core of every unit, -1 for host inputs) by unit moves and swaps.

    ``A`` (target × source) and ``AT`` (source × target) are the synapse patterns with sorted
    indices; ``unit_load`` (units × d) and ``core_load`` (cores × d) the additive loads (neurons,
    bytes, work) against ``cap`` (d); ``fan_in_max`` the input axons per core (None: no limit).
    Only ``movable`` units move. Returns the new unit cores and a summary (moves, swaps, the sum of
    the accepted gains, pin visits, sweeps); the caller recomputes the traffic exactly."""
    n = ucore.size
    K = int(ucore.max()) + 1 if n else 0
    core = ucore.astype(np.int64).copy()
    # targets on no core (unplaced units) are no pins; a unit on no core with a source is one (the test on
    # A's rows: no gather as long as the synapses)
    if np.any(np.diff(A.indptr)[core < 0] > 0):
        keep = sp.diags((core >= 0).astype(np.float32))
        A = (keep @ A).tocsr()
        A.eliminate_zeros()
        AT = A.T.tocsr()
        AT.sort_indices()
    tp, ti, ap, ai = AT.indptr, AT.indices, A.indptr, A.indices   # int32 or int64, not copied
    size = np.diff(tp) + placed
    big_ids = np.nonzero(size > BIG_NET)[0]
    if not _visits_any(tp, ti, placed.astype(np.bool_), movable.astype(np.bool_), core, size <= BIG_NET):
        return core, {"moves": 0, "swaps": 0, "gain": 0.0, "sweeps": 0, "visits": 0}
    big = np.full(n, -1, np.int64)
    big[big_ids] = np.arange(big_ids.size)
    tab = np.zeros((big_ids.size, max(K, 1)), np.int64)
    for b, s in enumerate(big_ids):
        tgt = ti[tp[s]:tp[s + 1]]
        tab[b] = np.bincount(core[tgt][core[tgt] >= 0], minlength=K)
        if placed[s] and core[s] >= 0:
            tab[b, core[s]] += 1
    load = core_load.astype(np.float64).copy()
    ul = unit_load.astype(np.float64)
    capt = np.where(np.isfinite(cap), cap * (1 + 1e-9), 1e300).astype(np.float64)
    eps = 1e-9 * float(rate.max(initial=0.0))
    maxdeg = int(np.diff(ap).max(initial=0)) + 2
    cnt = np.zeros(max(K, 1), np.int64)
    touched = np.zeros(max(K, 1), np.int64)
    B = np.zeros(max(K, 1), np.float64)
    nets, nets2 = np.zeros(maxdeg, np.int64), np.zeros(maxdeg, np.int64)
    cand = np.zeros(max(K, 1), np.int64)
    partners = np.zeros(SWAP_PARTNERS, np.int64)
    pgain = np.zeros(SWAP_PARTNERS, np.float64)
    swap_floor = SWAP_FLOOR * float(rate.max(initial=0.0))
    w = rate.astype(np.float64)
    # the pins a gain evaluation of each unit scans (its own net and its sources'), the unit of the budget
    cost = _cost(tp, ap, ai, big)
    active = np.zeros(n, np.bool_)   # units to visit: those on a cut net at first, then those next to a move
    axons = _start(tp, ti, placed.astype(np.bool_), core, big, max(K, 1), active)
    visits, last = 0, 0
    stall = max(int(max_visits) // STALL_PART, 1)
    summary = {"moves": 0, "swaps": 0, "gain": 0.0, "sweeps": 0}
    for _ in range(max_sweeps):
        mv, sw, g, visits, last = _sweep(tp, ti, ap, ai, placed.astype(np.bool_), movable.astype(np.bool_), core, w, big,
                                   tab, load, ul, capt, axons, int(fan_in_max or 0), eps, int(max_visits), visits,
                                   cnt, touched, B, nets, nets2, cand, partners, pgain, swap_floor, active, cost,
                                         stall, last)
        summary["moves"] += mv
        summary["swaps"] += sw
        summary["gain"] += g
        summary["sweeps"] += 1
        if mv + sw == 0 or visits > max_visits or visits - last > stall:
            break
    summary["visits"] = int(visits)
    summary["gain"] = round(float(summary["gain"]), 6)
    return core, summary
