"""Sweeps on Ray (:mod:`nmc.driver.distributed`): a 16-point sweep of the quick-start model,
1 vs 2 workers on this machine, and the per-task overhead against a plain loop.

* **plain loop**: the same 16 points compiled and evaluated one after another in
  this process (:func:`nmc.driver.distributed.sweep.serial`): no Ray at all.
* **Ray, 1 worker / 2 workers**: ``nmc.sweep`` with an embedded Ray of 1 or 2
  CPUs, into a fresh folder each (nothing resumed); wall time includes starting
  Ray and the workers' first imports, as a user's run does (``--quick``: 2 workers
  only, in the already started session).
* **overhead**: Ray start alone, the round trip of a no-op task in a warm
  session, and (1-worker sweep − plain loop) / points: what running a point as a
  Ray task costs over calling it.

The grid: ``quantize.bits=8,6,5,4 × sparsify.density=1,0.95,0.9,0.8`` on
spinnaker2 (``--quick``: 2 points, 2 workers only), 100 digits, energy over 16.

    .venv/bin/python -m bench distributed [--quick]
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .common import ROOT, meta

Q = ROOT / "examples" / "quickstart"
GRID = "quantize.bits=8,6,5,4; sparsify.density=1,0.95,0.9,0.8"
QUICK_GRID = "quantize.bits=8,5"
OPTS = dict(dt=1e-3, reset="zero", integrator="euler")


def _noop(item, shared):
    return item


def run(quick: bool = False, log=print) -> dict:
    import nmc
    from nmc.driver.distributed import engine
    from nmc.driver.distributed.sweep import comparable, make_job, plan, serial

    grid = QUICK_GRID if quick else GRID
    samples, energy_samples = (16, 8) if quick else (100, 16)
    model, data, labels = Q / "digits_lif.nir", Q / "digits_test.npz", Q / "digits_labels.npy"
    job, _ = make_job(model, data, labels, samples=samples, energy_samples=energy_samples, **OPTS)
    points = plan(job, ["spinnaker2"], grid)
    res = {"meta": meta("distributed", quick, "python -m bench distributed" + (" --quick" if quick else "")),
           "grid": grid, "target": "spinnaker2", "points": len(points), "samples": samples,
           "energy_samples": energy_samples, "versions": {"ray": _version("ray")}}
    serial_recs = None
    if not quick:
        t0 = time.perf_counter()
        serial_recs = serial(points, job)
        res["plain_loop_s"] = time.perf_counter() - t0
        log(f"plain loop: {res['plain_loop_s']:.1f} s")
    def timed_sweep(workers):
        tmp = Path(tempfile.mkdtemp(prefix="nmc-bench-sweep-"))
        try:
            t0 = time.perf_counter()
            sw = nmc.sweep(model, "spinnaker2", grid, data, labels, tmp / "s", samples=samples,
                           energy_samples=energy_samples, workers=workers, **OPTS)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r = {"wall_s": wall, "computed": sw.computed, "ok": sum(x["status"] == "ok" for x in sw.records),
             "compile_s_sum": sum(x.get("compile_s", 0.0) for x in sw.records),
             "worker_processes": len({x.get("worker") for x in sw.records})}
        if serial_recs is not None:
            r["equals_plain_loop"] = comparable(sw.records) == comparable(serial_recs)
        log(f"{workers} worker(s): {wall:.1f} s")
        return r, sw

    runs = {}
    # Ray start alone, and the round trip of a no-op task in a warm session
    t0 = time.perf_counter()
    with engine.session(workers=2):
        res["ray_start_s"] = time.perf_counter() - t0
        ref = engine.put(job)
        list(engine.run_tasks(_noop, list(range(4)), ref))   # warm the workers
        t1 = time.perf_counter()
        list(engine.run_tasks(_noop, list(range(64)), ref))
        res["noop_task_s"] = (time.perf_counter() - t1) / 64
        log(f"ray start {res['ray_start_s']:.1f} s, no-op task {1e3 * res['noop_task_s']:.2f} ms")
        if quick:  # the smoke run: the sweep in this (warm) session, 2 workers only
            runs[2], sw = timed_sweep(2)
    if not quick:
        for workers in (1, 2):  # each its own embedded Ray, started by the sweep as a user's run does
            runs[workers], sw = timed_sweep(workers)
    records = sw.records
    res["runs"] = {str(k): v for k, v in runs.items()}
    if 1 in runs:
        res["speedup_2_vs_1"] = runs[1]["wall_s"] / runs[2]["wall_s"]
        res["overhead_per_task_s"] = (runs[1]["wall_s"] - res["plain_loop_s"]) / len(points)
    res["records"] = [{k: r.get(k) for k in ("params", "status", "accuracy", "agreement", "energy_per_inference_j",
                                             "energy_dynamic_j", "cores")} | {"pareto": r["key"] in sw.front}
                      for r in records]
    return res


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"
