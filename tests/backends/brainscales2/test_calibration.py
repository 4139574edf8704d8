"""Calibration: the synthetic chip has the spec's mismatch statistics, a
calibrated chip realises its targets within the spec's residual spread, and
the analog-effects ordering holds; a snnTorch CubaLIF (Synaptic) export maps."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import spikes
from nmc.backends.brainscales2 import calibration as C
from nmc.hw import HardwareSpec

SPEC = HardwareSpec.load("brainscales2")


def test_synthetic_table_has_the_spec_spread_and_calibration_shrinks_it():
    n = 4096
    cal = C.synthetic(n, SPEC, seed=7)
    before = float(SPEC.get("calibration.spread_before"))
    circ = np.arange(n)
    for p, (lo, hi) in C.ranges(SPEC).items():
        target = np.full(n, lo + 0.4 * (hi - lo))
        unc = C.realized(C.codes_for(target, p, circ, {"table": C.nominal(n, cal["code_max"], cal["ranges"]),
                                                         "code_max": cal["code_max"]}), p, circ, cal, "truth")
        cald = C.realized(C.codes_for(target, p, circ, cal), p, circ, cal, "truth")
        s_unc, s_cal = np.std(unc - target) / (hi - lo), np.std(cald - target) / (hi - lo)
        assert 0.5 * before * 0.4 < s_unc < 2 * before  # the uncalibrated spread is of order spread_before
        key = f"calibration.spread_after_{p.replace('v_', '')}"
        ratio = float(SPEC.get(key)) if SPEC.has(key) else 0.3
        assert s_cal < 1.3 * ratio * s_unc + 0.5 / cal["code_max"], (p, s_cal, s_unc, ratio)  # + code rounding
    assert C.synthetic(16, SPEC, seed=7) == C.synthetic(16, SPEC, seed=7)  # seeded
    assert C.synthetic(16, SPEC, seed=7)["truth"] != C.synthetic(16, SPEC, seed=8)["truth"]


def test_mismatch_costs_more_uncalibrated_than_calibrated():
    snn = pytest.importorskip("snntorch")
    import torch
    from torch import nn

    torch.manual_seed(5)
    m = nn.Sequential(nn.Linear(12, 40), snn.Synaptic(alpha=0.6, beta=0.85, init_hidden=True, reset_delay=False),
                      nn.Linear(40, 6), snn.Synaptic(alpha=0.6, beta=0.9, init_hidden=True, reset_delay=False))
    with torch.no_grad():
        m[0].weight.mul_(2.0)
        m[2].weight.mul_(2.0)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        nmc.save(m, Path(d) / "m.pt")
        b = nmc.compile(Path(d) / "m.pt", target="brainscales2")
        r = nmc.compile(Path(d) / "m.pt", target="reference")
    assert {l.kind for l in b.program.layers} == {"cuba"}
    x = spikes((12,), T=50, p=0.3, seed=1, batch=16)
    ref = r.run({"input": x})["output"]
    err = {}
    for mode in ("off", "calibrated", "uncalibrated"):
        y = b.run({"input": x}, mismatch=mode)["output"]
        err[mode] = np.abs(y.sum(0) - ref.sum(0)).mean()
    assert ref.sum() > 0
    assert err["off"] <= err["calibrated"] + 0.5 and err["calibrated"] < err["uncalibrated"], err
