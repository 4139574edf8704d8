import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nets
import nir
from nmc.annotations import Placement, Sparsity
from nmc.errors import DesignRuleError, OptionError
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.passes.netmodel import build_network
from nmc.passes.partition import run_partition
from nmc.target_model import CoreLimits
from placement_helpers import brute_axons, brute_traffic, neuron_nodes, spec, unit_cores


def run(g, pipeline, sp=None, data=None):
    ctx = PassContext(spec=sp, data=data, options={"worst_case": True})  # the hand-derived numbers use uniform rates
    out = PassManager(parse_pipeline(pipeline)).run(g, ctx)
    return out, ctx


def check_invariants(g, sp_dict):
    lim = CoreLimits.from_spec(sp_dict)
    net = build_network(g, lim, from_placement=True)
    uc = unit_cores(g, net)
    placed = uc[net.placed_mask]
    assert placed.size == net.placed_count and np.all(placed >= 0)        # every neuron exactly one core
    n = np.bincount(placed)
    assert n.max() <= lim.neurons_max
    if lim.memory_bytes:
        assert np.bincount(placed, weights=net.bytes_[net.placed_mask]).max() <= lim.memory_bytes
    if lim.fan_in_max:
        assert max(brute_axons(net, uc).values(), default=0) <= lim.fan_in_max
    return net, uc


@pytest.mark.parametrize("method", ["sequential", "greedy", "metis"])
@pytest.mark.parametrize("model", ["ff", "rec", "conv", "egru"])
def test_limits_and_bounds(method, model):
    m = {"ff": nets.ff_lif(n_hid=40), "rec": nets.recurrent_cubalif(n_hid=30), "conv": nets.conv_pool(),
         "egru": nets.egru_net(hidden=20)}[model]
    sp = spec(neurons=8, mem=400, axons=300, cores=64, mesh=(4, 4))
    g, ctx = run(nets.normalized(m), f"partition{{method={method}}}", sp)
    net, uc = check_invariants(g, sp)
    r = ctx.reports["placement"]
    assert r["cores_used"] >= r["cores_lower_bound"] >= 1
    assert r["traffic"] == pytest.approx(brute_traffic(net, uc), rel=1e-9)
    assert r["traffic_lower_bound"] <= r["traffic"] + 1e-9
    for k in ("traffic_sequential", "traffic_greedy", "cores_lower_bound", "chips_used"):
        assert k in r


def test_sequential_is_hand_derived():
    # 8 -> 16 -> 4 with 5 neurons per core: lif1 fills cores 0..3 (5,5,5,1), lif2 core 4
    g, ctx = run(nets.normalized(nets.ff_lif()), "partition{method=sequential,max_neurons_per_core=5}")
    assert g.ann("lif1", Placement).core.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3]
    assert g.ann("lif2", Placement).core.tolist() == [4] * 4
    r = ctx.reports["placement"]
    # uniform rates: 8 inputs reach 4 cores each (32); 16 lif1 neurons reach core 4 (16)
    assert r["traffic"] == 48.0
    # bound: inputs ⌈16/5⌉ = 4 each → 32; lif1 ⌈4/5⌉ − 1 = 0 → 32
    assert r["traffic_lower_bound"] == 32.0
    assert r["cores_lower_bound"] == 4


def test_metis_not_worse_than_sequential_on_sparse_net():
    rng = np.random.default_rng(1)
    n = 300
    w = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.02)
    # local structure: block-diagonal-ish connectivity that sequential fill ignores after shuffling
    perm = rng.permutation(n)
    blocks = np.kron(np.eye(10), np.ones((30, 30))) * rng.normal(size=(n, n))
    w = (blocks + w)[perm][:, perm]
    g = Graph({"in": nir.Input(input_type={"input": np.array([n])}), "w": nir.Linear(weight=np.eye(n)),
               "l": nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
               "rec": nir.Linear(weight=w), "out": nir.Output(output_type={"output": np.array([n])})},
              [("in", "w"), ("w", "l"), ("l", "rec"), ("rec", "l"), ("l", "out")], meta={"dt": 1e-3})
    g.annotate("rec", Sparsity(density=0.1, format="csr"))
    g.annotate("w", Sparsity(density=0.01, format="csr"))
    g, ctx = run(g, "partition{max_neurons_per_core=30}")
    r = ctx.reports["placement"]
    assert r["traffic"] < 0.7 * r["traffic_sequential"]
    assert r["traffic"] <= r["traffic_greedy"] + 1e-9 or r["traffic"] < r["traffic_sequential"]


