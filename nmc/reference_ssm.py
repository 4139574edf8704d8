"""Event-by-event reference runs of SSM graphs and the binning error against fixed ticks.

:func:`run_events` runs a normalized graph one *event* per step: step k's
event-mode SSM nodes (``time="event"``, :mod:`nmc.nodes_ssm`) discretise with
their own interval Δ_k = Δ·τ_k, τ_k = (t_k − t_{k−1})/dt ticks (t_{−1} = 0).
Stateless nodes (weights, LayerNorm, Output) run as usual; any other node with
state (LIF, EGRU, Delay, a tick-mode SSM) counts steps, not time, and is
refused (:class:`~nmc.errors.OptionError` naming it).

:func:`binning_error` is the error a chip's fixed tick makes on such a
stream: the same events summed into ticks of ``dt`` (event at t in
((n−1)·dt, n·dt] → tick n−1) and run one tick per step (Δ_k = Δ), against the
per-event run. Both outputs are compared where both exist: after the last
event of each tick that has events (the per-event output after that event, the
binned output of that tick).
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import OptionError, ShapeError
from .graph_meta import GraphMeta
from .ir import Graph
from .nodes_ssm import DiagSSM, StochasticSSMNeuron
from .reference import ReferenceSimulator
from .reference_steps import tensor
from .semantics import Kind, lookup


def _check_event_graph(g: Graph) -> None:
    for name, node in g.nodes.items():
        if isinstance(node, (DiagSSM, StochasticSSMNeuron)):
            if node.time != "event":
                raise OptionError(f"{type(node).__name__} runs in tick mode; an event-by-event run needs time='event'",
                                  node=name, hint="convert the model with per-event Δt (time='event') or run it "
                                                  "with nmc.reference.ReferenceSimulator on binned ticks")
            continue
        e = lookup(node)
        if e is not None and (e.kind is Kind.NEURON or e.state):
            raise OptionError(f"{e.name} keeps state per step, not per unit of time: it has no event-by-event "
                              f"meaning", node=name, hint="only SSM nodes may hold state in an event-by-event run")


def intervals(timestamps, dt: float) -> np.ndarray:
    """τ_k = (t_k − t_{k−1})/dt in ticks (t_{−1} = 0) for non-decreasing timestamps (seconds), along axis 0."""
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ShapeError("event timestamps must be a finite, non-negative array (seconds)")
    tau = np.diff(t, axis=0, prepend=np.zeros_like(t[:1])) / dt
    if np.any(tau < 0):
        raise ShapeError("event timestamps must not decrease", hint="sort the events by time")
    return tau


def run_events(graph: Graph, inputs: dict[str, np.ndarray], timestamps, record=(),
               dtype: torch.dtype = torch.float64) -> dict[str, np.ndarray]:
    """Run ``graph`` (normalized) one event per step. ``inputs[name]``: (K, B, *shape) event vectors
    (events at the same time given as one vector); ``timestamps``: (K, B) or (K,) seconds.
    Returns ``{output: (K, B, *shape)}`` plus ``<node>.<var>`` for ``record``ed nodes."""
    _check_event_graph(graph)
    dt = GraphMeta.of(graph).dt
    arrs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    K, B = next(iter(arrs.values())).shape[:2]
    tau = intervals(timestamps, dt)
    if tau.shape[0] != K or (tau.ndim > 1 and tau.shape[1] != B):
        raise ShapeError(f"timestamps have shape {tau.shape}, the events (K, B) = ({K}, {B})")
    tau = np.broadcast_to(tau.reshape(K, -1), (K, B)).copy()
    sim = ReferenceSimulator(graph, dtype=dtype)
    sim.reset(B)
    outs: dict[str, list] = {}
    with torch.no_grad():
        for k in range(K):
            o, r = sim.step({n: tensor(v[k], dtype) for n, v in arrs.items()}, record, tau=torch.as_tensor(tau[k]))
            for n, v in {**o, **r}.items():
                outs.setdefault(n, []).append(v)
    return {n: torch.stack(v).numpy() for n, v in outs.items()}


def bin_events(events: np.ndarray, timestamps, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Sum events (K, *shape) at times (K,) into ticks: (T, *shape) and each event's tick index (K,)."""
    t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    idx = np.maximum(np.ceil(t / dt - 1e-9).astype(np.int64) - 1, 0)
    T = int(idx.max()) + 1 if idx.size else 0
    out = np.zeros((T, *np.shape(events)[1:]))
    np.add.at(out, idx, np.asarray(events, dtype=np.float64))
    return out, idx


def binning_error(event_graph: Graph, tick_graph: Graph, events: np.ndarray, timestamps) -> dict:
    """The fixed-tick (binned) run's output error against the per-event run, for one event stream.

    ``event_graph``: the model with ``time="event"`` SSM nodes; ``tick_graph``: the same model in tick
    mode (what a chip runs; :func:`with_time` makes one from the other). ``events``: (K, *in_shape),
    ``timestamps``: (K,) seconds. Returns ``max_abs``, ``rms``, ``rel_rms`` (rms / rms of the
    per-event output), ``compared`` (ticks compared) and both output series at those ticks.
    """
    dt = GraphMeta.of(event_graph).dt
    inp, out = event_graph.inputs[0], event_graph.outputs[0]
    ev = np.asarray(events, dtype=np.float64)
    per_event = run_events(event_graph, {inp: ev[:, None]}, np.asarray(timestamps)[:, None])[out][:, 0]
    binned_in, idx = bin_events(ev, timestamps, dt)
    binned = ReferenceSimulator(tick_graph).run({tick_graph.inputs[0]: binned_in})[tick_graph.outputs[0]]
    last = np.array([k for k in range(len(idx)) if k == len(idx) - 1 or idx[k + 1] != idx[k]], dtype=np.int64)
    a, b = per_event[last].reshape(len(last), -1), binned[idx[last]].reshape(len(last), -1)
    err = b - a
    rms = float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0
    ref = float(np.sqrt(np.mean(a ** 2))) if a.size else 0.0
    return {"max_abs": float(np.max(np.abs(err))) if err.size else 0.0, "rms": rms,
            "rel_rms": rms / ref if ref > 0 else float("inf") if rms > 0 else 0.0,
            "compared": int(len(last)), "per_event": a, "binned": b}


def with_time(graph: Graph, time: str) -> Graph:
    """A copy of ``graph`` with every SSM node's ``time`` mode set to ``time`` ("tick" or "event")."""
    import dataclasses

    g = graph.copy()
    for name, node in g.nodes.items():
        if isinstance(node, (DiagSSM, StochasticSSMNeuron)):
            kw = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
                  if f.name not in ("input_type", "output_type", "metadata")}
            kw["time"] = time
            g.nodes[name] = type(node)(**kw)
    return g
