"""Fit search on the quick-start model: a configuration cheaper in energy than the
default spinnaker2 compile, with accuracy within 0.5 points of it.

Each step is the `nmc` command a user would type (printed before it runs)::

    nmc compile examples/quickstart/digits_lif.nir --target spinnaker2 --dt 1e-3 ... -o out/quickstart/fit-default.nmc
    nmc eval out/quickstart/fit-default.nmc --data digits_test.npz --labels digits_labels.npy --workers 2 -o default.json
    nmc fit examples/quickstart/digits_lif.nir --target spinnaker2 ... --min-accuracy <default - 0.005> \\
        --minimize energy --space 'quantize.bits=8,6; sparsify.density=0.95,0.9,0.85' -o out/quickstart/fit

The default compile is evaluated on all 200 held-out digits (sharded over two
Ray workers); the fit searches the space (every point, Ray Tune) for the lowest
energy per inference among configurations that fit the chip and keep the floor,
and writes the winner to ``out/quickstart/fit/best.nmc``. At a 1 ms tick most of
the energy is the chip's static power; what pruning saves is synaptic events,
the dynamic part.

    .venv/bin/python examples/quickstart/fit.py [--space '...'] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "out" / "quickstart"
NMC = [sys.executable, "-m", "nmc.cli"]
OPTS = ["--dt", "1e-3", "--reset", "zero", "--integrator", "euler"]
SPACE = "quantize.bits=8,6; sparsify.density=0.95,0.9,0.85"
console = Console(width=140)


def nmc(*args: str, ok=(0,)) -> int:
    console.print(f"[bold cyan]$ nmc {' '.join(shlex.quote(a) for a in args)}[/]", highlight=False)
    r = subprocess.run([*NMC, *args], cwd=ROOT)
    if r.returncode not in ok:
        sys.exit(r.returncode)
    return r.returncode


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default=SPACE, help=f"pass options searched [{SPACE}]")
    ap.add_argument("--workers", default="2", help="Ray workers [2]")
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    model, data, labels = HERE / "digits_lif.nir", HERE / "digits_test.npz", HERE / "digits_labels.npy"
    default, summary, fit_dir = OUT / "fit-default.nmc", OUT / "fit-default.json", OUT / "fit"
    nmc("compile", rel(model), "--target", "spinnaker2", *OPTS, "-o", rel(default))
    nmc("eval", rel(default), "--data", rel(data), "--labels", rel(labels), "--workers", a.workers, "-o", rel(summary))
    acc0 = json.loads(summary.read_text())["accuracy"]
    floor = round(acc0 - 0.005, 6)
    nmc("fit", rel(model), "--target", "spinnaker2", *OPTS, "--data", rel(data), "--labels", rel(labels),
        "--min-accuracy", str(floor), "--minimize", "energy", "--space", a.space, "--workers", a.workers,
        "-o", rel(fit_dir))
    fit = json.loads((fit_dir / "fit.json").read_text())
    best, base = fit["best"], fit["baseline"]
    t = Table(title=f"nmc fit on the quick-start model (spinnaker2, 200 digits, floor {floor:.3f})")
    for c in ("configuration", "pipeline", "accuracy", "energy / inference", "dynamic part", "cores"):
        t.add_column(c)
    for name, r in (("default compile", base), ("fit winner", best)):
        t.add_row(name, r["passes"], f"{r['accuracy']:.1%}", f"{r['energy_per_inference_j'] * 1e3:.4f} mJ",
                  f"{r['energy_dynamic_j'] * 1e6:.2f} µJ", str(r["cores"]))
    console.print(t)
    saved = base["energy_per_inference_j"] - best["energy_per_inference_j"]
    console.print(f"the winner saves {saved * 1e6:.2f} µJ per inference "
                  f"({100 * saved / base['energy_per_inference_j']:.3f} % of the total, "
                  f"{100 * saved / base['energy_dynamic_j']:.1f} % of the dynamic part) at "
                  f"{100 * (best['accuracy'] - base['accuracy']):+.1f} points of accuracy; bundle: "
                  f"{rel(fit_dir / 'best.nmc')}", highlight=False)
    return {"default_accuracy": acc0, "eval_accuracy_default": acc0, "best": best, "baseline": base}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    main()
