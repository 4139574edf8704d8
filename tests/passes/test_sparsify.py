"""sparsify: exact densities, structured pruning, unit surgery (feed-forward,
recurrent, EGRU), Quant kept consistent, storage formats, exact synaptic-op
counts and the sparsity report, end to end through ``nmc compile``."""
from __future__ import annotations

import math
import os
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from nets import conv_pool, normalized, recurrent_cubalif, spikes
from passes_helpers_quant import ff_graph

import nmc
from nmc import serialize
from nmc.annotations import Quant, Sparsity
from nmc.cli import main
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import EGRU
from nmc.passes.formats import csr_to_dense, ell_to_dense, storage_bytes, to_csr, to_ell

GOLDEN = Path(__file__).parent / "golden"
OPTS = dict(dt=1e-3, reset="subtract", integrator="euler")


def _kept(density, n):
    return math.ceil(density * n - 1e-9)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.01, 1.0), st.sampled_from(["global", "layer"]))
def test_magnitude_pruning_hits_density_exactly(density, scope):
    g = ff_graph()
    b = nmc.compile(g, passes=f"normalize,quantize{{bits=6}},sparsify{{density={density},scope={scope}}}", **OPTS)
    ws = [b.graph.nodes[n].weight for n in ("fc1", "fc2")]
    if scope == "global":
        n = sum(w.size for w in ws)
        kept = sum(int((w != 0).sum()) for w in ws)
        assert kept == _kept(density, n) and abs(kept - density * n) < 1
    else:
        for w in ws:
            assert int((w != 0).sum()) == _kept(density, w.size)
    # kept weights are the largest: every kept magnitude ≥ every pruned one (per scope)
    orig = [g.nodes[n].weight for n in ("fc1", "fc2")]
    pairs = [(np.abs(o[w != 0]), np.abs(o[w == 0])) for o, w in zip(orig, ws)]
    if scope == "global":
        pairs = [(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))]
    for kept, dropped in pairs:
        assert dropped.size == 0 or kept.size == 0 or kept.min() >= dropped.max()
    for n, w in zip(("fc1", "fc2"), ws):  # the integer weights follow the pruning
        q = b.graph.ann(n, Quant)
        assert np.all(q.w_int[w == 0] == 0)
        assert np.array_equal(b.graph.ann(n, Sparsity).mask, w != 0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.sampled_from([0.0, 0.0, 1.5, -2.0, 0.25])))
def test_csr_ell_round_trip_and_sizes(w):
    indptr, idx, val = to_csr(w)
    assert np.array_equal(csr_to_dense(indptr, idx, val, w.shape[1]), w)
    ind, v = to_ell(w)
    assert ind.shape == (w.shape[0], int((w != 0).sum(1).max(initial=0)))
    assert np.array_equal(ell_to_dense(ind, v, w.shape[1]), w)
    s = storage_bytes(w != 0, 8)
    nnz = int((w != 0).sum())
    assert s["dense"] == w.size and s["csr"] == nnz * 2 + (w.shape[0] + 1) * 4 and s["ell"] == ind.size * 2


def test_golden_and_storage_report():
    b = nmc.compile(ff_graph(), passes="normalize,sparsify{density=0.25,scope=layer}", **OPTS)
    dump = b.graph.dump()
    f = GOLDEN / "sparsify_ff.txt"
    if os.environ.get("NMC_UPDATE_GOLDEN") or not f.exists():
        f.write_text(dump)
    assert dump == f.read_text()
    rep = b.report("sparsify")
    fc1 = rep["layers"]["fc1"]
    assert fc1["nonzero"] == math.ceil(0.25 * 96)
    # f32 values (no Quant), 8-bit column indices (6 columns), 4-byte row pointers
    assert fc1["bytes"]["csr"] == fc1["nonzero"] * (4 + 1) + 17 * 4
    assert fc1["format"] == min(("dense", "csr", "ell"), key=lambda k: fc1["bytes"][k]) == "csr"
    assert b.graph.ann("fc1", Sparsity).format == "csr"
    nb = rep["neurobench"]
    assert 0 < nb["connection_sparsity"] < 1 and nb["footprint_bytes"] > 0
    assert set(rep["activation_sparsity"]) == {"lif1", "lif2"}


