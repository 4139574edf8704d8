"""Fidelity per target: accuracy on the trained examples and agreement with
the float reference.

* ``examples/quickstart`` — the shipped LIF MLP digit classifier (64→128→10,
  T = 16) on its 200 held-out digits, compiled for every registered target;
  accuracy (class = most output spikes), agreement of the predicted class with
  the reference's, and :func:`bench.peers.agreement` of the output spike counts;
* ``examples/onnx_digits`` (full run only) — ANN → SNN conversion of an MLP
  and a CNN (trained in the run, ≈ 20 s each) on every target, via the
  example's own ``main``;
* ``exported`` — recurrent CubaLIF and conv networks trained and exported by
  snnTorch, Norse and nmc.nn, compiled with default options, class agreement
  with the reference on perturbed inputs (:mod:`bench.exported`).

    .venv/bin/python -m bench fidelity [--quick]
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile

import numpy as np

from .common import ROOT, meta, registered_targets, write
from .peers import agreement


def quickstart(limit: int | None = None, log=print) -> dict:
    import nmc
    from nmc.errors import NmcError

    q = ROOT / "examples" / "quickstart"
    x = np.load(q / "digits_test.npz")["input"]
    y = np.load(q / "digits_labels.npy")
    if limit:
        x, y = x[:, :limit], y[:limit]
    res, ref = {}, None
    for target in registered_targets():
        try:
            b = nmc.compile(q / "digits_lif.nir", target=target, dt=1e-3, reset="zero", integrator="euler")
        except NmcError as e:
            res[target] = {"refused": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
            continue
        out = b.run({"input": x})["output"]
        if target == "reference":
            ref = out
        pred = out.sum(0).argmax(-1)
        res[target] = {"accuracy": float((pred == y).mean()), "samples": int(len(y)),
                       "class_agreement": float((pred == ref.sum(0).argmax(-1)).mean()),
                       "spike_count_agreement": agreement(out, ref), "device": b.backend.default_device}
        log(f"quickstart {target:14s} {res[target]}")
    return res


def onnx_digits(log=print) -> dict:
    spec = importlib.util.spec_from_file_location("onnx_digits_run", ROOT / "examples" / "onnx_digits" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with tempfile.TemporaryDirectory(prefix="nmc-bench-onnx-") as tmp:
        r = mod.main(["--out", tmp])
    res = {name: {k: (v if k != "conversion" else None) for k, v in d.items() if k != "conversion"}
           for name, d in r.items()}
    log(f"onnx_digits {res}")
    return res


def run(quick: bool = False, log=print) -> dict:
    out = {"meta": meta("fidelity", quick, "python -m bench fidelity" + (" --quick" if quick else "")),
           "quickstart": quickstart(limit=40 if quick else None, log=log)}
    if not quick:
        out["onnx_digits"] = onnx_digits(log)
    from .exported import run as exported

    out["exported"] = exported(quick, log)
    return out


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    write("fidelity", run(a.quick), a.out)


if __name__ == "__main__":
    sys.exit(main())
