import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

import nets
from nmc.annotations import Placement, Route
from nmc.errors import DesignRuleError
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.passes.netmodel import build_network
from nmc.passes.route import route_trees
from nmc.target_model import CoreLimits
from placement_helpers import spec, unit_cores


def run(g, pipeline, s=None):
    ctx = PassContext(spec=s, options={"worst_case": True})  # uniform rates, as the checks below
    return PassManager(parse_pipeline(pipeline)).run(g, ctx), ctx


def test_router_entries_hand_counted():
    # source core 0 at (0,0); destinations core 1 at (2,0) and core 2 at (2,1):
    # (0,0) start → entry; (1,0) straight → none; (2,0) branch (local + north) → entry; (2,1) local → entry
    T = sp.csr_matrix(np.array([[0, 1.0, 1.0], [0, 0, 0], [0, 0, 0]]))
    pos = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0]])
    r = route_trees(T, pos, grid_x=3)
    assert r["entries"] == {0: 1, 2: 1, 5: 1}
    assert r["max_hops"] == 3
    # a turn costs an entry: destination only at (2,1): (0,0), (2,0) turn, (2,1) local
    T2 = sp.csr_matrix(np.array([[0, 0, 1.0], [0, 0, 0], [0, 0, 0]]))
    assert route_trees(T2, pos, grid_x=3)["entries"] == {0: 1, 2: 1, 5: 1}


def every_edge_routed(g, s):
    lim = CoreLimits.from_spec(s)
    net = build_network(g, lim, from_placement=True)
    uc = unit_cores(g, net)
    dest = {}
    for name in net.pop_names:
        r = g.ann(name, Route)
        for k, c in enumerate(r.cores):
            dest[int(c)] = dest.get(int(c), set()) | set(r.dest[r.dest_ptr[k]:r.dest_ptr[k + 1]].tolist())
    A = net.A.tocoo()
    for t, src in zip(A.row, A.col):
        if uc[src] >= 0 and uc[src] != uc[t]:
            assert int(uc[t]) in dest[int(uc[src])]


@pytest.mark.parametrize("model", ["ff", "rec", "conv"])
def test_every_edge_routed_and_entries_within_limit(model):
    m = {"ff": nets.ff_lif(n_hid=40), "rec": nets.recurrent_cubalif(n_hid=30), "conv": nets.conv_pool()}[model]
    s = spec(neurons=6, cores=32, mesh=(4, 2), per_node=4, entries=64, chips=2)
    g, ctx = run(nets.normalized(m), "partition,place,route", s)
    every_edge_routed(g, s)
    r = ctx.reports["placement"]
    assert 0 < r["router_entries_max"] <= 64
    assert r["max_hops"] >= r["max_hops_placed"] >= 0


def test_router_limit_exceeded_is_design_rule_error():
    s = spec(neurons=2, cores=64, mesh=(4, 4), per_node=4, entries=1)
    with pytest.raises(DesignRuleError) as e:
        run(nets.normalized(nets.ff_lif()), "partition,place,route", s)
    assert all(v.rule == "router.entries" and v.limit == 1 and v.actual > 1 for v in e.value.violations)


@settings(max_examples=15, deadline=None)
@given(n_hid=st.integers(2, 40), cap=st.integers(1, 8), chips=st.integers(1, 4), seed=st.integers(0, 50))
def test_property_routes(n_hid, cap, chips, seed):
    s = spec(neurons=cap, cores=64, mesh=(4, 4), per_node=4, chips=chips, entries=10_000)
    g, ctx = run(nets.normalized(nets.recurrent_cubalif(n_hid=n_hid, seed=seed)), f"partition{{seed={seed}}},place,route", s)
    every_edge_routed(g, s)
    assert ctx.reports["placement"]["router_entries_max"] <= 10_000


def _route_by_walking_paths(T, pos, grid_x):
    """Oracle: walk every (source, target) XY path router by router, collect each
    tree's (router → input port, output ports) and count entries by the rule:
    start, local port, branch (several outputs) or turn (output ≠ input direction)."""
    c = T.tocoo()
    trees = {}
    max_h = 0
    for a, b in zip(c.row.tolist(), c.col.tolist()):
        (sx, sy, _), (dx, dy, slot) = pos[a], pos[b]
        path = [(x, sy) for x in range(sx, dx + (1 if dx >= sx else -1), 1 if dx >= sx else -1)]
        path += [(dx, y) for y in range(sy + (1 if dy > sy else -1), dy + (1 if dy > sy else -1), 1 if dy > sy else -1)] if dy != sy else []
        max_h = max(max_h, len(path) - 1)
        for j, r in enumerate(path):
            if j + 1 < len(path):
                nx, ny = path[j + 1]
                out = ("+x" if nx > r[0] else "-x") if ny == r[1] else ("+y" if ny > r[1] else "-y")
            else:
                out = f"local{slot}"
            if j == 0:
                inp = "start"
            else:
                px, py = path[j - 1]
                inp = ("+x" if r[0] > px else "-x") if py == r[1] else ("+y" if r[1] > py else "-y")
            t = trees.setdefault((a, r), [inp, set()])
            t[1].add(out)
    entries = {}
    links = 0
    for (a, r), (inp, outs) in trees.items():
        links += sum(1 for o in outs if not o.startswith("local"))
        if inp == "start" or len(outs) > 1 or any(o.startswith("local") or o != inp for o in outs):
            node = r[1] * grid_x + r[0]
            entries[node] = entries.get(node, 0) + 1
    return {"entries": entries, "max_hops": max_h, "pairs": int(c.nnz), "tree_links": links}


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 12), gx=st.integers(1, 6), gy=st.integers(1, 6), density=st.floats(0.05, 1.0),
       seed=st.integers(0, 1000))
def test_trees_from_extents_equal_walked_paths(k, gx, gy, density, seed):
    rng = np.random.default_rng(seed)
    pos = np.stack([rng.integers(0, gx, k + 1), rng.integers(0, gy, k + 1), rng.integers(0, 3, k + 1)], 1)
    T = sp.random(k + 1, k + 1, density=density, random_state=seed, format="csr")
    T.setdiag(0)
    T.eliminate_zeros()
    assert route_trees(T, pos, gx) == _route_by_walking_paths(T, pos, gx)
