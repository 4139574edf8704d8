"""``nmc serve`` under load: 1, 8 and 64 concurrent clients against 1 and 2
devices, with and without dynamic batching (``--quick``: 1 and 8 clients, 1 device).

The quick start's digit classifier (LIF MLP 64→128→10) compiled for the
spinnaker2 emulator is put in a model repository and served by an ``nmc serve
REPO`` child process (``--devices D``; without batching ``--max-batch 1``: one
session per device, the others wait in the queue; with batching ``--max-batch
⌈64/D⌉``). Each client (a thread in one of up to 4 client processes: the
threads of one process share its interpreter lock, and at 64 clients one
process, not the server, was the limit; each process first runs one untimed
one-window session, so that its imports and the first calls of the compiled
event conversions are not timed, and all start together) opens a session, sends 40 windows
(``--quick``: 3) of 20 steps of Bernoulli(0.3) spikes one at a time
(``Client.step``: latency = send → outputs back, device queueing excluded),
then closes. Each configuration runs 3 times (a fresh server each time; ``--quick``: once) and
the run of median events/s is reported (all three in ``events_per_s_runs``; events lost
summed over the runs). Recorded per configuration: input events/s over the whole run
(first connect to last close, queueing included), p50/p99 window latency,
events lost (client-sent − server-processed, plus server-sent − client-received:
must be 0), and the server's peak resident memory (``VmHWM``).

    .venv/bin/python -m bench serve [--quick]
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import PY, ROOT, meta


#: runs per configuration (full run): one run on 2 shared cores moves by ±30 %; the median is reported
REPEATS = 3


def _serve(repo: Path, devices: int, max_batch: int, wait_ms: float):
    p = subprocess.Popen([PY, "-m", "nmc.cli", "serve", str(repo), "--port", "0", "--devices", str(devices),
                          "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms), "--queue-sessions", "64",
                          "--queue-timeout", "600", "--max-connections", "256", "--max-connections-per-client", "256",
                          "--idle-timeout", "600"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r"on (127\.0\.0\.1):(\d+)", line)
    if m is None:
        p.kill()
        raise RuntimeError(f"nmc serve printed no address: {line!r}")
    return p, (m.group(1), int(m.group(2)))


def _peak_rss(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1]) * 1024
    return 0


def _client(addr, x, window, lat, counts, errors):
    import nmc
    from nmc.runtime.session import dense_windows

    try:
        c = nmc.connect(*addr, model="digits", window=window, timeout=600)
        for w in dense_windows({"input": x}, window):
            t0 = time.perf_counter()
            c.step(w)
            lat.append(time.perf_counter() - t0)
        fin = c.close()
        counts.append((c.counters["sent"], c.counters["received"], fin["received"], fin["processed"], fin["sent"]))
    except BaseException as e:  # recorded in the results
        errors.append(f"{type(e).__name__}: {e}")


def _inputs(seeds, windows, window):
    return [(np.random.default_rng(s).random((windows * window, 64)) < 0.3).astype(np.float32) for s in seeds]


def _client_process(addr, seeds, windows, window, ready, go, out):
    """One client process: a thread per session, started together on ``go``; puts
    (first start, last end, latencies, counts, errors, events not sent) on ``out``.
    Before it says ``ready`` it runs one untimed one-window session: its imports and the
    first calls of the compiled event conversions (numba, loaded per process) are then not
    in the timed run."""
    xs = _inputs(seeds, windows, window)
    lat, counts, errors = [], [], []
    ts = [threading.Thread(target=_client, args=(addr, x, window, lat, counts, errors)) for x in xs]
    warm_errors: list = []
    _client(addr, _inputs([10 ** 6 + seeds[0]], 1, window)[0], window, [], [], warm_errors)
    ready.put(warm_errors[:1])
    go.wait()
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join(900)
    unsent = sum(int(x.sum()) for x in xs[len(counts):])
    out.put((t0, time.time(), lat, counts, errors, unsent))


def _one(repo, addr_proc, clients, windows, window, procs=4):
    """``clients`` sessions at once, spread over ``procs`` client processes (threads of one
    process share its interpreter lock: at 64 clients one process, not the server, was the
    limit), each sending ``windows`` windows of ``window`` steps one at a time."""
    import multiprocessing as mp

    p, addr = addr_proc
    # warm-up (not timed): the server's first session builds the device and compiles its numba loops
    _client(addr, _inputs([10 ** 6], 2, window)[0], window, [], [], [])
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    groups = [list(range(i, clients, procs)) for i in range(min(procs, clients))]
    ps = [ctx.Process(target=_client_process, args=(addr, g, windows, window, ready, go, out)) for g in groups]
    for q in ps:
        q.start()
    for _ in ps:  # every client process has imported nmc, built its inputs and warmed up: start together
        warm = ready.get(timeout=600)
        if warm:
            raise RuntimeError(f"a client process's warm-up session failed: {warm[0]}")
    go.set()
    res = [out.get(timeout=1200) for _ in ps]
    for q in ps:
        q.join(60)
    wall = max(r[1] for r in res) - min(r[0] for r in res)
    lat = [v for r in res for v in r[2]]
    counts = [c for r in res for c in r[3]]
    errors = [e for r in res for e in r[4]]
    sent = sum(c[0] for c in counts)
    lost = sum(c[0] - c[3] for c in counts) + sum(c[4] - c[1] for c in counts) + sum(r[5] for r in res)
    lat_ms = 1e3 * np.asarray(lat) if lat else np.zeros(1)
    return {"clients": clients, "client_processes": len(ps), "windows_per_client": windows, "window": window,
            "events": sent, "events_per_s": sent / wall, "wall_s": round(wall, 3),
            "window_latency_p50_ms": float(np.percentile(lat_ms, 50)),
            "window_latency_p99_ms": float(np.percentile(lat_ms, 99)),
            "events_lost": int(lost), "errors": errors[:3], "server_peak_rss_mib": round(_peak_rss(p.pid) / 2 ** 20, 1)}


def run(quick: bool = False, log=print) -> dict:
    import nmc

    windows, window = (3, 20) if quick else (40, 20)
    repeats = 1 if quick else REPEATS
    wait_ms = 20.0
    device_counts, client_counts = ((1,), (1, 8)) if quick else ((1, 2), (1, 8, 64))
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmc-bench-serve-") as tmp:
        repo = Path(tmp) / "repo"
        nmc.compile(ROOT / "examples/quickstart/digits_lif.nir", target="spinnaker2", dt=1e-3, reset="zero",
                    integrator="euler", output=repo / "digits" / "1")
        for devices in device_counts:
            for batching in (False, True):
                max_batch = -(-64 // devices) if batching else 1
                for clients in client_counts:
                    runs = []
                    for _ in range(repeats):  # a fresh server each time; the run of median events/s is kept
                        proc = _serve(repo, devices, max_batch, wait_ms)
                        try:
                            runs.append(_one(repo, proc, clients, windows, window))
                        finally:
                            proc[0].terminate()
                            proc[0].wait(60)
                    runs.sort(key=lambda r: r["events_per_s"])
                    r = runs[len(runs) // 2]
                    r.update(devices=devices, batching=batching, max_batch=max_batch,
                             events_per_s_runs=[x["events_per_s"] for x in runs],
                             events_lost=sum(x["events_lost"] for x in runs),
                             errors=[e for x in runs for e in x["errors"]][:3])
                    rows.append(r)
                    log(f"devices {devices} batching {batching!s:5} clients {clients:2}: "
                        f"{r['events_per_s']:>10,.0f} ev/s  p50 {r['window_latency_p50_ms']:.2f} ms  "
                        f"p99 {r['window_latency_p99_ms']:.2f} ms  lost {r['events_lost']}  "
                        f"rss {r['server_peak_rss_mib']} MiB")

    def eps(d, b, c):
        return next(r["events_per_s"] for r in rows if (r["devices"], r["batching"], r["clients"]) == (d, b, c))

    top = max(client_counts)
    return {"meta": meta("serve", quick, "python -m bench serve" + (" --quick" if quick else "")),
            "model": "digits LIF MLP 64→128→10, spinnaker2 emulator", "batch_wait_ms": wait_ms, "rows": rows,
            "speedup_clients": top,
            "speedup": {str(d): eps(d, True, top) / eps(d, False, top) for d in device_counts}}


if __name__ == "__main__":
    sys.exit(run("--quick" in sys.argv) and 0)
