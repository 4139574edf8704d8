"""Device pool and scheduling: N devices per model, sessions placed on free
devices, a bounded wait queue, and "busy, retry after" when it is full.

A :class:`DevicePool` serves one model on one device name (e.g. a bundle's
``emulator``). It holds ``devices`` devices (built at its first session); each takes one session at a time,
or with dynamic batching (``max_batch`` > 1, devices that declare
``batch_slots``) up to ``max_batch`` sessions of the same window length in its
batch slots (:mod:`.batching`). :meth:`DevicePool.lease` places a session:

* on a device already stepping sessions of the same window that has a free
  slot (fuller batches), else on an idle device;
* when none is free, the session waits in a queue of at most ``queue``
  sessions, first come first served, for at most ``queue_timeout`` seconds;
* when the queue is full (or the wait times out) it raises
  :class:`~nmc.errors.ServerBusyError` whose ``retry_after`` estimates when a
  device frees up (the mean session time seen so far divided by the devices, at
  least 1 s); the server answers it with ERROR E_BUSY carrying that time.

A lease is the :class:`~nmc.backends.base.Device` the session steps: the
device itself (no batching) or a batch slot; closing the session releases it.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from nmc.errors import DeviceError, OptionError, ServerBusyError

from .batching import BatchedDevice, slot_axes


class _Exclusive:
    """One device leased to one session at a time; ``close`` gives it back (the device
    stays open for the next session, which resets it)."""

    def __init__(self, pool: "DevicePool", device):
        self._pool, self._device = pool, device

    def __getattr__(self, name):  # the device's own interface (streams, advance, step, run, reset ...)
        return getattr(self._device, name)

    def close(self) -> None:
        self._pool._give_back(self)


#: pool settings of ``nmc serve`` when none is given: one session per device, as a plain server
DEFAULTS = dict(devices=1, max_batch=1, queue=16, queue_timeout=30.0, max_wait=0.002)


def check_pool_options(devices: int = 1, max_batch: int = 1, queue: int = 16, queue_timeout: float = 30.0,
                       max_wait: float = 0.002, **_) -> None:
    """OptionError naming the ``nmc serve`` option for a bad pool setting."""
    for flag, v, lo, hi in (("--devices", devices, 1, 1024), ("--max-batch", max_batch, 1, 4096),
                            ("--queue-sessions", queue, 0, 1 << 16)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise OptionError(f"{flag} must be an integer from {lo} to {hi}, got {v!r}", limit=f"{lo}..{hi}",
                              actual=v, hint=f"pass {flag} N with {lo} <= N <= {hi}")
    for flag, v, lo in (("--queue-timeout", queue_timeout, 0.0), ("--batch-wait-ms", max_wait * 1000, 0.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < 1e6:
            raise OptionError(f"{flag} must be a number of seconds/ms >= 0, got {v!r}", actual=v,
                              hint=f"pass {flag} with a value >= 0")


class DevicePool:
    def __init__(self, make_device, inputs: dict[str, tuple], devices: int = 1, max_batch: int = 1,
                 queue: int = 16, queue_timeout: float = 30.0, max_wait: float = 0.002, on_step=None):
        check_pool_options(devices, max_batch, queue, queue_timeout, max_wait)
        self.make_device, self.inputs = make_device, inputs
        self.n_devices, self.max_batch, self.queue_len = devices, max_batch, queue
        self.queue_timeout, self.max_wait, self.on_step = float(queue_timeout), float(max_wait), on_step
        self.cv = threading.Condition()
        self._devices: list[dict] = []  # {"dev": device or BatchedDevice, "window": int|None, "users": int}
        self._waiting: deque = deque()
        self._session_s: list[float] = []
        self.closed = False

    # ------------------------------------------------------------- placement
    def _build(self) -> dict:
        d = self.make_device()
        if self.max_batch > 1:
            d.reset(1)  # attributes of the streaming state exist only after a reset
            if slot_axes(d) is not None:
                d = BatchedDevice(d, self.max_batch, self.inputs, self.max_wait, self.on_step)
        entry = {"dev": d, "window": None, "users": 0, "leases": set()}
        self._devices.append(entry)
        return entry

    def _capacity(self, e) -> int:
        return e["dev"].slots if isinstance(e["dev"], BatchedDevice) else 1

    def _place(self, window: int):
        while len(self._devices) < self.n_devices:  # all N devices at the first session: none is built mid-load
            self._build()
        same = [e for e in self._devices if e["users"] and e["window"] == window and e["users"] < self._capacity(e)]
        idle = [e for e in self._devices if not e["users"]]
        if same:
            e = same[0]
        elif idle:
            e = idle[0]
        else:
            return None
        e["users"] += 1
        e["window"] = window
        if isinstance(e["dev"], BatchedDevice):
            lease = e["dev"].take()
            lease.on_close = lambda: self._give_back(lease)
        else:
            lease = _Exclusive(self, e["dev"])
        e["leases"].add(id(lease))
        lease._pool_entry, lease._pool_t0 = e, time.monotonic()
        return lease

    def retry_after(self) -> float:
        mean = sum(self._session_s[-32:]) / len(self._session_s[-32:]) if self._session_s else 1.0
        return max(1.0, round(mean / self.n_devices, 1))

    def lease(self, window: int):
        """A device (or batch slot) for a session of ``window`` steps (module docstring)."""
        with self.cv:
            if self.closed:
                raise DeviceError("the model is unloaded: no new sessions")
            lease = None if self._waiting else self._place(window)
            if lease is not None:
                return lease
            if len(self._waiting) >= self.queue_len:
                raise ServerBusyError(f"server busy: all {self.n_devices} devices taken and {len(self._waiting)} "
                                      f"sessions waiting (the queue's limit, --queue-sessions {self.queue_len}); "
                                      f"retry after {self.retry_after():g} s", retry_after=self.retry_after(),
                                      limit=self.queue_len, actual=len(self._waiting))
            me = object()
            self._waiting.append(me)
            deadline = time.monotonic() + self.queue_timeout
            try:
                while True:
                    if self._waiting[0] is me:
                        lease = self._place(window)
                        if lease is not None:
                            return lease
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closed:
                        raise ServerBusyError(f"server busy: no device freed up within {self.queue_timeout:g} s; "
                                              f"retry after {self.retry_after():g} s", retry_after=self.retry_after())
                    self.cv.wait(min(left, 0.5))
            finally:
                self._waiting.remove(me)
                self.cv.notify_all()

    def _give_back(self, lease) -> None:
        with self.cv:
            e = lease._pool_entry
            if id(lease) not in e["leases"]:
                return
            e["leases"].discard(id(lease))
            e["users"] -= 1
            self._session_s.append(time.monotonic() - lease._pool_t0)
            del self._session_s[:-64]
            self.cv.notify_all()

    # --------------------------------------------------------------- status
    def stats(self) -> dict:
        with self.cv:
            busy = sum(e["users"] for e in self._devices)
            cap = sum(self._capacity(e) for e in self._devices) + self.max_batch * (self.n_devices - len(self._devices))
            return {"devices": self.n_devices, "sessions": busy, "slots": cap, "waiting": len(self._waiting),
                    "busy_devices": sum(1 for e in self._devices if e["users"])}

    def refuse_new(self) -> None:
        """Stop placing sessions (server stopping): waiting ones are answered busy at once."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    @property
    def idle(self) -> bool:
        with self.cv:
            return not any(e["users"] for e in self._devices) and not self._waiting

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()
            devs = [e["dev"] for e in self._devices]
        for d in devs:
            close = getattr(d, "close", None)
            if callable(close):
                close()


class LeasedBundle:
    """A bundle as one session sees it: everything the bundle's, except that
    ``device()`` is the device (or batch slot) the pool leased to the session."""

    def __init__(self, bundle, lease):
        self._bundle, self._lease = bundle, lease

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def device(self, name: str | None = None, **opts):
        return self._lease
