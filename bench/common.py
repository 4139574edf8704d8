"""Shared helpers: timing under a budget, run metadata, result files, fits."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable


def versions(*dists: str) -> dict[str, str]:
    """Installed versions of ``dists`` (distribution names); 'absent' when not installed."""
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "absent"
    return out


def meta(section: str, quick: bool, command: str) -> dict:
    """What every result file records: date, machine, versions, reproducing command."""
    return {"section": section, "date": time.strftime("%Y-%m-%d"), "quick": quick, "command": command,
            "python": platform.python_version(), "torch_threads": _threads(),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "versions": versions("nmc", "torch", "numpy", "numba", "snntorch", "norse", "brian2", "lava-nc", "nir")}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def best_time(fn, reps: int = 3, budget_s: float = 10.0) -> float:
    """Best wall time of ``fn()`` over up to ``reps`` runs after one warm-up run,
    stopping early once ``budget_s`` is spent (at least one timed run)."""
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


def fit_exponent(x, y) -> float | None:
    """k of y ∝ x^k by least squares on log-log (None with fewer than 2 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    if ok.sum() < 2:
        return None
    return round(float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]), 2)


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(f"{float(o):.6g}")  # 6 significant digits (nJ stay nJ)
    if isinstance(o, np.integer):
        return int(o)
    return o


def write(section: str, data: dict, out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<section>.json`` with sorted keys (deterministic layout)."""
    d = Path(out_dir or RESULTS)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{section}.json"
    p.write_text(json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")
    return p


def load(section: str, out_dir: Path | None = None) -> dict | None:
    p = Path(out_dir or RESULTS) / f"{section}.json"
    d = json.loads(p.read_text()) if p.exists() else None
    # a file left by a script from before the harness (no "meta") is not a section's result
    return d if isinstance(d, dict) and isinstance(d.get("meta"), dict) else None


def registered_targets() -> list[str]:
    from nmc.backends import REGISTRY

    return list(REGISTRY)
