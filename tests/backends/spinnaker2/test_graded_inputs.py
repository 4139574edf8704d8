"""Graded inputs on SpiNNaker 2 (issue #15): a value x of an input unit in a step is sent
as x/quantum repeated events (backends/spinnaker2/lower.py: graded_inputs). Before: refused
with "spike_list inputs take spikes (0/1) only"."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import ff_lif
from nmc.errors import DeviceError, ShapeError
from nmc.runtime import energy

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")
# a 21-bit weight range: what is left is float32 vs float64 state (as in test_spinnaker2.py)
FINE = [{"models": {"lif_no_delay": {"weight_max": 2 ** 20}, "lif_curr_exp_no_delay": {"weight_max": 2 ** 20}}}]


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 4, (40, 4, 8)).astype(float) * (rng.random((40, 4, 8)) < 0.3)   # 0..3 events


def test_count_inputs_equal_the_reference():
    x = _counts()
    assert x.max() == 3
    ref = nmc.compile(ff_lif(w_scale=0.8), target="reference", **OPTS).run({"input": x}, record=["lif1"])
    fine = nmc.compile(ff_lif(w_scale=0.8), target="spinnaker2", hw=FINE, passes="normalize", **OPTS)
    a = fine.run({"input": x}, record=["lif1"])
    assert ref["lif1.spikes"].sum() > 50
    # k events of weight W add k·W exactly (integers in float32): the spikes are the reference's
    assert np.array_equal(a["lif1.spikes"], ref["lif1.spikes"]) and np.array_equal(a["output"], ref["output"])
    b = nmc.compile(ff_lif(w_scale=0.8), target="spinnaker2", **OPTS).run({"input": x}, record=["lif1"])
    assert np.mean(b["lif1.spikes"] == ref["lif1.spikes"]) >= 0.99      # int8 weights (default)


def test_values_on_a_quantum_grid_and_refusal_off_it():
    x = _counts() * 0.25                                           # values 0, 0.25, 0.5, 0.75
    ref = nmc.compile(ff_lif(w_scale=3.0), target="reference", **OPTS).run({"input": x}, record=["lif1"])
    s2 = nmc.compile(ff_lif(w_scale=3.0), target="spinnaker2", hw=FINE, passes="normalize", input_quantum=0.25,
                     **OPTS)
    a = s2.run({"input": x}, record=["lif1"])
    assert ref["lif1.spikes"].sum() > 50 and np.array_equal(a["lif1.spikes"], ref["lif1.spikes"])
    with pytest.raises(ShapeError, match="multiple of the input quantum 0.25") as e:
        s2.run({"input": x * 1.2})
    assert e.value.node == "input" and "input_quantum" in str(e.value)
    with pytest.raises(ShapeError, match="non-negative"):
        s2.run({"input": -x})


def test_cost_of_repeated_events_is_reported_and_profiled(tmp_path):
    x = _counts(1)
    b = nmc.compile(ff_lif(w_scale=0.8), target="spinnaker2", calibrate={"input": x}, **OPTS)
    ev = b.report("spinnaker2")["input_events"]["input"]
    assert ev["rates_from"] == "calibration data"
    assert ev["events_per_step"] == pytest.approx(x.sum() / (40 * 4))
    assert ev["extra_events_per_step"] == pytest.approx((x.sum() - np.count_nonzero(x)) / (40 * 4))
    _, act = energy.profile(b, {"input": x})
    # one packet per event: a count of k is k packets (before: one per nonzero value)
    assert act.per_node["input"]["packets"] == pytest.approx(x.sum())
    assert act.per_node["input"]["packets"] > np.count_nonzero(x)


def test_emitted_spike_lists_repeat_steps_and_brian2_refuses_counts():
    from nmc.backends.spinnaker2.emit import script

    ns = {"__name__": "run_spinnaker2", "__file__": "run_spinnaker2.py"}   # the emitted script, no main()
    exec(compile(script(), "run_spinnaker2.py", "exec"), ns)
    spike_dict = ns["spike_dict"]
    x = np.array([[0, 2], [1, 0], [0, 3]], float)
    assert spike_dict(x) == {0: [1], 1: [0, 0, 2, 2, 2]}
    assert spike_dict(x * 0.5, 0.5) == {0: [1], 1: [0, 0, 2, 2, 2]}
    pytest.importorskip("brian2")
    b = nmc.compile(ff_lif(), target="spinnaker2", **OPTS)
    with pytest.raises(DeviceError, match="one spike per neuron and step"):
        b.run({"input": _counts()[:, 0]}, device="brian2")


@pytest.mark.parametrize("quantum", [1.0, 0.25, 0.1])
def test_compiled_event_conversion_equals_the_numpy_expressions(quantum):
    """events_of (one compiled pass) gives numpy's k bit for bit and the same first bad value."""
    from nmc.backends.spinnaker2 import program as P

    rng = np.random.default_rng(int(quantum * 100))
    x = rng.integers(0, 5, (30, 3, 7)) * quantum + rng.choice([0.0, 1e-12, -1e-12], (30, 3, 7))
    k, bad = P.events_of(x, quantum)
    kn, badn = P._events_numpy(x, quantum)
    assert bad == badn == -1 and k.shape == x.shape and np.array_equal(k.view(np.int64), kn.view(np.int64))
    for v in (2.5 * quantum, -quantum):            # off the grid; negative
        y = x.copy()
        y[4, 1, 2] = y[9, 0, 0] = v
        assert P.events_of(y, quantum)[1] == P._events_numpy(y, quantum)[1] == np.ravel_multi_index((4, 1, 2), y.shape)
