"""Event arrays: the unit of I/O of the host runtime, in both directions.

The event array
---------------
An event array is a 1-D numpy structured array of :data:`EVENT_DTYPE`::

    field  dtype     meaning
    t      <i8       timestep index, 0-based (relative to a run or to a window), >= 0
    ch     <u4       channel: row-major flat index within the node's shape,
                     i.e. numpy.ravel_multi_index(index, shape)
    v      <f4       payload: 1.0 for a binary spike, the value of a graded event;
                     always finite

Events need not be sorted (:func:`sort_events` orders them by (t, ch)) and the
same (t, ch) may occur more than once: :func:`to_dense` sums duplicates, so a
repeated binary spike becomes a count of 2 rather than vanishing.

Nothing is ever dropped silently. Every conversion checks its input and raises
:class:`~nmc.errors.EventFormatError` (or :class:`~nmc.errors.ShapeError` for
array shapes) naming the field, how many events are bad and the first one; an
event outside the steps or channels a conversion was given is an error, never
clipped.

Binary and graded
-----------------
An array of events is *binary* when every payload is exactly 1.0, otherwise
*graded*. Dense arrays follow the same rule: a dense array whose non-zero
entries are all 1 (bool arrays included) is binary; any other value (0.5, -1,
a spike count of 2) makes it graded and the value is kept as the payload. So a
count array round-trips exactly (one event with ``v = count``) instead of being
expanded into repeated events. Asking for ``graded=False`` on data that is not
binary raises instead of discarding the payloads.

Wire format (AER records, :func:`pack` / :func:`unpack`)
--------------------------------------------------------
Little-endian, fixed-size records, no header, no padding, records back to back
in the order of the array (one TCP frame carries the event count itself)::

    binary record  (BINARY_RECORD_SIZE = 8 bytes)
        offset 0  u32  t    timestep, window-relative (absolute within the window, not a delta)
        offset 4  u32  ch   flat channel index
    graded record  (GRADED_RECORD_SIZE = 12 bytes)
        offset 0  u32  t
        offset 4  u32  ch
        offset 8  f32  v    IEEE-754 binary32 payload, finite

``t`` is absolute within the window rather than a delta from the previous
record so that records are independent (any order, any subset can be checked
or split) at no cost in size with fixed 32-bit fields. :func:`pack` refuses a
``t`` beyond 2**32 - 1 (send window-relative times) and binary packing of a
payload other than 1.0; :func:`unpack` refuses a length that is not a whole
number of records, non-finite payloads and, when limits are given, out-of-range
``t``/``ch``, naming the byte offset of the first bad record. :func:`unpack`
reads a bytearray or memoryview in place (no copy of the frame).

Speed
-----
:func:`to_dense`, :func:`from_dense`, :func:`pack` and :func:`unpack` run
their checks (and the two dense conversions their whole work) as one
compiled pass (:mod:`nmc.runtime.event_kernels`, numba) when every event is
acceptable; otherwise the numpy code below runs and raises as described.
Same results either way. :func:`warm_kernels` compiles them ahead (a server
does so before it listens).

NIR recorded data
-----------------
:func:`to_nir_event_data` / :func:`from_nir_event_data` convert to and from
``nir.EventData`` / ``nir.ValuedEventData`` (fields ``idx``, ``time`` of shape
(n_samples, n_events), padded with ``idx = -1`` / ``time = inf``; ``n_neurons``;
``t_max``; ``value``), with ``time = t * dt`` seconds. :func:`to_time_gridded` /
:func:`from_time_gridded` do the same for ``nir.TimeGriddedData`` (data of shape
(n_samples, T, n_neurons)). :func:`save_nir_data` / :func:`load_nir_data` write
and read a whole ``{node: events}`` dict as a ``nir.NIRGraphData`` HDF5 file.

npz files
---------
:func:`load_inputs_npz` reads user inputs without ever unpickling;
:func:`save_npz` writes byte-identical files for identical arrays.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from nmc.errors import EventFormatError, InputFileError, ShapeError
from nmc.filebytes import npz_bytes

__all__ = [
    "EVENT_DTYPE", "BINARY_RECORD_SIZE", "GRADED_RECORD_SIZE", "record_size",
    "events", "empty", "is_graded", "sort_events", "validate",
    "from_dense", "to_dense", "split_windows", "concat", "join",
    "pack", "unpack",
    "to_nir_event_data", "from_nir_event_data", "to_time_gridded", "from_time_gridded",
    "save_nir_data", "load_nir_data",
    "load_inputs_npz", "save_npz",
]

#: dtype of an event array: (t: int64 timestep, ch: uint32 flat channel, v: float32 payload).
EVENT_DTYPE = np.dtype([("t", "<i8"), ("ch", "<u4"), ("v", "<f4")])

_WIRE_BIN = np.dtype([("t", "<u4"), ("ch", "<u4")])
_WIRE_GRADED = np.dtype([("t", "<u4"), ("ch", "<u4"), ("v", "<f4")])
#: bytes per binary wire record (u32 t, u32 ch).
BINARY_RECORD_SIZE = _WIRE_BIN.itemsize
#: bytes per graded wire record (u32 t, u32 ch, f32 v).
GRADED_RECORD_SIZE = _WIRE_GRADED.itemsize

_U32_MAX = 2 ** 32 - 1
_I64_MAX = 2 ** 63 - 1
_GRID_TOL = 1e-6  # a NIR time within this fraction of dt of a grid point is on the grid


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_FAST_FLOATS = (_F32, _F64)


def _fast_float(dtype: np.dtype) -> bool:
    """float32 or float64 in native order (the compiled paths); identity first (the common case)."""
    return dtype is _F64 or dtype is _F32 or dtype in _FAST_FLOATS
_EK = None


def _kernels():
    """:mod:`nmc.runtime.event_kernels` (imported on first use: numba), or False without numba."""
    global _EK
    if _EK is None:
        from . import event_kernels

        _EK = event_kernels if event_kernels.available() else False
    return _EK


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the conversions' fast paths now, for every array
    layout they meet (field views; records read in place at any byte offset), so that a server's
    first window does not wait for the compiler. A no-op without numba."""
    if not _kernels():
        return
    e = events([0, 1], [1, 0], [1.0, 0.5])
    for x in (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float64)):
        from_dense(x)
        x[0, 1] = 1.0
        from_dense(x, graded=False)
    for dtype in _FAST_FLOATS:
        to_dense(e, 2, (2,), dtype=dtype)
    window_events(e, 2, 2)
    binary = events([0, 1], [1, 0], [1.0, 1.0])
    from . import protocol as P

    for k in (1, 2):   # whole frames: tables packed and decoded in one pass (one window, a batch)
        for e_ in (binary, e, binary[:1], empty()):
            parts, flags, _ = P.pack_tables([e_, e_], k, 2, [2, 2])
            payload = b"".join(bytes(x) for x in parts)
            for buf in (payload, bytearray(payload)):   # read-only and writable buffers
                P.unpack_tables(buf, flags, 2, [2, 2], 2, absolute=k == 2).window(0)
    for graded in (False, True):
        for k in (1, 2):      # one record (its field views are contiguous) and several (strided views)
            wire = pack((e if graded else binary)[:k], graded=graded)
            for skew in (0, 1):   # aligned and unaligned records
                unpack(memoryview(bytearray(skew) + wire)[skew:], graded=graded, steps=2, n_channels=2)


