"""Compile time and peak memory vs network size, per registered target, with
the fitted growth exponent k (time ∝ synapses^k, log-log least squares).

Families (:mod:`bench.workloads`):

* ``dense`` — one LIF population with dense n×n recurrent weights + a 32-input
  layer, n chosen for 10⁴…10⁷ synapses;
* ``conv`` — the conv/IF/sum-pool/LIF net scaled to 10³…10⁵ IF neurons (≈ 144
  expanded synapses per neuron).

Each measurement runs in its own child process (``--one``): imports and a
small warm-up compile first, then one timed ``nmc.compile`` of the default
pipeline; peak memory = tracemalloc's peak of a second, traced compile (so
the timed one has no tracing overhead; skipped for compiles over
``MEM_RERUN_S``), and the child's peak RSS (``getrusage``; includes the
interpreter, torch and numba, measured before the compile too). Where the target's one-chip
spec refuses the network (DesignRuleError) and a larger packaged spec of the
same target exists (``spinnaker2-48chip``), the compile is retried on it and
the row says so. A size that times out stops that target's family.

    .venv/bin/python -m bench compile [--quick]
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from .common import PY, ROOT, fit_exponent, meta, registered_targets, write

MEM_RERUN_S = 30.0   # compiles slower than this get no traced (second) run: peak RSS only
SIZES = {"dense": ([1e4], [1e4, 1e5, 1e6, 1e7]), "conv": ([1e3], [1e3, 1e4, 1e5])}


def _bigger_specs(target: str) -> list[str]:
    from importlib import resources

    names = sorted(p.name[:-5] for p in resources.files("nmc.hw_configs").iterdir() if p.name.endswith(".toml"))
    return [n for n in names if n.startswith(target + "-")]


def one(target: str, family: str, size: float, warm: bool = True) -> dict:
    """Child-process body: compile once, return time/memory/size."""
    import nmc
    from nmc.errors import DesignRuleError, NmcError

    from .workloads import conv_scaled, dense_recurrent

    if warm:  # imports and first-call costs outside the timed compile
        nmc.compile(dense_recurrent(20), target=target, dt=1e-3, reset="zero", integrator="euler")
    if family == "dense":
        n = int(round((size + 256) ** 0.5 - 16))          # n² + 32n ≈ size
        g = dense_recurrent(n)
        neurons, synapses = n, n * n + 32 * n
    else:
        g, side = conv_scaled(int(size))
        neurons = 8 * side * side + 10
        synapses = 2 * 9 * 8 * side * side + 8 * (side // 2) ** 2 * 10
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    marks: list = []   # (stage, start time): every pass, the lowering, then bundling up to the end

    def progress(stage: str) -> None:
        marks.append((stage.split(":")[0], time.perf_counter()))

    note, t0 = "", time.perf_counter()
    try:
        try:
            nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", progress=progress)
        except DesignRuleError:
            big = _bigger_specs(target)
            if not big:
                raise
            marks.clear()
            note, t0 = "on " + big[-1], time.perf_counter()
            nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", hw=[big[-1]], progress=progress)
        ok = True
    except NmcError as e:
        ok, note = False, f"refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    sec = time.perf_counter() - t0
    t_end = t0 + sec
    stages = {}
    if ok and marks:
        stages["frontend"] = marks[0][1] - t0
        for (name, t), (_, t_next) in zip(marks, marks[1:] + [("", t_end)]):
            stages[name] = stages.get(name, 0.0) + (t_next - t)   # 'lower' includes writing the bundle
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = None
    if ok and sec < MEM_RERUN_S:   # memory from a second, traced compile (tracemalloc slows the first)
        import tracemalloc

        tracemalloc.start()
        nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler",
                    **({"hw": [note[3:]]} if note.startswith("on ") else {}))
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    return {"target": target, "family": family, "neurons": neurons, "synapses": synapses, "ok": ok,
            "seconds": sec if ok else None, "peak_mb": peak, "peak_rss_mb": rss / 1024 if ok else None,
            "rss_before_mb": rss0 / 1024, "note": note, "stages_s": stages}


def run(quick: bool = False, timeout: float | None = None, log=print) -> dict:
    timeout = timeout or (120 if quick else 300)
    rows = []
    for target in registered_targets():
        for family, (qs, fs) in SIZES.items():
            for size in (qs if quick else fs):
                if quick:   # smoke run: in-process, no peak-memory isolation
                    rows.append(one(target, family, size, warm=False))
                    continue
                cmd = [PY, "-m", "bench.compile_time", "--one", target, family, repr(size)]
                try:
                    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    rows.append({"target": target, "family": family, "size": size, "ok": False,
                                 "note": f"timeout: over {timeout:.0f} s"})
                    log(rows[-1])
                    break
                if r.returncode != 0:
                    rows.append({"target": target, "family": family, "size": size, "ok": False,
                                 "note": "crash: " + r.stderr.strip().splitlines()[-1][:200]})
                    log(rows[-1])
                    break
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                log(rows[-1])
    fits = {}
    for target in registered_targets():
        for family in SIZES:
            ok = [r for r in rows if r["target"] == target and r["family"] == family and r["ok"]]
            fits[f"{target}/{family}"] = {
                "time": fit_exponent([r["synapses"] for r in ok], [r["seconds"] for r in ok]),
                "memory": fit_exponent([r["synapses"] for r in ok if r["peak_mb"]], [r["peak_mb"] for r in ok if r["peak_mb"]])}
    return {"meta": meta("compile", quick, "python -m bench compile" + (" --quick" if quick else "")),
            "rows": rows, "exponent": fits, "timeout_s": timeout}


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("TARGET", "FAMILY", "SIZE"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.one:
        import torch

        torch.set_num_threads(1)   # as the harness sets in its own process (python -m bench): no spinning threads
        print(json.dumps(one(a.one[0], a.one[1], float(a.one[2]))))
        return
    write("compile", run(a.quick), a.out)


if __name__ == "__main__":
    sys.exit(main())
