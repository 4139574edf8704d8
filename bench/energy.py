"""Energy estimates (:func:`nmc.runtime.energy.profile`) next to published figures.

Workloads: the quick start's digit classifier (LIF MLP 64→128→10, T = 16
steps of 1 ms) on every registered target that has a hardware spec, 20 test
digits; and the EGRU workload (16→EGRU(64)→LI(8)) on every target that takes
EGRU, per step (one step = one token of an EGRU language model).

Published figures (sources in /work/shared/HARDWARE.md, copied into
``PUBLISHED``) are compared as ratios with a ``like_for_like`` verdict: a
figure for a different network or a different quantity is an order-of-magnitude
sanity check, not a measurement of nmc.

    .venv/bin/python -m bench energy [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

from .common import ROOT, meta, registered_targets, write
from .workloads import small

#: published figures: (target, quantity, value, unit, source)
PUBLISHED = {
    "brainscales2_mnist": {"target": "brainscales2", "what": "energy per MNIST-class inference (upper bound)",
                           "value": 2.4e-6, "unit": "J", "source": "HARDWARE.md BrainScaleS-2: ≤ 2.4 µJ per "
                           "inference frame on an MNIST-class network at < 200 mW [est from paper]"},
    "spinnaker2_egru_lm": {"target": "spinnaker2", "what": "EGRU language model, energy per token (3 EGRU "
                           "layers, 95 % pruned)", "value": 65e-3, "unit": "J",
                           "gpu_value": 1.19, "source": "HARDWARE.md SpiNNaker 2: 65 mJ vs 1.19 J on an A100 "
                           "[paper + unverified]"},
    "spinnaker2_power": {"target": "spinnaker2", "what": "chip power range", "value": [0.24, 2.2], "unit": "W",
                         "source": "HARDWARE.md SpiNNaker 2: idle ≈ 235 mW @ 0.5 V; range 0.24–2.2 W"},
    "loihi_static": {"target": "loihi2", "what": "static power per chip (Loihi 1)", "value": 0.104, "unit": "W",
                     "source": "HARDWARE.md Loihi: ≈ 104 mW static per chip (Loihi 1, pre-silicon table) [paper]"},
}


def _summary(rep: dict) -> dict:
    keep = ("spec", "steps", "batch", "per_inference_j", "per_step_j", "average_power_w", "dynamic_j", "total_j",
            "static_power_w", "cores_used", "chips_used", "savings_vs_fp32", "dynamic_savings_vs_fp32")
    d = {k: rep.get(k) for k in keep}
    d["dynamic_per_inference_j"] = rep["dynamic_j"] / rep["batch"]
    d["fp32_dense_per_inference_j"] = rep["conventional"]["fp32_j"] / rep["batch"]
    return d


def run(quick: bool = False, log=print) -> dict:
    import nmc
    from nmc.errors import NmcError
    from nmc.runtime import energy

    q = ROOT / "examples" / "quickstart"
    n = 5 if quick else 20
    x = np.load(q / "digits_test.npz")["input"][:, :n]
    digits, egru, refused = {}, {}, {}
    wl = small()["egru"]
    for target in registered_targets():
        try:
            b = nmc.compile(q / "digits_lif.nir", target=target, dt=1e-3, reset="zero", integrator="euler")
        except NmcError as e:
            refused[f"digits/{target}"] = str(e).splitlines()[0]
            continue
        if b.hw is None:
            continue    # the float reference has no hardware to estimate
        rep, _ = energy.profile(b, {"input": x})
        digits[target] = _summary(rep)
        log(f"energy digits {target}: {digits[target]}")
        try:
            be = nmc.compile(wl.graph, target=target, dt=1e-3, reset="zero", integrator="euler")
        except NmcError as e:
            refused[f"egru/{target}"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            continue
        rep, _ = energy.profile(be, {"input": wl.inputs(16 if quick else 64)})
        egru[target] = _summary(rep)
        log(f"energy egru {target}: {egru[target]}")
    comparisons = []
    if "brainscales2" in digits:
        v = digits["brainscales2"]["per_inference_j"]
        comparisons.append({"published": "brainscales2_mnist", "nmc_j": v, "ratio": v / PUBLISHED["brainscales2_mnist"]["value"],
                            "like_for_like": "roughly: MNIST-class network vs the 64-input digits MLP; "
                                             "static power dominates both"})
    if "spinnaker2" in egru:
        p = PUBLISHED["spinnaker2_egru_lm"]
        v = egru["spinnaker2"]["per_step_j"]
        comparisons.append({"published": "spinnaker2_egru_lm", "nmc_j": v, "ratio": v / p["value"],
                            "published_gpu_over_chip": p["gpu_value"] / p["value"],
                            "nmc_fp32_over_chip": egru["spinnaker2"]["savings_vs_fp32"],
                            "like_for_like": "no: one 64-unit EGRU layer per step vs a 3-layer pruned LM per token; "
                                             "compare the chip-vs-conventional ratios, not joules"})
    if "spinnaker2" in digits:
        lo, hi = PUBLISHED["spinnaker2_power"]["value"]
        v = digits["spinnaker2"]["average_power_w"]
        comparisons.append({"published": "spinnaker2_power", "nmc_w": v, "ratio": v / lo,
                            "within_range": bool(lo * 0.95 <= v <= hi),
                            "like_for_like": "power only: a chip running the digits MLP at a 1 ms tick"})
    if "loihi2" in digits:
        v = digits["loihi2"]["static_power_w"]
        comparisons.append({"published": "loihi_static", "nmc_w": v, "ratio": v / PUBLISHED["loihi_static"]["value"],
                            "like_for_like": "no: Loihi 1 pre-silicon static power vs nmc's Loihi 2 spec constant"})
    return {"meta": meta("energy", quick, "python -m bench energy" + (" --quick" if quick else "")),
            "digits": digits, "egru": egru, "refused": refused, "published": PUBLISHED, "comparisons": comparisons,
            "samples": n}


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    write("energy", run(a.quick), a.out)


if __name__ == "__main__":
    sys.exit(main())
