"""Neuron-level moves and swaps after the partition portfolio (passes/unit_moves.py)."""
import nir
import numpy as np
import scipy.sparse as sp

from nmc.annotations import Sparsity
from nmc.ir import Graph
from nmc.passes.netmodel import build_network
from nmc.passes.partition import check_cores, core_table, run_partition, unit_blocks
from nmc.passes.unit_moves import refine_units
from nmc.target_model import CoreLimits
from placement_helpers import brute_axons, brute_traffic


def _lif(n):
    return nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))


def ring(n=600, k=12, width=24, seed=0):
    """A population whose neurons take k random sources within ±width of their index (a ring), plus
    4 of 16 host inputs each (the benchmark's recurrent net, small)."""
    rng = np.random.default_rng(seed)
    cols = (np.arange(n)[:, None] + rng.integers(-width, width, size=(n, k))) % n
    rec = sp.csr_matrix((np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), cols.reshape(-1))), shape=(n, n))
    rec.sum_duplicates()
    rec.data[:] = 1
    inp = sp.csr_matrix((np.ones(4 * n, np.float32), (np.repeat(np.arange(n), 4), rng.integers(0, 16, 4 * n))),
                        shape=(n, 16))
    inp.sum_duplicates()
    inp.data[:] = 1
    nodes = {"in": nir.Input(input_type={"input": np.array([16])}), "w": nir.Linear(weight=inp), "l": _lif(n),
             "rec": nir.Linear(weight=rec), "out": nir.Output(output_type={"output": np.array([n])})}
    g = Graph(nodes, [("in", "w"), ("w", "l"), ("l", "rec"), ("rec", "l"), ("l", "out")], meta={"dt": 1e-3})
    for s in ("w", "rec"):
        g.annotate(s, Sparsity(density=0.05, format="csr"))
    return g


LIM = CoreLimits(neurons_max=64, memory_bytes=96 * 1024, fan_in_max=4096, weight_bits=8)


def _unit_cores(pt):
    out = np.full(pt.net.n_units, -1)
    m = pt.blocks.of_unit >= 0
    out[m] = pt.part[pt.blocks.of_unit[m]]
    return out


def test_ring_beats_sequential_fill_within_every_limit_and_is_deterministic():
    g = ring()
    # blocks of 8 neurons: the block partitioners cut the ring only at block boundaries (METIS: the
    # start is the same on every call, where Mt-KaHyPar's may vary after other calls in the process)
    pt, rep = run_partition(g, LIM, method="metis", max_blocks=75)
    um = rep["unit_moves"]
    assert um["kept"] and um["moves"] + um["swaps"] > 0
    uc = _unit_cores(pt)
    # the reported traffic is the exact count, lower than the start and than sequential fill
    assert np.isclose(rep["traffic"], brute_traffic(pt.net, uc))
    assert rep["traffic"] < um["traffic_before"] <= rep["traffic_sequential"]
    assert rep["traffic"] == um["traffic"] and np.isclose(um["traffic_before"] - um["traffic"], um["gain"])
    # every limit holds, recounted from the unit cores
    assert np.bincount(uc[uc >= 0]).max() <= LIM.neurons_max
    assert max(brute_axons(pt.net, uc).values()) <= LIM.fan_in_max
    assert not check_cores(core_table(pt.net, pt.blocks, pt.part, pt.H), LIM)
    pt2, rep2 = run_partition(g, LIM, method="metis", max_blocks=75)
    assert np.array_equal(_unit_cores(pt2), uc) and rep2["traffic"] == rep["traffic"]


def test_off_and_single_neuron_blocks_leave_the_portfolio_alone():
    g = ring(n=200)
    _, rep = run_partition(g, LIM, method="kahypar", max_blocks=25, unit_visits=0)
    assert "unit_moves" not in rep
    _, rep = run_partition(g, LIM, method="kahypar")   # 200 neurons ≤ max_blocks: one neuron per block
    assert "unit_moves" not in rep


