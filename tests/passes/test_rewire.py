"""rewire: fan-in budget, label groups, rows vs (brute-force checked) lower
bounds, refill, joint columns of recurrent neurons, golden dump, end to end."""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import recurrent_cubalif, spikes
from passes_helpers_quant import ff_graph

import nmc
from nmc import serialize
from nmc.annotations import Quant, RowMap
from nmc.cli import main
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.passes.rewire import lower_bounds, rewire_matrix, rows_needed

GOLDEN = Path(__file__).parent / "golden"
OPTS = dict(dt=1e-3, reset="subtract", integrator="euler")


def _check_row_map(W, r, fan_in, per_row, refill):
    sr, grp, lab = r["synapse_row"], r["group"], r["label"]
    kept = r["W"] != 0
    assert np.array_equal(kept, sr >= 0)  # every kept synapse has a row, pruned ones none
    assert np.all(r["W"][kept] == W[kept])  # kept weights unchanged
    assert np.all(sr < r["rows"])
    for j in range(W.shape[0]):  # one synapse per (row, column)
        rows = sr[j][sr[j] >= 0]
        assert rows.size == np.unique(rows).size
    fan = kept.sum(1)
    assert np.all(fan <= r["rows"])
    if not refill:
        assert np.all(fan <= fan_in)  # the budget is strict
    else:  # the budget's strongest inputs are all there
        top = np.argsort(-np.abs(W), axis=1, kind="stable")[:, :fan_in]
        assert all(kept[j, i] or W[j, i] == 0 for j in range(W.shape[0]) for i in top[j])
    assert np.bincount(grp).max(initial=0) <= per_row  # groups fit the labels
    for gid in np.unique(grp):
        assert np.unique(lab[grp == gid]).size == (grp == gid).sum()  # labels unique within a group
    assert np.all((lab >= 0) & (lab < per_row))
    blocks = {}  # a row holds one group's sources of one sign
    for j, i in zip(*np.nonzero(kept)):
        blocks.setdefault(int(sr[j, i]), set()).add((int(grp[i]), int(np.sign(W[j, i]))))
    assert all(len(v) == 1 for v in blocks.values())
    assert r["rows_lower_bound"] <= r["rows"] <= r["rows_sequential"]
    assert r["rows_lower_bound"] >= max(r["lb_in_degree"], 1 if kept.any() else 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 90), st.integers(1, 40), st.integers(2, 16), st.floats(0.05, 1.0),
       st.integers(0, 10 ** 6), st.booleans())
def test_row_map_is_consistent(n_out, n_in, fan_in, per_row, p, seed, refill):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < p)
    _check_row_map(W, rewire_matrix(W, fan_in, per_row, refill=refill), fan_in, per_row, refill)


def _partitions(n, cap):
    """Every partition of range(n) into blocks of ≤ cap (restricted growth strings)."""
    def rec(i, a, sizes):
        if i == n:
            yield np.array(a)
            return
        for gid in range(len(sizes) + 1):
            if gid < len(sizes) and sizes[gid] >= cap:
                continue
            yield from rec(i + 1, a + [gid], sizes[:gid] + [sizes[gid] + 1] + sizes[gid + 1:] if gid < len(sizes)
                           else sizes + [1])
    yield from rec(0, [], [])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 3), st.integers(0, 10 ** 6))
def test_lower_bound_holds_against_exhaustive_optimum(n_out, n_in, per_row, seed):
    rng = np.random.default_rng(seed)
    signs = rng.integers(-1, 2, size=(n_out, n_in))
    best = min(rows_needed(signs, grp) for grp in _partitions(n_in, per_row))
    lb = lower_bounds(signs, per_row)["rows_lower_bound"]
    assert lb <= best
    W = signs * (1 + rng.random(signs.shape))
    assert rewire_matrix(W, n_in, per_row, refill=False)["rows"] >= best


def test_bounds_are_tight_on_a_full_matrix_and_grouping_beats_sequential():
    W = np.abs(np.random.default_rng(0).normal(size=(8, 128))) + 0.1  # all excitatory, dense
    r = rewire_matrix(W, 128, 64)
    assert r["rows"] == r["rows_lower_bound"] == 128 and r["groups"] == 2
    # two disjoint neuron populations reading interleaved sources: grouping by population halves the rows
    W = np.zeros((8, 128))
    W[:4, 0::2] = 1.0
    W[4:, 1::2] = 1.0
    r = rewire_matrix(W, 64, 64)
    assert r["rows_sequential"] == 64 and r["rows"] == r["rows_lower_bound"] == 64
    W[4:, 1::2] = -1.0  # opposite signs: one row block each
    r = rewire_matrix(W, 64, 64)
    assert r["rows"] == r["rows_lower_bound"] == 128 and r["rows_sequential"] == 128


