"""Analog parameters: DAC codes through a per-circuit calibration table.

Every neuron parameter p (τ_mem, τ_syn in hardware seconds; v_threshold,
v_leak, v_reset in units of the layer's threshold) is set by a 10-bit DAC
whose transfer is linear per circuit: ``value = gain·code + offset``. A
calibration table holds, per circuit and parameter, the (gain, offset) the
compiler uses to pick ``code = clip(round((target − offset)/gain), 0, code_max)``.

The synthetic generator (seeded) draws a chip's *true* fixed pattern — gains
with relative spread ``calibration.spread_before`` and offsets with the same
spread of the parameter range — and a *measured* table whose residual error is
``spread_after_<p> × spread_before`` (the spec's "calibration shrinks the
spread to …"). ``calibration.json`` stores both; a measured table supplied with
``--option calibration=FILE`` has only the table, which the emulator then
takes as the truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nmc.errors import InputFileError

PARAMS = ("tau_mem", "tau_syn", "v_threshold", "v_leak", "v_reset", "t_refrac")


def ranges(spec) -> dict[str, tuple[float, float]]:
    """Nominal DAC ranges from the spec's ``[dac.range]``: time constants in hardware
    seconds, voltages in units of the layer's threshold."""
    return {p: tuple(float(v) for v in spec.get(f"dac.range.{p}")) for p in PARAMS}


def nominal(n: int, code_max: int, rng_: dict) -> dict:
    return {p: {"gain": [(hi - lo) / code_max] * n, "offset": [lo] * n} for p, (lo, hi) in rng_.items()}


def synthetic(n: int, spec, seed: int = 0) -> dict:
    code_max = int(spec.get("dac.code_max"))
    before = float(spec.get("calibration.spread_before"))
    rng = np.random.default_rng([seed, 2])
    truth, table = {}, {}
    for p, (lo, hi) in ranges(spec).items():
        g0, rng_span = (hi - lo) / code_max, hi - lo
        g = g0 * (1 + before * rng.standard_normal(n))
        o = lo + before * 0.05 * rng_span * rng.standard_normal(n)
        after = float(spec.get(f"calibration.spread_after_{p.replace('v_', '')}", 0.3)) * before  # t_refrac: 0.3
        truth[p] = {"gain": g.tolist(), "offset": o.tolist()}
        table[p] = {"gain": (g * (1 + after * rng.standard_normal(n))).tolist(),
                    "offset": (o + after * 0.05 * rng_span * rng.standard_normal(n)).tolist()}
    return {"source": f"synthetic (seed {seed}; spread before {before}, after per spec)", "circuits": n,
            "code_max": code_max, "ranges": ranges(spec), "table": table, "truth": truth}


def load(path: str | Path, n: int, spec) -> dict:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
        table = d["table"]
        for k in PARAMS:
            if len(table[k]["gain"]) < n or len(table[k]["offset"]) < n:
                raise ValueError(f"{k}: fewer than {n} circuits")
    except FileNotFoundError:
        raise InputFileError("calibration file not found", path=p) from None
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise InputFileError(f"not a calibration table ({e})", path=p,
                             hint='expected {"table": {param: {"gain": [...], "offset": [...]}}}') from None
    return {"source": f"measured ({p.name})", "circuits": n, "code_max": d.get("code_max", int(spec.get("dac.code_max"))),
            "ranges": ranges(spec), "table": table}


def codes_for(targets: np.ndarray, param: str, circuits: np.ndarray, cal: dict) -> np.ndarray:
    t = cal["table"][param]
    g, o = np.asarray(t["gain"])[circuits], np.asarray(t["offset"])[circuits]
    return np.clip(np.rint((np.asarray(targets, float) - o) / g), 0, int(cal["code_max"])).astype(np.int64)


def realized(codes: np.ndarray, param: str, circuits: np.ndarray, cal: dict, which: str) -> np.ndarray:
    """Value a circuit produces for a code: ``which`` = truth | table | nominal."""
    if which == "nominal":
        lo, hi = cal["ranges"][param]
        return lo + (hi - lo) / int(cal["code_max"]) * np.asarray(codes, float)
    t = cal.get(which, cal["table"])[param]
    return np.asarray(t["gain"])[circuits] * np.asarray(codes, float) + np.asarray(t["offset"])[circuits]
