"""Emulator throughput (timesteps/s): every registered nmc target vs Lava
(fixed_pt and floating_pt), snnTorch, Norse and Brian2 on the same networks
and the same input, batch 1 and batched.

* nmc targets: ``nmc.compile(graph, target=t)`` then ``bundle.run`` on the
  default device (a target that refuses a workload gets a row with its error);
* snnTorch / Norse: :mod:`bench.peers` (same weights and τ, CPU torch, no grad);
* Brian2: the spinnaker2 bundle's ``brian2`` device (numpy code generation);
* Lava fixed_pt: the loihi2 bundle's ``lava`` device (its emitted
  ``program/lava_net.py``), outputs asserted equal to the loihi2 emulator;
* Lava floating_pt: :mod:`bench.lava_float` (LIF MLP from Lava's processes).

Lava runs in a child process with a start-up of seconds; its per-step cost is
taken from the difference of two run lengths (removes start-up). A step at
batch B advances B samples. "agreement" is :func:`bench.peers.agreement` of
the simulator's output with the float reference's (1 = same spike counts).

    .venv/bin/python -m bench throughput [--quick]
    .venv/bin/python -m bench.throughput --workload ssm_s4d    # one workload, merged into the results

The SSM workload (``ssm_s4d``, :mod:`bench.ssm_workload`) has its own peer, a plain PyTorch
recurrent S4D step loop, in place of snnTorch / Norse (which have no SSM).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import PY, ROOT, best_time, meta, registered_targets, write
from .peers import agreement, norse_net, snntorch_net
from .ssm_workload import torch_s4d_net
from .workloads import small

OPTS = dict(dt=1e-3, reset="zero", integrator="euler")


def _row(workload, sim, batch, steps, seconds, agree=None, **extra):
    return {"workload": workload, "simulator": sim, "batch": batch, "steps": steps,
            "steps_per_s": steps / seconds if seconds else None, "agreement": agree, **extra}


def _lava_fixed(bundle, wl, t1, t2):
    """Steps/s of Lava fixed_pt on the loihi2 bundle (difference of two runs) and
    whether its outputs equal the loihi2 emulator's."""
    times = {}
    for T in (t1, t2):
        x = wl.inputs(T)
        t0 = time.perf_counter()
        out = bundle.run({"input": x}, device="lava", timeout=600)
        times[T] = time.perf_counter() - t0
    emu = bundle.run({"input": x})
    same = all(np.array_equal(out[k], emu[k]) for k in emu)
    return (t2 - t1) / max(times[t2] - times[t1], 1e-9), same, out


def _lava_float(wl, t1, t2):
    g = wl.graph.nodes
    x = wl.inputs(t2)
    times, out = {}, None
    with tempfile.TemporaryDirectory(prefix="nmc-bench-lava-") as tmp:
        net, o = Path(tmp) / "net.npz", Path(tmp) / "out.npz"
        np.savez(net, x=x, w1=g["fc1"].weight, b1=g["fc1"].bias, dv1=1e-3 / g["lif1"].tau,
                 w2=g["fc2"].weight, b2=g["fc2"].bias, dv2=1e-3 / g["lif2"].tau)
        for T in (t1, t1, t2):   # the first run warms the file cache and Lava's compiler
            t0 = time.perf_counter()
            subprocess.run([PY, "-m", "bench.lava_float", str(net), str(o), "--steps", str(T)], cwd=ROOT,
                           check=True, capture_output=True, timeout=600, start_new_session=True)
            times[T] = time.perf_counter() - t0
        out = np.load(o)["s"]
    return (t2 - t1) / max(times[t2] - times[t1], 1e-9), out


