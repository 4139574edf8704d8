"""The core-type LP bound of conv layers sharing cores (passes/window_lp.py): never above the
exact optimum (every assignment enumerated on tiny instances), never above the partitioner's
measured traffic, above the per-pair window bound where layers and their sources share cores."""
import numpy as np
import pytest

from nmc.passes import hypergraph as hgp
from nmc.passes import window_lp as wlp
from nmc.passes.netmodel import build_network
from nmc.passes.partition import run_partition
from nmc.passes.rules import max_per_core
from nmc.target_model import CoreLimits
from test_window_bound import chain, source_costs


@pytest.mark.parametrize("in_shape,layers,cap", [
    ((1, 3, 4), [(1, (2, 2), 0), (1, (1, 2), 0)], 3),  # host → l0 → l1, no padding
    ((1, 3, 3), [(1, (2, 2), 0), (2, (2, 1), 0)], 3),  # 2 output channels on the placed pair
    ((1, 2, 2), [(1, (3, 3), 1), (1, (3, 3), 1)], 3),  # 'same' padding both layers: clipped growth
    ((2, 2, 3), [(1, (3, 3), 1), (1, (2, 2), 0)], 2),  # 2 input channels, 2 neurons per core
    ((1, 1, 4), [(1, (1, 3), 0), (1, (2, 2), 1)], 4),  # padding beyond k − 2: border term E
])
def test_group_lp_never_exceeds_the_exact_optimum(in_shape, layers, cap):
    g = chain(in_shape, layers)
    lim = CoreLimits(neurons_max=cap, weight_bits=8)
    net = build_network(g, lim)
    caps = max_per_core(net, lim, upper=True)
    costs = source_costs(net, cap)
    pairs = hgp.conv_pairs(g, net)
    for grp in wlp.group_pairs(net, pairs):
        lp = wlp.group_bound(net, lim, caps, grp)
        assert lp is not None
        cols = np.concatenate([np.arange(net.unit_offset[p.src], net.unit_offset[p.src + 1]) for p in grp])
        assert lp <= costs[:, cols].sum(axis=1).min() + 1e-9
    assert hgp.traffic_lower_bound(net, lim, caps, g) <= costs.sum(axis=1).min() + 1e-9


def test_groups_hold_at_most_two_placed_nodes():
    g = chain((1, 6, 6), [(2, (3, 3), 1), (2, (3, 3), 1), (2, (3, 3), 1)])
    net = build_network(g, CoreLimits(neurons_max=16, weight_bits=8))
    groups = wlp.group_pairs(net, hgp.conv_pairs(g, net))
    assert [[net.unit_names[p.src] for p in grp] for grp in groups] == [["in", "l0"], ["l1"]]


def test_dual_bound_is_certified_for_any_duals():
    """(y − t)·N never exceeds the LP optimum, whatever y (weak duality after the shift t)."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 5, size=(40, 2))
    X = X[X.sum(1) > 0]
    F = rng.uniform(0, 3, size=X.shape[0])
    N = np.array([37.0, 23.0])
    from scipy.optimize import linprog

    opt = linprog(F, A_eq=X.T.astype(float), b_eq=N, bounds=(0, None), method="highs")
    assert opt.status == 0
    for _ in range(50):
        assert wlp._dual_bound(rng.normal(size=2), X, F, N) <= opt.fun + 1e-9
    assert wlp._dual_bound(opt.eqlin.marginals, X, F, N) == pytest.approx(opt.fun, rel=1e-6)


def test_two_conv_layers_on_a_small_image_share_cores():
    """The bench's conv net at 10³ neurons (2 → 8 → 8 channels, 7 × 7, 3 × 3 'same', 256 neurons
    per core): the per-net bound is the 98 host inputs; the LP couples the host → l0 and l0 → l1
    pairs through each core's capacity (259.2 packets) and lies between it and the partitioner's
    traffic, within 3× of that."""
    g = chain((2, 7, 7), [(8, (3, 3), 1), (8, (3, 3), 1)])
    lim = CoreLimits(neurons_max=256, weight_bits=8)
    pt, rep = run_partition(g, lim, method="metis")
    caps = max_per_core(pt.net, lim, upper=True)
    assert hgp.traffic_lower_bound(pt.net, lim, caps) == 98
    assert rep["traffic_lower_bound"] == pytest.approx(259.184, abs=1e-3)
    assert rep["traffic_lower_bound"] <= rep["traffic"]
    assert rep["traffic"] <= 3 * rep["traffic_lower_bound"]
