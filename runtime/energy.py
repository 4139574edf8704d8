"""Energy model: activity counts from a run × the target's sourced constants.

``profile(bundle, inputs, device=None, spec=None)`` runs the bundle on a
device, recording every neuron node, and counts per timestep, per node and
per core:

* **synaptic events** (AC): one per (active source, synapse) where the source
  emits binary spikes; **MACs** where the source carries graded values (analog
  inputs, EGRU events, LI outputs) — NeuroBench's effective AC / MAC split.
  The synapse pattern is :func:`nmc.passes.netmodel.build_network`'s: the
  synapses the chip *stores* (pools, flattens and convolutions expanded; a
  weight node stored dense counts every entry, zeros included, since the core
  walks the whole row; one with a ``Sparsity`` annotation (CSR/ELL) counts its
  nonzeros only);
* **neuron updates**: every neuron of every neuron node, every step (the
  targets are time-driven);
* **packets**: one per output event of a placed neuron (multicast) and one per
  host input event; **hops**: per packet, the edges of the XY multicast tree
  from its core to the cores its node's ``Route`` annotation lists (0 without
  placement). A target that sends a graded input value as k repeated events
  (SpiNNaker 2, ``S2Program.input_events``) counts k packets and k synaptic
  events per synapse for it;
* **active cores** and **chips** from the ``Placement`` annotations.

Energy = dynamic (counts × ``[energy]`` constants of the HardwareSpec) +
static ((active cores × ``static_core_w`` + chips × ``static_chip_w``) × steps
× ``timing.sys_tick_s`` × batch: the samples of a batch are separate inferences,
run one after another on hardware). Every part is kept, so the totals equal the sum of the
parts by construction (checked in the report). A comparison line gives the same
network as dense fp32 / int8 MACs on a conventional processor
(``[energy.conventional]``, 45 nm figures).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from nmc.annotations import Placement, Quant, Route
from nmc.errors import ConfigError, OptionError
from nmc.hw import HardwareSpec
from nmc.nodes import is_neuron, is_spiking

KINDS = ("synaptic_ops", "macs", "neuron_updates", "packets", "hops")
#: energy constant used for each kind of count
CONSTANT = {"synaptic_ops": "energy.synaptic_op_j", "macs": "energy.mac_int8_j",
            "neuron_updates": "energy.neuron_update_j", "packets": "energy.packet_sent_j",
            "hops": "energy.router_hop_j"}


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


def spec_for(bundle, spec: str | None = None, overrides=()) -> HardwareSpec:
    """The spec a bundle was compiled with (its hw.json), or a named one."""
    if spec is not None:
        return HardwareSpec.load(spec, overrides=list(overrides))
    if bundle.hw is None:
        raise OptionError(f"bundle for target '{bundle.target}' has no hardware spec to estimate energy with",
                          hint="pass --spec spinnaker2 (or loihi2, brainscales2)")
    s = HardwareSpec.from_dict(bundle.hw)
    return s.with_overrides(list(overrides)) if overrides else s


def _tree_hops(src: tuple[int, int], dests: list[tuple[int, int]]) -> int:
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
    return len(edges)


def _core_positions(graph) -> dict[int, tuple[int, int]]:
    pos = {}
    for name in graph.nodes:
        p = graph.ann(name, Placement)
        if p is None or p.core is None or p.x is None:
            continue
        core = np.asarray(p.core).reshape(-1)
        chip = np.asarray(p.chip).reshape(-1) if p.chip is not None else np.zeros_like(core)
        x, y = np.asarray(p.x).reshape(-1), np.asarray(p.y).reshape(-1)
        for c, ch, xx, yy in zip(core, chip, x, y):
            pos[int(c)] = (int(xx) + 1000 * int(ch), int(yy))
    return pos


def count_activity(bundle, inputs: dict, device: str | None = None, spec: HardwareSpec | None = None,
                   steps: int | None = None) -> Activity:
    from nmc.passes.netmodel import build_network
    from nmc.passes.rules import CoreLimits

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
    limits = CoreLimits.from_spec(spec.to_dict()) if spec is not None else None
    net = build_network(g, limits, None) if limits is not None else build_network(g, CoreLimits(), None)
    AT = net.AT  # rows = source units, cols = target units: synapse counts
    units = net.unit_names
    off = net.unit_offset
    # a target that sends a graded input value as repeated events (SpiNNaker 2: ``input_events``)
    # costs one packet and one synaptic event per event: count those, as spikes
    as_events = getattr(bundle.program, "input_events", None) if hasattr(bundle, "program") else None
    events = {u: as_events(u, act[u]) for u in g.inputs} if as_events else {}
    events = {u: np.asarray(e, np.float64) for u, e in events.items() if e is not None}
    flat = np.concatenate([(events[u] if u in events else (act[u] != 0)).reshape(T, B, -1) for u in units],
                          axis=2).astype(np.float64)  # (T, B, N) events (0/1, or counts of repeated events)
    active = flat
    graded_src = np.zeros(net.n_units, dtype=bool)
    for i, u in enumerate(units):
        node = g.nodes[u]
        binary = u in events or np.all(np.isin(act[u], (0.0, 1.0)))
        graded_src[off[i]:off[i + 1]] = not (is_spiking(node) or (isinstance(node, nir.Input) and binary))
    # synaptic events into each target unit, per step, summed over the batch
    a_sum = active.sum(1)  # (T, N)
    ac_in = np.asarray((AT[~graded_src].T @ a_sum[:, ~graded_src].T)).T if (~graded_src).any() else np.zeros((T, net.n_units))
    mac_in = np.asarray((AT[graded_src].T @ a_sum[:, graded_src].T)).T if graded_src.any() else np.zeros((T, net.n_units))
    # neuron updates: every placed neuron every step, per sample
    upd = np.zeros((T, net.n_units))
    upd[:, net.placed_mask] = B
    # packets: one per event of a placed neuron; host inputs inject one packet per event too
    pk = a_sum.copy()
    # placement: cores and hops
    core_of = np.full(net.n_units, -1, dtype=np.int64)
    for i, u in enumerate(units):
        p = g.ann(u, Placement)
        if p is not None and p.core is not None:
            core_of[off[i]:off[i + 1]] = np.asarray(p.core).reshape(-1)
    pos = _core_positions(g)
    hops_per_event = np.zeros(net.n_units)
    for i, u in enumerate(units):
        r = g.ann(u, Route)
        if r is None or r.cores is None or not pos:
            continue
        cores = np.asarray(r.cores).reshape(-1)
        ptr, dest = np.asarray(r.dest_ptr).reshape(-1), np.asarray(r.dest).reshape(-1)
        per_core = {int(c): _tree_hops(pos[int(c)], [pos[int(d)] for d in dest[ptr[k]:ptr[k + 1]] if int(d) in pos])
                    for k, c in enumerate(cores) if int(c) in pos}
        seg = core_of[off[i]:off[i + 1]]
        hops_per_event[off[i]:off[i + 1]] = [per_core.get(int(c), 0) for c in seg]
    hops = pk * hops_per_event[None, :]
    per_unit = {"synaptic_ops": ac_in, "macs": mac_in, "neuron_updates": upd, "packets": pk, "hops": hops}
    per_step = {k: v.sum(1) for k, v in per_unit.items()}
    per_node: dict[str, dict[str, float]] = {}
    for i, u in enumerate(units):
        sl = slice(off[i], off[i + 1])
        per_node[u] = {k: float(v[:, sl].sum()) for k, v in per_unit.items()}
    cores = sorted({int(c) for c in core_of if c >= 0})
    per_core: dict[int, dict[str, float]] = {}
    if cores:
        for k, v in per_unit.items():
            tot = v.sum(0)
            sums = np.bincount(core_of[core_of >= 0], weights=tot[core_of >= 0], minlength=max(cores) + 1)
            for c in cores:
                per_core.setdefault(c, {})[k] = float(sums[c])
    chips = 1
    for u in units:
        p = g.ann(u, Placement)
        if p is not None and p.chip is not None:
            chips = max(chips, int(np.max(p.chip)) + 1)
    tick = float(spec.get("timing.sys_tick_s")) if spec is not None else float(g.meta.get("dt", 1e-3))
    # NeuroBench-style metrics
    n_act = sum(act[u].size for u in units if is_neuron(g.nodes[u]))
    nz_act = sum(int(np.count_nonzero(act[u])) for u in units if is_neuron(g.nodes[u]))
    w_total = w_zero = 0
    footprint = 0
    for name, node in g.nodes.items():
        for attr in ("weight", "w_x", "w_h"):
            w = getattr(node, attr, None)
            if w is None:
                continue
            w = np.asarray(w)
            w_total += w.size
            w_zero += int(np.count_nonzero(w == 0))
            q = g.ann(name, Quant)
            footprint += int(np.count_nonzero(w)) * ((q.bits if q is not None else 32) / 8)
    footprint += sum(int(np.prod(g.shape_out(u))) * 4 for u in units if is_neuron(g.nodes[u]))
    nb = {"activation_sparsity": 1 - nz_act / max(n_act, 1), "connection_sparsity": w_zero / max(w_total, 1),
          "effective_ac_per_sample": float(per_step["synaptic_ops"].sum() / B),
          "effective_mac_per_sample": float(per_step["macs"].sum() / B), "footprint_bytes": int(footprint)}
    spikes = {u: act[u][:, 0].reshape(T, -1) for u in units if is_neuron(g.nodes[u])}
    return Activity(steps=T, batch=B, tick_s=tick, per_step=per_step, per_node=per_node, per_core=per_core,
                    cores=cores, chips=chips, spikes=spikes, neurobench=nb,
                    dense_macs_per_step=float(AT.sum()))


def constants(spec: HardwareSpec) -> dict[str, float]:
    out = {}
    for kind, key in CONSTANT.items():
        if not spec.has(key):
            out[kind] = 0.0
            continue
        out[kind] = float(spec.get(key))
    out["static_core_w"] = float(spec.get("energy.static_core_w", 0.0))
    out["static_chip_w"] = float(spec.get("energy.static_chip_w", 0.0))
    return out


def estimate(act: Activity, spec: HardwareSpec) -> dict:
    """Energy report (J): totals, per step, per node, per core, per kind; parts sum to totals."""
    c = constants(spec)
    missing = [CONSTANT[k] for k in KINDS if not spec.has(CONSTANT[k]) and act.per_step[k].sum() > 0]
    if missing and not spec.has("energy"):
        raise ConfigError(f"spec '{spec.name}' has no energy model", hint="add an [energy] table with --hw")
    n_cores = max(len(act.cores), 1)
    static_w = n_cores * c["static_core_w"] + act.chips * c["static_chip_w"]
    dyn_step = {k: act.per_step[k] * c[k] for k in KINDS}
    # the batch's samples are separate inferences: on hardware they run one after another
    static_step = np.full(act.steps, static_w * act.tick_s * act.batch)
    per_step_total = sum(dyn_step.values()) + static_step
    by_kind = {k: float(v.sum()) for k, v in dyn_step.items()}
    by_kind["static"] = float(static_step.sum())
    total = float(sum(by_kind.values()))
    per_node = {n: {k: v[k] * c[k] for k in KINDS} for n, v in act.per_node.items()}
    for n in per_node:
        per_node[n]["total"] = float(sum(per_node[n].values()))
    per_core = {}
    for core, v in act.per_core.items():
        e = {k: v[k] * c[k] for k in KINDS}
        e["static"] = c["static_core_w"] * act.tick_s * act.steps * act.batch
        e["total"] = float(sum(e.values()))
        per_core[str(core)] = e
    conv = spec.section("energy.conventional") if spec.has("energy.conventional") else {}
    dense = act.dense_macs_per_step * act.steps * act.batch
    comparison = {"dense_macs": dense,
                  "fp32_j": dense * float(conv.get("fp32_mac_j", 0.0)),
                  "int8_j": dense * (float(conv.get("int8_mult_j", 0.0)) + float(conv.get("int8_add_j", 0.0)))}
    duration = act.steps * act.tick_s
    return {
        "spec": spec.name, "steps": act.steps, "batch": act.batch, "tick_s": act.tick_s,
        "constants": c, "static_power_w": static_w,
        "total_j": total, "per_inference_j": total / act.batch, "per_step_j": total / act.steps,
        "average_power_w": total / (act.batch * duration) if duration > 0 else 0.0,
        "by_kind_j": by_kind, "per_node_j": per_node, "per_core_j": per_core,
        "per_step_j_series": per_step_total.tolist(),
        "counts": {k: float(v.sum()) for k, v in act.per_step.items()},
        "cores_used": len(act.cores), "chips_used": act.chips,
        "neurobench": act.neurobench, "conventional": comparison,
        "dynamic_j": total - by_kind["static"],
        "savings_vs_fp32": comparison["fp32_j"] / total if total > 0 else None,
        "dynamic_savings_vs_fp32": (comparison["fp32_j"] / (total - by_kind["static"])
                                    if total > by_kind["static"] else None),
        "check": {"sum_of_kinds_j": float(sum(by_kind.values())),
                  "sum_of_nodes_plus_static_j": float(sum(v["total"] for v in per_node.values()) + by_kind["static"])},
    }


def profile(bundle, inputs: dict, device: str | None = None, spec: str | None = None, overrides=(),
            steps: int | None = None) -> tuple[dict, Activity]:
    s = spec_for(bundle, spec, overrides)
    act = count_activity(bundle, inputs, device=device, spec=s, steps=steps)
    rep = estimate(act, s)
    rep["target"], rep["device"] = bundle.target, device or bundle.backend.default_device
    return rep, act
