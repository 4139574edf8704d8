"""The unit-move stage returns at once where it would visit no unit (passes/unit_moves.py, 'nothing to
visit'), and gives the same result as before wherever it runs."""
import numpy as np
import pytest
import scipy.sparse as sp

from nmc.passes import unit_moves as um
from nmc.passes.netmodel import build_network
from nmc.passes.unit_moves import BIG_NET, refine_units
from test_unit_moves import LIM, _random_instance, ring


def _dense_ff(width, layers):
    """Host inputs 0..width−1, then ``layers`` layers of ``width`` units, each fed by every unit of the
    layer before (a dense projection: every net has width targets)."""
    N = width * (layers + 1)
    rows, cols = [], []
    for i in range(layers):
        t = np.arange((i + 1) * width, (i + 2) * width)
        s = np.arange(i * width, (i + 1) * width)
        rows.append(np.repeat(t, width))
        cols.append(np.tile(s, width))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    A = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(N, N))
    A.sort_indices()
    AT = A.T.tocsr()
    AT.sort_indices()
    placed = np.arange(N) >= width
    return A, AT, placed


def _loads(uc, placed, K):
    N = uc.size
    ul = np.stack([placed.astype(float), np.zeros(N), np.zeros(N)], 1)
    cl = np.stack([np.bincount(uc[placed], minlength=K).astype(float), np.zeros(K), np.zeros(K)], 1)
    return ul, cl


def test_dense_projection_over_big_net_returns_before_any_compiled_call(monkeypatch):
    width = BIG_NET + 8            # every net of a source with targets has more than BIG_NET pins
    A, AT, placed = _dense_ff(width, 3)
    N = placed.size
    uc = np.full(N, -1)
    uc[placed] = np.arange(placed.sum()) // 200     # sequential fill, 200 per core: layers share cores
    rate = np.linspace(0.1, 1.0, N)
    ul, cl = _loads(uc, placed, uc.max() + 1)

    def never(*a, **k):
        raise AssertionError("a compiled function of the stage was called")

    for name in ("_start", "_cost", "_sweep"):
        monkeypatch.setattr(um, name, never)
    new, summ = refine_units(A, AT, placed, placed, uc, rate, ul, cl, np.array([200.0, np.inf, np.inf]), None,
                             max_visits=10 ** 9)
    assert np.array_equal(new, uc)
    assert summ == {"moves": 0, "swaps": 0, "gain": 0.0, "sweeps": 0, "visits": 0}


def test_dense_projection_under_big_net_is_visited():
    """The same net with small nets spanning two cores: the stage runs (its units are visited)."""
    A, AT, placed = _dense_ff(40, 3)
    N = placed.size
    uc = np.full(N, -1)
    uc[placed] = np.arange(placed.sum()) // 30
    ul, cl = _loads(uc, placed, uc.max() + 1)
    new, summ = refine_units(A, AT, placed, placed, uc, np.ones(N), ul, cl, np.array([30.0, np.inf, np.inf]), None,
                             max_visits=10 ** 6)
    assert summ["sweeps"] >= 1 and summ["visits"] > 0


def _active(AT, placed, uc):
    """The units the compiled _start marks for the first sweep."""
    tp, ti = AT.indptr, AT.indices
    size = np.diff(tp) + placed
    big = np.full(uc.size, -1, np.int64)
    ids = np.nonzero(size > BIG_NET)[0]
    big[ids] = np.arange(ids.size)
    active = np.zeros(uc.size, np.bool_)
    um._start(tp, ti, placed.astype(np.bool_), uc.astype(np.int64), big, int(uc.max()) + 1, active)
    return active, size <= BIG_NET


@pytest.mark.parametrize("seed", range(4))
def test_visits_any_says_whether_the_first_sweep_visits_a_unit(seed):
    """Exactly the movable units _start marks: on random assignments (all or a fifth movable), all
    units on one core (no net cut), one unit on another core (a few nets cut; then nothing movable), in
    chunks of a few pins too."""
    A, AT, placed, uc, rate = _random_instance(seed)
    rng = np.random.default_rng(seed)
    one = np.where(placed, 0, -1)
    # every unit on core 0 but the first target of a source with two or more targets
    s = int(np.nonzero(np.diff(AT.indptr) > 1)[0][0])
    split = one.copy()
    split[AT.indices[AT.indptr[s]]] = 1
    for core, movable in ((uc, placed), (uc, placed & (rng.random(uc.size) < 0.2)), (one, placed),
                          (split, placed), (split, placed & (np.arange(uc.size) < 0))):
        active, small = _active(AT, placed, core)
        want = bool(np.any(active & movable))
        for chunk in (1 << 20, 5):
            got = um._visits_any(AT.indptr, AT.indices, placed, movable, core.astype(np.int64), small, chunk)
            assert got == want
    assert not um._visits_any(AT.indptr, AT.indices, placed, placed, one.astype(np.int64), np.diff(AT.indptr) >= 0)


def test_ring_result_unchanged():
    """A ring of 600 from sequential fill (60 per core): the moves, swaps and visits the stage took
    before the check was added, unit for unit."""
    net = build_network(ring(n=600), LIM)
    uc = np.full(net.n_units, -1)
    sl = net.pop_slice(0)
    uc[sl] = np.arange(sl.stop - sl.start) // 60
    placed = uc >= 0
    ul = np.stack([placed.astype(float), net.bytes_, net.work], 1)
    ul[~placed] = 0
    cl = np.stack([np.bincount(uc[placed], weights=ul[placed, d], minlength=10) for d in range(3)], 1)
    cap = np.array([64.0, LIM.memory_bytes, np.inf])
    new, summ = refine_units(net.A, net.AT, net.placed_mask, placed, uc, net.rate, ul, cl, cap, LIM.fan_in_max,
                             max_visits=10 ** 7)
    assert summ == {"moves": 15, "swaps": 5, "gain": 29.0, "sweeps": 3, "visits": 2520959}
    moved = np.nonzero(new != uc)[0]
    assert [(int(u), int(new[u])) for u in moved] == [
        (16, 9), (18, 9), (19, 9), (67, 1), (70, 1), (76, 0), (78, 0), (133, 2), (135, 2), (191, 3), (195, 3),
        (196, 2), (249, 4), (258, 3), (310, 5), (312, 5), (321, 4), (375, 6), (437, 6), (439, 6), (442, 6),
        (495, 8), (554, 9), (555, 9), (608, 0)]
