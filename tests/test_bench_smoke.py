"""Smoke run of the benchmark harness (``python -m bench --quick``) into a temp folder:
every section runs on its smallest size, writes its JSON and the report renders."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for s in ("throughput", "compile", "placement", "fidelity", "transport", "energy", "distributed", "serve"):
        d = json.loads((tmp_path / f"{s}.json").read_text())
        assert "error" not in d and d["meta"]["quick"] is True
    thr = json.loads((tmp_path / "throughput.json").read_text())
    sims = {r["simulator"] for r in thr["rows"]}
    from nmc.backends import REGISTRY
    assert {f"nmc {t}" for t in REGISTRY if f"lif_mlp/{t}" not in thr["refused"]} <= sims
    assert {"snnTorch", "Norse"} <= sims
    # the peers run the same network: same spike counts as the float reference on the LIF MLP
    assert all(r["agreement"] == 1.0 for r in thr["rows"] if r["workload"] == "lif_mlp" and r["simulator"] in
               ("snnTorch", "Norse", "nmc reference"))
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for h in ("Emulator throughput", "Compile time", "Placement quality", "Fidelity", "Runtime transport", "Energy",
              "Sweeps on Ray", "`nmc serve` under load"):
        assert h in md


def test_fit_exponent_and_agreement():
    import numpy as np

    from bench.common import fit_exponent
    from bench.peers import agreement

    x = np.array([1e4, 1e5, 1e6])
    assert fit_exponent(x, 3 * x ** 0.7) == pytest.approx(0.7)
    s = (np.random.default_rng(0).random((50, 4, 10)) < 0.3).astype(float)
    assert agreement(s, s) == 1.0 and agreement(s, np.zeros_like(s)) == 0.0