def run(quick: bool = False, lava: bool | None = None, log=print, only: list[str] | None = None) -> dict:
    T = 40 if quick else 300
    B = 8 if quick else 64
    lava = (not quick) if lava is None else lava
    import nmc
    from nmc.errors import NmcError

    rows, refusals = [], {}
    wls = small()
    if quick:
        wls = {k: wls[k] for k in ("lif_mlp", "egru")}
    if only:
        wls = {k: wls[k] for k in only}
    for name, wl in wls.items():
        steps = T if wl.kind != "conv" else max(T // 3, 20)   # conv: dense-expanded steps are ~100× costlier
        xs = {1: wl.inputs(steps), B: wl.inputs(steps, batch=B)}
        ref_out, bundles = {}, {}
        for target in registered_targets():
            try:
                bundles[target] = b = nmc.compile(wl.graph, target=target, **OPTS)
            except NmcError as e:
                refusals[f"{name}/{target}"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                log(f"{name:16s} {target:14s} refused: {refusals[f'{name}/{target}'][:100]}")
                continue
            for batch, x in xs.items():
                box = {}

                def go(b=b, x=x, box=box):
                    box["out"] = b.run({"input": x})["output"]

                sec = best_time(go, reps=1 if quick else 3, budget_s=15)
                if target == "reference":
                    ref_out[batch] = box["out"]
                agree = agreement(box["out"], ref_out[batch]) if batch in ref_out else None
                rows.append(_row(name, f"nmc {target}", batch, steps, sec, agree,
                                 device=b.backend.default_device))
                log(f"{name:16s} nmc {target:14s} batch {batch:3d} {steps / sec:12,.0f} steps/s agree {agree}")
        for peer, build in (("snnTorch", snntorch_net), ("Norse", norse_net),
                            ("PyTorch S4D step loop", torch_s4d_net)):
            net = build(wl)
            if net is None:
                continue
            for batch, x in xs.items():
                box = {}

                def go(net=net, x=x, box=box):
                    box["out"] = net(x if batch > 1 else x[:, None])

                sec = best_time(go, reps=1 if quick else 3, budget_s=15)
                o = box["out"] if batch > 1 else box["out"][:, 0]
                rows.append(_row(name, peer, batch, steps, sec, agreement(o, ref_out.get(batch, o))))
                log(f"{name:16s} {peer:18s} batch {batch:3d} {steps / sec:12,.0f} steps/s agree {rows[-1]['agreement']}")
        if not lava:
            continue
        if "spinnaker2" in bundles:
            bs = min(steps, 100)
            box = {}

            def go_b2(b=bundles["spinnaker2"], box=box):
                box["out"] = b.run({"input": xs[1][:bs]}, device="brian2")["output"]

            try:
                sec = best_time(go_b2, reps=1, budget_s=60)
                rows.append(_row(name, "Brian2 (spinnaker2 program)", 1, bs, sec,
                                 agreement(box["out"], ref_out[1][:bs])))
                log(f"{name:16s} Brian2 {bs / sec:12,.0f} steps/s")
            except NmcError as e:
                refusals[f"{name}/Brian2"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if "loihi2" in bundles:
            t1, t2 = 20, 20 + (100 if wl.kind == "conv" else 250)
            sps, same, out = _lava_fixed(bundles["loihi2"], wl, t1, t2)
            rows.append(_row(name, "Lava fixed_pt (loihi2 program)", 1, t2 - t1, (t2 - t1) / sps,
                             agreement(out["output"], ref_out[1][:t2] if t2 <= steps else
                                       nmc.compile(wl.graph, target="reference", **OPTS).run(
                                           {"input": wl.inputs(t2)})["output"]),
                             bit_exact_with_emulator=same))
            log(f"{name:16s} Lava fixed_pt {sps:12,.1f} steps/s bit-exact with emulator: {same}")
        if wl.kind == "mlp":
            t1, t2 = 50, 1050   # long enough that the difference is not start-up noise
            sps, out = _lava_float(wl, t1, t2)
            ref = nmc.compile(wl.graph, target="reference", **OPTS).run({"input": wl.inputs(t2)})["output"]
            rows.append(_row(name, "Lava floating_pt", 1, t2 - t1, (t2 - t1) / sps, agreement(out, ref)))
            log(f"{name:16s} Lava floating_pt {sps:12,.1f} steps/s")
    import lava.magma  # noqa: F401 - version below
    cmd = ("python -m bench.throughput" + "".join(f" --workload {w}" for w in only)) if only else "python -m bench throughput"
    return {"meta": meta("throughput", quick, cmd + (" --quick" if quick else "")),
            "batch": B, "rows": rows, "refused": refusals,
            "workloads": {k: w.describe for k, w in wls.items()}}


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--workload", action="append", choices=sorted(small()),
                    help="run only this workload (repeatable); its rows replace that workload's in the existing "
                         "results file, the other workloads' rows are kept")
    a = ap.parse_args(argv)
    res = run(a.quick, only=a.workload)
    if a.workload:
        from .common import load

        old = load("throughput", a.out)
        if old is not None and "rows" in old:
            res["rows"] = [x for x in old["rows"] if x["workload"] not in a.workload] + res["rows"]
            res["refused"] = {**{k: v for k, v in old.get("refused", {}).items()
                                 if k.split("/")[0] not in a.workload}, **res["refused"]}
            res["workloads"] = {**old.get("workloads", {}), **res["workloads"]}
            res["meta"] = {**old["meta"], "workload_runs": {**old["meta"].get("workload_runs", {}),
                                                            **{w: res["meta"] for w in a.workload}}}
    write("throughput", res, a.out)


if __name__ == "__main__":
    sys.exit(main())
