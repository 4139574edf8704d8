"""Prometheus metrics of a server (``prometheus_client``, its own registry).

=================================  =======  ===========================================================
metric                             type     meaning (label ``model`` = NAME/VERSION)
=================================  =======  ===========================================================
nmc_sessions                       gauge    open sessions
nmc_queue_length                   gauge    sessions waiting for a device
nmc_device_utilisation             gauge    occupied session slots / slots of the model's devices (0..1)
nmc_events_in_total                counter  input events stepped
nmc_events_out_total               counter  output events returned
nmc_windows_total                  counter  windows stepped
nmc_window_seconds                 hist.    time to step one window on the server (batching wait included)
nmc_estimated_energy_joules_total  counter  coarse estimate on the target: one packet per host event
                                            (``energy.packet_j``) plus static chip power
                                            (``energy.static_chip_w``) over the windows' device time
                                            (steps × ``timing.sys_tick_s``); synaptic and neuron work
                                            is not counted (``nmc profile`` does)
nmc_ready                          gauge    1 while the server takes new sessions
=================================  =======  ===========================================================
"""
from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: window latency buckets (seconds)
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _label(model) -> str:
    return f"{model.name}/{model.version}"


def _energy_constants(bundle) -> tuple[float, float]:
    """(J per host event, J per device step) of a bundle's hardware spec; zeros without one."""
    from nmc.errors import NmcError
    from nmc.runtime.energy import constants, spec_for

    try:
        spec = spec_for(bundle)
        c = constants(spec)
        tick = float(spec.get("timing.sys_tick_s", 0.0))
    except (NmcError, KeyError, TypeError, ValueError):
        return 0.0, 0.0
    return c.get("packets", 0.0), c.get("static_chip_w", 0.0) * tick


class Metrics:
    def __init__(self, server):
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_in = Counter("nmc_events_in", "Input events stepped", ["model"], registry=r)
        self.events_out = Counter("nmc_events_out", "Output events returned", ["model"], registry=r)
        self.windows = Counter("nmc_windows", "Windows stepped", ["model"], registry=r)
        self.latency = Histogram("nmc_window_seconds", "Time to step one window on the server", ["model"],
                                 buckets=BUCKETS, registry=r)
        self.energy = Counter("nmc_estimated_energy_joules", "Coarse energy estimate on the target (see docs)",
                              ["model"], registry=r)
        self._energy: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()
        r.register(_StateCollector(server))

    def window(self, model, events_in: int, events_out: int, steps: int, seconds: float) -> None:
        lab = _label(model)
        self.events_in.labels(lab).inc(events_in)
        self.events_out.labels(lab).inc(events_out)
        self.windows.labels(lab).inc()
        self.latency.labels(lab).observe(seconds)
        with self._lock:
            k = id(model.bundle)
            if k not in self._energy:
                self._energy[k] = _energy_constants(model.bundle)
            per_event, per_step = self._energy[k]
        self.energy.labels(lab).inc(per_event * (events_in + events_out) + per_step * steps)

    def text(self) -> bytes:
        """The exposition (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the server at scrape time."""

    def __init__(self, server):
        self.server = server

    def describe(self):
        return []

    def collect(self):
        srv = self.server
        sessions = GaugeMetricFamily("nmc_sessions", "Open sessions", labels=["model"])
        queue = GaugeMetricFamily("nmc_queue_length", "Sessions waiting for a device", labels=["model"])
        util = GaugeMetricFamily("nmc_device_utilisation", "Occupied slots / slots of the model's devices",
                                 labels=["model"])
        repo = getattr(srv, "repo", None)
        if repo is not None:
            for lab, pools in repo.stats().items():
                s = sum(p["sessions"] for p in pools.values())
                slots = sum(p["slots"] for p in pools.values())
                sessions.add_metric([lab], s)
                queue.add_metric([lab], sum(p["waiting"] for p in pools.values()))
                util.add_metric([lab], s / slots if slots else 0.0)
        elif srv.model is not None:  # one bundle: every connection has a device of its own
            lab = _label(srv.model)
            sessions.add_metric([lab], srv.active_sessions)
            queue.add_metric([lab], 0)
            util.add_metric([lab], srv.active_sessions / srv.max_connections)
        ready = GaugeMetricFamily("nmc_ready", "1 while the server takes new sessions")
        ready.add_metric([], 1.0 if srv.ready else 0.0)
        yield from (sessions, queue, util, ready)
