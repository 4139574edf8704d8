"""Per-PE cost report: memory and work per tick against the spec, counted
with the target model's byte and work models (:mod:`.target`).

Per PE (ARM Cortex-M4F): neurons, synapse bytes
(:meth:`~.target.SpiNNaker2Target.projection_bytes`: int8 weight + 16-bit index
per non-zero synapse of the emitted weights, plus a row pointer per source row
with a non-zero onto the PE) + neuron state bytes (``core.neuron_state_bytes``
per neuron), compared with ``core.data_bytes``; EGRU kernels by their emitted arrays
(:meth:`~.target.SpiNNaker2Target.kernel_bytes`); and work per tick
(:meth:`~.target.SpiNNaker2Target.pe_time`): expected synaptic events (source rate ×
fan-out onto this PE; rates from the ``Placement.rate`` annotations written by
the partition pass, else every source fires every step) ×
``core.cycles_per_synop`` (a graded input value counts its x/quantum repeated
events: ``input_events`` in the report) + neurons × ``core.cycles_per_neuron_update``,
divided by ``core.clock_hz``: the predicted ``time_done`` per tick. Conv
projections (:mod:`.conv`) emitted as a ``Conv2DProjection`` (both populations
whole, :func:`.program.emitted_whole`) store their int8 kernel once per PE
instead of per synapse (:meth:`~.target.SpiNNaker2Target.conv_kernel_bytes`),
and their synaptic events count as int8 MACs on the PE's MAC array
(``core.cycles_per_mac_int8``; an estimate: py-spinnaker2's conv kernel code is
not in the notes); split over explicit PEs, the run script expands them to rows,
counted as any projection's. A ternary EGRU kernel's packed codes (every code of an
event's column, zeros included: ``ternary_codes`` in the report) cost
``core.cycles_per_ternary_code`` each. A PE whose
plastic projection's learning kernel (:mod:`.plasticity`) adds its state
(:meth:`~.target.SpiNNaker2Target.learning_bytes`, ``learning_bytes``) and one
update per synapse of its rows each tick (``learning_updates``, priced as a
synaptic event: an estimate). A PE whose
predicted time exceeds ``sys_tick`` falls out of step (PEs are not barrier
synchronised): that is a warning naming the PE and its population.
"""
from __future__ import annotations

import numpy as np

from nmc.annotations import Placement

from .egru import kernel_tags
from .egru_packed import is_packed
from .program import emitted_whole, pe_slices
from .target import SpiNNaker2Target, input_rates


