"""Compile time and peak memory vs network size, per target, with the fitted
growth exponent (log-log least squares). Recurrent LIF layers with dense
N×N recurrent weights (+ an input layer), N chosen for 10⁴..10⁷ synapses.

    .venv/bin/python bench/compile_time.py [--synapses 1e4,1e5,1e6,1e7] [--targets reference,spinnaker2,loihi2]
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import nir
import numpy as np

import nmc


def net(n: int, n_in: int = 32):
    rng = np.random.default_rng(0)
    lif = nir.LIF(tau=np.full(n, 1e-2), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
                               "fc": nir.Linear(weight=rng.normal(0, 1, (n, n_in)).astype(np.float32)),
                               "lif": lif, "rec": nir.Linear(weight=rng.normal(0, 0.05, (n, n)).astype(np.float32)),
                               "output": nir.Output(output_type={"output": np.array([n])})},
                        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--synapses", default="1e4,1e5,1e6,1e7")
    ap.add_argument("--targets", default="reference,spinnaker2,loihi2")
    ap.add_argument("--out", default="bench/results/compile_time.json")
    a = ap.parse_args(argv)
    rows = []
    from nmc.errors import DesignRuleError

    for target in a.targets.split(","):
        nmc.compile(net(20), target=target, dt=1e-3, reset="zero", integrator="euler")  # warm-up: imports
        for syn in (float(s) for s in a.synapses.split(",")):
            n = int(np.sqrt(syn))
            g = net(n)
            hw = []
            tracemalloc.start()
            t0 = time.perf_counter()
            try:
                try:
                    nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler")
                except DesignRuleError:
                    if target != "spinnaker2":
                        raise
                    hw = ["spinnaker2-48chip"]  # does not fit one chip: the 48-chip board
                    t0 = time.perf_counter()
                    nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler", hw=hw)
                note = "on " + hw[0] if hw else ""
            except DesignRuleError as e:
                note = "does not fit: " + e.violations[0].hint
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append({"target": target, "neurons": n, "synapses": n * n + 32 * n, "seconds": round(dt, 3),
                         "peak_mb": round(peak / 2 ** 20, 1), "note": note})
            print(rows[-1], flush=True)
    fits = {}
    for target in a.targets.split(","):
        r = [x for x in rows if x["target"] == target and not x["note"].startswith("does not fit")]
        if len(r) > 1:
            k = np.polyfit(np.log([x["synapses"] for x in r]), np.log([max(x["seconds"], 1e-3) for x in r]), 1)[0]
            fits[target] = round(float(k), 2)
    print("growth exponent (time ~ synapses^k):", fits)
    import os

    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"rows": rows, "exponent": fits}, f, indent=2)


if __name__ == "__main__":
    main()
