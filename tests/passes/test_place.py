import numpy as np
import pytest

import nets
from nmc.annotations import Placement
from nmc.errors import DesignRuleError, OptionError
from nmc.passes import PassContext, PassManager, parse_pipeline
from placement_helpers import neuron_nodes, spec


def run(g, pipeline, sp=None):
    ctx = PassContext(spec=sp, options={"worst_case": True})  # uniform rates, as the checks below
    return PassManager(parse_pipeline(pipeline)).run(g, ctx), ctx


def positions(g):
    rows = {}
    for k in neuron_nodes(g):
        p = g.ann(k, Placement)
        for c, ch, x, y, s in zip(p.core, p.chip, p.x, p.y, p.slot):
            rows.setdefault(int(c), set()).add((int(ch), int(x), int(y), int(s)))
    return rows


@pytest.mark.parametrize("chips", [1, 4])
def test_each_core_one_distinct_position_in_bounds(chips):
    sp = spec(neurons=4, cores=8, mesh=(2, 2), per_node=2, chips=chips)
    g, ctx = run(nets.normalized(nets.ff_lif(n_hid=16 if chips == 1 else 24)), "partition,place", sp)
    rows = positions(g)
    assert all(len(v) == 1 for v in rows.values())              # a core has one position
    pos = [next(iter(v)) for v in rows.values()]
    assert len(set(pos)) == len(pos)                             # no two cores share one
    for ch, x, y, s in pos:
        assert 0 <= ch < chips and 0 <= x < 2 and 0 <= y < 2 and 0 <= s < 2
    per_chip = np.bincount([p[0] for p in pos])
    assert per_chip.max() <= 8
    r = ctx.reports["placement"]
    assert r["chips_used"] == len(per_chip[per_chip > 0]) >= -(-len(pos) // 8)


def test_annealing_not_worse_than_sequential_layout():
    sp = spec(neurons=4, cores=36, mesh=(3, 3), per_node=4)
    g, ctx = run(nets.normalized(nets.recurrent_cubalif(n_hid=60)), "partition{method=sequential},place", sp)
    r = ctx.reports["placement"]
    assert r["traffic_hops"] <= r["traffic_hops_sequential"]
    assert "placement.png" in ctx.reports and ctx.reports["placement.png"][:4] == b"\x89PNG"


def test_too_many_cores_for_the_board_is_a_design_rule_error():
    sp = spec(neurons=2, cores=4, mesh=(2, 2), per_node=1, chips=1)
    with pytest.raises(DesignRuleError) as e:
        run(nets.normalized(nets.ff_lif()), "partition,place", sp)
    v = e.value.violations[0]
    assert v.rule == "board.cores" and v.limit == 4 and "chips" in v.hint


def test_place_without_spec_or_mesh_is_option_error():
    with pytest.raises(OptionError, match="mesh"):
        run(nets.normalized(nets.ff_lif()), "partition{max_neurons_per_core=4},place")


def test_golden_dump_after_place():
    g, _ = run(nets.normalized(nets.ff_lif()), "partition{max_neurons_per_core=5,method=sequential},place{mesh=(2;2;2)}")
    lines = [ln for ln in g.dump().splitlines() if "@placement" in ln]
    assert lines[0] == "  @placement Placement(core=int32[16], chip=int32[16], x=int32[16], y=int32[16], slot=int32[16], rate=float32[16])"


def test_compiled_anneal_loop_equals_python_and_tracks_positions():
    import scipy.sparse as sp

    from nmc.passes import anneal_loop

    rng = np.random.default_rng(3)
    K, ns, mesh = 12, 16, (4, 4)
    T = sp.random(K + 1, K + 1, density=0.4, random_state=1, format="csr")
    S = (T + T.T).tocsr()
    slot_xy = np.array([(x, y, 0) for y in range(4) for x in range(4)])
    chip_xy = np.array([[0, 0]])

    def state():
        slot = rng.permutation(ns)[:K].astype(np.int64)
        occ = np.full((1, ns), -1, np.int64)
        occ[0, slot] = np.arange(K)
        pos = np.zeros((K + 1, 2), np.int64)
        pos[:K] = slot_xy[slot, :2]
        return slot, occ, pos

    slot, occ, pos = state()
    args = (np.arange(K, dtype=np.int64), slot_xy, chip_xy, mesh[0], mesh[1], rng.integers(K, size=500),
            rng.integers(ns, size=500), rng.random(500), 0.5)
    a = [x.copy() for x in (pos, slot, occ)]
    b = [x.copy() for x in (pos, slot, occ)]
    anneal_loop.run_moves(S, a[0], np.zeros(K, np.int64), a[1], a[2], *args)
    loop = getattr(anneal_loop._loop, "py_func", None)
    if loop is not None:   # the same moves in plain Python
        d = getattr(anneal_loop._delta, "py_func")
        w = getattr(anneal_loop._weight, "py_func")
        g = dict(loop.__globals__, _delta=d, _weight=w)
        import types
        pyloop = types.FunctionType(loop.__code__, g)
        pyloop(S.indptr.astype(np.int64), S.indices.astype(np.int64), S.data.astype(np.float64), b[0],
               np.zeros(K, np.int64), b[1], b[2], *[np.asarray(x) if isinstance(x, np.ndarray) else x for x in args])
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    # positions, slots and occupancy stay consistent
    assert np.array_equal(a[0][:K], slot_xy[a[1], :2])
    assert all(a[2][0, a[1][c]] == c for c in range(K)) and len(set(a[1].tolist())) == K