def record_size(graded: bool) -> int:
    """Bytes per wire record: 12 if ``graded`` else 8."""
    return GRADED_RECORD_SIZE if graded else BINARY_RECORD_SIZE


# ----------------------------------------------------------------- helpers
def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _bad(mask: np.ndarray, what: str, *, node=None, hint=None, values=None, limit=None, offset_of=None):
    """Raise EventFormatError for the events selected by ``mask`` (count + first)."""
    i = _first(mask)
    n = int(np.count_nonzero(mask))
    actual = None
    detail = f"first at index {i}"
    if values is not None:
        actual = values[i].item()
        detail += f" ({actual})"
    if offset_of is not None:
        detail += f", byte offset {offset_of(i)}"
    raise EventFormatError(f"{n} event(s) {what}; {detail}", node=node, hint=hint, limit=limit, actual=actual)


def _check_dt(dt, node=None) -> float:
    try:
        d = float(dt)
    except (TypeError, ValueError):
        d = float("nan")
    if not (math.isfinite(d) and d > 0):
        raise EventFormatError(f"dt must be a positive finite number of seconds, got {dt!r}", node=node,
                               hint="pass the timestep length, e.g. dt=1e-3")
    return d


def _shape(shape, node=None) -> tuple[int, ...]:
    if type(shape) is tuple and all(type(x) is int and x >= 0 for x in shape):   # the common case, checked
        return shape
    try:
        s = (int(shape),) if np.isscalar(shape) else tuple(int(x) for x in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"bad node shape {shape!r}", node=node, hint="pass an int or a tuple of ints") from None
    if any(x < 0 for x in s):
        raise ShapeError(f"negative dimension in node shape {s}", node=node)
    return s


def _count(n, what: str, node=None) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise EventFormatError(f"{what} must be a non-negative integer, got {n!r}", node=node)
    return int(n)


def _index_field(name: str, a, node, hi: int) -> np.ndarray:
    """Validate an integer-valued field (t or ch) of :func:`events`; returns int64."""
    a = np.asarray(a)
    if a.ndim > 1:
        raise ShapeError(f"field '{name}' must be 1-D, got shape {a.shape}", node=node)
    a = a.reshape(-1)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "biuf":
        raise EventFormatError(f"field '{name}' must be integers, got dtype {a.dtype}", node=node)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.floor(a))
        if np.any(bad):
            _bad(bad, f"with a non-integer or non-finite '{name}'", node=node, values=a)
    if a.dtype.kind != "u" and np.any(a < 0):
        _bad(a < 0, f"with a negative '{name}'", node=node, values=a)
    if np.any(a > hi):
        _bad(a > hi, f"with '{name}' beyond {hi}", node=node, values=a, limit=hi)
    return a.astype(np.int64)


