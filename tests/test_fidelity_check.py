"""The fidelity check every compile runs after lowering (:mod:`nmc.driver.fidelity_check`):
reports/fidelity.json, dead/saturated layers with cause and fix, agreement of the
target's emulator with the float reference, --strict, --no-fidelity-check."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nmc.cli import main
from nmc.errors import FidelityError


def discrete_time_conv_if(seed: int = 0) -> nir.NIRGraph:
    """A conv IF network in the discrete-time convention (r = 1: one unit of input per
    step, as sinabs exports): Conv2d → IF → SumPool2d → Flatten → Affine → IF."""
    rng = np.random.default_rng(seed)
    c, hw, n = 4, 8, 5
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, hw, hw])}),
        "conv": nir.Conv2d(input_shape=(hw, hw), weight=rng.normal(0.05, 0.3, (c, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=np.zeros(c)),
        "if1": nir.IF(r=np.ones((c, hw, hw)), v_threshold=np.ones((c, hw, hw))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([c, hw // 2, hw // 2])}, start_dim=0),
        "fc": nir.Affine(weight=np.abs(rng.normal(0, 0.01, (n, c * 16))), bias=np.zeros(n)),
        "if2": nir.IF(r=np.ones(n), v_threshold=np.ones(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "fc"),
             ("fc", "if2"), ("if2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.mark.parametrize("target", ["reference", "spinnaker2", "loihi2", "brainscales2"])
def test_discrete_time_network_at_default_dt_warns_and_names_dt_1(target):
    """Before: no spike in any layer, no warning. After: the first dead layer is named,
    with the drive per step and the fix --dt 1."""
    b = nmc.compile(discrete_time_conv_if(), target=target, reset="subtract")
    rep = b.report("fidelity")
    assert rep["input"]["source"] == "synthetic probe" and rep["input"]["p"] == 0.2
    assert rep["layers"]["if1"]["status"] == "dead"
    assert rep["layers"]["if1"]["drive_per_step"] < 1e-3
    w = [w for w in b.report("compile")["warnings"] if w["source"] == "fidelity" and w["node"] == "if1"]
    assert w and "--dt 1" in w[0]["message"] and "discrete time" in w[0]["message"]


def test_discrete_time_network_at_dt_1_is_alive():
    b = nmc.compile(discrete_time_conv_if(), target="spinnaker2", dt=1.0, reset="subtract")
    rep = b.report("fidelity")
    assert all(e["status"] == "ok" for e in rep["layers"].values()), rep["layers"]
    assert not [w for w in b.report("compile")["warnings"] if w["source"] == "fidelity"]
    out = rep["outputs"]["output"]
    assert out["spike_count_agreement"] > 0.9 and out["class_agreement"] >= 0.75
    assert rep["layers"]["if1"]["spike_count_agreement"] > 0.9


def test_strict_makes_it_an_error():
    with pytest.raises(FidelityError) as e:
        nmc.compile(discrete_time_conv_if(), target="reference", strict=True)
    assert e.value.node == "if1" and "--dt 1" in e.value.one_line()


def test_skip_and_calibration_data(tmp_path):
    b = nmc.compile(discrete_time_conv_if(), target="reference", fidelity_check=False)
    assert b.report("fidelity") is None
    x = (np.random.default_rng(1).random((30, 3, 2, 8, 8)) < 0.5).astype(np.float32)
    b = nmc.compile(discrete_time_conv_if(), target="reference", dt=1.0, calibrate={"input": x})
    rep = b.report("fidelity")["input"]
    assert rep["source"] == "calibration data" and rep["steps"] == 30 and rep["samples"] == 3


def test_cli_strict_one_line_and_bundle_deterministic(tmp_path):
    p = tmp_path / "net.nir"
    nir.write(p, discrete_time_conv_if())
    r = CliRunner().invoke(main, ["compile", str(p), "--target", "loihi2", "--strict", "-o", str(tmp_path / "a.nmc")])
    assert r.exit_code == 2 and "error:" in r.output and "--dt 1" in r.output and "Traceback" not in r.output
    for name in ("b.nmc", "c.nmc"):
        r = CliRunner().invoke(main, ["compile", str(p), "--target", "loihi2", "--dt", "1", "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert "fidelity" in r.output
    mb = json.loads((tmp_path / "b.nmc" / "manifest.json").read_text())["files"]
    mc = json.loads((tmp_path / "c.nmc" / "manifest.json").read_text())["files"]
    assert mb == mc and "reports/fidelity.json" in mb
    r = CliRunner().invoke(main, ["compile", str(p), "--no-fidelity-check", "-o", str(tmp_path / "d.nmc")])
    assert r.exit_code == 0 and not (tmp_path / "d.nmc" / "reports" / "fidelity.json").exists()
