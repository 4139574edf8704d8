"""Graph → :class:`S2Program` (py-spinnaker2 populations and projections).

Structure: :func:`backends.linear.compose` fuses every chain of linear nodes
between two neuron layers (or an Input and a layer) into one matrix per
(source, target) pair plus a bias, so two weight layers in a row, conv+pool
and neuron→neuron edges all become ordinary projections (no relay needed).
Inputs become ``spike_list`` populations; LIF/IF/LI/I nodes ``lif_no_delay``,
or ``lif_conv2d`` with a ``Conv2DProjection`` when fed by one [pool →] Conv2d
(:mod:`.conv`; option ``conv=false`` keeps dense projections);
CubaLIF/CubaLI nodes ``lif_curr_exp_no_delay`` (int8 weights, ±127, from
``hw_configs/spinnaker2.toml [models]``).

Chip dynamics per step (py-spinnaker2, weights integer, state float32)::

    lif_no_delay:           v = α·v + Σ W·s[t−1] + i_offset
    lif_curr_exp_no_delay:  i = d·i + Σ W·s[t−1];  v = α·v + i + i_offset   ("chip" order)
    spike when v > threshold; then v −= threshold (reset_by_subtraction) or v = v_reset

Mapping of the reference's neuron (a = dt/τ Euler, 1 − e^{−dt/τ} exact):

* LIF/LI: α = 1 − a, per-neuron input gain g = a·R, constant c = a·(v_leak + R·b);
* IF/I: α = 1, g = dt·R, c = dt·R·b;
* CubaLIF/CubaLI: d = 1 − a_syn, g = a_mem·R·a_syn·w_in, c = a_mem·v_leak; a bias b
  into the current is applied to v at its steady-state value a_mem·R·w_in·b
  (py-spinnaker2 has no current offset): exact only for b = 0 (warned).

Scaling: the real drive of target neuron j is g_j·M; each population gets one
weight scale s = max |g·M| / w_max over all its projections (py-spinnaker2's
own convention, 127/max|W| per post-population), weights are rounded to
integers (ties away from zero, :func:`nmc.passes.quantize.quantize_weights`),
and every voltage parameter is divided by s (threshold/s, c/s, v_reset/s),
which leaves the spike trains of the exact arithmetic unchanged. A ``Quant``
annotation with fewer bits on the weights lowers w_max accordingly.

Latency: each projection adds one step, so a population whose sources trail
the reference by L steps trails it by L + 1 (inputs 0). All forward sources of
a population must have the same latency, and a recurrent source the same
latency as its target (then the chip's one-step delay equals the reference's
back-edge delay).
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.annotations import Placement, Quant
from nmc.errors import OptionError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU
from nmc.passes.quantize import quantize_weights

from ..linear import compose, param_vec, step_rate
from .program import Population, Projection, S2Program

S2_NEURONS = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI, nir.I)
SPIKING = (nir.LIF, nir.CubaLIF, nir.IF)
F32_MAX = float(np.finfo(np.float32).max)


_vec = param_vec


def _dynamics(name, node, dt, integ, n, warn):
    """(model, α, g, c, decay) per neuron, see the module docstring."""
    def rate(tau):
        return step_rate(tau, dt, integ, name)

    if isinstance(node, (nir.IF, nir.I)):
        g = dt * _vec(node, "r", n)
        return "lif_no_delay", np.ones(n), g, np.zeros(n), g, None
    if isinstance(node, (nir.LIF, nir.LI)):
        a = rate(_vec(node, "tau", n))
        g = a * _vec(node, "r", n)
        return "lif_no_delay", 1 - a, g, a * _vec(node, "v_leak", n), g, None
    a_s, a_m = rate(_vec(node, "tau_syn", n)), rate(_vec(node, "tau_mem", n))
    g = a_m * _vec(node, "r", n) * a_s * _vec(node, "w_in", n)
    bias_gain = a_m * _vec(node, "r", n) * _vec(node, "w_in", n)  # steady state of a constant current input
    return "lif_curr_exp_no_delay", 1 - a_m, g, a_m * _vec(node, "v_leak", n), bias_gain, 1 - a_s


def lower(graph: Graph, ctx) -> S2Program:
    spec = ctx.spec
    opts = ctx.options
    dt = float(graph.meta.get("dt", 1e-3))
    integ = graph.meta.get("integrator", "euler")
    order, back = graph.schedule()
    lin = compose(graph, order, back, target="spinnaker2", neurons=S2_NEURONS + (EGRU,))
    warnings = []

    def warn(msg, node):
        warnings.append({"message": msg, "node": node})
        ctx.warnings.add(msg, node=node, source="spinnaker2")

    pops: dict[str, Population] = {}
    projs: list[Projection] = []
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            pops[name] = Population(name, "spike_list", int(np.prod(graph.shape_out(name))), latency=0)
    weight_max_of = {m: int(spec.get(f"models.{m}.weight_max"))
                     for m in ("lif_no_delay", "lif_conv2d", "lif_curr_exp_no_delay")}
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, EGRU):
            pops[name] = _egru_population(name, node, lin[name], pops)
            continue
        if not isinstance(node, S2_NEURONS):
            continue
        n = int(np.prod(graph.shape_out(name)))
        model, alpha, g, c, bias_gain, decay = _dynamics(name, node, dt, integ, n, warn)
        terms, bias = lin[name]
        fwd = {s: v for s, v in terms.items() if not v[1]}
        rec = {s: v for s, v in terms.items() if v[1]}
        lat_f = {pops[s].latency for s in fwd if s in pops}
        if len(lat_f) > 1:
            raise UnsupportedNodeError(f"its inputs arrive over paths of different lengths {sorted(lat_f)} "
                                       "(every projection adds one step on SpiNNaker 2)", node=name,
                                       hint="give skip paths the same number of neuron layers")
        lat = (lat_f.pop() if lat_f else 0) + 1
        for s in rec:
            if s in pops and pops[s].latency != lat and s != name:
                raise UnsupportedNodeError(f"recurrent input from '{s}' (latency {pops[s].latency}) does not line up "
                                           f"with this layer (latency {lat})", node=name,
                                           hint="recurrent edges must connect layers at the same depth")
        b = np.asarray(bias, float).reshape(-1)
        if isinstance(node, (nir.CubaLIF, nir.CubaLI)) and np.any(b != 0):
            warn("a bias into a current-based neuron is applied to v at its steady-state value "
                 "(py-spinnaker2 has no current offset): exact only after the current settles", name)
        c = c + bias_gain * b
        # effective real drives and one scale per population
        mats = {s: (np.asarray(m).T * g[:, None]) for s, (m, _) in terms.items()}
        conv_of = _conv_terms(graph, name, model, terms, g, opts)
        if conv_of:
            model = "lif_conv2d"
        wmax = weight_max_of[model]
        q = [graph.ann(p, Quant) for p in graph.preds(name)]
        bits = min([a.bits for a in q if a is not None and a.scheme == "int"], default=None)
        if bits is not None:
            wmax = min(wmax, 2 ** (bits - 1) - 1)
        peak = max((float(np.abs(m).max()) for m in mats.values() if m.size), default=0.0)
        scale = peak / wmax if peak > 0 else 1.0
        for s, m in mats.items():
            if s in conv_of:  # the same rounding applied to the kernel: bit-equal to the dense form (conv.py)
                k_int, _ = quantize_weights(conv_of[s][0], bits=16, qmax=wmax, clip=scale * wmax)
                projs.append(Projection(pre=s, post=name, kernel=k_int, conv=conv_of[s][1]))
                continue
            w_int, _ = quantize_weights(m, bits=16, qmax=wmax, clip=scale * wmax)
            projs.append(Projection(pre=s, post=name, w=w_int, recurrent=bool(terms[s][1])))
        spiking = isinstance(node, SPIKING)
        thr = _vec(node, "v_threshold", n) / scale if spiking else np.full(n, F32_MAX)
        v_reset = _vec(node, "v_reset", n) / scale if spiking and hasattr(node, "v_reset") else np.zeros(n)
        params = {"threshold": thr, "alpha_decay": alpha, "i_offset": c / scale, "v_reset": v_reset,
                  "v_init": _preroll_init(c / scale, alpha, lat, name, warn)}
        if decay is not None:
            params["exc_decay"] = decay
            params["inh_decay"] = decay
        reset = "reset_by_subtraction" if graph.reset_mode(name) == "subtract" else "reset_to_v_reset"
        pops[name] = Population(name, model, n, reset=reset, params={k: np.asarray(v, np.float32) for k, v in params.items()},
                                latency=lat, spiking=spiking, scale=scale)
    inputs = {k: k for k in graph.inputs}
    outputs, kinds = {}, {}
    for o in graph.outputs:
        preds = graph.preds(o)
        if len(preds) != 1 or preds[0] not in pops:
            raise UnsupportedNodeError("an output must be fed directly by one neuron layer or input on SpiNNaker 2",
                                       node=o, hint="end the network with a LIF (spikes) or LI (voltage) layer")
        outputs[o] = preds[0]
        kinds[o] = ("spikes" if pops[preds[0]].spiking else
                    "events" if pops[preds[0]].model == "egru_kernel" else "v")
    _place(graph, pops, spec, opts)
    prog = S2Program(list(pops.values()), projs, inputs, outputs, kinds,
                     sys_tick_s=float(opts.get("sys_tick") or spec.get("timing.sys_tick_s")),
                     curr_exp_order=str(opts.get("curr_exp_order", "chip")))
    if prog.curr_exp_order not in ("chip", "brian2"):
        raise OptionError("curr_exp_order must be 'chip' or 'brian2'")
    from .cost import cost_report

    prog.report = cost_report(prog, graph, spec, ctx)
    prog.report["warnings"] = warnings
    prog.report["latency"] = {p.name: p.latency for p in prog.populations}
    prog.report["weight_scale"] = {p.name: p.scale for p in prog.populations if p.model != "spike_list"}
    prog.graph = graph
    ctx.reports["spinnaker2"] = prog.report
    return prog


def _conv_terms(graph, name, model, terms, g, opts) -> dict:
    """{source: (real kernel with the neurons' input gain folded in, geometry)}
    when this LIF/IF layer is fed by a single [pool →] Conv2d (see :mod:`.conv`)
    and its gain is uniform per output channel; else {} (dense projections)."""
    if model != "lif_no_delay" or len(terms) != 1 or str(opts.get("conv", True)).lower() in ("0", "false", "no"):
        return {}
    (src, (_, back)), = terms.items()
    if back:
        return {}
    from .conv import detect

    found = detect(graph, name, src)
    if found is None:
        return {}
    k, geo = found
    gc = np.asarray(g, float).reshape(k.shape[0], -1)
    if not np.all(gc == gc[:, :1]):
        return {}
    return {src: (k * gc[:, 0][:, None, None, None], geo)}


def _egru_population(name, node, composed, pops) -> Population:
    """An EGRU node → a population run by generated PE kernels (see :mod:`.egru`)."""
    from .egru import quantize_rows

    terms, bias = composed
    if len(terms) != 1 or any(v[1] for v in terms.values()):
        raise UnsupportedNodeError("an EGRU layer must be fed by exactly one layer or input (feed-forward)",
                                   node=name, hint="concatenate inputs before the EGRU")
    (src, (M, _)), = terms.items()
    wx = np.asarray(node.w_x, float) @ np.asarray(M, float).T  # fold the linear chain into the input weights
    bx = np.asarray(node.b_x, float) + np.asarray(node.w_x, float) @ np.asarray(bias, float).reshape(-1)
    wx_i, sx = quantize_rows(wx)
    wh_i, sh = quantize_rows(node.w_h)
    H = int(node.hidden_size)
    kernel = {"wx": wx_i, "sx": sx, "wh": wh_i, "sh": sh, "bx": bx.astype(np.float32),
              "bh": np.asarray(node.b_h, np.float32), "thr": np.asarray(node.thr, np.float32)}
    return Population(name, "egru_kernel", H, reset="reset_by_subtraction", latency=pops[src].latency + 1,
                      spiking=False, kernel=kernel, source=src)


def _preroll_init(c: np.ndarray, alpha: np.ndarray, steps: int, name: str, warn) -> np.ndarray:
    """v_init that cancels the ``steps`` chip steps of constant drive before the
    population's first input arrives, so v = 0 at the aligned t = 0 as in the
    reference: α^L·v_init + c·Σ_{k<L} α^k = 0."""
    if steps <= 0 or not np.any(c):
        return np.zeros_like(c)
    a = np.asarray(alpha, float)
    geo = np.array([np.sum(ai ** np.arange(steps)) for ai in a])
    with np.errstate(divide="ignore"):
        v0 = -c * geo / a ** steps
    bad = ~np.isfinite(v0) | (a == 0)
    if np.any(bad & (c != 0)):
        warn(f"cannot cancel the constant drive applied during the {steps}-step pipeline delay (α = 0)", name)
        v0 = np.where(bad, 0.0, v0)
    return v0


def _place(graph: Graph, pops: dict, spec, opts) -> None:
    """PE per neuron from the Placement annotations (partition pass), else a sequential fill."""
    per = int(opts.get("max_atoms_per_core") or spec.get("core.neurons_max"))
    nxt = 0
    for name, p in pops.items():
        if p.model == "spike_list":
            continue
        if p.model == "egru_kernel" and (graph.ann(name, Placement) is None):
            from .egru import data_bytes

            # units per PE bounded by the PE's data SRAM
            per_pe = max(1, int(spec.get("core.data_bytes")) // max(1, data_bytes(p.kernel, slice(0, 1))))
            per_eff = min(per, per_pe)
            p.pe = (nxt + np.arange(p.size) // per_eff).astype(np.int32)
            p.max_atoms_per_core = min(per_eff, p.size)
            nxt = int(p.pe.max()) + 1
            continue
        a = graph.ann(name, Placement)
        if a is not None and a.core is not None:
            p.pe = np.asarray(a.core, dtype=np.int32).reshape(-1)
            p.max_atoms_per_core = int(np.bincount(p.pe - p.pe.min()).max())
        else:
            p.pe = (nxt + np.arange(p.size) // per).astype(np.int32)
            p.max_atoms_per_core = min(per, p.size)
            nxt = int(p.pe.max()) + 1