# ---------------------------------------------------------------- building
def events(t, ch, v=None, *, node: str | None = None) -> np.ndarray:
    """Build an event array from per-event timesteps, channels and optional payloads.

    ``t`` and ``ch`` are 1-D integer-valued array-likes of equal length (floats
    holding whole numbers are accepted); ``v`` is None (binary: every payload
    1.0), a scalar (broadcast) or an array of the same length. Raises
    EventFormatError naming the field and the first bad index for negative or
    non-integer t/ch, ch beyond 2**32 - 1, payloads that are not finite in
    float32, or a length mismatch.
    """
    t = _index_field("t", t, node, _I64_MAX)
    ch = _index_field("ch", ch, node, _U32_MAX)
    if len(t) != len(ch):
        raise EventFormatError(f"fields 't' and 'ch' have different lengths ({len(t)} and {len(ch)}); "
                               f"first index without a partner: {min(len(t), len(ch))}", node=node)
    out = np.empty(len(t), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = t, ch
    if v is None:
        out["v"] = 1.0
        return out
    va = np.asarray(v)
    if va.dtype.kind not in "biuf":
        raise EventFormatError(f"field 'v' must be numeric, got dtype {va.dtype}", node=node)
    if va.ndim > 1:
        raise ShapeError(f"field 'v' must be 1-D or a scalar, got shape {va.shape}", node=node)
    if va.ndim == 1 and len(va) != len(t):
        raise EventFormatError(f"field 'v' has {len(va)} payloads for {len(t)} events; first index without a "
                               f"partner: {min(len(va), len(t))}", node=node)
    with np.errstate(over="ignore", invalid="ignore"):
        v32 = np.broadcast_to(va, (len(t),)).astype(np.float32)
    bad = ~np.isfinite(v32)
    if np.any(bad):
        _bad(bad, "with a payload 'v' that is not finite in float32", node=node,
             values=np.broadcast_to(va, (len(t),)))
    out["v"] = v32
    return out


def empty() -> np.ndarray:
    """An event array with no events."""
    return np.zeros(0, dtype=EVENT_DTYPE)


def is_graded(ev: np.ndarray) -> bool:
    """True when any payload differs from 1.0 (the array needs graded records)."""
    ev = validate(ev)
    return bool(np.any(ev["v"] != 1.0))


def validate(ev: np.ndarray, *, n_channels: int | None = None, steps: int | None = None,
             node: str | None = None) -> np.ndarray:
    """Check an event array and return it unchanged.

    Checks the dtype (exactly :data:`EVENT_DTYPE`), 1-D shape, ``t >= 0``, finite
    payloads and, when given, ``t < steps`` and ``ch < n_channels``. Raises
    EventFormatError with the number of bad events and the first one.
    """
    if not isinstance(ev, np.ndarray) or ev.dtype != EVENT_DTYPE:
        got = ev.dtype if isinstance(ev, np.ndarray) else type(ev).__name__
        raise EventFormatError(f"expected an event array of dtype {EVENT_DTYPE}, got {got}", node=node,
                               hint="build one with nmc.runtime.events.events(t, ch, v)")
    if ev.ndim != 1:
        raise ShapeError(f"an event array must be 1-D, got shape {ev.shape}", node=node)
    if not len(ev):
        return ev
    if np.any(ev["t"] < 0):
        _bad(ev["t"] < 0, "with a negative timestep 't'", node=node, values=ev["t"])
    if not np.all(np.isfinite(ev["v"])):
        _bad(~np.isfinite(ev["v"]), "with a non-finite payload 'v'", node=node, values=ev["v"])
    hint = "nothing was dropped: fix the event addresses, the node shape or the number of steps"
    if steps is not None:
        steps = _count(steps, "steps", node)
        if np.any(ev["t"] >= steps):
            _bad(ev["t"] >= steps, f"outside the {steps} timesteps (t >= {steps})", node=node, values=ev["t"],
                 limit=steps - 1, hint=hint)
    if n_channels is not None:
        n_channels = _count(n_channels, "n_channels", node)
        if np.any(ev["ch"] >= n_channels):
            _bad(ev["ch"] >= n_channels, f"outside the {n_channels} channels (ch >= {n_channels})", node=node,
                 values=ev["ch"], limit=n_channels - 1, hint=hint)
    return ev


def window_events(ev, steps: int, n_channels: int, *, node: str | None = None) -> tuple[np.ndarray, bool]:
    """``(events, graded)`` of one window about to be sent: :func:`validate` with ``steps`` and
    ``n_channels`` (one compiled pass when it accepts), and whether any payload is not 1.0 (graded
    records needed)."""
    if isinstance(ev, np.ndarray) and ev.dtype == EVENT_DTYPE and ev.ndim == 1 and (k := _kernels()):
        kind = k.window_kind(ev, steps, n_channels)
        if kind:
            return ev, kind == 2
    ev = validate(np.asarray(ev), n_channels=n_channels, steps=steps, node=node)
    return ev, bool(len(ev) and np.any(ev["v"] != 1.0))


def sort_events(ev: np.ndarray) -> np.ndarray:
    """A copy ordered by (t, ch); events at the same (t, ch) keep their order (stable)."""
    ev = validate(ev)
    return ev[np.lexsort((ev["ch"], ev["t"]))]


# ------------------------------------------------------------------- dense
def from_dense(x: np.ndarray, *, graded: bool | None = None, node: str | None = None) -> np.ndarray:
    """Dense ``(T, *shape)`` array → events sorted by (t, ch).

    Channels are row-major flat indices over ``shape`` (a 1-D ``x`` is one
    channel). Zeros are no event. ``graded=None`` detects: binary when every
    non-zero value is 1 (``v = 1.0``), else graded and every non-zero value is
    the payload, counts > 1 included (one event with ``v = count``, not
    ``count`` events, so :func:`to_dense` gives the array back exactly).
    ``graded=False`` raises if a non-zero value is not 1; ``graded=True`` keeps
    values as they are. Non-finite values raise.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise EventFormatError(f"a dense event array must be numeric or bool, got dtype {x.dtype}", node=node)
    if x.ndim < 1:
        raise ShapeError("a dense event array needs a time axis: shape (T, *shape), got a scalar", node=node)
    T = x.shape[0]
    n = math.prod(x.shape[1:])   # exact (Python ints), and without np.prod's array round trip
    if n - 1 > _U32_MAX:
        raise ShapeError(f"{n} channels do not fit the 32-bit channel field", node=node, limit=_U32_MAX + 1, actual=n)
    flat = x.reshape(T, n)
    if _fast_float(flat.dtype) and (k := _kernels()):   # one compiled pass; None: the checks below raise
        out = k.nonzero_events(np.ascontiguousarray(flat), graded is False, EVENT_DTYPE)
        if out is not None:
            return out
    if x.dtype.kind == "f" and not np.all(np.isfinite(flat)):
        t, c = np.nonzero(~np.isfinite(flat))
        raise EventFormatError(f"{len(t)} non-finite value(s) in the dense array; first at t={t[0]}, ch={c[0]}",
                               node=node, actual=flat[t[0], c[0]].item())
    t, c = np.nonzero(flat)
    out = np.empty(len(t), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = t, c
    if x.dtype.kind == "b":
        out["v"] = 1.0
        return out
    vals = flat[t, c]
    not_one = vals != 1
    if graded is False and np.any(not_one):
        i = _first(not_one)
        raise EventFormatError(f"{int(not_one.sum())} value(s) are not 0 or 1 in a binary array; first at "
                               f"t={t[i]}, ch={c[i]} ({vals[i].item()})", node=node, actual=vals[i].item(),
                               hint="pass graded=True (or None) to keep the values as payloads")
    with np.errstate(over="ignore"):
        v32 = vals.astype(np.float32)
    if not np.all(np.isfinite(v32)):
        i = _first(~np.isfinite(v32))
        raise EventFormatError(f"value at t={t[i]}, ch={c[i]} ({vals[i].item()}) overflows the float32 payload",
                               node=node, actual=vals[i].item())
    out["v"] = v32
    return out


def to_dense(ev: np.ndarray, steps: int, shape, *, graded: bool | None = None, dtype=np.float32,
             node: str | None = None) -> np.ndarray:
    """Events → dense ``(steps, *shape)`` array of ``dtype``.

    Payloads of events at the same (t, ch) are summed (in float64), so nothing
    is lost. ``graded=False`` requires every payload to be 1.0 (the result is a
    spike count per step); ``None``/``True`` use the payloads. Events with
    ``t >= steps`` or ``ch >= prod(shape)`` raise EventFormatError naming how
    many and the first; so does a result that ``dtype`` cannot hold exactly
    (e.g. a count of 2 into ``bool``, 0.5 into an integer type).
    """
    shape = _shape(shape, node)
    steps = _count(steps, "steps", node)
    n = math.prod(shape)
    dtype = dtype if dtype is _F64 else np.dtype(dtype)
    if (_fast_float(dtype) and graded is not False and isinstance(ev, np.ndarray)
            and (ev.dtype is EVENT_DTYPE or ev.dtype == EVENT_DTYPE) and ev.ndim == 1
            and (k := _kernels())):   # one compiled pass; None: the checks below raise
        acc = k.to_dense_f64(ev["t"], ev["ch"], ev["v"], steps, n)
        if acc is not None and dtype is _F64:
            return acc.reshape((steps,) + shape)
        if acc is not None:
            with np.errstate(over="ignore"):
                out = acc.astype(dtype, copy=False)
            if dtype == np.float64 or np.all(np.isfinite(out)):
                return out.reshape((steps,) + shape)
    ev = validate(ev, n_channels=n, steps=steps, node=node)
    if graded is False and len(ev) and np.any(ev["v"] != 1.0):
        _bad(ev["v"] != 1.0, "with a payload other than 1.0 in binary data", node=node, values=ev["v"],
             hint="pass graded=True (or None) to keep the payloads")
    flat = ev["t"] * n + ev["ch"].astype(np.int64)
    acc = np.bincount(flat, weights=ev["v"].astype(np.float64), minlength=steps * n).astype(np.float64)
    if dtype.kind not in "biuf":
        raise EventFormatError(f"to_dense needs a numeric or bool dtype, got {dtype}", node=node)
    with np.errstate(over="ignore", invalid="ignore"):
        out = acc.astype(dtype)
        lossy = (out != acc) if dtype.kind in "biu" else ~np.isfinite(out)
    if np.any(lossy):
        i = _first(lossy)
        raise EventFormatError(f"{int(lossy.sum())} summed value(s) cannot be stored as {dtype}; first at "
                               f"t={i // max(n, 1)}, ch={i % max(n, 1)} ({acc[i]})", node=node, actual=float(acc[i]),
                               hint="use a float dtype (the default float32)")
    return out.reshape((steps,) + shape)


# ----------------------------------------------------------------- windows
def split_windows(ev: np.ndarray, window: int, steps: int | None = None, *,
                  node: str | None = None) -> list[np.ndarray]:
    """Cut events into consecutive windows of ``window`` steps; times become window-relative.

    Returns ``ceil(steps / window)`` arrays (``steps`` defaults to the last
    event's t + 1), each sorted by (t, ch); windows without events are empty
    arrays, so window ``w`` is always element ``w``. With ``steps`` given, an
    event at ``t >= steps`` raises.
    """
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < 1:
        raise EventFormatError(f"window must be an integer >= 1, got {window!r}", node=node)
    ev = sort_events(validate(ev, steps=steps, node=node))
    total = (int(ev["t"][-1]) + 1 if len(ev) else 0) if steps is None else int(steps)
    n = -(-total // window)
    bounds = np.searchsorted(ev["t"], np.arange(1, n) * window)
    ev["t"] -= (ev["t"] // window) * window
    return np.split(ev, bounds) if n else []


def concat(parts: Iterable[np.ndarray], window: int | None = None, *, node: str | None = None) -> np.ndarray:
    """Join event arrays.

    With ``window``: the inverse of :func:`split_windows`; part ``w`` holds
    window-relative times (each must be < ``window``) and is shifted by
    ``w * window``. Without: a plain concatenation (times unchanged).
    """
    if window is not None and (isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer))
                               or window < 1):
        raise EventFormatError(f"window must be an integer >= 1, got {window!r}", node=node)
    try:
        parts = list(parts)
    except TypeError:
        raise EventFormatError(f"expected a list of event arrays, got {type(parts).__name__}", node=node) from None
    for w, p in enumerate(parts):
        try:
            validate(p, steps=window, node=node)
        except EventFormatError as e:
            raise EventFormatError(f"part {w}: {e.message}", node=node, limit=e.limit, actual=e.actual,
                                   hint=e.hint) from None
    if not parts:
        return empty()
    out = join(parts)
    if window is not None:   # one slice per window, not per event
        a = 0
        for w, p in enumerate(parts):
            out["t"][a:a + len(p)] += w * window
            a += len(p)
    return out


def join(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Event arrays (checked: :data:`EVENT_DTYPE`, 1-D) one after the other in a new array, times
    unchanged. Through their bytes: numpy's ``concatenate`` of structured arrays promotes the
    field types array by array (tens of µs each)."""
    if not parts:
        return empty()
    raw = [(p if p.flags.c_contiguous else np.ascontiguousarray(p)).view(np.uint8) for p in parts]
    return np.concatenate(raw).view(EVENT_DTYPE)


# -------------------------------------------------------------------- wire
def pack(ev: np.ndarray, *, graded: bool, node: str | None = None) -> bytes:
    """Events → little-endian AER records (layout in the module docstring).

    ``graded=False`` writes 8-byte records and refuses payloads other than 1.0;
    ``graded=True`` writes 12-byte records with the float32 payload. A ``t``
    beyond 2**32 - 1 raises (send window-relative times).
    """
    if isinstance(ev, np.ndarray) and ev.dtype == EVENT_DTYPE and ev.ndim == 1 and (k := _kernels()):
        wire = k.encode(ev, graded)   # checks and records in one compiled pass; None: the checks below raise
        if wire is not None:
            return wire
    ev = validate(ev, node=node)
    if len(ev) and np.any(ev["t"] > _U32_MAX):
        _bad(ev["t"] > _U32_MAX, "with a timestep that does not fit the 32-bit wire field", node=node,
             values=ev["t"], limit=_U32_MAX, hint="send window-relative times")
    if not graded and len(ev) and np.any(ev["v"] != 1.0):
        _bad(ev["v"] != 1.0, "with a payload other than 1.0 cannot be packed as binary", node=node,
             values=ev["v"], hint="pack with graded=True")
    rec = np.empty(len(ev), dtype=_WIRE_GRADED if graded else _WIRE_BIN)
    rec["t"], rec["ch"] = ev["t"], ev["ch"]
    if graded:
        rec["v"] = ev["v"]
    return rec.tobytes()


def unpack(buf, *, graded: bool, n_channels: int | None = None, steps: int | None = None,
           node: str | None = None) -> np.ndarray:
    """Little-endian AER records → events (layout in the module docstring).

    ``buf`` is bytes, bytearray or memoryview. Raises EventFormatError, with the
    byte offset, for a length that is not a whole number of records, a
    non-finite payload, or (when given) ``t >= steps`` / ``ch >= n_channels``.
    Never raises anything else for any byte string.
    """
    if isinstance(buf, bytes):
        data = buf
    elif isinstance(buf, (bytearray, memoryview)):
        mv = memoryview(buf)
        data = mv.cast("B") if mv.c_contiguous else mv.tobytes()   # zero-copy: the records are read in place
    else:
        raise EventFormatError(f"expected bytes, got {type(buf).__name__}", node=node)
    dt = _WIRE_GRADED if graded else _WIRE_BIN
    size = dt.itemsize
    if len(data) % size:
        whole = len(data) - len(data) % size
        raise EventFormatError(f"{len(data)} bytes is not a whole number of {size}-byte "
                               f"{'graded' if graded else 'binary'} event records; the partial record starts at "
                               f"byte offset {whole}", node=node,
                               hint="check the graded flag and the record count of the frame")
    rec = np.frombuffer(data, dtype=dt)

    def off(i):
        return i * size

    steps = None if steps is None else _count(steps, "steps", node)
    n_channels = None if n_channels is None else _count(n_channels, "n_channels", node)
    if len(rec) and (k := _kernels()):   # checks and conversion in one compiled pass; None: the checks below raise
        out = k.decode(data, graded, steps, n_channels, EVENT_DTYPE)
        if out is not None:
            return out
    out = np.empty(len(rec), dtype=EVENT_DTYPE)
    out["t"], out["ch"] = rec["t"], rec["ch"]
    if graded:
        bad = ~np.isfinite(rec["v"])
        if np.any(bad):
            _bad(bad, "with a non-finite payload", node=node, values=rec["v"], offset_of=off)
        out["v"] = rec["v"]
    else:
        out["v"] = 1.0
    if steps is not None:
        steps = _count(steps, "steps", node)
        if np.any(out["t"] >= steps):
            _bad(out["t"] >= steps, f"outside the {steps} timesteps", node=node, values=out["t"],
                 limit=steps - 1, offset_of=off)
    if n_channels is not None:
        n_channels = _count(n_channels, "n_channels", node)
        if np.any(out["ch"] >= n_channels):
            _bad(out["ch"] >= n_channels, f"outside the {n_channels} channels", node=node, values=out["ch"],
                 limit=n_channels - 1, offset_of=off)
    return out


# ---------------------------------------------------------------- NIR data
def _grid_steps(t_max: float, dt: float) -> int:
    """Number of grid steps s with s*dt < t_max (tolerant to float rounding)."""
    x = t_max / dt - _GRID_TOL
    return max(0, math.ceil(x)) if math.isfinite(x) else 2 ** 63


def to_nir_event_data(ev, n_neurons: int, dt: float, *, graded: bool | None = None, steps: int | None = None,
                      node: str | None = None):
    """Events → ``nir.EventData`` (binary) or ``nir.ValuedEventData`` (graded).

    ``ev`` is one event array (one sample) or a list of them (samples). The
    result has ``idx`` (int64) and ``time`` (float64, ``t * dt`` seconds) of
    shape (n_samples, max events), each sample sorted by (t, ch) and padded
    with ``idx = -1``, ``time = inf`` (``value = 0``); ``t_max = steps * dt``
    (default: the last event's t + 1). ``graded=None`` picks ValuedEventData
    when any payload is not 1.0; ``graded=False`` refuses such payloads.
    """
    import nir

    dt = _check_dt(dt, node)
    n_neurons = _count(n_neurons, "n_neurons", node)
    try:
        samples = [ev] if isinstance(ev, np.ndarray) else list(ev)
    except TypeError:
        raise EventFormatError(f"expected an event array or a list of them, got {type(ev).__name__}",
                               node=node) from None
    samples = [sort_events(validate(s, n_channels=n_neurons, steps=steps, node=node)) for s in samples]
    allv = np.concatenate([s["v"] for s in samples]) if samples else np.zeros(0, np.float32)
    if graded is None:
        graded = bool(np.any(allv != 1.0))
    elif not graded and np.any(allv != 1.0):
        _bad(allv != 1.0, "with a payload other than 1.0 cannot be written as nir.EventData", node=node,
             values=allv, hint="pass graded=True to write nir.ValuedEventData")
    lens = np.array([len(s) for s in samples], dtype=np.int64)
    S, width = len(samples), int(lens.max()) if len(samples) else 0
    idx = np.full((S, width), -1, dtype=np.int64)
    time = np.full((S, width), np.inf, dtype=np.float64)
    value = np.zeros((S, width), dtype=np.float64)
    if S and width:
        row = np.repeat(np.arange(S), lens)
        col = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        cat = np.concatenate(samples)
        idx[row, col] = cat["ch"]
        time[row, col] = cat["t"] * dt
        value[row, col] = cat["v"]
    if steps is None:
        last = max((int(s["t"][-1]) for s in samples if len(s)), default=-1)
        steps = last + 1
    t_max = float(steps) * dt
    if graded:
        return nir.ValuedEventData(idx=idx, time=time, value=value, n_neurons=n_neurons, t_max=t_max)
    return nir.EventData(idx=idx, time=time, n_neurons=n_neurons, t_max=t_max)


def _nir_sample_events(idx, time, value, n_neurons, t_max, dt, snap, node, sample) -> np.ndarray:
    where = f"sample {sample}: " if sample is not None else ""
    keep = idx != -1
    idx, time = idx[keep], time[keep]
    value = value[keep] if value is not None else None
    if idx.dtype.kind == "f":
        badi = ~np.isfinite(idx) | (idx != np.floor(idx))
        if np.any(badi):
            _bad(badi, f"{where}with a non-integer neuron index 'idx'", node=node, values=idx)
    if np.any((idx < 0) | (idx >= n_neurons)):
        badi = (idx < 0) | (idx >= n_neurons)
        _bad(badi, f"{where}with 'idx' outside 0..{n_neurons - 1} (and not the padding -1)", node=node,
             values=idx, limit=n_neurons - 1)
    eps = np.finfo(time.dtype if time.dtype.kind == "f" else np.float64).eps
    time = time.astype(np.float64)
    if np.any(~np.isfinite(time) | (time < 0)):
        _bad(~np.isfinite(time) | (time < 0), f"{where}with a negative or non-finite 'time'", node=node,
             values=time)
    x = time / dt
    if np.any(x > 2.0 ** 62):
        _bad(x > 2.0 ** 62, f"{where}with a 'time' too large for a 64-bit step index", node=node, values=time)
    steps = np.rint(x)
    # on the grid within 1e-6*dt, or within the float precision of the stored time itself
    tol = np.maximum(_GRID_TOL, 4 * eps * np.abs(x))
    off = np.abs(x - steps) > tol
    if np.any(off):
        if not snap:
            _bad(off, f"{where}with a 'time' not on the dt={dt} s grid", node=node, values=time,
                 hint="pass snap=True to put each event in the step that contains it (floor, as nir does)")
        steps = np.where(off, np.floor(x + _GRID_TOL), steps)
    n_steps = _grid_steps(t_max, dt)
    if np.any(steps >= n_steps):
        _bad(steps >= n_steps, f"{where}at or after t_max={t_max} s ({n_steps} steps of {dt} s)", node=node,
             values=time, limit=t_max, hint="the recording's t_max is too small for its events")
    return events(steps.astype(np.int64), idx.astype(np.int64), value, node=node)


def from_nir_event_data(d, dt: float, *, snap: bool = False, batched: bool = False, node: str | None = None):
    """``nir.EventData`` / ``nir.ValuedEventData`` → events (``t = time / dt``).

    Padding entries (``idx == -1``) are skipped. A time must lie within
    1e-6·dt of a grid point ``s * dt`` (or within the float precision of the
    stored time); otherwise EventFormatError, unless ``snap=True``, which puts
    each off-grid event in the step whose interval ``[s*dt, (s+1)*dt)`` holds
    it (floor, the same rule as ``nir``'s ``to_time_gridded``). Indices outside
    ``0..n_neurons-1``, negative or non-finite times and times at or after
    ``t_max`` raise. With ``batched=False`` the data must hold one sample (or
    be 1-D) and one event array is returned; with ``batched=True`` a list,
    one per sample.
    """
    import nir

    if not isinstance(d, nir.EventData):
        raise EventFormatError(f"expected nir.EventData or nir.ValuedEventData, got {type(d).__name__}", node=node)
    dt = _check_dt(dt, node)
    try:
        idx = np.asarray(d.idx)
        time = np.asarray(d.time)
        value = np.asarray(d.value) if isinstance(d, nir.ValuedEventData) else None
        n_neurons = int(d.n_neurons)
        t_max = float(d.t_max)
    except (TypeError, ValueError) as e:
        raise EventFormatError(f"malformed NIR event data ({e})", node=node) from None
    for name, a in (("idx", idx), ("time", time), ("value", value)):
        if a is not None and a.dtype.kind not in "biuf":
            raise EventFormatError(f"NIR event field '{name}' must be numeric, got dtype {a.dtype}", node=node)
    if idx.ndim not in (1, 2) or time.shape != idx.shape or (value is not None and value.shape != idx.shape):
        raise ShapeError(f"NIR event fields must share a (n_samples, n_events) shape; idx {idx.shape}, "
                         f"time {time.shape}" + (f", value {value.shape}" if value is not None else ""), node=node)
    if not math.isfinite(t_max) or t_max < 0 or n_neurons < 0:
        raise EventFormatError(f"bad NIR recording header (n_neurons={n_neurons}, t_max={t_max})", node=node)
    if idx.ndim == 1:
        idx, time = idx[None], time[None]
        value = value[None] if value is not None else None
    if not batched and idx.shape[0] != 1:
        raise EventFormatError(f"the NIR data holds {idx.shape[0]} samples; expected one", node=node,
                               hint="pass batched=True to get one event array per sample")
    out = [_nir_sample_events(idx[s], time[s], value[s] if value is not None else None, n_neurons, t_max, dt,
                              snap, node, s if batched else None) for s in range(idx.shape[0])]
    return out if batched else out[0]


def to_time_gridded(x: np.ndarray, dt: float, *, graded: bool | None = None, batched: bool = False,
                    node: str | None = None):
    """Dense ``(T, *shape)`` (or ``(B, T, *shape)`` with ``batched``) → ``nir.TimeGriddedData``.

    The data becomes ``(n_samples, T, n_neurons)``, channels row-major. Binary
    data (every value 0 or 1, detected when ``graded=None``) is stored as bool
    as NIR asks; graded data keeps its float dtype. ``graded=False`` refuses
    other values.
    """
    import nir

    dt = _check_dt(dt, node)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise EventFormatError(f"dense data must be numeric or bool, got dtype {x.dtype}", node=node)
    need = 2 if batched else 1
    if x.ndim < need:
        raise ShapeError(f"expected shape {'(B, T, *shape)' if batched else '(T, *shape)'}, got {x.shape}",
                         node=node)
    if not batched:
        x = x[None]
    data = x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))
    if x.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise EventFormatError("non-finite value in the dense data", node=node)
    binary = x.dtype.kind == "b" or bool(np.all((data == 0) | (data == 1)))
    if graded is False and not binary:
        raise EventFormatError("values other than 0 and 1 in data requested as binary", node=node,
                               hint="pass graded=True (or None)")
    if binary and not graded:
        data = data.astype(bool)
    elif data.dtype.kind != "f":
        data = data.astype(np.float64)
    return nir.TimeGriddedData(data=np.ascontiguousarray(data), dt=dt)


