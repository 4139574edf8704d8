"""The per-net traffic bound's loads summed in one pass (:func:`nmc.passes.hypergraph.pin_sums`)
equal, bit for bit, the one-vector products the bound used before, and so does the bound."""
import numpy as np
import pytest
import scipy.sparse as sp

import nets
from nmc.annotations import Sparsity
from nmc.passes import hypergraph as hgp
from nmc.passes.netmodel import build_network
from nmc.passes.rules import max_per_core
from nmc.target_model import CoreLimits
from test_hypergraph_placement import ring


def _bound_one_vector_at_a_time(net, limits, caps_upper):
    """The bound without coupled conv pairs, as computed before the loads were stacked."""
    AT, n = net.AT, net.n_units
    placed = net.placed_mask
    pl = np.nonzero(placed)[0]
    P = (sp.csr_matrix((np.ones(AT.nnz), AT.indices, AT.indptr), shape=AT.shape)
         + sp.csr_matrix((np.ones(pl.size), (pl, pl)), shape=(n, n))).tocsr()
    P.data[:] = 1
    lam = np.zeros(n)
    pm = placed.astype(np.float64)
    for load, lim in ((pm, limits.neurons_max), (net.bytes_ * pm, limits.memory_bytes), (net.work * pm, limits.work_max)):
        if lim:
            lam = np.maximum(lam, np.ceil(P @ load / lim - 1e-9))
    upop = net.unit_pop()
    for k in range(len(net.pop_names)):
        if caps_upper[k] > 0:
            lam = np.maximum(lam, np.ceil(P @ (upop == k).astype(np.float64) / caps_upper[k] - 1e-9))
    cost = np.where(placed, lam - 1, lam)
    cost = np.where(np.diff(AT.indptr) > 0, np.maximum(cost, 0), 0)
    return float(np.dot(net.rate, cost))


def _graph(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "ring":
        return ring(n=int(rng.integers(20, 120)), reach=int(rng.integers(1, 8)), fan_in=int(rng.integers(1, 10)), seed=seed)
    m = nets.normalized(nets.ff_lif(int(rng.integers(2, 20)), int(rng.integers(5, 60)), int(rng.integers(1, 10)), seed=seed))
    if kind == "mixed":   # one sparse projection beside dense ones
        w = m.nodes["fc1"].weight
        m.nodes["fc1"].weight = w * (rng.random(w.shape) < rng.uniform(0.1, 1))
        m.annotate("fc1", Sparsity(density=0.5, format="csr"))
    return m


@pytest.mark.parametrize("kind", ["dense", "mixed", "ring"])
@pytest.mark.parametrize("seed", range(4))
def test_pin_sums_bit_for_bit(kind, seed):
    rng = np.random.default_rng(100 + seed)
    lim = CoreLimits(neurons_max=int(rng.integers(2, 20)), memory_bytes=int(rng.integers(200, 2000)),
                     work_max=float(rng.uniform(0.5, 5.0)), weight_bits=8)
    net = build_network(_graph(kind, seed), lim)
    net = net.with_rates(rng.random(net.n_units) * 0.37, "test")   # float work: order-sensitive sums
    AT, n = net.AT, net.n_units
    P = (sp.csr_matrix((np.ones(AT.nnz), AT.indices, AT.indptr), shape=AT.shape)
         + sp.eye(n, format="csr")).tocsr()
    P.data[:] = 1
    loads = np.stack([net.work, net.bytes_.astype(np.float64), rng.random(n), (np.arange(n) % 3 == 0) * 1.0], 1)
    got = hgp.pin_sums(P, loads)
    for j in range(loads.shape[1]):
        assert np.array_equal(got[:, j], P @ loads[:, j])
    caps = max_per_core(net, lim, upper=True)
    assert hgp.traffic_lower_bound(net, lim, caps) == _bound_one_vector_at_a_time(net, lim, caps)


def test_cores_lower_bound_once_per_model(monkeypatch):
    """The design rules and the partitioner read the cores' lower bound of one model: one pass
    over the synapses (counted), the same numbers as a model without the memo."""
    from nmc.passes import rules
    from nmc.passes.partition import run_partition

    g = _graph("mixed", 3)
    lim = CoreLimits(neurons_max=7, memory_bytes=900, fan_in_max=40, weight_bits=8, cores_per_chip=64)
    calls = []
    real = rules._cores_lower_bound
    monkeypatch.setattr(rules, "_cores_lower_bound", lambda net, limits: calls.append(1) or real(net, limits))
    pt, rep = run_partition(g, lim, method="sequential", baselines=())
    assert len(calls) == 1 and lim.cores_total   # rule_total_cores ran, and shared the value
    fresh = real(build_network(g, lim), lim)
    assert rep["cores_lower_bound"] == fresh["value"] and rep["cores_lower_bound_terms"] == fresh["terms"]
    lb = rules.cores_lower_bound(pt.net, lim)
    lb["terms"]["neurons"] = -1   # a caller's change does not reach the memo
    assert rules.cores_lower_bound(pt.net, lim) == fresh and len(calls) == 1


@pytest.mark.parametrize("kind", ["dense", "mixed", "ring"])
def test_with_diagonal_equals_the_sparse_sum(kind):
    """The pins' matrix built by insertion is the sparse sum's (indices, order, data), self-synapses
    included (a row that holds its own column gets no second entry)."""
    rng = np.random.default_rng(7)
    net = build_network(_graph(kind, 1), CoreLimits(neurons_max=8, weight_bits=8))
    for AT in (net.AT, sp.random(50, 50, density=0.2, format="csr", random_state=3) + sp.eye(50, format="csr")):
        AT = AT.tocsr()
        AT.sort_indices()
        n = AT.shape[0]
        rows = np.sort(rng.choice(n, size=n // 2, replace=False))
        ref = (sp.csr_matrix((np.ones(AT.nnz), AT.indices, AT.indptr), shape=AT.shape)
               + sp.csr_matrix((np.ones(rows.size), (rows, rows)), shape=(n, n))).tocsr()
        ref.data[:] = 1
        got = hgp.with_diagonal(AT, rows)
        assert np.array_equal(got.indptr, ref.indptr) and np.array_equal(got.indices, ref.indices)
        assert np.array_equal(got.data, ref.data) and got.has_sorted_indices
