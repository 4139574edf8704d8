"""Host runtime sessions: stream events into a device and out again.

``nmc.open(bundle, device=None, window=1, pace=False)`` returns a
:class:`Session` over one device of the bundle's target:

* ``step(events)`` advances one *window* of ``window`` timesteps. ``events`` is
  an event array (:data:`nmc.runtime.events.EVENT_DTYPE`, ``t`` relative to
  the window start, ``ch`` the flat channel of the input node) for a single
  input node, or ``{input node: events}``. It returns ``{output node:
  events}`` for the same window (``t`` relative to the window start).
* ``stream(iterable)`` yields one output dict per input window as input arrives.
* State persists across calls until ``reset()``.
* ``pace=True`` paces windows at the target's tick (``graph.meta['dt']`` or the
  hardware spec's ``timing.sys_tick_s``): a window of n steps is not returned
  before n ticks of wall-clock time have passed since the previous one.

Nothing is dropped: an event outside the window or outside the node's channels
raises :class:`~nmc.errors.EventFormatError` (with how many and the first one),
and the counters reconcile: ``received`` (input events handed to ``step``) ==
``processed`` (delivered to the device) + ``rejected`` (in a window that raised,
so the caller was told) at all times, and ``sent`` counts the output events
returned. ``counters.reconciled()`` checks it.

Output payloads travel as float32 (:data:`~nmc.runtime.events.EVENT_DTYPE`):
spike outputs are exact; graded outputs (voltages) are the device's values
rounded to float32.

Every device (:class:`nmc.backends.base.Device`) gets each window through
``device.advance`` after ``device.reset(1)``; shapes come from the program's IO
map (:class:`nmc.iomap.IOMap`). Streaming devices (``device.streams``: the
reference device, the spinnaker2, loihi2 and brainscales2 emulators and the
loihi2 ``lava`` device through Lava's Injector/Extractor processes) carry their
state: a window costs O(window) and gives the rows ``run`` gives for those
timesteps of the whole input. Devices that only run whole recordings (boards,
Brian2) get ``advance`` from :class:`nmc.backends.base.ReplayStreaming`: each
window replays the input history since reset and returns the new steps, exact
for deterministic causal devices but O(T²) time and O(T) memory over a
session's life (``reset()`` clears the history); ``Session.replaying`` says
which mode is in use.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from nmc.errors import DeviceError, EventFormatError, OptionError, ShapeError
from nmc.graph_meta import GraphMeta
from nmc.iomap import IOMap, validate_inputs

from . import events as ev


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    sent: int = 0
    rejected: int = 0
    windows: int = 0
    steps: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))

    def reconciled(self) -> bool:
        """Every received event was either processed or reported as rejected."""
        return self.received == self.processed + self.rejected


class Session:
    def __init__(self, bundle, device: str | None = None, window: int = 1, pace: bool = False, **device_opts):
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise OptionError(f"window must be an integer ≥ 1 timestep, got {window!r}")
        from nmc.limits import check_shape_alloc

        io: IOMap = bundle.program.io
        for p in io.inputs + io.outputs:  # each window is held densely per node: (window, *shape)
            check_shape_alloc((int(window), *p.shape), 8, f"a window of {window} timesteps at '{p.name}'",
                              node=p.name, error=OptionError, hint="use a smaller --window")
        self.bundle = bundle
        self.device_name = device or bundle.backend.default_device
        self.device = bundle.device(self.device_name, **device_opts)
        if self.device.main_thread_only and threading.current_thread() is not threading.main_thread():
            raise DeviceError(f"device '{self.device_name}' can only run in the main thread of a process (it installs "
                              "signal handlers or keeps process-global state), not in a server session or another "
                              "worker thread", hint=f"use another device ({', '.join(d for d in bundle.backend.devices if d != self.device_name)}), "
                              f"or run it with `nmc run --device {self.device_name}`")
        self.io = io
        # the io map is frozen: its names and shapes are read once here, not built again every window
        self._in_names, self._in_shapes = tuple(io.input_names), io.input_shapes
        self._out_names = tuple(io.output_names)
        self.window = int(window)
        self.pace = pace
        self.tick = GraphMeta.of(bundle.graph).dt
        hw = bundle.hw
        if hw:
            try:
                self.tick = float(hw["timing"]["sys_tick_s"]["value"])
            except (KeyError, TypeError):
                pass
        self.counters = Counters()
        self.reset()

    @property
    def streaming(self) -> bool:
        """The device's ``advance`` carries its state (O(window) per window)."""
        return bool(self.device.streams)

    @property
    def replaying(self) -> bool:
        """The device's ``advance`` replays the history since reset (:class:`~nmc.backends.base.ReplayStreaming`)."""
        return not self.streaming

    # ----------------------------------------------------------------- control
    @property
    def takes_modulator(self) -> bool:
        """The device runs a learning rule with a third factor (:meth:`modulate` works)."""
        return bool(getattr(self.device, "takes_modulator", False))

    def modulate(self, value) -> None:
        """Set the third factor (a reward, or the error per post neuron) of the device's learning
        rules from the next window on (:meth:`Device.modulate <nmc.backends.base.Device.modulate>`;
        a device without one raises :class:`~nmc.errors.DeviceError`)."""
        self.device.modulate(value)

    def reset(self) -> None:
        """Drop all device state; counters keep counting across resets."""
        self.device.reset(1)
        self._t = 0
        self._last = None

    # -------------------------------------------------------------------- I/O
    def _dense_inputs(self, events, steps: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        names, shapes = self._in_names, self._in_shapes
        if not isinstance(events, dict):
            if len(names) != 1:
                raise EventFormatError(f"bundle has {len(names)} inputs; pass {{node: events}}",
                                       hint=f"input nodes: {list(names)}")
            events = {names[0]: events}
        elif any(k not in shapes for k in events):
            raise EventFormatError("events addressed to a node that is not an input of the bundle",
                                   node=next(k for k in events if k not in shapes), hint=f"input nodes: {list(names)}")
        arrays, n = {}, 0
        for name in names:
            e = events.get(name)
            e = ev.empty() if e is None else e if type(e) is np.ndarray else np.asarray(e)
            if (e.dtype is not ev.EVENT_DTYPE and e.dtype != ev.EVENT_DTYPE) or e.ndim != 1:
                raise EventFormatError(f"events must be a 1-D array of dtype {ev.EVENT_DTYPE}, got {e.dtype} "
                                       f"{e.shape}", node=name, hint="build them with nmc.runtime.events.events()")
            arrays[name] = e
            n += len(e)
        self.counters.received += n
        steps = steps or self.window
        try:  # raises on out-of-range events: the whole window is rejected, and counted as such
            dense = {k: ev.to_dense(e, steps, shapes[k], dtype=np.float64, node=k) for k, e in arrays.items()}
        except Exception:
            self.counters.rejected += n
            raise
        return dense, n

    def step(self, events=None) -> dict[str, np.ndarray]:
        """Advance one window; returns ``{output node: events}`` (t relative to the window)."""
        return self._step(events if events is not None else {}, 1)

    def step_windows(self, events, k: int) -> dict[str, np.ndarray]:
        """Advance ``k`` windows at once: ``events`` as for :meth:`step` with ``t`` relative to the
        first window's start (below ``k × window``); returns ``{output node: events}`` the same way,
        in time order. The same outputs as ``k`` calls of :meth:`step` (a device's ``advance`` of
        n steps gives the rows ``run`` gives, whatever n), with one conversion and one device call
        for all of them instead of one per window. A paced session, and a device that takes one
        session window per call (``Device.window_locked``: a slot of a batched device), step the
        windows one by one. An event the checks refuse rejects the events of the ``k`` windows in
        one call (none reach the device), of its own window and those after it window by window
        (the windows before it are stepped); the counters reconcile either way."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise OptionError(f"k (windows) must be an integer >= 1, got {k!r}")
        if k == 1:
            return self.step(events)
        events = {} if events is None else events
        if not (self.pace or getattr(self.device, "window_locked", False)):
            return self._step(events, int(k))
        if not isinstance(events, dict):
            if len(self._in_names) != 1:
                return self._step(events, 1)   # raises: several inputs need {node: events}
            events = {self._in_names[0]: events}
        per = [{} for _ in range(k)]
        for name, e in events.items():
            e = np.asarray(e)
            if e.dtype != ev.EVENT_DTYPE or e.ndim != 1:
                return self._step(events, 1)   # raises the usual format error
            w = np.clip(e["t"] // self.window, 0, k - 1)   # out of range stays so: step() refuses it
            for j in range(k):
                per[j][name] = part = e[w == j]
                part["t"] -= j * self.window
        outs = [self._step(p, 1) for p in per]
        result = {}
        for name in self._out_names:
            parts = [o[name].copy() for o in outs]
            for j, p in enumerate(parts):
                p["t"] += j * self.window
            result[name] = ev.join(parts)
        return result

    def _step(self, events, k: int) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        steps = k * self.window
        dense, n = self._dense_inputs(events, steps)
        try:
            outs = self._advance(dense)
        except Exception:
            self.counters.rejected += n
            raise
        self.counters.processed += n  # every accepted event reached the device this window
        result = {name: ev.from_dense(v, node=name) for name, v in outs.items()}
        self.counters.sent += sum(len(v) for v in result.values())
        self.counters.windows += k
        self.counters.steps += steps
        self._t += steps
        if self.pace:
            due = (self._last or t0) + self.window * self.tick
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            self._last = max(due, now)
        return result

    def _advance(self, dense: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.device.advance({k: v[:, None] for k, v in dense.items()})  # batch of one
        return {k: np.asarray(outs[k])[:, 0] for k in self._out_names}

    def stream(self, windows: Iterable) -> Iterator[dict[str, np.ndarray]]:
        """Yield one output window per input window, as the input arrives."""
        for w in windows:
            yield self.step(w)

    def run_dense(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stream a whole recording given as dense ``(T, *shape)`` arrays window by
        window; returns dense float64 outputs ``(T', *shape)`` with T' = T rounded
        up to whole windows (the last window is padded with no events)."""
        inputs = validate_inputs(self.io, inputs, stream=True)
        T = max(v.shape[0] for v in inputs.values())
        outs: dict[str, list] = {k: [] for k in self.io.output_names}
        for w in dense_windows(inputs, self.window, T):
            for k, e in self.step(w).items():
                outs[k].append(e)
        return {k: ev.to_dense(ev.concat(v, self.window), len(v) * self.window, self.io.output(k).shape,
                               dtype=np.float64, node=k) for k, v in outs.items()}

    def stats(self) -> dict:
        """The session's counters (same keys as a server's STATS)."""
        return self.counters.as_dict()

    def close(self) -> None:
        self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dense_windows(inputs: dict[str, np.ndarray], window: int, T: int | None = None) -> Iterator[dict]:
    """Cut dense ``(T, *shape)`` inputs into per-window event dicts (window-relative t)."""
    T = max(v.shape[0] for v in inputs.values()) if T is None else T
    for w in range(-(-T // window)):
        sl = slice(w * window, (w + 1) * window)
        yield {k: ev.from_dense(v[sl], node=k) for k, v in inputs.items()}