def cost_report(prog, graph, spec, ctx, target: SpiNNaker2Target | None = None) -> dict:
    target = target if target is not None else SpiNNaker2Target(spec)
    data_bytes = int(target.data_bytes)
    state_b = int(target.limits.state_bytes)   # core.neuron_state_bytes: what a PE holds per neuron
    tick = prog.sys_tick_s
    rate = {}
    for p in prog.populations:
        a = graph.ann(p.name, Placement)
        r = np.asarray(a.rate, float).reshape(-1) if a is not None and a.rate is not None else None
        if p.model == "spike_list" and p.constant_events:
            r = np.full(p.size, float(p.constant_events))
        elif p.model == "spike_list" and (r is None or r.size != p.size):
            r = input_rates(graph, ctx, p.name, p.size, p.quantum)
        rate[p.name] = r if r is not None and r.size == p.size else np.ones(p.size)
    inputs = {}
    for k, pn in sorted(prog.inputs.items()):   # graded inputs: repeated events (lower.graded_inputs)
        p = prog.pop(pn)
        data = (getattr(ctx, "data", None) or {}).get(k)
        d = {"quantum": p.quantum, "events_per_step": float(rate[pn].sum()),
             "rates_from": "calibration data" if data is not None else "worst case: one event per unit and step"}
        if data is not None:
            a = np.asarray(data, float).reshape(-1, p.size)
            d["units_active_per_step"] = float((a != 0).mean(0).sum())
            d["extra_events_per_step"] = d["events_per_step"] - d["units_active_per_step"]
        inputs[k] = d
    pes: dict[int, dict] = {}
    for p in prog.populations:
        if p.pe is None:
            continue
        for pe in np.unique(p.pe):
            d = pes.setdefault(int(pe), {"neurons": 0, "synapse_bytes": 0, "state_bytes": 0, "synaptic_events": 0.0,
                                         "populations": []})
            k = int((p.pe == pe).sum())
            d["neurons"] += k
            d["state_bytes"] += k * state_b
            d["populations"].append(p.name)
    for q in prog.projections:
        post = prog.pop(q.post)
        if post.pe is None:
            continue
        nz = q.weights != 0
        conv2d = emitted_whole(post) and emitted_whole(prog.pop(q.pre))
        for pe in np.unique(post.pe):
            rows = post.pe == pe
            sub = nz[rows]
            d = pes[int(pe)]
            ev = float((sub.sum(0) * rate.get(q.pre, np.ones(sub.shape[1]))).sum())
            if q.conv is not None and conv2d:  # the int8 kernel once per PE; an event: one int8 MAC per target
                d["synapse_bytes"] += target.conv_kernel_bytes(q.kernel)
                d["macs"] = d.get("macs", 0.0) + ev
                continue
            d["synapse_bytes"] += target.projection_bytes(sub)
            d["synaptic_events"] += ev
    for p in prog.populations:  # EGRU kernels: CSC arrays, state and scratch; a MAC per kept weight per event
        if p.model != "egru_kernel" or p.pe is None:
            continue
        slices = pe_slices(p)
        src_rate = rate.get(p.source, np.ones(p.kernel["wx"].shape[1]))
        for (pe, units), tag in zip(slices, kernel_tags(p.name, slices)):
            d = pes[int(pe)]
            # the PE's SRAM holds exactly the kernel's arrays (its state included): the generic
            # state bytes counted per neuron above are taken back out of the synapse bytes
            d["synapse_bytes"] += target.kernel_bytes(p.kernel, units) - (units.stop - units.start) * state_b
            ev = target.kernel_events(p.kernel, units, src_rate, rate[p.name])
            if is_packed(p.kernel):   # codes decoded, at core.cycles_per_ternary_code each
                d["ternary_codes"] = d.get("ternary_codes", 0.0) + ev
            else:
                d["synaptic_events"] += ev
            d.setdefault("kernel", f"kernels/{tag}.c")
    for p in prog.populations:  # SSM kernels: the run's kernel file and input stage (target.ssm_run_bytes)
        if p.model != "ssm_kernel" or p.pe is None:
            continue
        slices = pe_slices(p)
        for (pe, units), tag in zip(slices, kernel_tags("".join(c if c.isalnum() else "_" for c in p.name), slices)):
            d = pes[int(pe)]
            d["synapse_bytes"] += target.ssm_run_bytes(p.kernel, units) - (units.stop - units.start) * state_b
            d.setdefault("kernel", f"kernels/{tag}.c")
    for q in prog.projections:   # learning kernels (.plasticity): their state; one update per synapse per tick
        post = prog.pop(q.post)
        if not q.plastic or post.pe is None:
            continue
        from .plasticity import rule_of

        rule, n_in = rule_of(q.plastic), q.weights.shape[1]
        per_neuron, per_run = target.learning_bytes(rule, n_in)
        for pe, rows in pe_slices(post):
            d = pes[int(pe)]
            n = rows.stop - rows.start
            d["learning_bytes"] = d.get("learning_bytes", 0) + int(round(n * per_neuron / target.row_share)) + per_run
            d["learning_updates"] = d.get("learning_updates", 0) + n * n_in
    over = []
    for pe, d in sorted(pes.items()):
        d["sram_bytes"] = d["synapse_bytes"] + d["state_bytes"] + d.get("learning_bytes", 0)
        # a learning kernel's update of one synapse priced as one synaptic event (an estimate)
        d["time_done_s"] = target.pe_time(d["synaptic_events"] + d.get("learning_updates", 0), d.get("macs", 0.0),
                                          d["neurons"], d.get("ternary_codes", 0.0))
        if d["time_done_s"] > tick:
            over.append(pe)
            ctx.warnings.add(f"PE {pe} ({', '.join(d['populations'])}) needs {d['time_done_s'] * 1e3:.3g} ms per tick "
                             f"but the tick is {tick * 1e3:.3g} ms: it would fall out of step (spread the population "
                             "over more PEs: --option max_atoms_per_core=N, or raise --option sys_tick=S)",
                             node=d["populations"][0], source="spinnaker2")
        if d["sram_bytes"] > data_bytes:
            ctx.warnings.add(f"PE {pe} needs {d['sram_bytes']} bytes of SRAM data, more than {data_bytes}",
                             node=d["populations"][0], source="spinnaker2")
    times = [d["time_done_s"] for d in pes.values()] or [0.0]
    srams = [d["sram_bytes"] for d in pes.values()] or [0]
    return {"pes_used": len(pes), "sram_bytes_max": int(max(srams)), "sram_bytes_limit": data_bytes,
            "time_per_tick_max_s": float(max(times)), "sys_tick_s": tick, "pes_over_tick": over,
            "input_events": inputs,
            "per_pe": {str(k): v for k, v in sorted(pes.items())}}
