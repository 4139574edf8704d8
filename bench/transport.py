"""Runtime transport: events/s and per-window latency over loopback TCP.

1. transport alone: an identity bundle (Input(n) → Output, reference device),
   so the device does no work and the cost is framing + sockets + sessions;
2. end to end: the quick start's digit classifier on the reference device.
Each compared with the same windows stepped through a local ``nmc.open``
session (no sockets). Loopback only; bounded runs.

    .venv/bin/python bench/transport.py [--windows 400] [--window 4]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nir
import numpy as np

import nmc
from nmc.runtime import events as ev
from nmc.runtime.server import SessionServer

ROOT = Path(__file__).resolve().parents[1]


def _identity(n):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}),
                            "output": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("input", "output")])
    return nmc.compile(g, target="reference", dt=1e-3)


def _measure(bundle, x, window, windows):
    wins = [ev.from_dense(x[i * window:(i + 1) * window]) for i in range(windows)]
    n_ev = sum(len(w) for w in wins)
    res = {}
    with nmc.open(bundle, window=window) as s:
        t0 = time.perf_counter()
        for w in wins:
            s.step(w)
        dt = time.perf_counter() - t0
    res["local"] = {"events_per_s": n_ev / dt, "window_latency_ms": dt / windows * 1e3}
    srv = SessionServer(bundle, port=0, window=window)
    srv.start()
    try:
        c = nmc.connect(*srv.address, window=window)
        lat = []
        t0 = time.perf_counter()
        for w in wins:
            t1 = time.perf_counter()
            c.step(w)
            lat.append(time.perf_counter() - t1)
        dt = time.perf_counter() - t0
        c.close()
    finally:
        srv.stop()
    res["tcp"] = {"events_per_s": n_ev / dt, "window_latency_ms": float(np.median(lat)) * 1e3,
                  "window_latency_p99_ms": float(np.percentile(lat, 99)) * 1e3}
    res["events"] = n_ev
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--out", default="bench/results/transport.json")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    T = a.windows * a.window
    out = {}
    x = (rng.random((T, 1024)) < 0.1).astype(np.float32)
    out["transport alone (identity, 1024 channels, p=0.1)"] = _measure(_identity(1024), x, a.window, a.windows)
    digits = nmc.compile(ROOT / "examples/quickstart/digits_lif.nir", target="reference", dt=1e-3, reset="zero",
                         integrator="euler")
    x = (rng.random((T, 64)) < 0.3).astype(np.float32)
    out["end to end (digits LIF MLP, reference device)"] = _measure(digits, x, a.window, a.windows)
    for k, v in out.items():
        print(f"{k}: local {v['local']['events_per_s']:,.0f} ev/s, {v['local']['window_latency_ms']:.3f} ms/window; "
              f"tcp {v['tcp']['events_per_s']:,.0f} ev/s, {v['tcp']['window_latency_ms']:.3f} ms/window "
              f"(p99 {v['tcp']['window_latency_p99_ms']:.3f})")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
