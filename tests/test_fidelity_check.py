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


def slow_lif(w: float, tau: float = 5e-3) -> nir.NIRGraph:
    """Linear → LIF (τ = 5 ms, r = 1, threshold 1) on 4 inputs: at dt = 1e-4 (τ = 50 steps) and the
    probe's Bernoulli(0.2) spikes the membrane approaches 0.8·w·r, so w = 1.3 crosses the threshold
    only after the 100-step probe (first spike at step 116 in a 400-step run of the same statistics)."""
    n = 8
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Linear(weight=np.full((n, 4), w)),
             "lif": nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_probe_ending_before_the_first_spike_is_late_not_discrete_time():
    """Before: a LIF layer with τ = 5 ms whose first spike comes just after the 100-step probe was
    called dead, 'exported in discrete time', fix --dt 1 (wrong: its steady state r·x does not depend
    on dt). After: 'no spike within the probe of 100 steps', the membrane still rising, and an
    estimate of the first spike that a longer run of the same statistics confirms."""
    b = nmc.compile(slow_lif(1.3), target="reference", dt=1e-4)
    e = b.report("fidelity")["layers"]["lif"]
    assert e["status"] == "late" and e["probe_steps"] == 100 and e["slowest_tau_steps"] == pytest.approx(50)
    w = [w for w in b.report("compile")["warnings"] if w["source"] == "fidelity" and w["node"] == "lif"]
    assert w and "no spike within the probe of 100 steps" in w[0]["message"]
    assert "discrete time" not in w[0]["message"] and "--dt 1" not in w[0]["message"]
    # the estimate: the probe's own inputs continued to 400 steps first spike after the probe, within
    # 3x the estimate (it extrapolates the rise of a noisy 4-sample mean; 16 steps vs 39 estimated here)
    probe = b.report("fidelity")["input"]
    rng = np.random.default_rng([probe["seed"], 0xF1D])
    x = (np.concatenate([rng.random((100, 4, 4)), rng.random((300, 4, 4))]) < 0.2).astype(np.float64)
    s = np.asarray(nmc.compile(slow_lif(1.3), target="reference", dt=1e-4, fidelity_check=False)
                   .run({"input": x}, record=["lif"])["lif.spikes"]).reshape(400, -1)
    first = int(np.argmax(s.any(1)))
    assert s.any() and 100 <= first <= 100 + 3 * e["first_spike_after_steps"]


def test_settled_below_threshold_stays_dead_without_the_discrete_time_hint():
    """A leaky layer whose membrane settles below the threshold is dead, and the cause says so
    (a leaky neuron's steady state does not depend on dt, so --dt 1 is not offered)."""
    b = nmc.compile(slow_lif(0.5, tau=1e-3), target="reference", dt=1e-4)
    e = b.report("fidelity")["layers"]["lif"]
    assert e["status"] == "dead" and "first_spike_after_steps" not in e
    assert "settles below the threshold" in e["cause"] and "--dt 1" not in e["fix"]


def test_first_spike_after_linear_and_leaky():
    """The estimate itself on exact traces over 100 steps: v = 0.005·t (IF) reaches 1 at t = 200; a
    first-order approach v = 1.5·(1 − e^{−t/200}) reaches 1 at t = 200·ln 3 = 219.7 (the slope over
    the last 10 steps is the mean one, so v∞ is estimated within about 2.5 %, and the time within 5 %);
    a flat or settled trace gives none."""
    from nmc.driver.fidelity_check import first_spike_after

    t = np.arange(1, 101, dtype=float)
    assert first_spike_after((0.005 * t)[:, None, None], 1.0, float("inf")) == pytest.approx(100)
    v = 1.5 * (1 - np.exp(-t / 200))
    assert 100 + first_spike_after(v[:, None, None], 1.0, 200.0) == pytest.approx(200 * np.log(3), rel=0.05)
    assert first_spike_after((0.9 * (1 - np.exp(-t / 20)))[:, None, None], 1.0, 20.0) is None
    assert first_spike_after(np.full((100, 1, 1), 0.5), 1.0, 50.0) is None
