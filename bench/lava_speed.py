"""Emulator vs Lava fixed_pt speed on the same Loihi 2 program (not run in tests).

Network: Input(64) → Dense → LIF(128) → Dense → LIF(10), binary spike input
(p = 0.2). Lava's per-step cost is measured by differencing two run lengths
(T1, T2), which removes its start-up/compile time; the emulator runs the same
steps in-process. Prints steps/s for both and their ratio.

    .venv/bin/python bench/lava_speed.py [--t1 50] [--t2 250]

The harness (``python -m bench throughput``) measures the same on every workload
the loihi2 target takes, beside Lava floating_pt and the other peers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nets import ff_lif, normalized, spikes  # noqa: E402

from nmc.backends.loihi2 import BACKEND  # noqa: E402
from nmc.passes import PassContext  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t1", type=int, default=50)
    ap.add_argument("--t2", type=int, default=250)
    a = ap.parse_args()
    g = normalized(ff_lif(n_in=64, n_hid=128, n_out=10, w_scale=3.0))
    prog = BACKEND.lower(g, PassContext(options={}))
    lava_t = {}
    for T in (a.t1, a.t2):
        x = spikes(64, T=T, p=0.2, seed=0)
        t0 = time.perf_counter()
        lv = BACKEND.device("lava", prog, timeout=600).run({"input": x})
        lava_t[T] = time.perf_counter() - t0
    x = spikes(64, T=a.t2, p=0.2, seed=0)
    emu = BACKEND.device("emulator", prog)
    emu.run({"input": x})
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        out = emu.run({"input": x})
    emu_s = (time.perf_counter() - t0) / reps
    assert np.array_equal(out["output"], lv["output"]), "emulator and Lava disagree"
    lava_sps = (a.t2 - a.t1) / (lava_t[a.t2] - lava_t[a.t1])
    emu_sps = a.t2 / emu_s
    print(f"network: 64-128-10 LIF, {prog.summary()['lava_processes']} Lava processes (+ sinks/monitors)")
    print(f"lava fixed_pt: {lava_sps:,.0f} steps/s (runs of {a.t1}/{a.t2} steps took "
          f"{lava_t[a.t1]:.2f}/{lava_t[a.t2]:.2f} s incl. start-up)")
    print(f"nmc emulator:  {emu_sps:,.0f} steps/s")
    print(f"ratio: {emu_sps / lava_sps:,.0f}x")


if __name__ == "__main__":
    main()
