"""Dynamic batching: concurrent sessions of one model stepped together in a
device's batch dimension.

A :class:`BatchedDevice` owns one streaming emulator reset to ``B`` batch
*slots*. Each session holds one slot through a :class:`SlotDevice`, which is a
streaming :class:`~nmc.backends.base.Device` of batch 1 to the session:
``reset(1)`` resets its slot, ``advance`` submits the window and waits. A
worker thread steps the device when every occupied slot has a window waiting,
or ``max_wait`` seconds after the first window arrived (the latency/throughput
trade-off: 0 steps whatever is there at once). Slots with a session but no
window in that step are *held*: a session's state only moves with its own
windows.
Only the rows with a window are stepped: their state is taken out as a
smaller batch, advanced and written back, so a step costs what its windows
cost, and held or free rows are untouched. A free slot is reset when a
session takes it.

Results are bit for bit those of the session running alone (batch 1): the
emulators' batch rows are independent (every operation is row-wise), which
``tests/runtime/test_serve_batching.py`` checks for each emulator with
sessions joining and leaving at different times.

The device-side hook is one attribute, ``batch_slots``: ``{path: batch axis}``
naming where the device keeps its streaming state (``path`` is an attribute,
then dict keys, separated by dots; the device's ``batch`` attribute is its
current number of rows, as ``reset(batch)`` sets it), or ``None`` when its
batch rows are not independent (a shared step counter, one noise generator for
the whole batch).
A device without it is not batched: the pool gives it one session at a time.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from nmc.errors import DeviceError

from ...backends.base import Device


def slot_axes(device) -> dict[str, int] | None:
    """The device's ``batch_slots`` (None: it cannot be batched by slots)."""
    axes = getattr(device, "batch_slots", None)
    return dict(axes) if axes else None


def _resolve(device, path: str):
    head, *keys = path.split(".")
    obj = getattr(device, head)
    for k in keys:
        obj = obj[k]
    return obj


def _rows(tree, rows, axis: int):
    """A copy of batch rows ``rows`` (an index array, or one int: that row without its axis)
    of a state tree (dicts and lists of arrays)."""
    if isinstance(tree, dict):
        return {k: _rows(v, rows, axis) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_rows(v, rows, axis) for v in tree]
    if isinstance(tree, np.ndarray):
        return np.take(tree, rows, axis=axis)  # always a copy
    raise DeviceError(f"batch slot state holds a {type(tree).__name__}, not arrays", hint="fix the device's batch_slots")


def _put_rows(tree, sub, rows, axis: int) -> None:
    """Write a tree from :func:`_rows` (perhaps stepped since) back into rows ``rows``."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            _put_rows(v, sub[k], rows, axis)
    elif isinstance(tree, (list, tuple)):
        for v, s in zip(tree, sub):
            _put_rows(v, s, rows, axis)
    else:
        tree[(slice(None),) * axis + (rows,)] = sub


def _assign(device, path: str, tree) -> None:
    head, *keys = path.split(".")
    if not keys:
        setattr(device, head, tree)
        return
    obj = getattr(device, head)
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = tree


def get_slot(device, b: int) -> dict:
    """A copy of batch row ``b`` of the device's streaming state."""
    return {p: _rows(_resolve(device, p), b, ax) for p, ax in device.batch_slots.items()}


def set_slot(device, b: int, saved: dict) -> None:
    """Write a row saved by :func:`get_slot` into batch row ``b`` (in place)."""
    for p, ax in device.batch_slots.items():
        _put_rows(_resolve(device, p), saved[p], b, ax)


