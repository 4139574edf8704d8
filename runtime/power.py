"""Measured power: read a trace, align it with a run, fit the energy model.

A trace is (time in s, power in W) samples. ``load_trace`` reads a plain CSV
(header optional; the first two numeric columns, or the columns named like
``time``/``t``/``timestamp`` and ``power``/``watts``/``p``; a ``time_ms`` or
``power_mw`` column is converted) or a Parquet file (needs ``pyarrow``).

``align(trace, steps, tick_s, batch, offset_s)``: inference b, step k spans
``[offset + (b·steps + k)·tick, offset + (b·steps + k + 1)·tick)``; the energy
of each span is the integral of the linearly interpolated power over it. The
trace must cover the whole run (else a typed error names how much is missing).

``fit(activity, measured_per_step)``: non-negative least squares for the
static power and the per-event constants whose counts vary over the run
(constant counts cannot be told apart from static power and are folded into it,
as the report says; since every neuron updates every step, the inactive
updates are folded too and the fitted ``neuron_updates`` value is the extra
energy of an active update over an inactive one). The result is
written as a ``--hw`` override TOML.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nmc.errors import InputFileError, OptionError

from .energy import CONSTANT, KINDS, Activity

_TIME = ("time", "t", "timestamp", "time_s", "seconds", "time_ms")
_POWER = ("power", "watts", "p", "power_w", "w", "power_mw")


def load_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise InputFileError("power trace not found", path=p)
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputFileError("reading Parquet needs the pyarrow package", path=p,
                                 hint="pip install pyarrow, or export the trace as CSV (time_s,power_w)") from None
        tbl = pq.read_table(p).to_pydict()
        cols = {k.lower(): np.asarray(v, dtype=float) for k, v in tbl.items()}
        return _pick(cols, p)
    try:
        rows = list(csv.reader(p.read_text().splitlines()))
    except UnicodeDecodeError:
        raise InputFileError("power trace is not a text CSV file", path=p) from None
    rows = [r for r in rows if r and not r[0].startswith("#")]
    if not rows:
        raise InputFileError("power trace is empty", path=p)
    header = None
    try:
        [float(x) for x in rows[0][:2]]
    except ValueError:
        header, rows = [h.strip().lower() for h in rows[0]], rows[1:]
    try:
        data = np.array([[float(x) for x in r] for r in rows], dtype=float)
    except ValueError as e:
        raise InputFileError(f"power trace has a non-numeric value ({e})", path=p,
                             hint="two columns: time in seconds, power in watts") from None
    if data.ndim != 2 or data.shape[1] < 2:
        raise InputFileError("power trace needs at least two columns (time, power)", path=p)
    cols = {(header[i] if header and i < len(header) else f"c{i}"): data[:, i] for i in range(data.shape[1])}
    return _pick(cols, p)


def _pick(cols: dict, p) -> tuple[np.ndarray, np.ndarray]:
    names = list(cols)
    tk = next((k for k in names if k in _TIME), names[0])
    pk = next((k for k in names if k in _POWER and k != tk), next(k for k in names if k != tk))
    t, w = cols[tk].astype(float), cols[pk].astype(float)
    if tk.endswith("_ms"):
        t = t / 1e3
    if pk.endswith("_mw"):
        w = w / 1e3
    if len(t) < 2 or np.any(np.diff(t) <= 0):
        raise InputFileError("power trace times must be strictly increasing (≥ 2 samples)", path=p)
    if not np.all(np.isfinite(w)):
        raise InputFileError("power trace has non-finite power values", path=p)
    return t, w


def _cumulative(t: np.ndarray, w: np.ndarray, at: np.ndarray) -> np.ndarray:
    """∫ from t[0] to each of ``at`` of the piecewise-linear power."""
    seg = np.concatenate([[0.0], np.cumsum(np.diff(t) * (w[1:] + w[:-1]) / 2)])
    i = np.clip(np.searchsorted(t, at, side="right") - 1, 0, len(t) - 2)
    dt = at - t[i]
    slope = (w[i + 1] - w[i]) / (t[i + 1] - t[i])
    return seg[i] + w[i] * dt + slope * dt * dt / 2


def align(t: np.ndarray, w: np.ndarray, steps: int, tick_s: float, batch: int = 1,
          offset_s: float | None = None) -> np.ndarray:
    """Measured energy (J) per step of each inference: shape (batch, steps)."""
    t0 = t[0] if offset_s is None else float(offset_s)
    edges = t0 + np.arange(batch * steps + 1) * tick_s
    if edges[0] < t[0] - 1e-12 or edges[-1] > t[-1] + 1e-12:
        raise OptionError(f"the power trace covers {t[0]:.6g}..{t[-1]:.6g} s but the run spans "
                          f"{edges[0]:.6g}..{edges[-1]:.6g} s ({batch} inference(s) × {steps} steps × {tick_s} s)",
                          hint="record longer, or set --offset to where the run starts in the trace")
    e = np.diff(_cumulative(t, w, edges))
    return e.reshape(batch, steps)


def fit(act: Activity, measured_per_step: np.ndarray) -> dict:
    """Fit static power (W) and per-event energies (J) to measured energy per step.

    ``measured_per_step``: (T,) energy of each step summed over the batch's
    inferences (so it matches ``act.per_step`` counts).
    """
    from scipy.optimize import nnls

    y = np.asarray(measured_per_step, dtype=float).reshape(-1)
    if len(y) != act.steps:
        raise OptionError(f"measured series has {len(y)} steps, the run has {act.steps}")
    cols, names, folded = [np.full(act.steps, act.tick_s * act.batch)], ["static_power_w"], []
    n_all = act.per_step["neuron_updates"] + act.per_step["neuron_updates_inactive"]
    # every neuron updates every step: active + inactive is constant, so only the active
    # count's variation can be told from static power (its value is then active − inactive)
    pair_constant = n_all.sum() > 0 and np.ptp(n_all) < 1e-9 * max(n_all.max(), 1)
    for k in KINDS:
        v = act.per_step[k]
        if v.sum() == 0:
            continue
        if np.ptp(v) < 1e-9 * max(v.max(), 1) or (pair_constant and k == "neuron_updates_inactive"):
            folded.append(k)
            continue
        cols.append(v)
        names.append(k)
    A = np.stack(cols, axis=1)
    scale = np.maximum(A.max(0), 1e-30)
    x, rnorm = nnls(A / scale, y)
    x = x / scale
    pred = A @ x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 1e-12 * float((y ** 2).sum()) else 1.0
    return {"values": dict(zip(names, map(float, x))), "folded_into_static": folded, "r2": r2,
            "residual_j": float(rnorm)}


def override_toml(fitted: dict, cores: int, chips: int, source: str) -> str:
    """A --hw override file holding the fitted constants."""
    v = fitted["values"]
    lines = ["# Energy constants fitted to a measured power trace by `nmc profile --measured`.",
             f"# {source}; R^2 = {fitted['r2']:.4f}" +
             (f"; folded into static power: {', '.join(fitted['folded_into_static'])}" if fitted["folded_into_static"] else ""),
             "[energy]"]
    src = f'fitted to {source}'
    static = v.get("static_power_w", 0.0)
    lines.append(f'static_chip_w = {{ value = {static / max(chips, 1):.9g}, unit = "W", grade = "user", '
                 f'source = "{src} (all static power attributed to chips)" }}')
    for k in KINDS:
        if k in v:
            key = CONSTANT[k].split(".", 1)[1]
            lines.append(f'{key} = {{ value = {v[k]:.9g}, unit = "J", grade = "user", source = "{src}" }}')
    return "\n".join(lines) + "\n"
