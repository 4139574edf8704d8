"""The exact minimum traffic of a small network under the partition pass's per-core limits.

A mixed-integer program over single neurons, solved by HiGHS through
:func:`scipy.optimize.milp`: a yardstick for :mod:`nmc.passes.partition` and its lower bound
(:func:`nmc.passes.hypergraph.traffic_lower_bound`) on instances small enough to solve, not a
pass (it does not scale: K · units binaries).

Variables, for placed units v, cores k < K and nets e (one per source unit s with a target: its
pins are its targets, plus s itself when s is placed):

* ``x[v,k] ∈ {0,1}``: unit v on core k, ``Σ_k x[v,k] = 1``;
* ``y[e,k] ∈ [0,1]``, ``y[e,k] ≥ x[p,k]`` for every pin p of e: net e touches core k. y is
  continuous: at integral x the objective drives it to max_p x[p,k] ∈ {0,1}, so the MILP's
  optimum is that of y ∈ {0,1};
* ``Σ_k y[e,k] ≥ λ_min(e)``: the cores e's pins need under the neuron, byte and work limits
  (⌈Σ_pins load / limit⌉, the per-net bound of :func:`nmc.passes.hypergraph.traffic_lower_bound`),
  a cut that every assignment meets and that lifts the LP relaxation to that bound;
* where the input-axon limit can bind (more sources with targets than ``fan_in_max``):
  ``z[s,k] ≥ x[t,k]`` for the targets t of s (s's own unit is no input axon of its core unless it
  targets itself), ``Σ_s z[s,k] ≤ fan_in_max``; for a host source z is its y;
* where a node pays bytes once per run on a core (``Network.run_bytes``): ``w[n,k] ≥ x[v,k]``
  for v of node n.

Per core k (each limit only when the spec sets it and the whole network could exceed it):
``Σ_v x[v,k] ≤ neurons_max``, ``Σ_v bytes_v x[v,k] + Σ_n run_n w[n,k] ≤ memory_bytes``,
``Σ_v work_v x[v,k] ≤ work_max`` (bytes and work with the packer's relative slack of 10⁻⁹,
:class:`nmc.passes.partition.Packer`).

Objective: ``Σ_e r_e Σ_k y[e,k] − Σ_{e of a placed source} r_e``, i.e. r_s (λ_s − 1) for a placed
source and r_s λ_s for a host input, λ_s the cores its pins touch: exactly
:func:`nmc.passes.partition.traffic` (a placed source pays λ(targets) − [own core among them] =
λ(pins) − 1).

Symmetry: cores are numbered by their lowest unit (placed units in index order): unit v lies on
a core k ≤ v, and unit v on core k ≥ 1 needs a unit u < v on core k − 1
(``x[v,k] ≤ Σ_{u<v} x[u,k−1]``). Every assignment has exactly one such numbering, so the optimum
is unchanged.

Cores: by default K = :func:`cores_enough`, a count no optimum needs more of. Merging two cores
never raises the traffic (a net's cores can only fall), so some optimum has no two cores whose
union fits every limit. The neuron, byte and work loads are additive and a core's input axons are
at most the sum of the two, so for any two of its cores i, j some limit r has
``load_i,r + load_j,r > cap_r``, hence ``u_i + u_j > 1`` with ``u_i = Σ_r load_i,r / cap_r`` over
the limits that can bind. At most one core then has u ≤ ½, so ``K − 1 < 2 Σ_i u_i ≤ 2U`` with U
the network's total over those limits (bytes counting every node's per-run bytes once per neuron,
input axons once per synapse pattern entry: upper bounds on any assignment's sum), and
``K ≤ ⌈2U⌉``, at most the placed units (neurons alone: the integer count of :func:`cores_enough`).
With fewer cores (``cores=``) the result is the optimum on at most that many cores
(``cores_enough`` False in the result): an upper bound on the optimum.

Result (:class:`ExactResult`): the optimum and an optimal assignment when HiGHS proves it within
``time_limit`` seconds; else its best assignment (if any), its proven dual bound and the relative
gap (HiGHS runs with ``mip_rel_gap`` 0, so "optimal" is proved to its feasibility tolerances; the
traffic reported is the assignment's, recomputed by :func:`nmc.passes.partition.traffic`). The LP
relaxation's value (every integrality dropped) is solved and returned too: with the constraints
above it is about the per-net bound (x = 1/K spreads a net over cores at no cost beyond
its cut), which is why the MILP's own bound is reported when it stops early.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from nmc.errors import OptionError
from nmc.target_model import CoreLimits

from .netmodel import Network

#: the packer's relative slack on the byte and work limits (Packer._capt)
SLACK = 1e-9
#: refuse a model with more variables than this (an instance this size does not solve anyway)
MAX_VARIABLES = 200_000


@dataclass
class ExactResult:
    """What one MILP solve found (traffic in events per step, as the partition report's)."""

    cores: int                     # K, the cores the model offers
    cores_enough: bool             # K ≥ cores_enough(): the optimum is over every assignment
    status: str                    # "optimal", "time limit" (HiGHS stopped early) or "infeasible"
    traffic: float | None          # the best assignment's traffic (the optimum when status is optimal)
    dual_bound: float | None       # HiGHS' proven lower bound on the optimum over K cores
    gap: float | None              # (traffic − dual_bound) / traffic as HiGHS reports it
    lp_relaxation: float | None    # the LP relaxation's value
    unit_core: np.ndarray | None   # core per unit (-1 for host inputs) of the best assignment
    variables: int
    binaries: int
    constraints: int
    seconds: float                 # MILP solve time (the LP's not included)
    lp_seconds: float


def assignment_traffic(net: Network, unit_core: np.ndarray) -> float:
    """:func:`nmc.passes.partition.traffic` of a core per unit (-1 for host inputs)."""
    from .partition import block_incidence, traffic, unit_blocks

    blocks, part = unit_blocks(net, unit_core)
    return traffic(net, block_incidence(net, blocks), blocks, part)


def _binding(limit, total: float) -> bool:
    return bool(limit) and total > limit * (1 + SLACK)


def cores_enough(net: Network, limits: CoreLimits) -> int:
    """Cores some optimal assignment fits on (module docstring): ⌈2U⌉, at least 1, at most the
    placed units, U the network's load over every limit that can bind; where only the neuron limit
    can bind, 1 + ⌊(n − 1) / (⌊cap / 2⌋ + 1)⌋ when smaller (loads are integers: at most one core
    holds ⌊cap / 2⌋ or fewer neurons, the others at least ⌊cap / 2⌋ + 1, the smallest at least 1)."""
    placed = net.placed_mask
    n = int(placed.sum())
    if n == 0:
        return 0
    bytes_total = float(net.bytes_[placed].sum()) + sum(net.run_bytes_of(k) * net.pop_size(k)
                                                        for k in range(len(net.pop_names)))
    u, which = 0.0, []
    for name, lim, total in (("neurons", limits.neurons_max, float(n)), ("bytes", limits.memory_bytes, bytes_total),
                             ("work", limits.work_max, float(net.work[placed].sum())),
                             ("axons", limits.fan_in_max, float(net.AT.nnz) if _axons_bind(net, limits) else 0.0)):
        if _binding(lim, total):
            u += total / lim
            which.append(name)
    k = min(n, max(1, math.ceil(2 * u - 1e-12)))
    if which == ["neurons"]:
        k = min(k, 1 + (n - 1) // (int(limits.neurons_max) // 2 + 1))
    return int(k)


def _axons_bind(net: Network, limits: CoreLimits) -> bool:
    return bool(limits.fan_in_max) and net.n_sources_used > limits.fan_in_max


class _Model:
    """Sparse rows of ``lo ≤ A v ≤ hi`` built one block at a time."""

    def __init__(self):
        self.r, self.c, self.v, self.lo, self.hi = [], [], [], [], []
        self.n_rows = 0

    def rows(self, rows, cols, vals, lo, hi):
        """Append len(lo) rows; ``rows`` index them from 0."""
        self.r.append(np.asarray(rows, np.int64) + self.n_rows)
        self.c.append(np.asarray(cols, np.int64))
        self.v.append(np.asarray(vals, np.float64))
        self.lo.append(np.asarray(lo, np.float64))
        self.hi.append(np.asarray(hi, np.float64))
        self.n_rows += len(self.lo[-1])

    def constraint(self, n_vars: int) -> LinearConstraint:
        A = sp.csr_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                          shape=(self.n_rows, n_vars))
        return LinearConstraint(A, np.concatenate(self.lo), np.concatenate(self.hi))


def exact_partition(net: Network, limits: CoreLimits, cores: int | None = None, time_limit: float = 30.0,
                    lp: bool = True) -> ExactResult:
    """The minimum traffic of ``net`` (the partition pass's network model, e.g.
    ``run_partition(...)[0].net``) under ``limits`` on at most ``cores`` cores (default
    :func:`cores_enough`); HiGHS stops after ``time_limit`` seconds. See the module docstring."""
    placed = np.nonzero(net.placed_mask)[0]
    n = placed.size
    K_enough = cores_enough(net, limits)
    K = K_enough if cores is None else int(cores)
    if n == 0:
        return ExactResult(0, True, "optimal", 0.0, 0.0, 0.0, 0.0, np.full(net.n_units, -1), 0, 0, 0, 0.0, 0.0)
    if K < 1:
        raise OptionError("the exact partition needs at least one core", limit=1, actual=K, hint="pass cores ≥ 1")
    col = np.full(net.n_units, -1, np.int64)
    col[placed] = np.arange(n)
    AT = net.AT
    srcs = np.nonzero(np.diff(AT.indptr) > 0)[0]
    # nets: pins (as placed-unit columns 0..n−1) of each source with a target
    pins, owner = [], []
    for e, s in enumerate(srcs):
        t = col[AT.indices[AT.indptr[s]:AT.indptr[s + 1]]]
        p = np.union1d(t, [col[s]]) if net.placed_mask[s] else t
        pins.append(p)
        owner.append(np.full(p.size, e, np.int64))
    E = srcs.size
    pin_v, pin_e = np.concatenate(pins), np.concatenate(owner)
    axons = _axons_bind(net, limits)
    z_of = np.full(E, -1, np.int64)   # nets needing their own z (placed sources), numbered
    if axons:
        z_nets = np.nonzero(net.placed_mask[srcs])[0]
        z_of[z_nets] = np.arange(z_nets.size)
    n_z = int((z_of >= 0).sum())
    run = np.array([net.run_bytes_of(k) for k in range(len(net.pop_names))])
    run_nodes = np.nonzero(run > 0)[0] if limits.memory_bytes else np.zeros(0, np.int64)
    # variable layout: x (n·K), y (E·K), z (n_z·K), w (|run_nodes|·K); index = block + item·K + k
    ox, oy = 0, n * K
    oz = oy + E * K
    ow = oz + n_z * K
    nv = ow + run_nodes.size * K
    if nv > MAX_VARIABLES:
        raise OptionError("the network is too large for the exact partition", limit=MAX_VARIABLES, actual=nv,
                          hint="use fewer neurons or cores (it is meant for instances of up to a few hundred units)")
    ks = np.arange(K)
    m = _Model()
    # each unit on one core
    m.rows(np.repeat(np.arange(n), K), ox + np.arange(n * K), np.ones(n * K), np.ones(n), np.ones(n))
    # y[e,k] − x[p,k] ≥ 0 for every pin, every core
    npins = pin_v.size
    r = np.arange(npins * K)
    m.rows(np.concatenate([r, r]),
           np.concatenate([oy + np.repeat(pin_e, K) * K + np.tile(ks, npins),
                           ox + np.repeat(pin_v, K) * K + np.tile(ks, npins)]),
           np.concatenate([np.ones(npins * K), -np.ones(npins * K)]), np.zeros(npins * K), np.full(npins * K, np.inf))
    # per net: Σ_k y[e,k] ≥ λ_min(e), the cores its pins need under the additive limits (the pass's
    # per-net bound, here as a cut: valid for every assignment, it lifts the LP relaxation to that bound)
    lam = np.ones(E)
    for lim, load in ((limits.neurons_max, np.ones(n)), (limits.memory_bytes, net.bytes_[placed]),
                      (limits.work_max, net.work[placed])):
        if lim:
            lam = np.maximum(lam, np.ceil(np.bincount(pin_e, weights=load[pin_v], minlength=E) / lim - 1e-9))
    m.rows(np.repeat(np.arange(E), K), oy + np.arange(E * K), np.ones(E * K), lam, np.full(E, np.inf))
    # per-core limits
    pl = net.placed_mask
    for which, lim, load, total in (("neurons", limits.neurons_max, np.ones(n), float(n)),
                                    ("bytes", limits.memory_bytes, net.bytes_[placed],
                                     float(net.bytes_[pl].sum()) + float(run[run_nodes].sum()) * K),
                                    ("work", limits.work_max, net.work[placed], float(net.work[pl].sum()))):
        if not _binding(lim, total):
            continue
        rows = np.tile(ks, n)
        cols = ox + np.arange(n * K)
        vals = np.repeat(load, K)
        if which == "bytes" and run_nodes.size:
            rows = np.concatenate([rows, np.tile(ks, run_nodes.size)])
            cols = np.concatenate([cols, ow + np.arange(run_nodes.size * K)])
            vals = np.concatenate([vals, np.repeat(run[run_nodes], K)])
        m.rows(rows, cols, vals, np.full(K, -np.inf), np.full(K, float(lim) * (1 + SLACK) if which != "neurons"
                                                                      else float(lim)))
    if run_nodes.size:   # w[n,k] − x[v,k] ≥ 0 for v of node n
        upop = net.unit_pop()[placed]
        vs = np.nonzero(np.isin(upop, run_nodes))[0]
        wi = np.searchsorted(run_nodes, upop[vs])
        r = np.arange(vs.size * K)
        m.rows(np.concatenate([r, r]), np.concatenate([ow + np.repeat(wi, K) * K + np.tile(ks, vs.size),
                                                       ox + np.repeat(vs, K) * K + np.tile(ks, vs.size)]),
               np.concatenate([np.ones(r.size), -np.ones(r.size)]), np.zeros(r.size), np.full(r.size, np.inf))
    if axons:
        # z[s,k] − x[t,k] ≥ 0 for the targets t of a placed source s
        zt_e, zt_v = [], []
        for e in np.nonzero(z_of >= 0)[0]:
            s = srcs[e]
            t = col[AT.indices[AT.indptr[s]:AT.indptr[s + 1]]]
            zt_e.append(np.full(t.size, z_of[e]))
            zt_v.append(t)
        if zt_e:
            ze, zv = np.concatenate(zt_e), np.concatenate(zt_v)
            r = np.arange(ze.size * K)
            m.rows(np.concatenate([r, r]), np.concatenate([oz + np.repeat(ze, K) * K + np.tile(ks, ze.size),
                                                           ox + np.repeat(zv, K) * K + np.tile(ks, ze.size)]),
                   np.concatenate([np.ones(r.size), -np.ones(r.size)]), np.zeros(r.size), np.full(r.size, np.inf))
        # Σ_s (z or, for host sources, y)[s,k] ≤ fan_in_max
        host = np.nonzero(z_of < 0)[0]
        cols = np.concatenate([oy + np.repeat(host, K) * K + np.tile(ks, host.size), oz + np.arange(n_z * K)])
        rows = np.concatenate([np.tile(ks, host.size), np.tile(ks, n_z)])
        m.rows(rows, cols, np.ones(cols.size), np.full(K, -np.inf), np.full(K, float(limits.fan_in_max)))
    # symmetry: x[v,k] ≤ Σ_{u<v} x[u,k−1] (k ≥ 1); and x[v,k] = 0 for k > v (bounds below)
    if K > 1:
        vv, kk = np.meshgrid(np.arange(1, n), np.arange(1, K), indexing="ij")
        keep = kk <= vv
        vv, kk = vv[keep], kk[keep]
        rows, cols, vals = [np.arange(vv.size)], [ox + vv * K + kk], [np.ones(vv.size)]
        cnt = vv   # u < v: v terms each
        rows.append(np.repeat(np.arange(vv.size), cnt))
        u = np.concatenate([np.arange(c) for c in cnt]) if vv.size else np.zeros(0, np.int64)
        cols.append(ox + u * K + np.repeat(kk - 1, cnt))
        vals.append(-np.ones(u.size))
        m.rows(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), np.full(vv.size, -np.inf),
               np.zeros(vv.size))
    ub = np.ones(nv)
    xv, xk = np.divmod(np.arange(n * K), K)
    ub[ox + np.nonzero(xk > xv)[0]] = 0.0
    c = np.zeros(nv)
    rate = net.rate[srcs].astype(np.float64)
    c[oy:oz] = np.repeat(rate, K)
    const = -float(rate[net.placed_mask[srcs]].sum())
    integ = np.zeros(nv)
    integ[ox:oy] = 1
    cons = m.constraint(nv)
    bounds = Bounds(np.zeros(nv), ub)
    lp_val, lp_s = None, 0.0
    if lp:
        t0 = time.perf_counter()
        res = milp(c, constraints=cons, integrality=np.zeros(nv), bounds=bounds)
        lp_s = time.perf_counter() - t0
        lp_val = float(res.fun) + const if res.status == 0 else None
    t0 = time.perf_counter()
    res = milp(c, constraints=cons, integrality=integ, bounds=bounds,
               options={"time_limit": float(time_limit), "disp": False, "mip_rel_gap": 0.0})
    secs = time.perf_counter() - t0
    common = dict(cores=K, cores_enough=K >= K_enough, lp_relaxation=lp_val, variables=nv, binaries=n * K,
                  constraints=m.n_rows, seconds=secs, lp_seconds=lp_s)
    if res.status == 2:
        return ExactResult(status="infeasible", traffic=None, dual_bound=None, gap=None, unit_core=None, **common)
    if res.status not in (0, 1):
        raise RuntimeError(f"HiGHS: {res.message}")
    dual = getattr(res, "mip_dual_bound", None)
    dual = float(dual) + const if dual is not None and np.isfinite(dual) else None
    if res.x is None:
        return ExactResult(status="time limit", traffic=None, dual_bound=dual, gap=None, unit_core=None, **common)
    X = res.x[ox:oy].reshape(n, K)
    uc = np.full(net.n_units, -1, np.int64)
    uc[placed] = np.argmax(X, axis=1)
    status = "optimal" if res.status == 0 else "time limit"
    return ExactResult(status=status, traffic=assignment_traffic(net, uc), dual_bound=dual, gap=getattr(res, "mip_gap", None),
                       unit_core=uc, **common)
