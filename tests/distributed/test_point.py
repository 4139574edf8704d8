"""One design point run in this process (no Ray): a point that does not fit is recorded with its rule."""
from __future__ import annotations

from pathlib import Path

import pytest

from nmc.driver.distributed.point import run_point
from nmc.driver.distributed.sweep import make_job, plan

Q = Path(__file__).resolve().parents[2] / "examples" / "quickstart"

TINY = """[chip]
cores_usable = { value = 1, unit = "PE", grade = "est", source = "test: a chip with one usable PE" }
[core]
neurons_max = { value = 32, unit = "neuron", grade = "est", source = "test: 32 neurons per PE" }
"""


@pytest.mark.slow
def test_a_point_that_does_not_fit_is_recorded_with_the_design_rule(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    job, _ = make_job(Q / "digits_lif.nir", Q / "digits_test.npz", Q / "digits_labels.npy", samples=8,
                      hw=[str(tmp_path / "tiny.toml")], dt=1e-3, reset="zero", integrator="euler")
    pts = plan(job, ["spinnaker2", "reference"], "quantize.bits=8,4")
    assert len(pts) == 4 and len({p["key"] for p in pts}) == 4
    assert pts[3]["passes"] == "normalize,quantize{bits=4}"   # the reference target gets quantize inserted
    rec = run_point(pts[0], job)
    assert rec["status"] == "no_fit" and rec["violations"] >= 1
    assert "limit 1, actual" in rec["rule"] and "fix:" in rec["rule"]
    ref = run_point(pts[3], job)                                # no spec: accuracy, no energy
    assert ref["status"] == "ok" and 0 <= ref["accuracy"] <= 1 and "energy_per_inference_j" not in ref
