"""passes/exact_partition.py: the MILP's optimum equals brute-force enumeration of every
assignment on tiny instances (every per-core limit binding in turn), lies between the partition
pass's lower bound and its traffic, and its assignment's traffic is the pass's metric."""
import numpy as np
import pytest

from nmc.passes.exact_partition import assignment_traffic, cores_enough, exact_partition
from nmc.passes.partition import run_partition
from nmc.target_model import CoreLimits

from bench.placement import feedforward, recurrent


def _set_partitions(n: int, k_max: int):
    """Every assignment of n units to at most k_max cores, cores numbered by their lowest unit
    (restricted growth strings), as an (M, n) array."""
    out = []
    a = [0] * n

    def rec(i, used):
        if i == n:
            out.append(a.copy())
            return
        for c in range(min(used + 1, k_max)):
            a[i] = c
            rec(i + 1, max(used, c + 1))

    rec(1, 1)
    return np.array(out, dtype=np.int64)


def _brute_force(net, lim: CoreLimits, k_max: int) -> float:
    """The least traffic over every feasible assignment (the metric written out directly: a placed
    source pays the distinct cores of its targets less its own core's hit, a host input every core)."""
    placed = np.nonzero(net.placed_mask)[0]
    n = placed.size
    A = _set_partitions(n, k_max)                      # (M, n) core per placed unit
    M = A.shape[0]
    K = int(A.max()) + 1
    col = np.full(net.n_units, -1)
    col[placed] = np.arange(n)
    onehot = A[:, :, None] == np.arange(K)[None, None, :]   # (M, n, K)
    ok = np.ones(M, bool)
    pb, pw = net.bytes_[placed], net.work[placed]
    if lim.neurons_max:
        ok &= (onehot.sum(1) <= lim.neurons_max).all(1)
    if lim.memory_bytes:
        ok &= (np.einsum("mnk,n->mk", onehot, pb) <= lim.memory_bytes * (1 + 1e-9)).all(1)
    if lim.work_max:
        ok &= (np.einsum("mnk,n->mk", onehot, pw) <= lim.work_max * (1 + 1e-9)).all(1)
    AT = net.AT
    cost = np.zeros(M)
    axons = np.zeros((M, K))
    for s in range(net.n_units):
        t = col[AT.indices[AT.indptr[s]:AT.indptr[s + 1]]]
        if t.size == 0:
            continue
        hit = onehot[:, t, :].any(1)                   # (M, K) cores holding a target of s
        axons += hit
        lam = hit.sum(1).astype(float)
        if net.placed_mask[s]:
            lam -= hit[np.arange(M), A[:, col[s]]]
        cost += net.rate[s] * lam
    if lim.fan_in_max:
        ok &= (axons <= lim.fan_in_max).all(1)
    assert ok.any()
    return float(cost[ok].min())


