"""examples/ssm_events/train.py trains both SSM variants on the digit event streams (quick mode)."""
from __future__ import annotations

import numpy as np
import pytest

from script_modules import load_script


def _load():
    return load_script("examples/ssm_events/train.py", "ssm_events_train")


def test_digit_events_encode_column_changes():
    mod = _load()
    img = np.zeros((1, 8, 8))
    img[0, 2, 3] = 16.0                    # one bright pixel: row 2, column 3
    x = mod.digit_events(img, seed=0)
    assert x.shape == (9 * mod.TICKS, 1, 16)
    on, off = x[:, 0, 2], x[:, 0, 8 + 2]
    # 16 / STEP = 4 ON events while column 3 passes (window 3), 4 OFF events when it leaves (window 4)
    assert on.sum() == 4 and on[3 * mod.TICKS:4 * mod.TICKS].sum() == 4
    assert off.sum() == 4 and off[4 * mod.TICKS:5 * mod.TICKS].sum() == 4
    assert x.sum() == 8


@pytest.mark.slow
def test_ssm_events_quick_trains_both_variants(tmp_path):
    import torch

    mod = _load()
    n = torch.get_num_threads()
    try:
        res = mod.main(["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(n)  # train.py sets one thread
    for v in ("diag", "stochastic"):
        r = res[v]
        assert r["loss_per_epoch"][-1] < r["loss_per_epoch"][0]
        # the stochastic layer is reseeded before each evaluation: both paths draw the same noise
        assert r["accuracy_step"] == pytest.approx(r["accuracy_parallel"], abs=1.5 / r["test_size"])
    assert res["diag"]["accuracy_step"] > 0.4          # chance is 0.1
    assert 0 < res["stochastic"]["activity"][0] < 1
    assert (tmp_path / "results.json").exists()


def _compile_quick(tmp_path, variants: str) -> dict:
    """examples/ssm_events/compile.py --quick for ``variants`` (it sets torch's thread count: restored)."""
    import torch

    mod = load_script("examples/ssm_events/compile.py", "ssm_events_compile")
    n = torch.get_num_threads()
    try:
        return mod.main(["--quick", "--out", str(tmp_path), "--variants", variants])
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_ssm_events_compile_quick_measures_every_stage(tmp_path):
    res = _compile_quick(tmp_path, "diag,stochastic")
    d = res["diag"]["stages"]
    # the compiled reference computes the same function as the float model (float64 vs float32 only)
    assert d["reference"] == pytest.approx(d["float"], abs=1.5 / res["diag"]["test_size"])
    assert abs(d["quantized"] - d["reference"]) <= 0.05 and d["quantized"] > 0.4
    assert "DiagSSM" in d["graph_nodes"].values() and "LayerNorm" in d["graph_nodes"].values()
    assert all(("accuracy" in t) != ("refused" in t) for t in d["targets"].values())
    assert "LayerNorm" in d["targets"]["brainscales2"]["refused"]
    pe = d["per_event"]
    assert pe["streams"] == 20 and 0 <= pe["accuracy_per_event"] <= 1 and pe["binning_rel_rms_mean"] > 0
    s = res["stochastic"]["stages"]
    assert s["reference"] == pytest.approx(s["float_node_noise"], abs=1.5 / res["stochastic"]["test_size"])
    # spinnaker2 runs both: the stochastic SSM and the diag stack (SSM and LayerNorm PE kernels)
    assert abs(s["targets"]["spinnaker2"]["accuracy"] - s["quantized"]) <= 0.05
    assert abs(d["targets"]["spinnaker2"]["accuracy"] - d["quantized"]) <= 0.05
    for t in (d["targets"]["spinnaker2"], s["targets"]["spinnaker2"]):
        e, st = t["energy_per_step"], t["streaming"]
        assert 0 < e["dynamic_j"] < e["total_j"] and e["dense_macs"] > e["synapse_macs"] > 0 and e["dense_fp32_j"] > 0
        assert st["steps"] == 36 and st["latency_ticks"] >= 1 and st["wall_ms_median"] > 0
    assert (tmp_path / "diag.pt").exists() and (tmp_path / "compile_results.json").exists()


@pytest.mark.slow
def test_ssm_events_compile_quick_diag_loihi_runs_on_loihi2(tmp_path):
    """The diag_loihi variant (no LayerNorm, no residual sums or biases into an SSM, delta outputs) compiles
    for loihi2 from the example: its emulator runs the test streams (decoder as a host readout), Lava's
    fixed_pt simulator gives the same outputs bit for bit on two streams, and spinnaker2 runs it too."""
    res = _compile_quick(tmp_path, "diag_loihi")
    r = res["diag_loihi"]
    d = r["stages"]
    assert r["output"] == "delta" and 0 < r["activity"][0] <= 1
    assert r["accuracy_step"] == pytest.approx(r["accuracy_parallel"], abs=1.5 / r["test_size"])
    assert "LayerNorm" not in d["graph_nodes"].values() and "DiagSSM" in d["graph_nodes"].values()
    assert d["reference"] == pytest.approx(d["float"], abs=1.5 / r["test_size"])
    lo = d["targets"]["loihi2"]
    assert "refused" not in lo and abs(lo["accuracy"] - d["quantized"]) <= 0.05
    assert abs(d["targets"]["spinnaker2"]["accuracy"] - d["quantized"]) <= 0.05
    assert lo["streaming"]["steps"] == 36 and lo["streaming"]["latency_ticks"] >= 2     # two SSMs in a chain
    lava = lo["lava_fixed_pt"]
    if "skipped" not in lava:
        assert lava["streams"] == 2 and lava["bit_exact"] and lava["max_abs_diff"] == 0.0