def test_rates_from_data_change_traffic():
    m = nets.normalized(nets.ff_lif())
    data = {"input": nets.spikes((8,), T=30, p=0.2)}
    g, ctx = run(m, "partition{method=sequential,max_neurons_per_core=5}", data=data)
    r = ctx.reports["placement"]
    assert r["rates"].startswith("reference")
    assert 0 < r["traffic"] < 48.0
    rate = g.ann("lif1", Placement).rate
    assert rate.shape == (16,) and np.all((rate >= 0) & (rate <= 1))


def test_no_spec_no_option_is_option_error():
    with pytest.raises(OptionError, match="max_neurons_per_core"):
        run(nets.normalized(nets.ff_lif()), "partition")


def test_does_not_fit_raises_design_rules_before_placement():
    sp = spec(neurons=8, mem=10, axons=4)
    with pytest.raises(DesignRuleError) as e:
        run(nets.normalized(nets.ff_lif()), "partition", sp)
    rules = {(v.rule, v.node) for v in e.value.violations}
    # lif1: 8 inputs > 4 axons; lif2: 16 inputs > 4 axons and 16 bytes > 10 (8-bit weights)
    assert {("core.input_axons", "lif1"), ("core.input_axons", "lif2"), ("core.synapse_memory", "lif2")} <= rules
    v = {(v.rule, v.node): v for v in e.value.violations}
    assert v[("core.synapse_memory", "lif2")].actual == 16 and v[("core.synapse_memory", "lif2")].limit == 10
    assert v[("core.synapse_memory", "lif2")].hint == "quantize{bits=5}"
    assert v[("core.input_axons", "lif2")].hint.startswith("sparsify{density=0.237}")


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 20), n_hid=st.integers(1, 60), n_out=st.integers(1, 10), cap=st.integers(1, 12),
       density=st.floats(0.05, 1.0), method=st.sampled_from(["metis", "greedy", "sequential"]), seed=st.integers(0, 99))
def test_property_every_neuron_once_no_core_over(n_in, n_hid, n_out, cap, density, method, seed):
    rng = np.random.default_rng(seed)
    m = nets.normalized(nets.ff_lif(n_in, n_hid, n_out, seed=seed))
    if density < 1:
        w = m.nodes["fc1"].weight * (rng.random(m.nodes["fc1"].weight.shape) < density)
        m.nodes["fc1"].weight = w
        m.annotate("fc1", Sparsity(density=density, format="csr"))
    sp = spec(neurons=cap, mem=64, axons=max(n_in, n_hid), cores=512, mesh=(8, 8), per_node=8)
    g, ctx = run(m, f"partition{{method={method},seed={seed}}}", sp)
    net, uc = check_invariants(g, sp)
    r = ctx.reports["placement"]
    assert r["cores_used"] >= r["cores_lower_bound"]
    assert r["traffic_lower_bound"] <= r["traffic"] + 1e-9


def test_golden_dump_after_partition(tmp_path):
    g, _ = run(nets.normalized(nets.ff_lif()), "partition{method=sequential,max_neurons_per_core=5}")
    lines = [ln for ln in g.dump().splitlines() if ln.strip().startswith("@placement")]
    assert lines == ["  @placement Placement(core=int32[16], chip=int32[16], x=None, y=None, slot=None, rate=float32[16])",
                     "  @placement Placement(core=int32[4], chip=int32[4], x=None, y=None, slot=None, rate=float32[4])"]