def from_time_gridded(d, shape=None, *, batched: bool = False, node: str | None = None) -> np.ndarray:
    """``nir.TimeGriddedData`` → dense ``(T, *shape)`` (``(B, T, *shape)`` with ``batched``).

    ``shape`` defaults to ``(n_neurons,)``; its size must equal n_neurons. The
    dtype is kept (bool for binary data). Without ``batched`` the data must
    hold exactly one sample.
    """
    import nir

    if not isinstance(d, nir.TimeGriddedData):
        raise EventFormatError(f"expected nir.TimeGriddedData, got {type(d).__name__}", node=node)
    data = np.asarray(d.data)
    if data.ndim != 3:
        raise ShapeError(f"TimeGriddedData must be (n_samples, T, n_neurons), got {data.shape}", node=node)
    shape = (data.shape[2],) if shape is None else _shape(shape, node)
    if int(np.prod(shape, dtype=np.int64)) != data.shape[2]:
        raise ShapeError(f"shape {shape} has {int(np.prod(shape))} channels but the data has {data.shape[2]} "
                         "neurons", node=node, limit=data.shape[2], actual=int(np.prod(shape)))
    if not batched and data.shape[0] != 1:
        raise EventFormatError(f"the NIR data holds {data.shape[0]} samples; expected one", node=node,
                               hint="pass batched=True")
    out = data.reshape(data.shape[:2] + shape)
    return out if batched else out[0]


