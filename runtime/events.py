"""Event arrays: the unit of I/O of the host runtime, in both directions.

An event array is a numpy structured array of :data:`EVENT_DTYPE`::

    t   int64    timestep index (0-based, relative to a run or a window)
    ch  uint32   channel: the row-major flat index within the node's shape
    v   float32  payload: 1.0 for a binary spike, the value for a graded event

Converters go to/from dense ``(T, *shape)`` arrays and NIR's recorded-data
format (``nir.EventData`` / ``nir.ValuedEventData`` / ``nir.TimeGriddedData``).
Nothing is ever dropped: an event outside the given steps or channels raises
:class:`~nmc.errors.EventFormatError` saying how many and which was first;
several events at the same (t, ch) are summed by :func:`to_dense`.

Wire format (:func:`pack` / :func:`unpack`, little-endian, fixed-size records)::

    binary events:  u32 t | u32 ch                 (8 bytes per event)
    graded events:  u32 t | u32 ch | f32 v         (12 bytes per event)

``t`` must fit in 32 bits on the wire (windows are short; times are relative).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nmc.errors import EventFormatError, InputFileError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("ch", "<u4"), ("v", "<f4")])
_WIRE_BIN = np.dtype([("t", "<u4"), ("ch", "<u4")])
_WIRE_GRADED = np.dtype([("t", "<u4"), ("ch", "<u4"), ("v", "<f4")])


def events(t, ch, v=None) -> np.ndarray:
    """Build an event array; validates lengths, signs and finiteness."""
    t = np.asarray(t).reshape(-1)
    ch = np.asarray(ch).reshape(-1)
    if len(t) != len(ch) or (v is not None and len(np.asarray(v).reshape(-1)) != len(t)):
        raise EventFormatError(f"t, ch and v have different lengths ({len(t)}, {len(ch)}"
                               f"{', ' + str(len(np.asarray(v).reshape(-1))) if v is not None else ''})")
    for name, a in (("t", t), ("ch", ch)):
        if a.size and a.dtype.kind == "f" and np.any(a != np.floor(a)):
            raise EventFormatError(f"field '{name}' must hold integers; first bad index "
                                   f"{int(np.argmax(a != np.floor(a)))}")
        if a.size and np.any(a < 0):
            raise EventFormatError(f"field '{name}' has negative values; first bad index {int(np.argmax(a < 0))}")
    out = np.zeros(len(t), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = t, ch
    if v is None:
        out["v"] = 1.0
    else:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.size and not np.all(np.isfinite(v)):
            raise EventFormatError(f"payload 'v' has non-finite values; first bad index "
                                   f"{int(np.argmax(~np.isfinite(v)))}")
        out["v"] = v
    return out


def sort_events(ev: np.ndarray) -> np.ndarray:
    return ev[np.lexsort((ev["ch"], ev["t"]))]


def validate(ev: np.ndarray, *, n_channels: int | None = None, steps: int | None = None, node: str | None = None):
    """Raise EventFormatError if any event lies outside [0, steps) × [0, n_channels)."""
    ev = np.asarray(ev)
    if ev.dtype != EVENT_DTYPE:
        raise EventFormatError(f"expected an event array of dtype {EVENT_DTYPE}, got {ev.dtype}", node=node,
                               hint="build one with nmc.runtime.events.events(t, ch, v)")
    for field, lim, what in (("t", steps, "timesteps"), ("ch", n_channels, "channels")):
        if lim is None or not len(ev):
            continue
        bad = (ev[field] >= lim) | (ev[field] < 0)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise EventFormatError(f"{int(bad.sum())} event(s) outside the {lim} {what}; first at index {i} "
                                   f"({field}={int(ev[field][i])})", node=node, limit=lim, actual=int(ev[field][i]),
                                   hint="nothing was dropped: fix the event addresses or the window length")
    return ev


def from_dense(x: np.ndarray, *, graded: bool | None = None) -> np.ndarray:
    """(T, *shape) array → events (row-major channels). Binary arrays (all values
    in {0, 1}) give v = 1; anything else is graded and keeps its value."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise EventFormatError("a dense event array needs a time axis: shape (T, *shape)")
    flat = x.reshape(x.shape[0], -1)
    t, ch = np.nonzero(flat)
    out = np.zeros(len(t), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = t, ch
    vals = flat[t, ch]
    if graded is None:
        graded = bool(np.any(vals != 1))
    out["v"] = vals if graded else 1.0
    return out


def to_dense(ev: np.ndarray, steps: int, shape, *, dtype=np.float32) -> np.ndarray:
    """Events → (steps, *shape); duplicates at the same (t, ch) are summed."""
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    validate(ev, n_channels=n, steps=steps)
    out = np.zeros((steps, n), dtype=np.float64)
    np.add.at(out, (ev["t"].astype(np.int64), ev["ch"].astype(np.int64)), ev["v"].astype(np.float64))
    return out.reshape(steps, *shape).astype(dtype)


def split_windows(ev: np.ndarray, window: int, steps: int | None = None) -> list[np.ndarray]:
    """Cut events into windows of ``window`` steps; times become window-relative."""
    if window < 1:
        raise EventFormatError(f"window must be ≥ 1, got {window}")
    ev = sort_events(ev)
    last = int(ev["t"].max()) + 1 if len(ev) else 0
    n = -(-(steps if steps is not None else last) // window)
    if steps is not None:
        validate(ev, steps=steps)
    idx = np.searchsorted(ev["t"], np.arange(n + 1) * window)
    out = []
    for w in range(n):
        part = ev[idx[w]:idx[w + 1]].copy()
        part["t"] -= w * window
        out.append(part)
    return out


def concat(windows: list[np.ndarray], window: int) -> np.ndarray:
    """Inverse of :func:`split_windows`: window-relative events → absolute times."""
    parts = []
    for w, part in enumerate(windows):
        p = np.asarray(part).copy()
        p["t"] += w * window
        parts.append(p)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=EVENT_DTYPE)


# ------------------------------------------------------------------- wire
def pack(ev: np.ndarray, *, graded: bool) -> bytes:
    """Events → little-endian records (layout in the module docstring)."""
    ev = validate(np.asarray(ev))
    if len(ev) and int(ev["t"].max()) >= 2 ** 32:
        raise EventFormatError("timestep does not fit the 32-bit wire field", hint="send window-relative times")
    rec = np.zeros(len(ev), dtype=_WIRE_GRADED if graded else _WIRE_BIN)
    rec["t"], rec["ch"] = ev["t"], ev["ch"]
    if graded:
        rec["v"] = ev["v"]
    elif len(ev) and np.any(ev["v"] != 1):
        raise EventFormatError("binary packing of events whose payload is not 1", hint="pack with graded=True")
    return rec.tobytes()


def unpack(buf: bytes, *, graded: bool) -> np.ndarray:
    """Little-endian records → events; a bad length or payload raises EventFormatError."""
    dt = _WIRE_GRADED if graded else _WIRE_BIN
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise EventFormatError(f"expected bytes, got {type(buf).__name__}")
    if len(buf) % dt.itemsize:
        raise EventFormatError(f"{len(buf)} bytes is not a whole number of {dt.itemsize}-byte event records; "
                               f"trailing bytes start at offset {len(buf) - len(buf) % dt.itemsize}")
    rec = np.frombuffer(bytes(buf), dtype=dt)
    out = np.zeros(len(rec), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = rec["t"], rec["ch"]
    if graded:
        if len(rec) and not np.all(np.isfinite(rec["v"])):
            i = int(np.argmax(~np.isfinite(rec["v"])))
            raise EventFormatError(f"non-finite payload in record {i} (byte offset {i * dt.itemsize})")
        out["v"] = rec["v"]
    else:
        out["v"] = 1.0
    return out


# -------------------------------------------------------------- NIR data
def to_nir_event_data(ev: np.ndarray, n_neurons: int, dt: float, *, graded: bool | None = None,
                      t_max: float | None = None):
    import nir

    ev = sort_events(validate(ev, n_channels=n_neurons))
    graded = bool(np.any(ev["v"] != 1)) if graded is None else graded
    time = ev["t"].astype(np.float64) * dt
    tm = float(t_max) if t_max is not None else (float(time.max()) + dt if len(ev) else 0.0)
    idx = ev["ch"].astype(np.int64)
    if graded:
        return nir.ValuedEventData(idx=idx, time=time, value=ev["v"].astype(np.float64), n_neurons=n_neurons, t_max=tm)
    return nir.EventData(idx=idx, time=time, n_neurons=n_neurons, t_max=tm)


def from_nir_event_data(d, dt: float, *, snap: bool = False) -> np.ndarray:
    time = np.asarray(d.time, dtype=np.float64)
    steps = np.rint(time / dt)
    off = np.abs(steps * dt - time)
    if len(time) and not snap and np.any(off > 1e-6 * dt):
        i = int(np.argmax(off > 1e-6 * dt))
        raise EventFormatError(f"event {i} at t={time[i]} s is not on the dt={dt} s grid",
                               hint="pass snap=True to round times to the nearest step")
    v = getattr(d, "value", None)
    return events(steps.astype(np.int64), np.asarray(d.idx, dtype=np.int64), v)


def to_time_gridded(x: np.ndarray, dt: float):
    import nir

    return nir.TimeGriddedData(data=np.asarray(x), dt=dt)


def from_time_gridded(d) -> np.ndarray:
    return np.asarray(d.data)


# -------------------------------------------------------------------- npz
def load_inputs_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz of named arrays without unpickling (object arrays refused)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError("input file not found", path=p, hint="check the path")
    if p.is_dir():
        raise InputFileError("is a directory, expected an .npz file", path=p)
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        msg = "holds pickled object arrays, which nmc refuses to load" if "pickle" in str(e) else f"unreadable ({e})"
        raise InputFileError(msg, path=p, hint="save plain numeric arrays with numpy.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputFileError(f"not a readable .npz file ({type(e).__name__})", path=p,
                             hint="write it with numpy.savez(path, input_node=array, ...)") from None


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Deterministic .npz (sorted keys, fixed zip timestamps, no compression)."""
    from nmc.bundle import npz_bytes

    Path(path).write_bytes(npz_bytes(arrays))