def test_refill_reduces_error():
    W = np.random.default_rng(1).normal(size=(50, 200))
    with_, without = rewire_matrix(W, 20, 64), rewire_matrix(W, 20, 64, refill=False)
    assert without["kept"] == 50 * 20 and without["refilled"] == 0
    assert with_["refilled"] > 0 and with_["kept"] == 50 * 20 + with_["refilled"]
    assert with_["rows"] == without["rows"] and 0 < with_["weight_error"] < without["weight_error"] < 1
    Wk = without["W"]  # the budget-pruned matrix the bounds describe
    assert with_["lb_label_groups"] == sum(math.ceil(int((np.sign(Wk) == s).any(0).sum()) / 64) for s in (1, -1))
    assert with_["lb_in_degree"] == max(int((np.sign(Wk) == s).sum(1).max()) for s in (1, -1))


def test_golden_and_quant_follow():
    b = nmc.compile(ff_graph(n_in=6, n_h=16), dt=1e-3, reset="subtract", integrator="euler",
                    passes="normalize,quantize{bits=5},rewire{fan_in=3,sources_per_row=4}")
    dump = b.graph.dump()
    f = GOLDEN / "rewire_ff.txt"
    if os.environ.get("NMC_UPDATE_GOLDEN") or not f.exists():
        f.write_text(dump)
    assert dump == f.read_text()
    rep = b.report("rewire")
    assert set(rep["neurons"]) == {"lif1", "lif2"} and set(rep["layers"]) == {"fc1", "fc2"}
    for st_ in rep["neurons"].values():
        assert st_["rows_lower_bound"] <= st_["rows"] <= st_["rows_sequential"]
        assert st_["gap"] == st_["rows"] - st_["rows_lower_bound"]
    rm = b.graph.ann("fc1", RowMap)
    assert rm.rows == rep["neurons"]["lif1"]["rows"] and np.asarray(rm.group).shape == (6,)
    for n in ("fc1", "fc2"):
        w, q = b.graph.nodes[n].weight, b.graph.ann(n, Quant)
        assert np.all(q.w_int[w == 0] == 0) and np.all((w != 0).sum(1) <= rm.rows if n == "fc1" else True)


def test_recurrent_neuron_shares_its_budget():
    from nets import normalized

    g = normalized(recurrent_cubalif(n_in=6, n_hid=12), reset="subtract")
    b = nmc.compile(g, passes="rewire{fan_in=5,sources_per_row=8,refill=false}", **OPTS)
    rep = b.report("rewire")
    lif = next(n for n, v in rep["neurons"].items() if len(v["inputs"]) == 2)
    ins = rep["neurons"][lif]["inputs"]
    fan = sum((b.graph.nodes[p].weight != 0).sum(1) for p in ins)
    assert fan.max() <= 5 and rep["neurons"][lif]["max_fan_in"] == fan.max()
    rows = [np.asarray(b.graph.ann(p, RowMap).synapse_row) for p in ins]
    both = np.concatenate(rows, axis=1)
    for j in range(both.shape[0]):  # row numbers are shared across the two weight nodes
        used = both[j][both[j] >= 0]
        assert used.size == np.unique(used).size
    b.run({"input": spikes(6, T=20, p=0.4)})


def test_spec_parameters_and_cli_end_to_end(tmp_path):
    from nmc.hw import HardwareSpec
    from nmc.passes import PassContext, PassManager, parse_pipeline

    spec = HardwareSpec.load("brainscales2")
    rng = np.random.default_rng(3)
    import nir

    g = Graph.from_nir(nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([300])}),
        "fc": nir.Linear(weight=rng.normal(size=(20, 300))),
        "lif": nir.LIF(tau=np.full(20, 5e-3), r=np.full(20, 5.0), v_leak=np.zeros(20), v_threshold=np.ones(20),
                       v_reset=np.zeros(20)),
        "output": nir.Output(output_type={"output": np.array([20])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False))
    ctx = PassContext(spec=spec, options={"dt": 1e-3})
    G = PassManager(parse_pipeline("normalize,rewire{refill=false}")).run(g, ctx)
    rep = ctx.reports["rewire"]
    assert rep["fan_in"] == spec.get("synapse_array.fan_in_signed") == 128
    assert rep["sources_per_row"] == spec.get("synapse_array.sources_per_row") == 64
    assert ((G.nodes["fc"].weight != 0).sum(1) == 128).all()
    serialize.write(tmp_path / "net.nir", ff_graph(n_in=6, n_h=16))
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "net.nir"), "--target", "reference", "--dt", "1e-3",
                                  "--passes", "normalize,rewire{fan_in=2,sources_per_row=4}", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "in.npz", input=spikes(6, T=20, p=0.4))
    r = CliRunner().invoke(main, ["run", str(tmp_path / "b"), "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b" / "reports" / "rewire.json").read_text())
    assert rep["total"]["rows"] >= rep["total"]["rows_lower_bound"]


def test_needs_budget():
    with pytest.raises(OptionError):
        nmc.compile(ff_graph(), dt=1e-3, passes="normalize,rewire")
    with pytest.raises(OptionError):
        nmc.compile(ff_graph(), dt=1e-3, passes="normalize,rewire{fan_in=0,sources_per_row=4}")
