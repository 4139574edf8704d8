"""sparsify: exact densities, structured pruning, unit surgery (feed-forward,
recurrent, EGRU), storage formats and the sparsity report."""
from __future__ import annotations

import math
import os
from pathlib import Path

import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nmc
from nmc.annotations import Sparsity
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import EGRU
from passes_helpers_quant import ff_graph

GOLDEN = Path(__file__).parent / "golden"
OPTS = dict(dt=1e-3, reset="subtract", integrator="euler")


@settings(max_examples=25, deadline=None)
@given(st.floats(0.01, 1.0), st.sampled_from(["global", "layer"]))
def test_magnitude_pruning_hits_density_exactly(density, scope):
    g = ff_graph()
    b = nmc.compile(g, passes=f"normalize,sparsify{{density={density},scope={scope}}}", **OPTS)
    ws = [b.graph.nodes[n].weight for n in ("fc1", "fc2")]
    if scope == "global":
        n = sum(w.size for w in ws)
        assert sum(int((w != 0).sum()) for w in ws) == math.ceil(density * n)
    else:
        for w in ws:
            assert int((w != 0).sum()) == math.ceil(density * w.size)
    # kept weights are the largest: every kept magnitude ≥ every pruned one (per scope)
    orig = [g.nodes[n].weight for n in ("fc1", "fc2")]
    if scope == "global":
        kept = np.concatenate([np.abs(o[w != 0]) for o, w in zip(orig, ws)])
        dropped = np.concatenate([np.abs(o[w == 0]) for o, w in zip(orig, ws)])
        assert dropped.size == 0 or kept.min() >= dropped.max()


def test_golden_and_storage_report():
    b = nmc.compile(ff_graph(), passes="normalize,sparsify{density=0.25,scope=layer}", **OPTS)
    dump = b.graph.dump()
    f = GOLDEN / "sparsify_ff.txt"
    if os.environ.get("NMC_UPDATE_GOLDEN") or not f.exists():
        f.write_text(dump)
    assert dump == f.read_text()
    rep = b.report("sparsify")
    fc1 = rep["layers"]["fc1"]
    assert fc1["format"] == "csr" and fc1["nonzero"] == math.ceil(0.25 * 96)
    assert fc1["bytes"]["csr"] == math.ceil(fc1["nonzero"] * (4 + 2) + 17 * 4)  # f32 values, 16-bit idx, ptrs
    assert b.graph.ann("fc1", Sparsity).format == "csr"
    nb = rep["neurobench"]
    assert 0 < nb["connection_sparsity"] < 1 and nb["footprint_bytes"] > 0
    assert set(rep["activation_sparsity"]) == {"lif1", "lif2"}


def test_structured_units_zero_whole_rows():
    b = nmc.compile(ff_graph(), passes="normalize,sparsify{density=0.5,structured=units}", **OPTS)
    w = b.graph.nodes["fc1"].weight
    rows = (w != 0).any(1)
    assert rows.sum() == 8 and np.all((w != 0)[rows].sum(1) > 0)


def test_unit_pruning_surgery_feedforward_keeps_most_active():
    g = ff_graph(n_h=20, w_scale=1.5)
    x = (np.random.default_rng(0).random((40, 6, 6)) < 0.4).astype(float)
    b = nmc.compile(g, passes="normalize,sparsify{prune_units=0.25}", calibrate={"input": x}, **OPTS)
    G = b.graph
    assert G.shape_out("lif1") == (15,) and G.nodes["fc1"].weight.shape == (15, 6)
    assert G.nodes["fc2"].weight.shape == (4, 15) and G.shape_out("lif2") == (4,)  # output layer untouched
    rep = b.report("sparsify")
    assert rep["units_removed"]["lif1"]["removed"] == 5 and "lif2" in rep["units_kept_reason"]
    out = b.run({"input": x}, record=["lif1"])
    assert out["lif1.spikes"].shape[-1] == 15


def test_unit_pruning_recurrent_and_egru():
    rng = np.random.default_rng(2)
    H = 10
    lif = nir.LIF(tau=np.full(H, 5e-3), r=np.full(H, 5.0), v_leak=np.zeros(H), v_threshold=np.ones(H), v_reset=np.zeros(H))
    egru = EGRU(w_x=rng.normal(0, .5, (3 * 6, H)), w_h=rng.normal(0, .5, (3 * 6, 6)), b_x=np.zeros(18),
                b_h=np.zeros(18), thr=np.full(6, 0.2))
    g = Graph.from_nir(nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([4])}), "fc": nir.Affine(weight=rng.normal(0, 2, (H, 4)), bias=np.zeros(H)),
        "lif": lif, "rec": nir.Linear(weight=rng.normal(0, .3, (H, H))), "egru": egru,
        "dec": nir.Linear(weight=rng.normal(0, 1, (3, 6))), "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "egru"), ("egru", "dec"),
               ("dec", "output")], type_check=False))
    x = (rng.random((30, 4, 4)) < 0.5).astype(float)
    b = nmc.compile(g, passes="normalize,sparsify{prune_units=0.5}", calibrate={"input": x}, **OPTS)
    G = b.graph
    assert G.nodes["rec"].weight.shape == (5, 5) and G.nodes["fc"].weight.shape == (5, 4)
    assert G.nodes["egru"].w_x.shape == (9, 5) and G.nodes["egru"].w_h.shape == (9, 3) and G.nodes["dec"].weight.shape == (3, 3)
    b.run({"input": x})  # the pruned graph verifies and simulates


def test_bad_options():
    for p in ("sparsify{density=0}", "sparsify{prune_units=1.0}", "sparsify{scope=chip}", "sparsify{format=coo}"):
        with pytest.raises(OptionError):
            nmc.compile(ff_graph(), passes="normalize," + p, **OPTS)