def test_end_to_end_compile_bundle(tmp_path):
    import nmc

    b = nmc.compile(nets.ff_lif(), target="reference", output=tmp_path / "m.nmc", dt=1e-3,
                    passes="normalize,partition{max_neurons_per_core=5},place{mesh=(2;2;2)},route{mesh=(2;2;2)}")
    rep = nmc.load(tmp_path / "m.nmc").report("placement")
    for k in ("cores_used", "cores_lower_bound", "chips_used", "traffic", "traffic_lower_bound",
              "traffic_sequential", "traffic_greedy", "max_hops", "router_entries_max", "per_core"):
        assert k in rep, k
    assert set(rep["per_core"]) >= {"neurons", "synapse_bytes", "work_per_step"}
    assert (tmp_path / "m.nmc" / "reports" / "placement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "placement.png" not in b.reports  # JSON reports only


def test_ten_million_synapses_in_seconds():
    import time

    n = 3200   # 3200 x 3200 dense recurrent + input projection ≈ 10.5 M synapses
    rng = np.random.default_rng(0)
    g = Graph({"in": nir.Input(input_type={"input": np.array([64])}), "w": nir.Linear(weight=rng.normal(size=(n, 64))),
               "l": nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
               "rec": nir.Linear(weight=rng.normal(size=(n, n)).astype(np.float32)),
               "out": nir.Output(output_type={"output": np.array([n])})},
              [("in", "w"), ("w", "l"), ("l", "rec"), ("rec", "l"), ("l", "out")], meta={"dt": 1e-3})
    t = time.perf_counter()
    pt, rep = run_partition(g, CoreLimits(neurons_max=256, memory_bytes=96 * 1024 * 100))
    assert rep["synapses"] > 10_000_000
    assert time.perf_counter() - t < 30


def test_skipped_baseline_is_reported_with_the_reason():
    sp_ = spec(neurons=8, cores=64, mesh=(4, 4))
    m = nets.normalized(nets.ff_lif(n_hid=40))
    g, ctx = run(m, "partition{baseline_max_neurons=10}", sp_)
    r = ctx.reports["placement"]
    assert r["traffic_greedy"] is None and r["cores_greedy"] is None
    assert r["baselines"]["greedy"].startswith("skipped: 44 placed neurons > baseline_max_neurons=10")
    assert r["baselines"]["sequential"] == "computed" and r["traffic_sequential"] is not None
    _, ctx = run(nets.normalized(nets.ff_lif(n_hid=40)), "partition{baseline_max_neurons=10,baselines=all}", sp_)
    r = ctx.reports["placement"]
    assert r["baselines"] == {"sequential": "computed", "greedy": "computed"} and r["traffic_greedy"] > 0
    _, ctx = run(nets.normalized(nets.ff_lif(n_hid=40)), "partition{baselines=none}", sp_)
    assert ctx.reports["placement"]["baselines"] == {} and "traffic_greedy" not in ctx.reports["placement"]
    with pytest.raises(OptionError):
        run(nets.normalized(nets.ff_lif(n_hid=40)), "partition{baselines=sometimes}", sp_)


def _sparse_fanin_graph(n_in=60, n=40, k=10, seed=0):
    """Input(n_in) → Linear → LIF(n) → Linear → LIF(n) → Output; scipy-sparse weights, k random
    sources per neuron."""
    import scipy.sparse as sps

    rng = np.random.default_rng(seed)

    def w(n_src):
        cols = np.stack([rng.choice(n_src, k, replace=False) for _ in range(n)])
        return sps.csr_matrix((np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), cols.reshape(-1))),
                              shape=(n, n_src))

    def lif():
        return nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))

    nodes = {"in": nir.Input(input_type={"input": np.array([n_in])}), "w1": nir.Linear(weight=w(n_in)), "l1": lif(),
             "w2": nir.Linear(weight=w(n)), "l2": lif(), "out": nir.Output(output_type={"output": np.array([n])})}
    return Graph(nodes, [("in", "w1"), ("w1", "l1"), ("l1", "w2"), ("w2", "l2"), ("l2", "out")], meta={"dt": 1e-3})