def save_nir_data(path, data: Mapping[str, np.ndarray | Sequence[np.ndarray]], dt: float,
                  shapes: Mapping[str, object], *, steps: int | None = None, graded: bool | None = None,
                  observable: str = "events") -> None:
    """Write ``{node: events}`` (or ``{node: [events per sample]}``) as a NIRGraphData HDF5 file.

    Each node gets one NIRNodeData with one observable (``observable``) holding
    the :func:`to_nir_event_data` of its events; ``shapes[node]`` gives its
    channel count (prod of the shape). Node names may not contain '/', which
    HDF5 would turn into nested groups. Read it back with :func:`load_nir_data`
    (or ``nir.read_data``).
    """
    import nir

    nodes = {}
    for name, ev in data.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise EventFormatError(f"node name {name!r} cannot be an HDF5 group name", node=str(name),
                                   hint="use a non-empty name without '/'")
        if name not in shapes:
            raise ShapeError("no shape given for this node", node=name, hint="add it to shapes={node: shape}")
        n = int(np.prod(_shape(shapes[name], name), dtype=np.int64))
        d = to_nir_event_data(ev, n, dt, graded=graded, steps=steps, node=name)
        nodes[name] = nir.NIRNodeData({observable: d})
    try:
        nir.write_data(str(path), nir.NIRGraphData(nodes))
    except OSError as e:
        raise InputFileError(f"cannot write the NIR data file ({e})", path=path) from None


