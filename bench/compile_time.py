"""Compile time and peak memory vs network size, per registered target, with
the fitted growth exponent k (time ∝ synapses^k, log-log least squares).

Families (:mod:`bench.workloads`):

* ``dense`` — one LIF population with dense n×n recurrent weights + a 32-input
  layer, n chosen for 10⁴…3·10⁷ synapses (per pass, time and memory are fitted
  against synapses over the three largest sizes and extrapolated to 10⁸:
  ``extrapolated`` in the JSON);
* ``dense_ff`` — :data:`FF_LAYERS` feed-forward LIF layers of width w, each fed by a dense w×w
  float32 matrix (the first from w inputs): 8·w² synapses, w chosen for 10⁴…10⁸; fan-in w ≤ 3,536,
  so every neuron's inputs fit one core's 4,096 input axons and the family reaches 10⁸ on
  spinnaker2 (48-chip board) and loihi2 (Hala Point: 1,488 cores at 10⁸, over Kapoho Point's
  1,024) — measured there, not extrapolated;
* ``conv`` — the conv/IF/sum-pool/LIF net scaled to 10³…10⁵ IF neurons (≈ 144
  expanded synapses per neuron).

Each measurement runs in its own child process (``--one``): imports and a
small warm-up compile first, then one timed ``nmc.compile`` of the default
pipeline; peak memory = tracemalloc's peak of a second, traced compile (so
the timed one has no tracing overhead; skipped for compiles over
``MEM_RERUN_S``), per stage too (``stages_peak_mb``: the peak of the traced
allocations while that pass, the lowering or the fidelity check runs, what
earlier stages left included), and the child's peak RSS (``getrusage``; includes
the interpreter, torch and numba; ``rss_before_mb`` is that peak before the
compile, ``rss_start_mb`` the resident set as it starts), per stage as well
(``stages_peak_rss_mb``, sampled every 5 ms during the timed compile). Wall time and CPU time (``stages_s``,
``stages_cpu_s``) are kept per stage: on a shared machine the wall time also
waits for a core. Where the target's one-chip
spec refuses the network (DesignRuleError) and a larger packaged spec of the
same target exists (``spinnaker2-48chip``), the compile is retried on it and
the row says so. A size that times out or is refused stops that target's family.

    .venv/bin/python -m bench compile [--quick]
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from .common import PY, ROOT, fit_exponent, meta, registered_targets, write

MEM_RERUN_S = 30.0   # compiles slower than this get no traced (second) run: peak RSS (per stage) only
SIZES = {"dense": ([1e4], [1e4, 1e5, 1e6, 1e7, 3e7]), "dense_ff": ([1e4], [1e4, 1e5, 1e6, 1e7, 1e8]),
         "conv": ([1e3], [1e3, 1e4, 1e5])}
FF_LAYERS = 8   # layers of the dense_ff family
HUGE = 1e8   # the size the per-pass fits of the largest dense compiles are extrapolated to (issue #19)
RSS_CAP_MB = 8192   # a measured compile stops itself above this RSS: the goal's limit (issue #19: < 8 GB peak)


def _bigger_specs(target: str) -> list[str]:
    from importlib import resources

    names = sorted(p.name[:-5] for p in resources.files("nmc.hw_configs").iterdir() if p.name.endswith(".toml"))
    return [n for n in names if n.startswith(target + "-")]


def one(target: str, family: str, size: float, warm: bool = True) -> dict:
    """Child-process body: compile once, return time/memory/size."""
    import nmc
    from nmc.errors import DesignRuleError, NmcError

    from .workloads import conv_scaled, dense_feedforward, dense_recurrent

    if warm:  # imports and first-call costs outside the timed compile
        nmc.compile(dense_recurrent(20), target=target, dt=1e-3, reset="zero", integrator="euler")
    if family == "dense":
        n = int(round((size + 256) ** 0.5 - 16))          # n² + 32n ≈ size
        g = dense_recurrent(n)
        neurons, synapses = n, n * n + 32 * n
    elif family == "dense_ff":
        w = int(round((size / FF_LAYERS) ** 0.5))        # FF_LAYERS·w² ≈ size
        g = dense_feedforward(w, FF_LAYERS)
        neurons, synapses = FF_LAYERS * w, FF_LAYERS * w * w
    else:
        g, side = conv_scaled(int(size))
        neurons = 8 * side * side + 10
        synapses = 2 * 9 * 8 * side * side + 8 * (side // 2) ** 2 * 10
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    marks: list = []   # (stage, start time): every pass, the lowering, then bundling up to the end
    rss_stage = _RssSampler()

    cpu_marks: list = []   # the process's CPU time (user + system) at each mark: what the stage costs
    # without the other jobs of a shared machine (wall time waits for a core; CPU time does not)

    def progress(stage: str) -> None:
        marks.append((stage.split(":")[0], time.perf_counter()))
        cpu_marks.append(time.process_time())
        rss_stage.stage(marks[-1][0])

    note, t0, c0 = "", time.perf_counter(), time.process_time()
    try:
        big = None
        try:
            nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", progress=progress)
        except DesignRuleError:
            big = _bigger_specs(target)
            if not big:
                raise
        # the retry runs after the except clause: inside it the refusal's traceback would keep the refused
        # attempt's frames (its quantized graph and network model, GBs at 10⁸ synapses) alive
        if big:
            marks.clear()
            cpu_marks.clear()
            _give_back_memory()   # the refused attempt's freed arrays: not the retry's resident set
            rss_stage.restart()
            note, t0, c0 = "on " + big[-1], time.perf_counter(), time.process_time()
            nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", hw=[big[-1]], progress=progress)
        ok = True
    except NmcError as e:
        ok, note = False, f"refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    except BaseException:
        rss_stage.stop()   # no sampling thread left behind (the quick run compiles in the harness's process)
        raise
    sec = time.perf_counter() - t0
    cpu = time.process_time() - c0
    stage_rss = rss_stage.stop()
    t_end = t0 + sec
    stages, stages_cpu = {}, {}
    if ok and marks:
        stages["frontend"] = marks[0][1] - t0
        stages_cpu["frontend"] = cpu_marks[0] - c0
        for (name, t), (_, t_next), c, c_next in zip(marks, marks[1:] + [("", t_end)], cpu_marks,
                                                     cpu_marks[1:] + [c0 + cpu]):
            stages[name] = stages.get(name, 0.0) + (t_next - t)   # 'lower' includes writing the bundle
            stages_cpu[name] = stages_cpu.get(name, 0.0) + (c_next - c)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak, stage_peaks = None, {}
    if ok and sec < MEM_RERUN_S:   # memory from a second, traced compile (tracemalloc slows the first)
        import tracemalloc

        cur = ["frontend"]

        def traced(stage: str) -> None:   # peak of the stage that ends here, then start the next one
            name = stage.split(":")[0]
            stage_peaks[cur[0]] = max(stage_peaks.get(cur[0], 0.0), tracemalloc.get_traced_memory()[1] / 2 ** 20)
            tracemalloc.reset_peak()
            cur[0] = name

        tracemalloc.start()
        nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", progress=traced,
                    **({"hw": [note[3:]]} if note.startswith("on ") else {}))
        traced("end")
        peak = max(stage_peaks.values())
        stage_peaks.pop("end", None)
        tracemalloc.stop()
    return {"target": target, "family": family, "neurons": neurons, "synapses": synapses, "ok": ok,
            "seconds": sec if ok else None, "cpu_seconds": cpu if ok else None, "peak_mb": peak,
            "peak_rss_mb": rss / 1024 if ok else None, "rss_before_mb": rss0 / 1024, "rss_start_mb": rss_stage.start_mb,
            "note": note, "stages_s": stages, "stages_cpu_s": stages_cpu, "stages_peak_mb": stage_peaks,
            "stages_peak_rss_mb": stage_rss if ok else {}}


def _give_back_memory() -> None:
    """Collect garbage and return the heap's free pages to the system (glibc ``malloc_trim``; a no-op
    elsewhere), so the RSS a retried compile starts from holds what is live, not what the refused
    attempt freed."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssSampler:
    """The process's resident set size sampled every 5 ms in a thread (``/proc/self/statm``; Linux),
    the maximum kept per stage: real memory per pass at no tracing cost (numpy frees big arrays back
    to the system, so the RSS falls between passes). ``stop()`` returns {stage: peak MB}."""

    def __init__(self, period: float = 0.005):
        import os
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        self.cur, self.peaks, self.period = "frontend", {}, period
        self.done = threading.Event()
        self.ok = os.path.exists("/proc/self/statm")
        self.th = threading.Thread(target=self._run, daemon=True)
        self.start_mb = self._read() if self.ok else None   # the RSS now (ru_maxrss is the peak so far)
        if self.ok:
            self.th.start()

    def _read(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self) -> None:
        self.peaks[self.cur] = max(self.peaks.get(self.cur, 0.0), self._read())

    def _run(self) -> None:
        import os
        import sys

        while not self.done.wait(self.period):
            self._sample()
            if self.peaks[self.cur] > RSS_CAP_MB:   # over the goal's limit: stop, say where (the machine is shared)
                sys.stderr.write(f"stopped: peak RSS over {RSS_CAP_MB / 1024:.0f} GB in stage '{self.cur}'\n")
                sys.stderr.flush()
                os._exit(3)

    def stage(self, name: str) -> None:
        if self.ok:
            self._sample()   # the stage that ends here gets the RSS at its end too
        self.cur = name

    def restart(self) -> None:
        """Forget the peaks so far (the compile starts again, on a larger spec)."""
        self.peaks.clear()
        self.cur = "frontend"
        self.start_mb = self._read() if self.ok else None

    def stop(self) -> dict:
        self.done.set()
        if self.ok:
            self.th.join()
            self._sample()
        return dict(self.peaks)