def _net(kind, n, lim, seed=0, **kw):
    """The partition pass's network model of the benchmark's net (uniform rates: the pass's
    report) and, for the brute-force cases, the same model with seeded rates in [0.1, 1]."""
    build = {"recurrent": recurrent, "feedforward": feedforward}[kind]
    g, _ = build(n, np.random.default_rng(seed), **kw)
    pt, rep = run_partition(g, lim, method="metis", max_blocks=max(1, n // 3))
    return pt.net, rep


def _rated(net, seed=1):
    return net.with_rates(np.random.default_rng(seed).uniform(0.1, 1.0, net.n_units), "test")


CASES = [   # (kind, neurons, limits, what binds)
    ("recurrent", 9, CoreLimits(neurons_max=4), "neurons"),
    ("feedforward", 9, CoreLimits(neurons_max=4), "neurons"),
    ("recurrent", 8, CoreLimits(neurons_max=6, fan_in_max=18), "input axons"),
    ("feedforward", 9, CoreLimits(neurons_max=5, fan_in_max=4), "input axons"),
]


@pytest.mark.parametrize("kind,n,lim,binds", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_milp_equals_brute_force(kind, n, lim, binds):
    net = _rated(_net(kind, n, lim, fan_in=3)[0])
    if binds == "input axons":   # the limit changes the optimum here
        assert _brute_force(net, lim, 3) > _brute_force(net, CoreLimits(neurons_max=lim.neurons_max), 3) + 1e-6
    for k in (2, 3):
        try:
            want = _brute_force(net, lim, k)
        except AssertionError:   # nothing fits on k cores
            assert exact_partition(net, lim, cores=k).status == "infeasible"
            continue
        got = exact_partition(net, lim, cores=k, time_limit=60)
        assert got.status == "optimal"
        assert got.traffic == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert got.dual_bound == pytest.approx(want, rel=1e-6, abs=1e-6)
        assert got.lp_relaxation <= want + 1e-9
        assert int(got.unit_core.max()) < k
        assert got.cores_enough == (k >= cores_enough(net, lim))


def test_bytes_limit_binds_and_cores_enough_is_enough():
    """A memory limit that binds (no neuron limit) and the default core count: the optimum over
    every assignment, any number of cores (brute force over set partitions of the 8 units)."""
    net = _rated(_net("recurrent", 8, CoreLimits(neurons_max=8), fan_in=3)[0])
    per = float(net.bytes_[net.placed_mask].max())
    lim = CoreLimits(memory_bytes=int(3.5 * per))
    want = _brute_force(net, lim, 8)
    got = exact_partition(net, lim, time_limit=60)
    assert got.cores_enough and got.cores == cores_enough(net, lim) < 8
    assert got.status == "optimal" and got.traffic == pytest.approx(want, rel=1e-9, abs=1e-9)
    counts = np.bincount(got.unit_core[net.placed_mask])
    assert counts.max() <= 3   # 3.5 neurons' bytes per core


def test_cores_enough_neurons_only():
    """Neurons alone bind: the default core count (1 + ⌊8 / 3⌋ = 3 for 9 neurons, 4 per core) loses
    nothing against every assignment to any number of cores."""
    lim = CoreLimits(neurons_max=4)
    net = _rated(_net("recurrent", 9, lim, fan_in=3)[0])
    assert cores_enough(net, lim) == 3
    got = exact_partition(net, lim)
    assert got.cores == 3 and got.cores_enough
    assert got.traffic == pytest.approx(_brute_force(net, lim, 9), rel=1e-9, abs=1e-9)


def test_traffic_is_the_pass_metric():
    net = _rated(_net("recurrent", 9, CoreLimits(neurons_max=4), fan_in=3)[0])
    got = exact_partition(net, CoreLimits(neurons_max=4), cores=3)
    assert got.traffic == pytest.approx(assignment_traffic(net, got.unit_core), abs=0)
    # moving one unit to another core changes the traffic the same way in both
    uc = got.unit_core.copy()
    v = int(np.nonzero(net.placed_mask)[0][0])
    uc[v] = (uc[v] + 1) % 3
    assert assignment_traffic(net, uc) >= got.traffic - 1e-9


@pytest.mark.parametrize("kind", ["recurrent", "feedforward"])
def test_between_lower_bound_and_pass(kind):
    lim = CoreLimits(neurons_max=5)
    net, rep = _net(kind, 15, lim, fan_in=4)
    got = exact_partition(net, lim, time_limit=60)
    assert got.cores_enough and got.status == "optimal"
    assert rep["traffic_lower_bound"] - 1e-6 <= got.dual_bound
    # the per-net cut lifts the LP relaxation to at least the pass's per-net bound
    assert got.lp_relaxation >= rep["traffic_lower_bound"] - 1e-6
    assert got.traffic <= rep["traffic"] + 1e-6
    assert got.lp_relaxation <= got.traffic + 1e-9


def test_refuses_too_large_and_too_few_cores():
    from nmc.errors import OptionError

    lim = CoreLimits(neurons_max=4)
    net, _ = _net("recurrent", 9, lim, fan_in=3)
    with pytest.raises(OptionError):
        exact_partition(net, lim, cores=0)
    assert exact_partition(net, lim, cores=2).status == "infeasible"   # 9 neurons, 4 per core
