"""The spiking digit classifier on the BrainScaleS-2-style analog target:
what 6-bit weights, fixed-pattern mismatch (with and without calibration) and
trial-to-trial noise cost.

    python examples/bss2_digits/run.py

Uses the quick start's trained LIF MLP (``examples/quickstart/digits_lif.nir``,
retrain with ``examples/quickstart/train_digits.py``) and its 200 held-out
digits. Prints accuracy on the float reference, on the noiseless emulator,
with uncalibrated and calibrated mismatch, and with calibrated mismatch plus
noise; the same numbers go to ``out/bss2_digits/analog.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
QS = ROOT / "examples" / "quickstart"
MARGIN = 0.02  # the noiseless analog emulator must stay within 2 points of the float reference


def main() -> dict:
    import nmc
    from nmc.backends.brainscales2 import analog_report

    out = ROOT / "out" / "bss2_digits"
    out.mkdir(parents=True, exist_ok=True)
    x = np.load(QS / "digits_test.npz")["input"]
    labels = np.load(QS / "digits_labels.npy")
    opts = dict(dt=1e-3, reset="zero", integrator="euler")
    ref = nmc.compile(QS / "digits_lif.nir", target="reference", **opts)
    b = nmc.compile(QS / "digits_lif.nir", target="brainscales2", output=out / "digits-bss2.nmc", **opts)
    ref_acc = float((ref.run({"input": x})["output"].sum(0).argmax(1) == labels).mean())
    rep = analog_report(b, {"input": x}, labels=labels, seed=0)
    rep = {"reference (float)": {"accuracy": ref_acc, "agreement_with_noiseless": None}, **rep}
    t = Table(title=f"digits on the analog target ({len(labels)} held-out digits)")
    for c in ("run", "accuracy", "loss vs float", "agreement with noiseless"):
        t.add_column(c)
    for k, v in rep.items():
        agree = v["agreement_with_noiseless"]
        t.add_row(k, f"{v['accuracy']:.1%}", f"{ref_acc - v['accuracy']:+.1%}", "-" if agree is None else f"{agree:.1%}")
    Console().print(t)
    Console().print(f"mapping: {b.report('mapping')['rows_used']} synapse rows (lower bound "
                    f"{b.report('mapping')['rows_lower_bound']}), {b.report('mapping')['circuits_used']} circuits, "
                    f"{b.report('mapping')['runs_used']} run(s); calibration: {b.report('mapping')['calibration']}",
                    highlight=False)
    (out / "analog.json").write_text(json.dumps(rep, indent=2, sort_keys=True))
    ok = rep["noiseless"]["accuracy"] >= ref_acc - MARGIN
    Console().print(f"noiseless within {MARGIN:.0%} of float: {'yes' if ok else 'NO'}")
    return rep


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r["noiseless"]["accuracy"] >= r["reference (float)"]["accuracy"] - MARGIN else 1)