def test_synops_are_exact_for_dense_layers():
    g = ff_graph()
    x = spikes(6, T=30, p=0.3, seed=3)
    b = nmc.compile(g, passes="normalize,sparsify{density=0.5}", calibrate={"input": x}, **OPTS)
    rep = b.report("sparsify")
    G = b.graph
    out = b.run({"input": x}, record=["lif1"])
    w1, w2 = G.nodes["fc1"].weight, G.nodes["fc2"].weight
    want1 = sum(int((w1[:, i] != 0).sum()) for t in range(30) for i in np.flatnonzero(x[t]))
    s1 = out["lif1.spikes"]
    want2 = sum(int((w2[:, i] != 0).sum()) for t in range(30) for i in np.flatnonzero(s1[t]))
    assert rep["effective_synops"] == {"fc1": want1, "fc2": want2}
    assert rep["dense_synops"] == {"fc1": 30 * w1.size, "fc2": 30 * w2.size}
    nb = rep["neurobench"]
    assert nb["effective_ac"] == want1 + want2 and nb["effective_mac"] == 0  # all inputs are spikes


def test_synops_are_exact_for_conv():
    g = normalized(conv_pool(), reset="subtract")
    x = spikes((2, 8, 8), T=6, p=0.3, seed=1)
    b = nmc.compile(g, passes="sparsify{density=0.5,structured=channels}", calibrate={"input": x}, **OPTS)
    w = b.graph.nodes["conv"].weight
    assert int(((w != 0).reshape(4, -1).any(1)).sum()) == 2  # half of the output channels survive, whole
    want = 0  # brute force: each active input pixel × each kept kernel tap that lands inside the 8×8 output
    for t, c, yy, xx in zip(*np.nonzero(x)):
        for o, kh, kw in zip(*np.nonzero(w[:, c])):
            oy, ox = yy - kh + 1, xx - kw + 1
            want += int(0 <= oy < 8 and 0 <= ox < 8)
    rep = b.report("sparsify")
    assert rep["effective_synops"]["conv"] == want
    assert rep["dense_synops"]["conv"] == 6 * 4 * 2 * (6 * 6 * 9 + 4 * 6 * 6 + 4 * 4)  # interior/edge/corner taps


def test_structured_units_zero_whole_rows():
    b = nmc.compile(ff_graph(), passes="normalize,sparsify{density=0.5,structured=units}", **OPTS)
    w = b.graph.nodes["fc1"].weight
    rows = (w != 0).any(1)
    assert rows.sum() == 8 and np.all((w != 0)[rows].sum(1) > 0)


def test_unit_pruning_of_silent_units_leaves_outputs_identical():
    """Units that never fire carry no information: removing them (graph surgery)
    must leave every output spike unchanged — and the least active go first."""
    g = ff_graph(n_h=20, w_scale=1.5)
    fc1 = g.nodes["fc1"]
    dead = np.array([1, 4, 7, 12, 19])
    fc1.weight[dead] = -np.abs(fc1.weight[dead])  # inputs are ≥ 0: these units never fire
    fc1.bias[dead] = -1.0
    x = (np.random.default_rng(0).random((40, 6, 6)) < 0.4).astype(float)
    before = nmc.compile(g, passes="normalize", **OPTS).run({"input": x}, record=["lif1"])
    assert before["lif1.spikes"][..., dead].sum() == 0 and before["lif1.spikes"].sum() > 0
    b = nmc.compile(g, passes="normalize,sparsify{prune_units=0.25}", calibrate={"input": x}, **OPTS)
    G = b.graph
    assert G.shape_out("lif1") == (15,) and G.nodes["fc1"].weight.shape == (15, 6)
    assert G.nodes["fc2"].weight.shape == (4, 15) and G.shape_out("lif2") == (4,)  # output layer untouched
    rep = b.report("sparsify")
    assert rep["units_removed"]["lif1"]["removed"] == 5 and "lif2" in rep["units_kept_reason"]
    assert rep["units_removed"]["lif1"]["removed_max_rate"] <= rep["units_removed"]["lif1"]["kept_min_rate"]
    silent = np.flatnonzero(before["lif1.spikes"].sum(axis=(0, 1)) == 0)  # ⊇ dead; ties go by index
    keep = np.setdiff1d(np.arange(20), silent[:5])
    assert np.array_equal(G.nodes["fc1"].weight, g.nodes["fc1"].weight[keep])
    after = b.run({"input": x}, record=["lif1"])
    assert np.array_equal(after["output"], before["output"])
    assert np.array_equal(after["lif1.spikes"], before["lif1.spikes"][..., keep])


def _rec_egru_graph(H=10, seed=2):
    rng = np.random.default_rng(seed)
    lif = nir.LIF(tau=np.full(H, 5e-3), r=np.full(H, 5.0), v_leak=np.zeros(H), v_threshold=np.ones(H),
                  v_reset=np.zeros(H))
    egru = EGRU(w_x=rng.normal(0, .5, (3 * 6, H)), w_h=rng.normal(0, .5, (3 * 6, 6)), b_x=np.zeros(18),
                b_h=np.zeros(18), thr=np.full(6, 0.2))
    return Graph.from_nir(nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(weight=rng.normal(0, 2, (H, 4)), bias=np.zeros(H)),
        "lif": lif, "rec": nir.Linear(weight=rng.normal(0, .3, (H, H))), "egru": egru,
        "dec": nir.Linear(weight=rng.normal(0, 1, (3, 6))), "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "egru"), ("egru", "dec"),
               ("dec", "output")], type_check=False)), rng


