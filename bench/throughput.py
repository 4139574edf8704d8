"""Emulator throughput (timesteps/s) of every nmc target vs snnTorch, Norse and
Brian2 on the same network and input, batch 1 and batched.

Network: the quick start's LIF MLP 64 → 128 → 10 (examples/quickstart/digits_lif.nir),
Bernoulli(0.2) input, T steps. Peers run the same weights: snnTorch Leaky
(β = 1 − dt/τ, reset to zero), Norse LIFBoxCell, Brian2 (numpy codegen, the
spinnaker2 program's Brian2 device); all on the CPU, one process.

    .venv/bin/python bench/throughput.py [--steps 500] [--batch 64]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, reps=3):
    fn()  # warm-up (JIT, imports)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="bench/results/throughput.json")
    a = ap.parse_args(argv)
    import nir

    import nmc
    from nmc.backends import REGISTRY

    model = ROOT / "examples" / "quickstart" / "digits_lif.nir"
    g = nir.read(model)
    w1, b1 = g.nodes["fc1"].weight, g.nodes["fc1"].bias
    w2, b2 = g.nodes["fc2"].weight, g.nodes["fc2"].bias
    beta = float(1 - 1e-3 / g.nodes["lif1"].tau[0])
    rng = np.random.default_rng(0)
    rows = []
    for B in (1, a.batch):
        x = (rng.random((a.steps, B, 64)) < 0.2).astype(np.float32)
        res = {}
        for target in REGISTRY:
            b = nmc.compile(model, target=target, dt=1e-3, reset="zero", integrator="euler")
            inp = {"input": x if B > 1 else x[:, 0]}
            res[f"nmc {target}"] = _time(lambda: b.run(inp), reps=2)
        import snntorch as snn

        net = torch.nn.Sequential(torch.nn.Linear(64, 128), snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero"),
                                  torch.nn.Linear(128, 10), snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero"))
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor(w1)); net[0].bias.copy_(torch.tensor(b1))  # noqa: E702
            net[2].weight.copy_(torch.tensor(w2)); net[2].bias.copy_(torch.tensor(b2))  # noqa: E702
        xt = torch.tensor(x)

        def run_snn():
            from snntorch import utils

            utils.reset(net)
            with torch.no_grad():
                for t in range(a.steps):
                    net(xt[t])

        res["snnTorch"] = _time(run_snn)
        import norse.torch as norse

        p = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(1 / float(g.nodes["lif1"].tau[0])), v_th=torch.tensor(1.0))
        nnet = norse.SequentialState(torch.nn.Linear(64, 128), norse.LIFBoxCell(p), torch.nn.Linear(128, 10),
                                     norse.LIFBoxCell(p))
        with torch.no_grad():
            nnet[0].weight.copy_(torch.tensor(w1)); nnet[0].bias.copy_(torch.tensor(b1))  # noqa: E702
            nnet[2].weight.copy_(torch.tensor(w2)); nnet[2].bias.copy_(torch.tensor(b2))  # noqa: E702

        def run_norse():
            st = None
            with torch.no_grad():
                for t in range(a.steps):
                    _, st = nnet(xt[t], st)

        res["Norse"] = _time(run_norse)
        if B == 1:
            s2 = nmc.compile(model, target="spinnaker2", dt=1e-3, reset="zero", integrator="euler")
            res["Brian2 (same program)"] = _time(lambda: s2.run({"input": x[:, 0]}, device="brian2"), reps=1)
        for k, v in res.items():
            rows.append({"batch": B, "simulator": k, "steps_per_s": a.steps / v})
            print(f"batch {B:3d}  {k:24s} {a.steps / v:12,.0f} steps/s", flush=True)
    import brian2
    import snntorch

    meta = {"date": time.strftime("%Y-%m-%d"), "steps": a.steps, "versions": {
        "snntorch": snntorch.__version__, "norse": __import__("importlib.metadata").metadata.version("norse"),
        "brian2": brian2.__version__, "torch": torch.__version__}}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
