"""Synapse-array mapping: the array realises the 6-bit matrix (label matching),
merged circuits for large fan-in, sequential runs for networks larger than a
chip, lower bounds, and the noiseless emulator equal to the reference run on
the quantized network."""
from __future__ import annotations

import nir
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nmc
from nmc.backends.brainscales2.program import BIAS_SOURCE
from nets import ff_lif, recurrent_cubalif, spikes
from nmc.backends.brainscales2 import calibration as C
from nmc.backends.brainscales2.synapses import array_config, effective_matrix, rows_lower_bound
from nmc.errors import DesignRuleError
from nmc.passes.rewire import rewire_matrix

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 150), st.integers(0, 2**31 - 1), st.floats(0.05, 1.0))
def test_array_config_realises_the_matrix(n_post, n_pre, seed, density):
    rng = np.random.default_rng(seed)
    w6 = rng.integers(-63, 64, (n_post, n_pre)) * (rng.random((n_post, n_pre)) < density)
    k = rng.integers(1, 4, n_post)
    r = rewire_matrix(w6.astype(float), fan_in=n_pre, per_row=64)
    a = array_config(w6, r["group"], r["label"], k, r["synapse_row"])
    W = effective_matrix(a["arr_w"], a["arr_label"], a["row_sign"], a["row_group"], r["group"], r["label"], k, n_pre)
    assert np.array_equal(W, w6)
    assert np.all(np.abs(a["arr_w"]) <= 63) and np.all(a["arr_label"] < 64)
    jj, ii = np.nonzero(w6)
    assert np.array_equal(a["row_sign"][a["rows"][jj, ii]], np.sign(w6[jj, ii]))  # one sign per row
    assert np.array_equal(a["row_group"][a["rows"][jj, ii]], r["group"][ii])     # one source group per row
    assert a["n_rows"] >= rows_lower_bound(w6, k, 64)


def _wide(n_in, n_out, seed=0, p_neg=0.5):
    rng = np.random.default_rng(seed)
    w = np.abs(rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in))) * np.where(rng.random((n_out, n_in)) < p_neg, -1, 1)
    tau = np.full(n_out, 1e-2)
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
                               "fc": nir.Linear(weight=w),
                               "lif": nir.LIF(tau=tau, r=tau / 1e-3, v_leak=np.zeros(n_out),
                                              v_threshold=np.ones(n_out), v_reset=np.zeros(n_out)),
                               "output": nir.Output(output_type={"output": np.array([n_out])})},
                        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_large_fan_in_merges_circuits_and_bounds_hold():
    b = nmc.compile(_wide(300, 8), target="brainscales2", **OPTS)  # mixed signs: 128 per circuit
    l = b.program.layer("lif")
    assert np.all(l.circuits == 3)
    rep = b.report("mapping")
    assert rep["circuits_used"] == 24 and rep["circuits_lower_bound"] == 16  # ⌈300/256⌉ per neuron at best
    assert rep["layers"]["lif"]["merged_neurons"] == 8
    assert rep["rows_used"] >= rep["rows_lower_bound"] and rep["rows_used"] <= 256
    exc = nmc.compile(_wide(300, 8, p_neg=0.0), target="brainscales2", **OPTS)  # one sign: 256 per circuit
    assert np.all(exc.program.layer("lif").circuits == 2)


def test_network_larger_than_a_chip_runs_sequentially():
    b = nmc.compile(ff_lif(n_in=20, n_hid=700, n_out=10, seed=1), target="brainscales2", **OPTS)
    rep = b.report("mapping")
    assert rep["runs_used"] == 2 == rep["runs_lower_bound"]
    assert sum(r["circuits"] for r in rep["runs"]) == rep["circuits_used"] == 700 + 10 * 6  # 700 mixed inputs: 6 circuits
    assert rep["layers"]["lif1"]["runs"] == [0, 1] and "sequential" in rep["split"]
    pl = b.program.layer("lif1").params
    assert np.all(np.diff(pl["run"]) >= 0) and np.all(pl["first_circuit"] < 512)
    x = spikes((20,), T=20, p=0.3, seed=2)
    r = nmc.compile(ff_lif(n_in=20, n_hid=700, n_out=10, seed=1), target="reference", **OPTS)
    a, c = b.run({"input": x}, record=["lif1"]), r.run({"input": x}, record=["lif1"])
    assert np.mean(a["lif1.spikes"] == c["lif1.spikes"]) > 0.95


def test_recurrent_layer_larger_than_a_chip_is_a_design_rule_violation():
    with pytest.raises(DesignRuleError) as e:
        nmc.compile(recurrent_cubalif(n_hid=600), target="brainscales2", **OPTS)
    assert e.value.violations[0].rule == "recurrent-split"


