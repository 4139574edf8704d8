"""Activity without calibration data: the placement passes' work bounds use a
seeded synthetic probe by default (stated in the report), the worst case only
with --worst-case, and a refusal due to activity names --calibrate."""
from __future__ import annotations

import nets
import nir
import numpy as np
import pytest

import nmc
from nmc.errors import DesignRuleError


def mlp(sizes=(700, 3000, 2300, 300), density=0.05, seed=0) -> nir.NIRGraph:
    """A 5,600-neuron MLP (6,300 units with its inputs), 5 % of the weights non-zero."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([sizes[0]])})}
    edges, prev = [], "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0, 1, (b, a)) * (rng.random((b, a)) < density) / np.sqrt(density * a)
        nodes[f"fc{i}"] = nir.Linear(weight=w)
        nodes[f"lif{i}"] = nir.LIF(tau=np.full(b, 1e-2), r=np.full(b, 10.0), v_leak=np.zeros(b),
                                   v_threshold=np.ones(b), v_reset=np.zeros(b))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array([sizes[-1]])})
    return nir.NIRGraph(nodes=nodes, edges=edges + [(prev, "output")])


def test_probe_is_the_default_and_stated():
    b = nmc.compile(nets.ff_lif(), target="spinnaker2", dt=1e-3, fidelity_check=False)
    rates = b.report("placement")["rates"]
    assert rates.startswith("estimate from a synthetic probe") and "Bernoulli(0.2)" in rates
    b = nmc.compile(nets.ff_lif(), target="spinnaker2", dt=1e-3, fidelity_check=False, worst_case=True)
    assert b.report("placement")["rates"] == "uniform"


@pytest.mark.slow
def test_mlp_refusals_name_calibrate_and_calibration_fits():
    """Before: refused by the worst-case bound ("limit 148, actual 646") with no word of
    --calibrate. After: --worst-case gives that refusal and names --calibrate; the default
    (the probe's estimate) names --calibrate when it still does not fit; measured
    low activity fits."""
    with pytest.raises(DesignRuleError) as e:
        nmc.compile(mlp(), target="spinnaker2", dt=1e-3, worst_case=True, fidelity_check=False)
    msg = e.value.one_line()
    assert "limit 148" in msg and "--calibrate D.npz" in msg and "--worst-case" in msg
    try:
        b = nmc.compile(mlp(), target="spinnaker2", dt=1e-3, fidelity_check=False)
        assert b.report("placement")["rates"].startswith("estimate")
    except DesignRuleError as e2:
        assert "--calibrate D.npz" in e2.one_line() and "synthetic probe" in e2.one_line()
    x = (np.random.default_rng(0).random((50, 2, 700)) < 0.02).astype(np.float32)
    b = nmc.compile(mlp(), target="spinnaker2", dt=1e-3, calibrate={"input": x}, fidelity_check=False)
    assert b.report("placement")["cores_used"] <= 148
