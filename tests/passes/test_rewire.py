"""rewire: fan-in budget, label groups, rows vs lower bounds, refill, e2e."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nmc
from nmc.annotations import RowMap
from nmc.errors import OptionError
from nmc.passes.rewire import rewire_matrix
from passes_helpers_quant import ff_graph


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 90), st.integers(1, 40), st.integers(2, 16), st.floats(0.05, 1.0),
       st.integers(0, 10 ** 6))
def test_row_map_is_consistent(n_out, n_in, fan_in, per_row, p, seed):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < p)
    r = rewire_matrix(W, fan_in, per_row)
    sr, grp, lab = r["synapse_row"], r["group"], r["label"]
    kept = r["W"] != 0
    assert np.array_equal(kept, sr >= 0)  # every kept synapse has a row, pruned ones none
    assert np.all(r["W"][kept] == W[kept])  # kept weights unchanged
    for j in range(n_out):  # one synapse per (row, column)
        rows = sr[j][sr[j] >= 0]
        assert rows.size == np.unique(rows).size and rows.size <= r["rows"]
    assert np.bincount(grp).max(initial=0) <= per_row  # groups fit the labels
    for gid in np.unique(grp):
        assert np.unique(lab[grp == gid]).size == (grp == gid).sum()  # labels unique within a group
    # rows of one (group, sign) block hold only that group's sources of that sign
    blocks = {}
    jj, ii = np.nonzero(kept)
    for j, i in zip(jj, ii):
        key = int(sr[j, i])
        blocks.setdefault(key, set()).add((int(grp[i]), int(np.sign(W[j, i]))))
    assert all(len(v) == 1 for v in blocks.values())
    assert r["rows"] >= r["rows_lower_bound"]


def test_refill_reduces_error_and_bounds():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(50, 200))
    r = rewire_matrix(W, 20, 64)
    assert r["refilled"] > 0 and 0 < r["weight_error"] < 1
    assert r["lb_label_groups"] >= math.ceil(200 / 64)  # every source is used by some neuron
    no_refill_kept = 50 * 20
    assert r["kept"] > no_refill_kept


def test_pass_with_spec_and_report():
    b = nmc.compile(ff_graph(n_in=6, n_h=16), target="reference", dt=1e-3,
                    passes="normalize,rewire{fan_in=3,sources_per_row=4}")
    rep = b.report("rewire")
    assert set(rep["layers"]) == {"fc1", "fc2"}
    for st_ in rep["layers"].values():
        assert st_["rows"] >= st_["rows_lower_bound"] and st_["gap"] == st_["rows"] - st_["rows_lower_bound"]
    rm = b.graph.ann("fc1", RowMap)
    assert rm.rows == rep["layers"]["fc1"]["rows"] and np.asarray(rm.group).shape == (6,)
    with pytest.raises(OptionError):
        nmc.compile(ff_graph(), dt=1e-3, passes="normalize,rewire")