def run(quick: bool = False, timeout: float | None = None, log=print) -> dict:
    timeout = timeout or (120 if quick else 600)
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
                    last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
                    rows.append({"target": target, "family": family, "size": size, "ok": False,
                                 "note": ("" if last.startswith("stopped:") else "crash: ") + last[:200]})
                    log(rows[-1])
                    break
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                log(rows[-1])
                if not rows[-1]["ok"]:   # refused by the design rules: a larger size of the family is too
                    break
    fits = {}
    for target in registered_targets():
        for family in SIZES:
            ok = [r for r in rows if r["target"] == target and r["family"] == family and r["ok"]]
            fits[f"{target}/{family}"] = {
                "time": fit_exponent([r["synapses"] for r in ok], [r["seconds"] for r in ok]),
                "memory": fit_exponent([r["synapses"] for r in ok if r["peak_mb"]], [r["peak_mb"] for r in ok if r["peak_mb"]])}
    return {"meta": meta("compile", quick, "python -m bench compile" + (" --quick" if quick else "")),
            "rows": rows, "exponent": fits, "timeout_s": timeout, "extrapolated": extrapolate(rows)}


def extrapolate(rows: list[dict], to: float = HUGE, points: int = 3) -> dict:
    """Per target, each stage's time and memory at ``to`` synapses of the dense family: the value at
    the largest measured size × (to / size)^k, k fitted over the ``points`` largest sizes of that
    stage (log-log least squares). Only sizes compiled on the same spec as the largest one are fitted
    (a retry on ``spinnaker2-48chip`` is another machine). Memory is the stage's peak RSS above the
    RSS when the compile started (``rss_start_mb``: interpreter, torch, numba, the network's own
    arrays; added back unscaled); the total time is the sum
    of the stages' (``frontend`` and ``load`` included). An estimate, not a measurement: a stage whose
    growth steepens past the largest size measured is underestimated."""
    out = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        ok = sorted((r for r in rows if r["target"] == target and r["family"] == "dense" and r.get("ok")
                     and r.get("stages_s")), key=lambda r: r["synapses"])
        ok = [r for r in ok if ok and r.get("note", "") == ok[-1].get("note", "")][-points:]
        if len(ok) < 2 or ok[-1]["synapses"] >= to:
            continue
        syn = [r["synapses"] for r in ok]
        top = ok[-1]
        f = to / top["synapses"]
        start = [r.get("rss_start_mb") or r["rss_before_mb"] for r in ok]
        base = start[-1]
        stages = {}
        for name in top["stages_s"]:
            kt = fit_exponent(syn, [r["stages_s"].get(name, 0.0) for r in ok])
            cpu = [r.get("stages_cpu_s", {}).get(name, 0.0) for r in ok]
            kc = fit_exponent(syn, cpu)
            rss_ok = all(name in (r.get("stages_peak_rss_mb") or {}) for r in ok)
            add = [max(r["stages_peak_rss_mb"][name] - s0, 0.0) for r, s0 in zip(ok, start)] if rss_ok else None
            km = fit_exponent(syn, add) if add else None
            stages[name] = {"s": top["stages_s"][name] * f ** kt if kt is not None else None, "k_time": kt,
                            "cpu_s": cpu[-1] * f ** kc if kc is not None else None, "k_cpu": kc,
                            # a stage whose RSS never rose above the start adds nothing (no fit: unscaled)
                            "rss_mb": None if add is None else base + add[-1] * (f ** km if km is not None else 1.0),
                            "k_mem": km}
        rss = [v["rss_mb"] for v in stages.values() if v["rss_mb"] is not None]
        unfitted = [k for k, v in stages.items() if v["s"] is None]   # e.g. a stage the smaller sizes lack
        out[target] = {"to_synapses": to, "from_synapses": syn, "note": top["note"], "stages": stages,
                       "rss_start_mb": base, "unfitted": unfitted,
                       "seconds": None if unfitted else sum(v["s"] for v in stages.values()),
                       "cpu_seconds": (None if any(v["cpu_s"] is None for v in stages.values())
                                       else sum(v["cpu_s"] for v in stages.values())),
                       "peak_rss_mb": max(rss) if rss else None}
    return out


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
