"""Graph → :class:`BSS2Program`: synapse rows, 6-bit weights, analog parameters.

* Layers: LIF, CubaLIF (spiking) and LI, CubaLI (readouts, membrane recorded);
  sources are Inputs (binary spikes) and those layers. Linear chains are fused
  by :func:`backends.linear.compose`. Anything else (EGRU, graded events, IF/I
  without a leak, Delay) is refused with the reason and the target that can
  take it.
* Time: the chip is continuous-time. Each layer's hardware time constant is
  chosen so that one model step of decay equals the graph's discrete decay
  (Euler 1 − dt/τ or exact e^{−dt/τ}): τ_hw = −dt/ln(decay) · 1e-3.
* Weights: the drive of one input spike in model voltage units, D = g·M (g =
  a·R for LIF, a_mem·R·a_syn·w_in for CubaLIF), scaled per layer to 6 bits:
  s = max|D|/63, w6 = round(|D|/s) with the sign on the row.
* Rows and labels: :func:`passes.rewire.rewire_matrix` on the integer matrix
  (no pruning; fan-in above ``synapse_array.fan_in_signed`` merges circuits:
  ⌈in-degree/fan_in⌉ circuits per logical neuron).
* Analog parameters in threshold units (U = the layer's largest threshold) and
  hardware seconds → 10-bit DAC codes through the calibration table.
* The mapping report gives rows, circuits and runs used against their lower
  bounds; a network larger than one chip is split into sequential runs.
"""
from __future__ import annotations

import math

import nir
import numpy as np

from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU
from nmc.passes.rewire import rewire_matrix

from ..linear import compose, param_vec, step_rate
from . import calibration as C
from .program import BSS2Program, Layer, Projection

LAYERS = (nir.LIF, nir.CubaLIF, nir.LI, nir.CubaLI)
WHY = {"EGRU": "EGRU cells need a programmable processor and graded events; compile for spinnaker2",
       "Delay": "synaptic delays are not configurable per synapse here; compile for loihi2",
       "Threshold": "no stateless threshold unit; use a LIF layer"}


_vec = param_vec


def _decay(tau, dt, integ):
    return 1 - step_rate(tau, dt, integ, "")


def _leaky_integrators(graph: Graph, ctx, dt: float, speed: float) -> Graph:
    """Analog neurons always leak: IF/I nodes become LIF/LI with the longest
    membrane time constant the DAC reaches (same input gain dt·R per step),
    which is exact only while the run is short against that τ (warned)."""
    todo = [k for k, n in graph.nodes.items() if isinstance(n, (nir.IF, nir.I))]
    if not todo:
        return graph
    g = graph.copy()
    tau = float(ctx.spec.get("dac.range.tau_mem")[1]) * speed  # model seconds
    for k in todo:
        node = g.nodes[k]
        n = int(np.prod(g.shape_out(k)))
        r = _vec(node, "r", n) * tau
        if isinstance(node, nir.IF):
            g.nodes[k] = nir.LIF(tau=np.full(n, tau), r=r, v_leak=np.zeros(n), v_threshold=_vec(node, "v_threshold", n).copy(),
                                 v_reset=_vec(node, "v_reset", n).copy())
        else:
            g.nodes[k] = nir.LI(tau=np.full(n, tau), r=r, v_leak=np.zeros(n))
        ctx.warnings.add(f"{type(node).__name__} has no analog equivalent (every circuit leaks): mapped to a leaky "
                         f"neuron with the longest time constant, τ = {tau:g} s of model time", node=k, source="brainscales2")
    return g