def _quantized_reference(prog):
    """The float reference network with exactly the program's quantization:
    effective 6-bit weights × LSB and the DAC-realised parameters (threshold units)."""
    cal = prog.calibration
    nodes, edges = {}, []
    for k, n in prog.inputs.items():
        nodes[k] = nir.Input(input_type={"input": np.array([n])})
    for k in prog.constant_inputs:  # the bias source: an input the test drives with ones
        nodes[k] = nir.Input(input_type={"input": np.array([1])})
    h = prog.dt / prog.speedup
    for l in prog.layers:
        assert l.kind == "lif"
        circ = l.params["first_circuit"].astype(int)
        val = {p: C.realized(l.codes[f"{p}_nominal"], p, circ, cal, "nominal") for p in C.PARAMS}
        beta = np.exp(-h / val["tau_mem"])
        nodes[l.name] = nir.LIF(tau=prog.dt / (1 - beta), r=1 / (1 - beta), v_leak=val["v_leak"],
                                v_threshold=val["v_threshold"], v_reset=val["v_reset"])
    for i, q in enumerate(prog.projections):
        l = prog.layer(q.post)
        W = effective_matrix(q.arr_w, q.arr_label, q.row_sign, q.row_group, q.group, q.label, l.circuits,
                             q.w6.shape[1]) * l.scale
        nodes[f"w{i}"] = nir.Linear(weight=W)
        edges += [(q.pre, f"w{i}"), (f"w{i}", q.post)]
    for o, lname in prog.outputs.items():
        nodes[o] = nir.Output(output_type={"output": np.array([prog.layer(lname).size])})
        edges.append((lname, o))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def test_noiseless_emulator_is_the_reference_up_to_quantization():
    """All that separates the noiseless emulator from the float reference is the
    stated quantization (6-bit weights with one LSB per layer, 10-bit DAC codes):
    with that quantization applied to the reference, the spikes are identical."""
    net = ff_lif(n_hid=40, seed=3)  # with biases: carried by the bias source, one event per step
    b = nmc.compile(net, target="brainscales2", **OPTS)
    assert not b.report("compile")["warnings"]
    assert b.program.constant_inputs == [BIAS_SOURCE] and any(q.pre == BIAS_SOURCE for q in b.program.projections)
    q = nmc.compile(_quantized_reference(b.program), target="reference", **OPTS)
    x = spikes((8,), T=60, p=0.3, seed=5, batch=4)
    a = b.run({"input": x}, record=["lif1"])
    c = q.run({"input": x, BIAS_SOURCE: np.ones((60, 4, 1))}, record=["lif1"])
    assert c["lif1.spikes"].sum() > 50 and c["output"].sum() > 10
    assert np.array_equal(a["lif1.spikes"], c["lif1.spikes"]) and np.array_equal(a["output"], c["output"])


def test_parameters_outside_the_dac_range_are_warned():
    net = ff_lif(n_hid=40, seed=3)
    net.nodes["lif1"].v_leak = np.full(40, 5.0)  # 5 thresholds: beyond the leak DAC range
    w = nmc.compile(net, target="brainscales2", **OPTS).report("compile")["warnings"]
    assert any("v_leak" in m["message"] and "clipped" in m["message"] and m["node"] == "lif1" for m in w)


def test_biases_are_a_constant_event_input_not_a_clipped_leak_shift():
    """A bias of b per step is an input of weight b from a source firing every step (the
    reference's semantics); as a leak shift R·b it would leave the DAC range for long τ."""
    net = ff_lif(n_hid=40, seed=3)
    b = nmc.compile(net, target="brainscales2", **OPTS)
    assert not any("v_leak" in m["message"] for m in b.report("compile")["warnings"])
    l = b.program.layer("lif1")
    assert np.allclose(l.params["v_leak"], 0.0)  # the leak keeps its own value
    (qb,) = [q for q in b.program.projections if q.pre == BIAS_SOURCE and q.post == "lif1"]
    bias = np.asarray(net.nodes["fc1"].bias, float)
    nz = qb.w6[:, 0] != 0
    assert qb.w6.shape == (40, 1) and nz.sum() > 20 and np.all(np.sign(qb.w6[nz, 0]) == np.sign(bias[nz]))
    files = b.program.files()
    import json

    assert json.loads(files["bss2_program.json"])["constant_inputs"] == [BIAS_SOURCE]
    from nmc.backends.brainscales2.program import load_program

    assert load_program(files).constant_inputs == [BIAS_SOURCE]
