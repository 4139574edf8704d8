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
    for s in ("throughput", "compile", "placement", "placement_exact", "fidelity", "transport", "energy",
              "distributed", "serve"):
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


def _dense_row(target, syn, note="", rss=True, stages=("load", "quantize", "lower")):
    """A compile row as bench.compile_time.one writes it: stage s = c·syn^k (k 0.5, 1, 1.2 by stage),
    stage RSS = 300 MB at start + 1e-4·syn^1.1 MB (the peak RSS before the compile, 350 MB, is not the base)."""
    ks = {"load": 0.5, "quantize": 1.0, "lower": 1.2}
    st = {k: 1e-7 * syn ** ks[k] for k in stages}
    return {"target": target, "family": "dense", "synapses": syn, "ok": True, "seconds": sum(st.values()),
            "note": note, "rss_before_mb": 350.0, "rss_start_mb": 300.0, "peak_mb": None, "peak_rss_mb": 400.0, "stages_s": st,
            "stages_cpu_s": {k: v / 2 for k, v in st.items()},
            **({"stages_peak_rss_mb": {k: 300.0 + 1e-4 * syn ** 1.1 for k in stages}} if rss else {})}


def test_compile_extrapolation_per_stage():
    from bench.compile_time import extrapolate

    rows = [_dense_row("a", 1e5), _dense_row("a", 1e6), _dense_row("a", 1e7), _dense_row("a", 3e7),
            {"target": "a", "family": "dense", "size": 1e8, "ok": False, "note": "timeout: over 600 s"},
            # another spec past 1e6: only the 48-chip sizes are fitted
            _dense_row("b", 1e6), _dense_row("b", 1e7, "on b-48chip"), _dense_row("b", 3e7, "on b-48chip"),
            _dense_row("c", 1e7)]   # one size: nothing to fit
    ex = extrapolate(rows)
    assert set(ex) == {"a", "b"}
    a = ex["a"]
    assert a["from_synapses"] == [1e6, 1e7, 3e7] and a["unfitted"] == []
    for k, kk in {"load": 0.5, "quantize": 1.0, "lower": 1.2}.items():
        s = a["stages"][k]
        assert s["k_time"] == pytest.approx(kk) and s["k_cpu"] == pytest.approx(kk)
        assert s["s"] == pytest.approx(1e-7 * 1e8 ** kk, rel=1e-2)
        assert s["cpu_s"] == pytest.approx(s["s"] / 2, rel=1e-2)
        assert s["k_mem"] == pytest.approx(1.1) and s["rss_mb"] == pytest.approx(300 + 1e-4 * 1e8 ** 1.1, rel=1e-2)
    assert a["seconds"] == pytest.approx(sum(v["s"] for v in a["stages"].values()))
    assert a["peak_rss_mb"] == pytest.approx(300 + 1e-4 * 1e8 ** 1.1, rel=1e-2)
    assert ex["b"]["from_synapses"] == [1e7, 3e7] and ex["b"]["note"] == "on b-48chip"
    # a stage the smaller sizes lack cannot be fitted: no total claimed; rows without per-stage RSS: no memory
    rows = [_dense_row("a", 1e6, stages=("load", "quantize"), rss=False), _dense_row("a", 1e7, rss=False)]
    a = extrapolate(rows)["a"]
    assert a["unfitted"] == ["lower"] and a["seconds"] is None and a["peak_rss_mb"] is None


def test_report_says_not_measured_for_results_without_the_new_keys():
    """Results written before per-stage RSS, the 10⁸ extrapolation and the transport breakdown render,
    and say what is not measured; with them, the goals are judged."""
    from bench.compile_time import extrapolate
    from bench.report import compile_, transport

    meta = {"date": "2026-11-29", "command": "python -m bench compile", "quick": False, "cpus": 2,
            "python": "3.11.7", "machine": "x86_64", "versions": {}}
    old = {"meta": meta, "timeout_s": 300, "exponent": {},
           "rows": [{k: v for k, v in _dense_row("a", s, rss=False).items() if k not in ("stages_cpu_s", "rss_start_mb")}
                    for s in (1e6, 1e7)]}
    md = "\n".join(compile_(old))
    assert "10⁸ synapses in < 60 s and < 8 GB peak (issue #19)** — not measured" in md
    assert "RSS per stage: not measured" in md
    new = dict(old, rows=[_dense_row("a", s) for s in (1e6, 1e7, 3e7)])
    new["extrapolated"] = extrapolate(new["rows"])
    md = "\n".join(compile_(new))
    assert "a: 408 s (missed), peak RSS 61.9 GB (missed)" in md and "(extrapolated, not run here)" in md and "Why, and the fix" in md
    fig = {"events_per_s": 4.6e6, "seconds": 1.0, "window_latency_ms": 0.1}
    tr = {"meta": dict(meta, command="python -m bench transport"),
          "results": {"transport alone (echo device, 1024 channels, p=0.1)": {"local": fig, "tcp stream": fig}}}
    md = "\n".join(transport(tr))
    assert "goes: not measured" in md and "local session ≥ 10⁷ events/s: 4,600,000 (missed)" in md
    tr["breakdown_us_per_window"] = {"compiled": {"session: whole step": 12.5}, "numpy": {"session: whole step": 40.0}}
    tr["events_per_window"] = 410.0
    md = "\n".join(transport(tr))
    assert "| session: whole step | 12.5 | 40.0 |" in md and "not measured" not in md


def test_report_judges_the_measured_dense_ff_1e8_compile():
    """A dense_ff row at 10⁸ synapses is judged as measured (time, CPU, the larger of the child's peak
    RSS and the per-stage peaks), with its per-stage row; a refused one says why."""
    from bench.report import compile_

    meta = {"date": "2026-12-07", "command": "python -m bench compile", "quick": False, "cpus": 2,
            "python": "3.11.7", "machine": "x86_64", "versions": {}}
    ok = dict(_dense_row("spinnaker2", 1e8, note="on spinnaker2-48chip"), family="dense_ff", seconds=41.5,
              cpu_seconds=40.2, peak_rss_mb=5000.0, stages_peak_rss_mb={"load": 900.0, "quantize": 6144.0})
    bad = {"target": "loihi2", "family": "dense_ff", "synapses": 1e8, "ok": False,
           "note": "refused: DesignRuleError: network does not fit loihi2"}
    slow = dict(ok, target="reference", note="", seconds=75.0, peak_rss_mb=9000.0, stages_peak_rss_mb={})
    d = {"meta": meta, "timeout_s": 600, "exponent": {}, "rows": [ok, bad, slow]}
    md = "\n".join(compile_(d))
    assert ("measured on `dense_ff`: spinnaker2 (on spinnaker2-48chip) 1e+08 synapses: 41.5 s (met; CPU 40.2 s), "
            "peak RSS 6.00 GB (met)") in md
    assert "loihi2: refused: DesignRuleError" in md
    assert "reference 1e+08 synapses: 75.0 s (missed; CPU 40.2 s), peak RSS 8.79 GB (missed)" in md
    assert "| spinnaker2 (on spinnaker2-48chip) | dense_ff | 1e+08 |" in md and "### dense_ff" in md
    assert "extrapolated, not run here" not in md