def lower(graph: Graph, ctx) -> BSS2Program:
    spec = ctx.spec
    dt = float(graph.meta.get("dt", 1e-3))
    integ = graph.meta.get("integrator", "euler")
    for name, node in graph.nodes.items():
        t = type(node).__name__ if not isinstance(node, EGRU) else "EGRU"
        if t in WHY:
            raise UnsupportedNodeError(f"{t} nodes cannot be mapped to BrainScaleS-2: {WHY[t]}", node=name)
    graph = _leaky_integrators(graph, ctx, dt, float(spec.get("timing.speedup")))
    order, back = graph.schedule()
    lin = compose(graph, order, back, target="brainscales2", neurons=LAYERS)
    fan = int(spec.get("synapse_array.fan_in_signed"))
    per_row = int(spec.get("synapse_array.sources_per_row"))
    wmax = int(spec.get("synapse_array.weight_max"))
    speed = float(spec.get("timing.speedup"))
    per_driver = int(spec.get("synapse_array.rows_per_driver"))
    driver_base = 0
    layers, projs, warns = [], [], []
    for name in order:
        node = graph.nodes[name]
        if not isinstance(node, LAYERS):
            continue
        n = int(np.prod(graph.shape_out(name)))
        cuba = isinstance(node, (nir.CubaLIF, nir.CubaLI))
        spiking = isinstance(node, (nir.LIF, nir.CubaLIF))
        if cuba:
            tm, ts = _vec(node, "tau_mem", n), _vec(node, "tau_syn", n)
            dm, ds = _decay(tm, dt, integ), _decay(ts, dt, integ)
            tme, tse = -dt / np.log(dm), -dt / np.log(ds)
            # current jump per unit weight whose total effect on v equals the discrete model's: ΔJ·τ_syn/τ_mem = a_mem·R·w_in
            g = (1 - dm) * _vec(node, "r", n) * _vec(node, "w_in", n) * tme / tse
            params = {"tau_mem": tme / speed, "tau_syn": tse / speed}
        else:
            tm = _vec(node, "tau", n)
            dm = _decay(tm, dt, integ)
            g = (1 - dm) * _vec(node, "r", n)
            params = {"tau_mem": -dt / np.log(dm) / speed, "tau_syn": np.full(n, 0.2e-6)}
        if np.any(dm <= 0):
            raise UnsupportedNodeError("dt ≥ τ: the decay per step is not positive", node=name, hint="use a smaller --dt")
        terms, bias = lin[name]
        if np.any(np.asarray(bias) != 0):
            warns.append((name, "biases are applied as a constant leak-potential shift (v_leak += R·b)"))
        U = float(np.max(_vec(node, "v_threshold", n))) if spiking else 1.0
        leak = _vec(node, "v_leak", n) + (_vec(node, "r", n) * (_vec(node, "w_in", n) if cuba else 1)) * np.asarray(bias).reshape(-1)
        params["t_refrac"] = np.full(n, float(ctx.options.get("t_refrac", 0.0)) / speed)  # NIR has none: 0 by default
        params.update({"v_threshold": (_vec(node, "v_threshold", n) / U) if spiking else np.full(n, 3.0),
                       "v_leak": leak / U, "v_reset": (_vec(node, "v_reset", n) / U) if spiking else np.zeros(n)})
        if spiking and graph.reset_mode(name) == "subtract":
            warns.append((name, "BrainScaleS-2 neurons reset to v_reset; reset by subtraction is approximated "
                                "by a reset to v_reset"))
        D = {s: (np.asarray(m).T * g[:, None]) / U for s, (m, _) in terms.items()}  # drive in threshold units
        peak = max((float(np.abs(d).max()) for d in D.values() if d.size), default=0.0)
        scale = peak / wmax if peak > 0 else 1.0
        indeg = np.zeros(n, int)
        for s, d in D.items():
            w6 = np.clip(np.rint(np.abs(d) / scale), 0, wmax) * np.sign(d)
            r = rewire_matrix(w6, fan_in=max(w6.shape[1], 1), per_row=per_row)
            row_sign = np.zeros(r["rows"], np.int64)
            jj, ii = np.nonzero(r["synapse_row"] >= 0)
            row_sign[r["synapse_row"][jj, ii]] = np.sign(r["W"][jj, ii]).astype(np.int64)
            projs.append(Projection(s, name, r["W"].astype(np.int64), r["synapse_row"], r["label"], r["rows"],
                                    bool(terms[s][1]), row_sign, np.arange(r["rows"]) // per_driver + driver_base))
            driver_base += -(-r["rows"] // per_driver)
            indeg += (r["W"] != 0).sum(1)
        circuits = np.maximum(1, np.ceil(indeg / fan)).astype(np.int64)
        params["unit"] = np.full(n, U)  # model voltage per threshold unit (the chip works in threshold units)
        layers.append(Layer(name, n, ("cuba" if spiking else "cubali") if cuba else ("lif" if spiking else "li"),
                            spiking, params, {}, circuits, scale))
    for nm, msg in warns:
        ctx.warnings.add(msg, node=nm, source="brainscales2")
    # circuits on the chip, in layer order; calibration table per circuit
    total = int(sum(int(l.circuits.sum()) for l in layers))
    n_circ = int(spec.get("chip.neuron_circuits"))
    cal_path = ctx.options.get("calibration")
    cal = C.load(cal_path, max(total, 1), spec) if cal_path else C.synthetic(max(total, n_circ), spec, seed=ctx.seed)
    cal["readout"] = {"bits": int(spec.get("readout.bits")), "noise_lsb": float(spec.get("readout.noise_lsb"))}
    start = 0
    for l in layers:
        first = start + np.concatenate([[0], np.cumsum(l.circuits)[:-1]])  # first circuit of each logical neuron
        l.hemisphere = (first % n_circ) // (n_circ // 2)
        for p in C.PARAMS:
            l.codes[p] = C.codes_for(l.params[p], p, first % len(cal["table"][p]["gain"]), cal)
            l.codes[f"{p}_nominal"] = C.codes_for(l.params[p], p, first % len(cal["table"][p]["gain"]),
                                                  {"table": C.nominal(len(cal["table"][p]["gain"]), cal["code_max"],
                                                                      cal["ranges"]),
                                                   "code_max": cal["code_max"]})
        l.params["first_circuit"] = first.astype(float)
        start += int(l.circuits.sum())
    outputs = {}
    for o in graph.outputs:
        p = graph.preds(o)
        if len(p) != 1 or p[0] not in {l.name for l in layers}:
            raise UnsupportedNodeError("an output must be fed directly by one neuron layer on BrainScaleS-2", node=o)
        outputs[o] = p[0]
    rows_half = int(spec.get("synapse_array.rows"))
    halves = int(spec.get("synapse_array.hemispheres"))
    rows = int(sum(q.n_rows for q in projs))
    runs = max(1, math.ceil(total / n_circ), math.ceil(rows / (rows_half * halves)))
    rows_lb = sum(int(np.abs(q.w6).astype(bool).sum(1).max(initial=0)) for q in projs)
    prog = BSS2Program(layers, projs, {k: int(np.prod(graph.shape_out(k))) for k in graph.inputs}, outputs, dt, speed,
                       {k: v for k, v in cal.items()})
    prog.report = {"rows_used": rows, "rows_lower_bound": rows_lb, "circuits_used": total, "runs_used": runs,
                   "circuits_lower_bound": int(sum(l.size for l in layers)),
                   "runs_lower_bound": max(1, math.ceil(sum(l.size for l in layers) / n_circ)),
                   "calibration": cal["source"],
                   "layers": {l.name: {"neurons": l.size, "circuits": int(l.circuits.sum()),
                                       "weight_lsb_threshold_units": l.scale} for l in layers},
                   "split": "sequential runs" if runs > 1 else "one chip"}
    ctx.reports["mapping"] = prog.report
    prog.graph = graph
    return prog