def load_nir_data(path, dt: float, *, snap: bool = False, batched: bool = False,
                  observable: str | None = None) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Read a NIRGraphData HDF5 file into ``{node: events}``.

    Each node must have one observable (or pass ``observable``); EventData /
    ValuedEventData go through :func:`from_nir_event_data`; TimeGriddedData
    (whose dt must equal ``dt``) through :func:`from_dense`. Nested graph data
    gives dotted names (``outer.inner``), as nmc flattens nested graphs. With
    ``batched`` each value is a list with one event array per sample.
    """
    import nir

    p = Path(path)
    if not p.is_file():
        raise InputFileError("NIR data file not found", path=p, hint="check the path")
    try:
        gd = nir.read_data(str(p))
    except Exception as e:  # h5py/nir raise OSError, KeyError, ValueError, TypeError... on foreign files
        raise InputFileError(f"not a readable NIR data file ({type(e).__name__}: {e})", path=p,
                             hint="write it with nir.write_data or nmc.runtime.events.save_nir_data") from None
    dt = _check_dt(dt)
    out: dict = {}

    def walk(g, prefix):
        for name, nd in g.nodes.items():
            full = prefix + name
            if isinstance(nd, nir.NIRGraphData):
                walk(nd, full + ".")
                continue
            obs = nd.observables
            if observable is not None:
                if observable not in obs:
                    raise EventFormatError(f"no observable '{observable}' (has {sorted(obs)})", node=full)
                d = obs[observable]
            elif len(obs) == 1:
                d = next(iter(obs.values()))
            else:
                raise EventFormatError(f"{len(obs)} observables {sorted(obs)}; choose one", node=full,
                                       hint="pass observable=NAME")
            if isinstance(d, nir.TimeGriddedData):
                if not math.isclose(float(d.dt), dt, rel_tol=1e-9):
                    raise EventFormatError(f"time-gridded data recorded with dt={d.dt} s, asked for dt={dt} s",
                                           node=full, hint="load it with the dt it was recorded with")
                dense = from_time_gridded(d, batched=True, node=full)
                evs = [from_dense(x, node=full) for x in dense]
                if not batched and len(evs) != 1:
                    raise EventFormatError(f"the NIR data holds {len(evs)} samples; expected one", node=full,
                                           hint="pass batched=True")
                out[full] = evs if batched else evs[0]
            else:
                out[full] = from_nir_event_data(d, dt, snap=snap, batched=batched, node=full)

    walk(gd, "")
    return out


# --------------------------------------------------------------------- npz
def load_inputs_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz of named arrays, never unpickling (object arrays are refused).

    Declared sizes are checked first (:func:`nmc.limits.check_npz`): a member
    larger than the stated memory bound, or a zip bomb, is refused before it is
    decompressed. Missing files, directories, files that are not zip archives, members that
    are not .npy arrays and pickled object arrays raise InputFileError naming
    the path.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError("input file not found", path=p, hint="check the path")
    if not p.is_file():
        raise InputFileError("not a regular file, expected an .npz file", path=p)
    hint = "write it with numpy.savez(path, input_node=array, ...)"
    if not zipfile.is_zipfile(p):
        raise InputFileError("not an .npz file (not a zip archive)", path=p, hint=hint)
    from nmc.limits import check_npz

    check_npz(p)  # declared sizes and dtypes, before anything is decompressed
    try:
        obj = np.load(p, allow_pickle=False)
        if not isinstance(obj, np.lib.npyio.NpzFile):
            raise InputFileError("not an .npz archive of named arrays", path=p, hint=hint)
        with obj as z:
            out = {k: z[k] for k in z.files}
    except InputFileError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise InputFileError("holds pickled object arrays, which nmc refuses to load", path=p,
                                 hint="save plain numeric arrays with numpy.savez") from None
        raise InputFileError(f"unreadable .npz member ({e})", path=p, hint=hint) from None
    except Exception as e:  # zipfile/zlib/numpy raise many types on corrupt archives; all mean "unreadable"
        raise InputFileError(f"not a readable .npz file ({type(e).__name__}: {e})", path=p, hint=hint) from None
    for k, a in out.items():
        if not isinstance(a, np.ndarray):  # NpzFile returns raw bytes for members that are not .npy
            raise InputFileError(f"member '{k}' is not a .npy array", path=p, hint=hint)
    return out


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as a deterministic .npz (sorted keys, fixed zip timestamps,
    no compression, no pickles): identical arrays give identical bytes. Uses
    the bundle writer (:func:`nmc.filebytes.npz_bytes`), which stores a '/' in a
    key as '__'."""
    for k, a in arrays.items():
        if np.asarray(a).dtype.kind == "O":
            raise EventFormatError(f"array '{k}' has dtype object, which an .npz cannot hold without pickling",
                                   hint="convert it to a numeric array")
    try:
        Path(path).write_bytes(npz_bytes(dict(arrays)))
    except OSError as e:
        raise InputFileError(f"cannot write the .npz file ({e})", path=path) from None