def test_blocks_never_exceed_input_axons_alone_and_coarsening_is_reported():
    from nmc.passes.partition import block_model
    from nmc.passes.rules import max_per_core

    g = _sparse_fanin_graph()
    lim = CoreLimits(neurons_max=64, fan_in_max=20)
    net = build_network(g, lim)
    assert net.A.nnz == 800                                   # scipy-sparse weights: 10 synapses per neuron
    caps = max_per_core(net, lim)
    # 2 blocks wanted: 20 neurons see ~50 distinct sources (> 20 axons), so the blocks are made finer
    blocks, H, W, note = block_model(net, caps, 2, 0, 1, axons=20)
    assert blocks.n > 2 and np.bincount(H.indices, minlength=blocks.n).max() <= 20
    blocks, H, W, note = block_model(net, caps, 4096, 10, 1, axons=20)
    assert "coarsened" in note and np.bincount(H.indices, minlength=blocks.n).max() <= 20
    s = spec(neurons=64, axons=20, cores=64, mesh=(4, 4))
    g2, ctx = run(_sparse_fanin_graph(), "partition{max_block_edges=10}", s)
    check_invariants(g2, s)
    assert "blocks_coarsened" in ctx.reports["placement"]


def test_block_edge_bound_is_below_the_block_graph_and_exact_when_dense():
    """block_model skips the first block graph when _block_edges_at_least is over the budget:
    the bound never exceeds the block graph's entries, and equals them for dense connectivity."""
    from nmc.passes.partition import _block_edges_at_least, block_graph, block_incidence, block_model, make_blocks
    from nmc.passes.rules import max_per_core

    n = 48
    dense = Graph({"in": nir.Input(input_type={"input": np.array([4])}), "fc": nir.Linear(weight=np.ones((n, 4))),
                   "l": nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                                v_reset=np.zeros(n)),
                   "rec": nir.Linear(weight=np.full((n, n), 0.5)), "out": nir.Output(output_type={"output": np.array([n])})},
                  [("in", "fc"), ("fc", "l"), ("l", "rec"), ("rec", "l"), ("l", "out")], meta={"dt": 1e-3})
    lim = CoreLimits(neurons_max=8, weight_bits=8)
    for g, exact in [(dense, True), (_sparse_fanin_graph(), False), (nets.normalized(nets.ff_lif(n_hid=40)), False)]:
        net = build_network(g, lim)
        caps = max_per_core(net, lim)
        for mb in (4, 12, 4096):
            b = make_blocks(net, caps, mb)
            H = block_incidence(net, b)
            W = block_graph(net, b, H)
            assert _block_edges_at_least(net, b, H) <= W.nnz
            if exact:
                assert _block_edges_at_least(net, b, H) == W.nnz == b.n * (b.n - 1)
    net = build_network(dense, lim)
    blocks, H, W, note = block_model(net, max_per_core(net, lim), 4096, 100, 1)
    assert note.startswith("48 blocks had at least 2256 block-graph edges") and W.nnz <= 100


def test_block_size_divides_the_core_capacity_where_it_can():
    from nmc.passes.partition import block_size

    assert block_size(256, 25) == 32          # 8 blocks fill a core (⌈256 / 10⌉ = 26 would leave 234)
    assert block_size(256, 1) == 1 and block_size(256, 300) == 256
    assert block_size(240, 7) == 8 and 240 % block_size(240, 7) == 0
    assert block_size(251, 10) == 11           # a prime capacity: no divisor near 10, ⌈251 / 25⌉ as before
    # a 10⁵-neuron chain of consecutive blocks packs 256 per core: sequential fill reaches the neuron bound
    lim = CoreLimits(neurons_max=256, weight_bits=8)
    g = Graph({"in": nir.Input(input_type={"input": np.array([4])}),
               "w": nir.Linear(weight=np.ones((100_000, 4))),
               "l": nir.IF(r=np.ones(100_000), v_threshold=np.ones(100_000), v_reset=np.zeros(100_000)),
               "out": nir.Output(output_type={"output": np.array([100_000])})},
              [("in", "w"), ("w", "l"), ("l", "out")], meta={"dt": 1e-3})
    _, rep = run_partition(g, lim, method="sequential", baselines=())
    assert rep["cores_used"] == rep["cores_lower_bound"] == 391