def _random_instance(seed, n=90, hosts=6, cores=6):
    """Units 0..hosts−1 are host inputs; a random sparse synapse pattern; a random full assignment."""
    rng = np.random.default_rng(seed)
    N = hosts + n
    A = sp.random(N, N, density=0.06, random_state=rng, format="csr")
    A = (sp.diags((np.arange(N) >= hosts).astype(float)) @ A).tocsr()   # host inputs have no sources
    A.eliminate_zeros()
    A.data[:] = 1
    A.sort_indices()
    AT = A.T.tocsr()
    AT.sort_indices()
    placed = np.arange(N) >= hosts
    ucore = np.full(N, -1)
    ucore[hosts:] = rng.permutation(np.arange(n) % cores)
    rate = np.round(rng.uniform(0.1, 1.0, N), 3)
    return A, AT, placed, ucore, rate


def _traffic(AT, placed, ucore, rate):
    tot = 0.0
    for s in range(AT.shape[0]):
        cs = set(ucore[AT.indices[AT.indptr[s]:AT.indptr[s + 1]]].tolist())
        tot += rate[s] * (len(cs) - (1 if placed[s] and ucore[s] in cs else 0))
    return tot


def test_gains_are_exact_and_limits_hold_on_random_instances():
    for seed in range(6):
        A, AT, placed, uc, rate = _random_instance(seed)
        N = uc.size
        ul = np.stack([placed.astype(float), np.zeros(N), np.zeros(N)], 1)
        cl = np.stack([np.bincount(uc[placed], minlength=6).astype(float), np.zeros(6), np.zeros(6)], 1)
        per = {}
        for t in np.nonzero(placed)[0]:
            per.setdefault(uc[t], set()).update(A.indices[A.indptr[t]:A.indptr[t + 1]].tolist())
        ax_lim = max(len(v) for v in per.values()) + 2   # tight: binds on some moves
        cap = np.array([17.0, np.inf, np.inf])           # 15 per core now: room for two more each
        new, summ = refine_units(A, AT, placed, placed, uc, rate, ul, cl, cap, ax_lim, max_visits=10 ** 8)
        before, after = _traffic(AT, placed, uc, rate), _traffic(AT, placed, new, rate)
        assert summ["moves"] + summ["swaps"] > 0
        assert np.isclose(before - after, summ["gain"]) and after < before
        assert np.bincount(new[placed]).max() <= 17
        per = {}
        for t in np.nonzero(placed)[0]:
            per.setdefault(new[t], set()).update(A.indices[A.indptr[t]:A.indptr[t + 1]].tolist())
        assert max(len(v) for v in per.values()) <= ax_lim
        assert np.array_equal(new[~placed], uc[~placed])


def test_unit_blocks_group_units_by_node_and_core():
    g = ring(n=100)
    net = build_network(g, LIM)
    uc = np.full(net.n_units, -1)
    sl = net.pop_slice(0)
    uc[sl] = np.arange(100) % 3
    b, part = unit_blocks(net, uc)
    assert b.n == 3 and sorted(part.tolist()) == [0, 1, 2]
    back = np.full(net.n_units, -1)
    m = b.of_unit >= 0
    back[m] = part[b.of_unit[m]]
    assert np.array_equal(back, uc) and b.neurons.sum() == 100


def test_compiled_sweep_gives_the_plain_python_result(monkeypatch):
    """The numba loop and its Python source (``py_func``) take the same moves and swaps."""
    from nmc.passes import unit_moves as um

    if not hasattr(um._sweep, "py_func"):
        return   # numba is not installed: only the Python loop exists
    A, AT, placed, uc, rate = _random_instance(3)
    N = uc.size
    ul = np.stack([placed.astype(float), np.zeros(N), np.zeros(N)], 1)
    cl = np.stack([np.bincount(uc[placed], minlength=6).astype(float), np.zeros(6), np.zeros(6)], 1)
    args = (A, AT, placed, placed, uc, rate, ul, cl, np.array([17.0, np.inf, np.inf]), 60)
    fast = refine_units(*args, max_visits=10 ** 7)
    monkeypatch.setattr(um, "_sweep", um._sweep.py_func)
    slow = refine_units(*args, max_visits=10 ** 7)
    assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1] and fast[1]["swaps"] > 0