def test_unit_pruning_recurrent_and_egru_slices_quant():
    g, rng = _rec_egru_graph()
    x = (rng.random((30, 4, 4)) < 0.5).astype(float)
    b = nmc.compile(g, passes="normalize,quantize{bits=8,per_channel=true},sparsify{prune_units=0.5}",
                    calibrate={"input": x}, **OPTS)
    G = b.graph
    assert G.nodes["rec"].weight.shape == (5, 5) and G.nodes["fc"].weight.shape == (5, 4)
    assert G.nodes["egru"].w_x.shape == (9, 5) and G.nodes["egru"].w_h.shape == (9, 3)
    assert G.nodes["dec"].weight.shape == (3, 3)
    for n in ("fc", "rec", "dec"):  # the integer weights were sliced with the float ones
        q = G.ann(n, Quant)
        w = G.nodes[n].weight
        assert q.w_int.shape == w.shape and np.all(np.abs(q.w_int * q.scale - w) <= q.scale / 2 + 1e-12)
    q = G.ann("egru", Quant)
    wcat = np.concatenate([G.nodes["egru"].w_x, G.nodes["egru"].w_h], axis=1)
    assert q.w_int.shape == wcat.shape and np.all(np.abs(q.w_int * q.scale - wcat) <= q.scale / 2 + 1e-12)
    b.run({"input": x})  # the pruned graph verifies and simulates
    rep = b.report("sparsify")
    assert rep["effective_synops"]["egru"] > 0 and rep["neurobench"]["effective_mac"] > 0  # graded EGRU events


def test_unit_pruning_recurrent_cubalif_reports_why_not():
    g = normalized(recurrent_cubalif(), reset="subtract")
    x = spikes(6, T=30, p=0.4, seed=2)
    b = nmc.compile(g, passes="sparsify{prune_units=0.25}", calibrate={"input": x}, **OPTS)
    rep = b.report("sparsify")
    assert set(rep["units_removed"]) | set(rep["units_kept_reason"]) == {
        n for n in g.nodes if n in rep["activation_sparsity"]}
    b.run({"input": x})


def test_cli_end_to_end(tmp_path):
    serialize.write(tmp_path / "ff.nir", ff_graph())
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "ff.nir"), "--target", "reference", "--passes",
                                  "normalize,quantize{bits=4},sparsify{density=0.3,format=ell}", "--dt", "1e-3",
                                  "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "in.npz", input=spikes(6, T=20, p=0.4, seed=1))
    r = CliRunner().invoke(main, ["run", str(tmp_path / "b"), "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "b" / "reports" / "sparsify.json").read_text())
    assert rep["layers"]["fc1"]["format"] == "ell" and rep["layers"]["fc1"]["bytes"]["dense"] == 16 * 6 * 4 // 8
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "ff.nir"), "--passes", "normalize,sparsify{density=2}",
                                  "-o", str(tmp_path / "c")])
    assert r.exit_code != 0 and "density" in r.output


def test_bad_options():
    for p in ("sparsify{density=0}", "sparsify{prune_units=1.0}", "sparsify{scope=chip}", "sparsify{format=coo}"):
        with pytest.raises(OptionError):
            nmc.compile(ff_graph(), passes="normalize," + p, **OPTS)


def test_nodes_option_prunes_only_the_selected_weight_nodes():
    from nets import egru_net

    from nmc.passes import PassContext, PassManager, parse_pipeline

    g = normalized(egru_net(hidden=20))
    out = PassManager(parse_pipeline("sparsify{density=0.1,scope=layer,nodes=EGRU}")).run(g, PassContext())
    for w in (out.nodes["egru"].w_x, out.nodes["egru"].w_h):
        assert np.count_nonzero(w) == math.ceil(0.1 * w.size)
    assert np.count_nonzero(out.nodes["fc"].weight) == out.nodes["fc"].weight.size
    by_name = PassManager(parse_pipeline("sparsify{density=0.1,scope=layer,nodes=fc}")).run(g, PassContext())
    assert np.count_nonzero(by_name.nodes["fc"].weight) == math.ceil(0.1 * by_name.nodes["fc"].weight.size)
    assert np.count_nonzero(by_name.nodes["egru"].w_x) == by_name.nodes["egru"].w_x.size
    with pytest.raises(OptionError, match="selects no weight node"):
        PassManager(parse_pipeline("sparsify{density=0.1,nodes=Conv2d}")).run(g, PassContext())
