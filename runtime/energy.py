"""Energy model: activity counts from a run × the target's sourced constants.

``profile(bundle, inputs, device=None, spec=None)`` runs the bundle on a
device, recording every neuron node, and counts per timestep, per node and
per core (the kinds are :data:`KINDS`; each has exactly one constant, see
:data:`TERMS`):

* ``synaptic_ops`` (AC): one per (active source, synapse) where the source
  emits binary spikes; ``macs`` where the source carries graded values (analog
  inputs, EGRU events, LI outputs) — NeuroBench's effective AC / MAC split;
  ``ternary_codes`` instead of ``macs`` into a unit whose kernel stores packed
  2-bit ternary codes (its target's ``mac_kind`` hook says so: SpiNNaker 2's
  ``quantize{scheme=ternary}`` EGRU kernels), priced per decoded code
  (``energy.ternary_code_j``, ``core.cycles_per_ternary_code``); NeuroBench's
  effective MACs count both.
  The synapse pattern is :func:`nmc.passes.netmodel.build_network`'s: the
  synapses the chip *stores* (a weight node stored dense counts every entry,
  zeros included, since the core walks the whole row; one with a ``Sparsity``
  annotation counts its nonzeros only).
  A node that is no unit of the network but runs a kernel of its own on the
  target (SpiNNaker 2's LayerNorm PE) adds that kernel's work through the same
  ``internal_macs`` hook its type registers for the target, per step and
  channel, as ``macs`` of the node on its own cores;
* ``neuron_updates`` / ``neuron_updates_inactive``: every placed neuron every
  step (the targets are time-driven), split into *active* (it received an event
  or emitted one in that step) and *inactive* (it only decays); a spec without
  ``energy.neuron_update_inactive_j`` charges both at ``neuron_update_j``;
* ``cell_updates``: every placed unit of a gated cell (a node type whose
  registry counters name ``cell_updates``: the EGRU) every step, active or not —
  its kernel updates every unit every step (``energy.cell_update_j``, else
  ``neuron_update_j``);
* ``packets``: one per output event of a placed neuron (multicast) and one per
  host input event; ``axon_out``: one message per (event, destination core) —
  the per-destination output-axon work of a chip that unicasts (Loihi), zero
  for a chip without ``energy.axon_out_j``;
* ``hops`` / ``chip_hops``: per packet, the edges of the XY multicast tree from
  its core to the cores its node's ``Route`` annotation lists, on the global
  router grid of :mod:`nmc.passes.route` (chips placed by ``board.chips_grid``);
  an edge between two chips is a ``chip_hop`` (``energy.chip_hop_j``), every
  other edge an on-chip router hop (0 without placement). A target that sends a graded input value as k repeated events
  (SpiNNaker 2, ``S2Program.input_events``) counts k packets and k synaptic
  events per synapse for it.

**Time, not tick.** Each core's work per step is its counts × the spec's time
per event (``timing.*_s``, or ``core.cycles_per_*`` / ``core.clock_hz``); the
step lasts as long as the slowest core (+ ``timing.step_sync_s``). Static
power (``energy.static_chip_w`` × chips, plus ``static_core_w`` × cores where
a spec has it) is charged over the run's duration in one of two modes, both
reported:

* ``tick``: every step lasts ``timing.sys_tick_s`` (real-time streaming);
* ``work``: every step lasts its work time — the chip advances as soon as its
  slowest core is done (Loihi's barrier-synchronised steps). A chip whose
  steps are timer-driven or continuous-time (``timing.tick_bound = true``:
  SpiNNaker 2, BrainScaleS-2) cannot run faster than its tick; for it
  ``work`` reports the shortest tick the placement would allow (the slowest
  core's worst step) and the default mode stays ``tick``.

The batch's samples are separate inferences, run one after another. Every part
is kept, so the totals equal the sum of the terms by construction (checked in
the report's ``terms``). Baselines: :mod:`nmc.runtime.energy_baselines`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from nmc.annotations import Placement, Quant, Route
from nmc.errors import ConfigError, OptionError
from nmc.graph_meta import GraphMeta
from nmc.hw import HardwareSpec
from nmc import semantics
from nmc.nodes import is_neuron


@dataclass(frozen=True)
class Term:
    """One term of the model: a count × one constant, paying for one thing."""

    kind: str
    constant: str                 # spec key of the energy per event (J)
    fallback: str | None          # key used when the spec lacks ``constant`` (None: the term is 0)
    pays_for: str                 # the hardware work this energy stands for (unique across terms)
    time: tuple[str, ...] = ()    # spec keys for the time per event: seconds, or core cycles (÷ clock)


TERMS = (
    Term("synaptic_ops", "energy.synaptic_op_j", None, "synaptic event on a binary spike (AC)",
         ("timing.synaptic_op_s", "core.cycles_per_synop")),
    Term("macs", "energy.mac_j", "energy.synaptic_op_j", "synaptic event on a graded value (MAC)",
         ("timing.mac_s", "core.cycles_per_mac", "timing.synaptic_op_s", "core.cycles_per_synop")),
    Term("ternary_codes", "energy.ternary_code_j", "energy.mac_j",
         "packed 2-bit weight code decoded on a graded event (a ternary kernel walks every code of the column)",
         ("timing.ternary_code_s", "core.cycles_per_ternary_code", "timing.mac_s", "core.cycles_per_mac",
          "timing.synaptic_op_s", "core.cycles_per_synop")),
    Term("neuron_updates", "energy.neuron_update_j", None, "update of an active neuron",
         ("timing.neuron_update_s", "core.cycles_per_neuron_update")),
    Term("neuron_updates_inactive", "energy.neuron_update_inactive_j", "energy.neuron_update_j",
         "update of an inactive neuron (decay only)",
         ("timing.neuron_update_inactive_s", "timing.neuron_update_s", "core.cycles_per_neuron_update")),
    Term("cell_updates", "energy.cell_update_j", "energy.neuron_update_j",
         "update of a gated cell's unit (EGRU: gates, table nonlinearities, threshold)",
         ("timing.cell_update_s", "core.cycles_per_cell_update", "timing.neuron_update_s",
          "core.cycles_per_neuron_update")),
    Term("packets", "energy.packet_sent_j", None, "spike packet leaving its core (multicast injection)",
         ("timing.packet_sent_s", "timing.cycles_per_packet")),
    Term("axon_out", "energy.axon_out_j", None, "output-axon message per destination core", ("timing.axon_out_s",)),
    Term("hops", "energy.router_hop_j", None, "on-chip router hop"),
    Term("chip_hops", "energy.chip_hop_j", None, "chip-to-chip link crossing"),
)
KINDS = tuple(t.kind for t in TERMS)
#: energy constant used for each kind of count
CONSTANT = {t.kind: t.constant for t in TERMS}
#: [energy] keys that are static power (W), charged over time, once each
STATIC_KEYS = ("energy.static_chip_w", "energy.static_core_w")
#: [energy] sub-tables that are not part of the model (comparison lines, published figures, DVFS levels)
INFO_TABLES = ("conventional", "dvfs", "published", "derivation")
MODES = ("tick", "work")


@dataclass
class Activity:
    """Counts of one run: per step (T,), per node and per core; static facts."""

    steps: int
    batch: int
    tick_s: float
    per_step: dict[str, np.ndarray]                  # kind -> (T,) totals over the batch
    per_node: dict[str, dict[str, float]]            # node -> kind -> count
    per_core: dict[int, dict[str, float]]            # core -> kind -> count
    cores: list[int]
    chips: int
    spikes: dict[str, np.ndarray] = field(default_factory=dict)  # node -> (T, n) activity of sample 0
    neurobench: dict[str, Any] = field(default_factory=dict)
    dense_macs_per_step: float = 0.0
    core_step: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (T, C) per core (C = len(cores) or 1), per sample
    dense_weights: int = 0                           # stored weights (dense), for the baselines' memory traffic
    layers: int = 0                                  # weight layers, for the baselines' kernel count


def spec_for(bundle, spec: str | None = None, overrides=()) -> HardwareSpec:
    """The spec a bundle was compiled with (its hw.json), or a named one."""
    if spec is not None:
        return HardwareSpec.load(spec, overrides=list(overrides))
    if bundle.hw is None:
        raise OptionError(f"bundle for target '{bundle.target}' has no hardware spec to estimate energy with",
                          hint="pass --spec spinnaker2 (or loihi2, brainscales2)")
    s = HardwareSpec.from_dict(bundle.hw)
    return s.with_overrides(list(overrides)) if overrides else s


def _tree_edges(src: tuple[int, int], dests: list[tuple[int, int]]) -> set:
    """Edges of the union of XY (dimension-ordered) paths from src to each dest."""
    edges = set()
    for dx, dy in dests:
        x, y = src
        while x != dx:
            nx = x + (1 if dx > x else -1)
            edges.add(((x, y), (nx, y)))
            x = nx
        while y != dy:
            ny = y + (1 if dy > y else -1)
            edges.add(((x, y), (x, ny)))
            y = ny
    return edges


def _tree_hops(src, dests, mesh: tuple[int, int] | None = None) -> tuple[int, int]:
    """(on-chip router hops, chip crossings) of the XY multicast tree on the global
    router grid; an edge whose ends lie on different chips (``mesh`` = routers per
    chip in x, y) is a chip crossing."""
    edges = _tree_edges(src, dests)
    if mesh is None:
        return len(edges), 0
    mx, my = mesh
    cross = sum(1 for (a, b) in edges if (a[0] // mx, a[1] // my) != (b[0] // mx, b[1] // my))
    return len(edges) - cross, cross


def _core_positions(graph, limits) -> dict[int, tuple[int, int]]:
    """Global router-grid position of every placed core (as :func:`nmc.passes.route.core_positions`)."""
    from nmc.passes.place import chip_order

    order = chip_order(limits)
    pos = {}
    for name in graph.nodes:
        p = graph.ann(name, Placement)
        if p is None or p.core is None or p.x is None:
            continue
        core = np.asarray(p.core).reshape(-1)
        chip = np.asarray(p.chip).reshape(-1) if p.chip is not None else np.zeros_like(core)
        x, y = np.asarray(p.x).reshape(-1), np.asarray(p.y).reshape(-1)
        for c, ch, xx, yy in zip(core, chip, x, y):
            cx, cy = order[int(ch)] if int(ch) < len(order) else (int(ch), 0)
            pos[int(c)] = (int(cx) * limits.mesh_x + int(xx), int(cy) * limits.mesh_y + int(yy))
    return pos


def count_activity(bundle, inputs: dict, device: str | None = None, spec: HardwareSpec | None = None,
                   steps: int | None = None) -> Activity:
    from nmc.passes.netmodel import build_network
    from nmc.target_model import CoreLimits

    g = bundle.graph
    neurons = [k for k, n in g.nodes.items() if is_neuron(n)]
    res = bundle.run(inputs, steps=steps, device=device, record=neurons)
    first = np.asarray(next(iter(inputs.values())))
    batched = first.ndim == len(g.shape_out(g.inputs[0])) + 2
    act: dict[str, np.ndarray] = {}
    for k in g.inputs:
        a = np.asarray(inputs[k], dtype=np.float64)
        act[k] = a if batched else a[:, None]
    for k in neurons:
        a = res.get(f"{k}.spikes", res.get(f"{k}.out"))
        if a is None:
            raise OptionError(f"device did not return the activity of node '{k}'", node=k)
        a = np.asarray(a, dtype=np.float64)
        act[k] = a if batched else a[:, None]
    T, B = next(iter(act.values())).shape[:2]
    for k, a in act.items():
        if a.shape[0] < T:  # pad inputs shorter than the run
            act[k] = np.concatenate([a, np.zeros((T - a.shape[0], *a.shape[1:]))])
    limits = CoreLimits.from_spec(spec.to_dict()) if spec is not None else CoreLimits()
    net = build_network(g, limits, None)
    AT = net.AT  # rows = source units, cols = target units: synapse counts
    units = net.unit_names
    off = net.unit_offset
    N = net.n_units
    # a target that sends a graded input value as repeated events (SpiNNaker 2: ``input_events``)
    # costs one packet and one synaptic event per event: count those, as spikes
    as_events = getattr(bundle.program, "input_events", None) if hasattr(bundle, "program") else None
    events = {u: as_events(u, act[u]) for u in g.inputs} if as_events else {}
    events = {u: np.asarray(e, np.float64) for u, e in events.items() if e is not None}
    active = np.concatenate([(events[u] if u in events else (act[u] != 0)).reshape(T, B, -1) for u in units],
                            axis=2).astype(np.float64)  # (T, B, N) events (0/1, or counts of repeated events)
    graded_src = np.zeros(N, dtype=bool)
    for i, u in enumerate(units):
        # the unit's node type counts its events as MACs (graded) or synaptic ops (spikes); a type
        # that may send either (an Input) counts what its data holds
        counters = semantics.of(g.nodes[u], name=u).counters
        binary = u in events or np.all(np.isin(act[u], (0.0, 1.0)))
        graded_src[off[i]:off[i + 1]] = "macs" in counters and not ("synaptic_ops" in counters and binary)
    # synaptic events into each target unit, per step and sample
    a2 = active.reshape(T * B, N)
    recv_ac = np.asarray((AT[~graded_src].T @ a2[:, ~graded_src].T)).T if (~graded_src).any() else np.zeros((T * B, N))
    recv_mac = np.asarray((AT[graded_src].T @ a2[:, graded_src].T)).T if graded_src.any() else np.zeros((T * B, N))
    for i, u in enumerate(units):  # work inside a node its graph synapses do not show (an SSM's state): its hook
        h = semantics.of(g.nodes[u], name=u).hook("internal_macs", getattr(bundle, "target", None))
        if h is not None:
            sl = slice(off[i], off[i + 1])
            recv_mac[:, sl] = recv_mac[:, sl] + h(g.nodes[u], recv_ac[:, sl] + recv_mac[:, sl])
    # a unit whose kernel stores packed ternary codes decodes every code of an event's column (its
    # synapses are stored dense): those MACs are ternary_codes, priced per code (target hook "mac_kind")
    recv_tern = np.zeros_like(recv_mac)
    for i, u in enumerate(units):
        h = semantics.of(g.nodes[u], name=u).hook("mac_kind", getattr(bundle, "target", None))
        if h is not None and h(g.nodes[u], u, bundle) == "ternary_codes":
            sl = slice(off[i], off[i + 1])
            recv_tern[:, sl], recv_mac[:, sl] = recv_mac[:, sl], 0.0
    # neuron updates: every placed neuron every step; active = received or emitted an event
    busy = ((recv_ac + recv_mac + recv_tern) > 0) | (a2 > 0)
    cell = np.zeros(N, dtype=bool)  # units of gated cells: a whole cell update every step instead
    for i, u in enumerate(units):
        cell[off[i]:off[i + 1]] = "cell_updates" in (semantics.of(g.nodes[u], name=u).counters or ())
    placed = net.placed_mask[None, :] & ~cell[None, :]
    upd_act = (busy & placed).astype(np.float64)
    upd_inact = (~busy & placed).astype(np.float64)
    upd_cell = np.broadcast_to(net.placed_mask & cell, (T * B, N)).astype(np.float64)
    sumB = lambda x: x.reshape(T, B, N).sum(1)  # noqa: E731
    ac_in, mac_in, tern_in = sumB(recv_ac), sumB(recv_mac), sumB(recv_tern)
    upd, upd_i, upd_c = sumB(upd_act), sumB(upd_inact), sumB(upd_cell)
    # packets: one per event of a placed neuron; host inputs inject one packet per event too
    pk = active.sum(1)
    # placement: cores, destination cores (axon-out messages) and hops
    core_of = np.full(N, -1, dtype=np.int64)
    for i, u in enumerate(units):
        p = g.ann(u, Placement)
        if p is not None and p.core is not None:
            core_of[off[i]:off[i + 1]] = np.asarray(p.core).reshape(-1)
    pos = _core_positions(g, limits)
    mesh = (limits.mesh_x, limits.mesh_y)
    hops_per_event, chip_per_event, dests_per_event = np.zeros(N), np.zeros(N), np.zeros(N)
    for i, u in enumerate(units):
        r = g.ann(u, Route)
        if r is None or r.cores is None:
            continue
        cores = np.asarray(r.cores).reshape(-1)
        ptr, dest = np.asarray(r.dest_ptr).reshape(-1), np.asarray(r.dest).reshape(-1)
        per_core = {}
        for k, c in enumerate(cores):
            ds = [int(d) for d in dest[ptr[k]:ptr[k + 1]]]
            h = _tree_hops(pos[int(c)], [pos[d] for d in ds if d in pos], mesh) if int(c) in pos else (0, 0)
            per_core[int(c)] = (h[0], h[1], len(ds))
        seg = core_of[off[i]:off[i + 1]]
        hops_per_event[off[i]:off[i + 1]] = [per_core.get(int(c), (0, 0, 0))[0] for c in seg]
        chip_per_event[off[i]:off[i + 1]] = [per_core.get(int(c), (0, 0, 0))[1] for c in seg]
        dests_per_event[off[i]:off[i + 1]] = [per_core.get(int(c), (0, 0, 0))[2] for c in seg]
    placed_src = net.placed_mask.astype(np.float64)
    extra_units: list[tuple[str, int, int]] = []   # non-unit nodes' kernels (below): (node, lo, hi) columns
    per_unit = {"synaptic_ops": ac_in, "macs": mac_in, "ternary_codes": tern_in, "neuron_updates": upd, "neuron_updates_inactive": upd_i,
                "cell_updates": upd_c,
                "packets": pk, "axon_out": pk * (dests_per_event * placed_src)[None, :],
                "hops": pk * hops_per_event[None, :], "chip_hops": pk * chip_per_event[None, :]}
    # a node that is not a unit (no neuron: a LayerNorm) but runs a kernel of its own on the target:
    # its hook counts that kernel's MACs per (step·sample, channel), called with nothing received
    # (its input is its kernel's own input stage); they join the totals, the node and its cores
    unit_set = set(units)
    for u, node in g.nodes.items():
        if u in unit_set or semantics.kind_of(node) is semantics.Kind.IO:
            continue
        h = semantics.of(node, name=u).hook("internal_macs", getattr(bundle, "target", None))
        if h is None:
            continue
        n = int(np.prod(g.shape_out(u)))
        m = np.asarray(h(node, np.zeros((T * B, n))), np.float64).reshape(T * B, n)
        p = g.ann(u, Placement)
        c = (np.asarray(p.core).reshape(-1) if p is not None and p.core is not None else np.full(n, -1)).astype(np.int64)
        for k, v in per_unit.items():
            per_unit[k] = np.concatenate([v, m.reshape(T, B, n).sum(1) if k == "macs" else np.zeros((T, n))], axis=1)
        core_of = np.concatenate([core_of, c])
        extra_units.append((u, N, N + n))
        N += n
    per_step = {k: v.sum(1) for k, v in per_unit.items()}
    per_node: dict[str, dict[str, float]] = {}
    for u, lo, hi in [(u, off[i], off[i + 1]) for i, u in enumerate(units)] + extra_units:
        per_node[u] = {k: float(v[:, lo:hi].sum()) for k, v in per_unit.items()}
    cores = sorted({int(c) for c in core_of if c >= 0})
    # per core and step, for the work time: placed units on their cores (one core when unplaced)
    if cores:
        col = {c: j for j, c in enumerate(cores)}
        cols = np.array([col.get(int(c), -1) for c in core_of])
        keep = np.flatnonzero(cols >= 0)
        M = sp.csr_matrix((np.ones(len(keep)), (keep, cols[keep])), shape=(N, len(cores)))
    else:
        M = sp.csr_matrix(np.concatenate([net.placed_mask, np.ones(N - net.n_units, bool)]).astype(np.float64)[:, None])
    core_step = {k: np.asarray((M.T @ v.T).T) / B for k, v in per_unit.items()}
    per_core: dict[int, dict[str, float]] = {}
    if cores:
        for k, v in core_step.items():
            tot = v.sum(0) * B
            for j, c in enumerate(cores):
                per_core.setdefault(c, {})[k] = float(tot[j])
    chips = 1
    for u in units:
        p = g.ann(u, Placement)
        if p is not None and p.chip is not None:
            chips = max(chips, int(np.max(p.chip)) + 1)
    tick = float(spec.get("timing.sys_tick_s")) if spec is not None else GraphMeta.of(g).dt
    # NeuroBench-style metrics
    n_act = sum(act[u].size for u in units if is_neuron(g.nodes[u]))
    nz_act = sum(int(np.count_nonzero(act[u])) for u in units if is_neuron(g.nodes[u]))
    w_total = w_zero = layers = 0
    footprint = 0
    for name, node in g.nodes.items():
        for attr in ("weight", "w_x", "w_h"):
            w = getattr(node, attr, None)
            if w is None:
                continue
            w = np.asarray(w)
            w_total += w.size
            layers += 1
            w_zero += int(np.count_nonzero(w == 0))
            q = g.ann(name, Quant)
            footprint += int(np.count_nonzero(w)) * ((q.bits if q is not None else 32) / 8)
    footprint += sum(int(np.prod(g.shape_out(u))) * 4 for u in units if is_neuron(g.nodes[u]))
    nb = {"activation_sparsity": 1 - nz_act / max(n_act, 1), "connection_sparsity": w_zero / max(w_total, 1),
          "effective_ac_per_sample": float(per_step["synaptic_ops"].sum() / B),
          "effective_mac_per_sample": float((per_step["macs"].sum() + per_step["ternary_codes"].sum()) / B), "footprint_bytes": int(footprint)}
    spikes = {u: act[u][:, 0].reshape(T, -1) for u in units if is_neuron(g.nodes[u])}
    return Activity(steps=T, batch=B, tick_s=tick, per_step=per_step, per_node=per_node, per_core=per_core,
                    cores=cores, chips=chips, spikes=spikes, neurobench=nb,
                    dense_macs_per_step=float(AT.sum()), core_step=core_step, dense_weights=int(w_total),
                    layers=layers)


def constants(spec: HardwareSpec) -> dict[str, float]:
    """Energy per event (J) for each kind, the static powers (W); a missing constant is 0
    (or its term's fallback)."""
    out = {}
    for t in TERMS:
        key = t.constant if spec.has(t.constant) else t.fallback if t.fallback and spec.has(t.fallback) else None
        out[t.kind] = float(spec.get(key)) if key else 0.0
    out["static_core_w"] = float(spec.get("energy.static_core_w", 0.0))
    out["static_chip_w"] = float(spec.get("energy.static_chip_w", 0.0))
    return out


def constant_sources(spec: HardwareSpec) -> dict[str, str | None]:
    """The spec key each kind's energy actually comes from (None: not charged)."""
    out = {}
    for t in TERMS:
        out[t.kind] = t.constant if spec.has(t.constant) else t.fallback if t.fallback and spec.has(t.fallback) else None
    return out


def time_constants(spec: HardwareSpec) -> dict[str, float]:
    """Time per event (s) for each kind: a ``timing.*_s`` entry, or a cycle count (``core.cycles_per_*``,
    ``timing.cycles_per_*``) ÷ ``core.clock_hz``."""
    clock = spec.get("core.clock_hz", None)
    out = {}
    for t in TERMS:
        out[t.kind] = 0.0
        for key in t.time:
            if not spec.has(key):
                continue
            v = float(spec.get(key))
            if "cycles" in key:
                if not clock:
                    continue
                v = v / float(clock)
            out[t.kind] = v
            break
    return out


def _sync_s(spec: HardwareSpec, cores: int) -> float:
    """Barrier-synchronisation time per step for ``cores`` cores (``timing.step_sync_s``,
    optionally a list indexed by ``timing.step_sync_cores``: the entry of the largest
    core count ≤ cores)."""
    if not spec.has("timing.step_sync_s"):
        return 0.0
    v = spec.get("timing.step_sync_s")
    if not isinstance(v, list):
        return float(v)
    at = spec.get("timing.step_sync_cores")
    i = max([j for j, c in enumerate(at) if c <= max(cores, 1)], default=0)
    return float(v[i])


def step_times(act: Activity, spec: HardwareSpec) -> dict:
    """Work time per step (s, one sample): the slowest core's events × time per event, + sync."""
    tc = time_constants(spec)
    C = next(iter(act.core_step.values())).shape[1] if act.core_step else 1
    per_core = np.zeros((act.steps, C))
    for k, v in act.core_step.items():
        per_core += v * tc[k]
    slowest = per_core.max(1) if C else np.zeros(act.steps)
    sync = _sync_s(spec, len(act.cores))
    timed = any(tc.values())
    return {"per_step_s": (slowest + sync) if timed else np.zeros(act.steps), "time_per_event_s": tc,
            "sync_s": sync, "timed": timed, "slowest_core_mean_s": float(slowest.mean()) if timed else None,
            "busiest_core": int(act.cores[int(per_core.sum(0).argmax())]) if act.cores and timed else None}


def estimate(act: Activity, spec: HardwareSpec, mode: str | None = None) -> dict:
    """Energy report (J): totals, per step, per node, per core, per term; parts sum to totals.

    ``mode``: how long a step lasts for static power: ``tick`` or ``work`` (default:
    ``tick`` for a tick-bound chip, else ``work`` when the spec gives times per event)."""
    c = constants(spec)
    srcs = constant_sources(spec)
    if not spec.has("energy"):
        raise ConfigError(f"spec '{spec.name}' has no energy model", hint="add an [energy] table with --hw")
    tick_bound = bool(spec.get("timing.tick_bound", False))
    st = step_times(act, spec)
    if mode is None:
        mode = "tick" if tick_bound or not st["timed"] else "work"
    if mode not in MODES:
        raise OptionError(f"energy time mode must be one of {', '.join(MODES)}, not {mode!r}")
    work = st["per_step_s"]
    if not st["timed"]:
        work_step = np.full(act.steps, act.tick_s)  # no time per event (analog, continuous time): the tick
    elif tick_bound:
        # timer-driven: a step lasts a whole tick; the shortest safe tick is the worst step's work
        work_step = np.full(act.steps, float(work.max()))
    else:
        work_step = work
    step_s = {"tick": np.full(act.steps, act.tick_s), "work": work_step}
    n_cores = max(len(act.cores), 1)
    static_w = n_cores * c["static_core_w"] + act.chips * c["static_chip_w"]
    # the batch's samples are separate inferences: on hardware they run one after another
    static_by_mode = {m: float(static_w * s.sum() * act.batch) for m, s in step_s.items()}
    dyn_step = {k: act.per_step[k] * c[k] for k in KINDS}
    static_step = static_w * step_s[mode] * act.batch
    per_step_total = sum(dyn_step.values()) + static_step
    by_kind = {k: float(v.sum()) for k, v in dyn_step.items()}
    by_kind["static"] = float(static_step.sum())
    total = float(sum(by_kind.values()))
    dynamic = total - by_kind["static"]
    terms = [{"kind": t.kind, "count": float(act.per_step[t.kind].sum()), "constant": srcs[t.kind],
              "j_per_event": c[t.kind], "energy_j": by_kind[t.kind], "pays_for": t.pays_for} for t in TERMS]
    for key, n in (("energy.static_chip_w", act.chips), ("energy.static_core_w", n_cores)):
        w = c[key.split(".")[1]]
        terms.append({"kind": "static", "count": n, "constant": key if spec.has(key) else None, "w_each": w,
                      "seconds": float(step_s[mode].sum() * act.batch), "energy_j": float(w * n * step_s[mode].sum() * act.batch),
                      "pays_for": "leakage and idle clocking of the " + ("chips" if "chip" in key else "cores")})
    per_node = {n: {k: v[k] * c[k] for k in KINDS} for n, v in act.per_node.items()}
    for n in per_node:
        per_node[n]["total"] = float(sum(per_node[n].values()))
    duration = float(step_s[mode].sum())
    per_core = {}
    for core, v in act.per_core.items():
        e = {k: v[k] * c[k] for k in KINDS}
        e["static"] = c["static_core_w"] * duration * act.batch
        e["total"] = float(sum(e.values()))
        per_core[str(core)] = e
    conv = spec.section("energy.conventional") if spec.has("energy.conventional") else {}
    dense = act.dense_macs_per_step * act.steps * act.batch
    comparison = {"dense_macs": dense,
                  "fp32_j": dense * float(conv.get("fp32_mac_j", 0.0)),
                  "int8_j": dense * (float(conv.get("int8_mult_j", 0.0)) + float(conv.get("int8_add_j", 0.0)))}
    share = by_kind["static"] / total if total > 0 else 0.0
    busy = float(st["per_step_s"].mean() / act.tick_s) if st["timed"] else None
    if share >= 0.5:
        why = (f"static power dominates ({share:.1%} of the total): {act.chips} chip(s) × "
               f"{c['static_chip_w']:.3g} W over {duration * 1e3:.4g} ms per inference ({mode} mode)")
        if busy is not None and mode == "tick":
            why += f"; the slowest core is busy {busy:.2%} of each tick, so the chip mostly idles"
    else:
        top = max(KINDS, key=lambda k: by_kind[k])
        why = f"dynamic energy dominates ({1 - share:.1%}); the largest term is {top} ({by_kind[top] / total:.1%})"
    return {
        "spec": spec.name, "steps": act.steps, "batch": act.batch, "tick_s": act.tick_s,
        "constants": c, "static_power_w": static_w, "mode": mode, "tick_bound": tick_bound,
        "time": {"per_inference_s": duration, "tick_per_inference_s": act.steps * act.tick_s,
                 "work_per_inference_s": float(st["per_step_s"].sum()) if st["timed"] else None,
                 "work_mean_step_s": float(st["per_step_s"].mean()) if st["timed"] else None,
                 "work_worst_step_s": float(st["per_step_s"].max()) if st["timed"] else None,
                 "sync_s": st["sync_s"], "busy_fraction_of_tick": busy, "busiest_core": st["busiest_core"],
                 "time_per_event_s": st["time_per_event_s"]},
        "static_by_mode_j": static_by_mode,
        "total_by_mode_j": {m: dynamic + s for m, s in static_by_mode.items()},
        "dominant": "static" if share >= 0.5 else "dynamic", "dominant_why": why,
        "total_j": total, "per_inference_j": total / act.batch, "per_step_j": total / act.steps,
        "average_power_w": total / (act.batch * duration) if duration > 0 else 0.0,
        "by_kind_j": by_kind, "per_node_j": per_node, "per_core_j": per_core, "terms": terms,
        "per_step_j_series": per_step_total.tolist(), "step_s_series": step_s[mode].tolist(),
        "counts": {k: float(v.sum()) for k, v in act.per_step.items()},
        "cores_used": len(act.cores), "chips_used": act.chips,
        "neurobench": act.neurobench, "conventional": comparison,
        "dynamic_j": dynamic,
        "savings_vs_fp32": comparison["fp32_j"] / total if total > 0 else None,
        "dynamic_savings_vs_fp32": (comparison["fp32_j"] / dynamic if dynamic > 0 else None),
        "check": {"sum_of_kinds_j": float(sum(by_kind.values())),
                  "sum_of_terms_j": float(sum(t["energy_j"] for t in terms)),
                  "sum_of_nodes_plus_static_j": float(sum(v["total"] for v in per_node.values()) + by_kind["static"])},
    }


def profile(bundle, inputs: dict, device: str | None = None, spec: str | None = None, overrides=(),
            steps: int | None = None, mode: str | None = None, baselines: bool = True) -> tuple[dict, Activity]:
    s = spec_for(bundle, spec, overrides)
    act = count_activity(bundle, inputs, device=device, spec=s, steps=steps)
    rep = estimate(act, s, mode=mode)
    rep["target"], rep["device"] = bundle.target, device or bundle.backend.default_device
    if baselines:
        from .energy_baselines import baselines as _bl

        rep["baselines"] = _bl(act, s)
    return rep, act
