"""Quick start: compile the shipped spiking digit classifier for every target
nmc has, run each bundle on 200 held-out digits, and print a summary.

Each step is the `nmc` command a user would type (printed before it runs)::

    nmc compile examples/quickstart/digits_lif.nir --target T --dt 1e-3 -o out/quickstart/digits-T.nmc
    nmc run out/quickstart/digits-T.nmc --input examples/quickstart/digits_test.npz -o .../out.npz
    nmc profile out/quickstart/digits-spinnaker2.nmc --input ... -o energy-spinnaker2.html

The model (LIF MLP 64→128→10, trained by ``train_digits.py``) classifies by
output spike count. The summary compares each target's accuracy and its
agreement with the float reference.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "out" / "quickstart"
NMC = [sys.executable, "-m", "nmc.cli"]
console = Console()


def nmc(*args: str) -> None:
    console.print(f"[bold cyan]$ nmc {' '.join(shlex.quote(a) for a in args)}[/]", highlight=False)
    r = subprocess.run([*NMC, *args], cwd=ROOT)
    if r.returncode:
        sys.exit(r.returncode)


def main() -> None:
    from nmc.backends import REGISTRY

    OUT.mkdir(parents=True, exist_ok=True)
    labels = np.load(HERE / "digits_labels.npy")
    model, data = HERE / "digits_lif.nir", HERE / "digits_test.npz"
    results = {}
    for target in REGISTRY:
        bundle, res = OUT / f"digits-{target}.nmc", OUT / f"digits-{target}-out.npz"
        nmc("compile", str(model.relative_to(ROOT)), "--target", target, "--dt", "1e-3", "--reset", "zero",
            "--integrator", "euler", "-o", str(bundle.relative_to(ROOT)))
        nmc("run", str(bundle.relative_to(ROOT)), "--input", str(data.relative_to(ROOT)),
            "-o", str(res.relative_to(ROOT)))
        with np.load(res) as z:
            results[target] = z["output"]  # (T, B, 10) output spikes
    ref_pred = results["reference"].sum(0).argmax(1)
    t = Table(title=f"quick start: spiking digit classifier on {len(labels)} held-out digits")
    for c in ("target", "accuracy", "agrees with reference", "output spikes / digit"):
        t.add_column(c)
    for target, spikes in results.items():
        pred = spikes.sum(0).argmax(1)
        t.add_row(target, f"{(pred == labels).mean():.1%}", f"{(pred == ref_pred).mean():.1%}",
                  f"{spikes.sum() / len(labels):.1f}")
    console.print(t)
    # the headline: energy per inference on the chip, per layer and per core
    first = min(len(labels), 20)
    np.savez(OUT / "digits_20.npz", input=np.load(data)["input"][:, :first])
    nmc("profile", str((OUT / "digits-spinnaker2.nmc").relative_to(ROOT)), "--input",
        str((OUT / "digits_20.npz").relative_to(ROOT)), "-o", str((OUT / "energy-spinnaker2.html").relative_to(ROOT)))
    console.print(f"bundles and outputs are in {OUT.relative_to(ROOT)}/; inspect one with "
                  f"`nmc inspect {(OUT / 'digits-reference.nmc').relative_to(ROOT)}`", highlight=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    main()
