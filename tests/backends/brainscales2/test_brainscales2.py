"""BrainScaleS-2-style backend: mapping report, noiseless emulator vs the
reference, analog effects, calibration files, refusals, the PyNN script."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nmc
from nets import egru_net, ff_lif, recurrent_cubalif, spikes
from nmc.backends.brainscales2 import analog_report
from nmc.errors import UnsupportedNodeError

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")


def _pair(build):
    return (nmc.compile(build(), target="brainscales2", **OPTS), nmc.compile(build(), target="reference", **OPTS))


def test_feedforward_noiseless_matches_reference_and_report_has_bounds():
    b, r = _pair(ff_lif)
    x = spikes((8,), T=40, p=0.3, seed=1)
    a, c = b.run({"input": x}), r.run({"input": x})
    assert c["output"].sum() > 0 and np.mean(a["output"] == c["output"]) >= 0.9
    rep = b.report("mapping")
    for k in ("rows", "circuits", "runs"):
        assert rep[f"{k}_used"] >= rep[f"{k}_lower_bound"] >= 1
    assert rep["calibration"].startswith("synthetic")


def test_recurrent_cubalif_noiseless_close_to_reference():
    b, r = _pair(recurrent_cubalif)
    x = spikes((6,), T=40, p=0.3, seed=1)
    a, c = b.run({"input": x}, record=["lif1"]), r.run({"input": x}, record=["lif1"])
    assert np.mean(a["lif1.spikes"] == c["lif1.spikes"]) >= 0.9
    assert np.corrcoef(a["output"].ravel(), c["output"].ravel())[0, 1] > 0.95


def test_analog_effects_report_and_calibration_file(tmp_path):
    b, _ = _pair(ff_lif)
    x = spikes((8,), T=40, p=0.3, seed=2, batch=8)
    rep = analog_report(b, {"input": x})
    assert set(rep) == {"noiseless", "mismatch uncalibrated", "mismatch calibrated", "calibrated + noise"}
    assert rep["noiseless"]["agreement_with_noiseless"] == 1.0
    assert rep["calibrated + noise"]["agreement_with_noiseless"] < 1.0  # noise changes something
    b.write(tmp_path / "b.nmc")
    cal = json.loads((tmp_path / "b.nmc" / "program" / "calibration.json").read_text())
    (tmp_path / "measured.json").write_text(json.dumps({"table": cal["table"], "code_max": 1022}))
    b2 = nmc.compile(ff_lif(), target="brainscales2", calibration=str(tmp_path / "measured.json"), **OPTS)
    assert b2.report("mapping")["calibration"] == "measured (measured.json)"
    from nmc.errors import InputFileError

    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputFileError):
        nmc.compile(ff_lif(), target="brainscales2", calibration=str(tmp_path / "bad.json"), **OPTS)


def test_egru_refused_naming_the_target_that_can():
    with pytest.raises(UnsupportedNodeError) as e:
        nmc.compile(egru_net(), target="brainscales2", **OPTS)
    assert "spinnaker2" in e.value.one_line()


def test_rows_signs_drivers_refractory_and_cli_calibration(tmp_path):
    b, _ = _pair(ff_lif)
    for q in b.program.projections:
        jj, ii = np.nonzero(q.rows >= 0)
        assert np.array_equal(q.row_sign[q.rows[jj, ii]], np.sign(q.w6[jj, ii]))  # one sign per row
        assert q.row_driver.shape == (q.n_rows,) and np.all(np.diff(q.row_driver) >= 0)
    x = spikes((8,), T=40, p=0.5, seed=4)
    base = b.run({"input": x}, record=["lif1"])["lif1.spikes"].sum()
    slow = nmc.compile(ff_lif(), target="brainscales2", t_refrac=3e-3, **OPTS)
    assert slow.run({"input": x}, record=["lif1"])["lif1.spikes"].sum() < base  # refractory period suppresses spikes
    from click.testing import CliRunner

    from nmc.cli import main
    from nmc import serialize
    from nmc.ir import Graph

    b.write(tmp_path / "b.nmc")
    cal = json.loads((tmp_path / "b.nmc" / "program" / "calibration.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({"table": cal["table"]}))
    serialize.write(tmp_path / "ff.nir", Graph.from_nir(ff_lif()))
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "ff.nir"), "--target", "brainscales2", "--dt", "1e-3",
                                  "--calibration", str(tmp_path / "m.json"), "-o", str(tmp_path / "c.nmc")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c.nmc" / "reports" / "mapping.json").read_text())
    assert rep["calibration"] == "measured (m.json)"


def test_real_time_event_delivery_mode():
    b, r = _pair(recurrent_cubalif)
    x = spikes((6,), T=40, p=0.3, seed=1)
    step = b.run({"input": x}, record=["lif1"])["lif1.spikes"]
    real = b.run({"input": x}, record=["lif1"], event_timing="real")["lif1.spikes"]
    ref = r.run({"input": x}, record=["lif1"])["lif1.spikes"]
    assert not np.array_equal(step, real)  # mid-step spikes now arrive mid-step
    assert np.mean(real == ref) > 0.8  # same network, continuous-time event timing