class BatchedDevice:
    """One device of ``slots`` batch rows, stepped by a worker thread (module docstring)."""

    def __init__(self, device, slots: int, inputs: dict[str, tuple], max_wait: float = 0.002,
                 on_step=None):
        self.device, self.slots, self.shapes, self.max_wait = device, int(slots), dict(inputs), float(max_wait)
        self.on_step = on_step  # called with (batch size, seconds) after each step (metrics)
        device.reset(self.slots)
        if slot_axes(device) is None:
            raise DeviceError(f"device '{getattr(device, 'name', device)}' cannot step sessions in batch slots",
                              hint="serve it without dynamic batching (--max-batch 1)")
        self._fresh = get_slot(device, 0)  # every row starts equal: the initial state of one slot
        # ``cv`` guards the tables below; only the worker waits on it. A session waits on its
        # own row's event, set by the worker when that row's window is stepped: a submit wakes
        # one thread (the worker), not every waiting session (64 sessions each woken by every
        # other's submit cost more than the batched step itself).
        self.cv = threading.Condition()
        self._done = [threading.Event() for _ in range(self.slots)]
        self.owner: list[object | None] = [None] * self.slots  # the SlotDevice in each row
        self.pending: dict[int, dict] = {}                     # row -> inputs of its next window
        self.results: dict[int, object] = {}                   # row -> outputs (or the exception)
        self.steps = 0
        self.batched_windows = 0
        self._stop = False
        self._worker = threading.Thread(target=self._run, daemon=True, name="nmc-batcher")
        self._worker.start()

    # ----------------------------------------------------------------- slots
    def free_slots(self) -> int:
        with self.cv:
            return self.owner.count(None)

    def take(self) -> "SlotDevice":
        """A free slot, reset (DeviceError if none: the pool checks first)."""
        with self.cv:
            if None not in self.owner:
                raise DeviceError("no free batch slot")
            b = self.owner.index(None)
            slot = SlotDevice(self, b)
            self.owner[b] = slot
            return slot

    def release(self, slot: "SlotDevice") -> None:
        with self.cv:
            if self.owner[slot.row] is slot:
                self.owner[slot.row] = None
                self.pending.pop(slot.row, None)
                self.results.pop(slot.row, None)
                self._done[slot.row].set()
                self.cv.notify()

    def reset_slot(self, b: int) -> None:
        with self.cv:  # never in the middle of a step (the worker holds the lock for a whole step)
            set_slot(self.device, b, self._fresh)

    def submit(self, b: int, inputs: dict[str, np.ndarray]):
        done = self._done[b]
        with self.cv:
            if self._stop:
                raise DeviceError("the batching worker has stopped")
            done.clear()
            self.pending[b] = inputs
            self.cv.notify()  # the worker
        while not done.wait(0.5):
            if self._stop:
                break
        with self.cv:
            if b not in self.results:
                raise DeviceError("the batching worker stopped before this window was stepped")
            r = self.results.pop(b)
        if isinstance(r, BaseException):
            raise r
        return r

    def close(self) -> None:
        with self.cv:
            self._stop = True
            self.cv.notify_all()
            for e in self._done:
                e.set()
        self._worker.join(5.0)

    # ---------------------------------------------------------------- worker
    def _run(self) -> None:
        with self.cv:
            while not self._stop:
                if not self.pending:
                    self.cv.wait(0.5)
                    continue
                first = time.monotonic()
                while not self._stop:  # every session's window, or max_wait after the first one
                    busy = [b for b, o in enumerate(self.owner) if o is not None]
                    if all(b in self.pending for b in busy):
                        break
                    left = first + self.max_wait - time.monotonic()
                    if left <= 0:
                        break
                    self.cv.wait(left)
                if self._stop:
                    break
                ready = dict(self.pending)
                self.pending.clear()
                self._step(ready)
                for b in ready:
                    self._done[b].set()

    def _step(self, ready: dict[int, dict]) -> None:
        t0 = time.perf_counter()
        try:
            self.results.update(self._advance(ready))
        except Exception:
            # a bad window fails the whole batch (whose rows are left as they were): step the
            # windows one by one, so that only the bad one gets the error
            for b in ready:
                try:
                    self.results.update(self._advance({b: ready[b]}))
                except Exception as e:
                    self.results[b] = e
        self.steps += 1
        self.batched_windows += len(ready)
        if self.on_step is not None:
            self.on_step(len(ready), time.perf_counter() - t0)

    def _advance(self, ready: dict[int, dict]) -> dict[int, dict]:
        """Step the rows ``ready`` only: their state is taken out as a batch of
        len(ready) rows, advanced, and written back; the other rows (held sessions,
        free slots) are not touched and cost nothing. On an error every row is left
        as it was. Returns ``{row: outputs (n, 1, ...)}``."""
        n = {int(np.shape(v)[0]) for x in ready.values() for v in x.values()}
        if len(n) != 1:
            raise DeviceError(f"windows of different lengths {sorted(n)} in one batch step")
        n = n.pop()
        order = sorted(ready)
        rows = np.asarray(order, dtype=np.intp)
        x = {k: np.zeros((n, len(order), *shp)) for k, shp in self.shapes.items()}
        for j, b in enumerate(order):
            for k, v in ready[b].items():
                x[k][:, j] = v[:, 0]
        dev, axes = self.device, self.device.batch_slots
        full = {p: _resolve(dev, p) for p in axes}
        for p, ax in axes.items():
            _assign(dev, p, _rows(full[p], rows, ax))
        dev.batch = len(order)
        try:
            out = dev.advance(x)
            for p, ax in axes.items():
                _put_rows(full[p], _resolve(dev, p), rows, ax)
        finally:
            for p in axes:
                _assign(dev, p, full[p])
            dev.batch = self.slots
        return {b: {k: v[:, j:j + 1] for k, v in out.items()} for j, b in enumerate(order)}


class SlotDevice(Device):
    """One batch row of a :class:`BatchedDevice`, a streaming device of batch 1 to its session."""

    streams = True
    window_locked = True   # the batch steps every session's window together: all of one length

    def __init__(self, batched: BatchedDevice, row: int):
        self.batched, self.row = batched, row
        self.name = getattr(batched.device, "name", "")

    def reset(self, batch: int = 1) -> None:
        if batch != 1:
            raise DeviceError(f"a batch slot holds one session, not a batch of {batch}")
        self.batched.reset_slot(self.row)

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.batched.submit(self.row, inputs)

    def run(self, inputs, steps=None, record=()):
        raise DeviceError("a served session streams window by window; it cannot `run` a whole recording")

    def modulate(self, value) -> None:
        """Refused: the slots of a batch share the device's weights, so one session's third
        factor would change what every session's network learns."""
        raise DeviceError(f"a batched session (one slot of device '{self.name}') takes no third factor: the "
                          "sessions of a batch share its weights", hint="serve learning networks with "
                          "--max-batch 1 (one session per device)")

    def close(self) -> None:
        """Free the slot (its session ended); ``on_close`` tells the pool."""
        self.batched.release(self)
        cb, self.on_close = getattr(self, "on_close", None), None
        if cb is not None:
            cb()
