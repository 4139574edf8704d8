"""Graph → :class:`S2Program` (py-spinnaker2 populations and projections).

Structure: :func:`backends.linear.compose` fuses every chain of linear nodes
between two neuron layers (or an Input and a layer) into one matrix per
(source, target) pair plus a bias, so two weight layers in a row, conv+pool
and neuron→neuron edges all become ordinary projections (no relay needed).
Inputs become ``spike_list`` populations; LIF/IF/LI/I nodes ``lif_no_delay``,
or ``lif_conv2d`` with a ``Conv2DProjection`` when fed by one [pool →] Conv2d
(:mod:`.conv`; option ``conv=false`` keeps dense projections);
CubaLIF/CubaLI nodes ``lif_curr_exp_no_delay`` (int8 weights, ±127, from
``hw_configs/spinnaker2.toml [models]``); EGRU nodes ``egru_kernel`` (:mod:`.egru`);
node types with a spinnaker2 ``lower`` hook in the registry lower themselves (the SSM
nodes and ``nmc.LayerNorm``: ``ssm_kernel``, :mod:`.ssm_lower`), and a ``refuse`` hook
refuses a node type with its own reason before anything else.

Chip dynamics per step (py-spinnaker2, weights integer, state float32)::

    lif_no_delay:           v = α·v + Σ W·s[t−1] + i_offset
    lif_curr_exp_no_delay:  i = d·i + Σ W·s[t−1];  v = α·v + i + i_offset   ("chip" order)
    spike when v > threshold; then v −= threshold (reset_by_subtraction) or v = v_reset

Mapping of the reference's neuron (a = dt/τ Euler, 1 − e^{−dt/τ} exact):

* LIF/LI: α = 1 − a, per-neuron input gain g = a·R, constant c = a·(v_leak + R·b);
* IF/I: α = 1, g = dt·R, c = dt·R·b;
* CubaLIF/CubaLI: d = 1 − a_syn, g = a_mem·R·a_syn·w_in, c = a_mem·v_leak; a bias b
  into the current (py-spinnaker2 has no current offset) comes from a one-neuron
  ``spike_list`` population ``__bias__<layer>`` that sends k events every step
  from the step before the layer's first input (its latency L − 1, so no
  synaptic delay), through weights b/k: exactly the reference's rising current.
  k (≤ 16) keeps the bias from setting the population's weight scale.

Scaling: the real drive of target neuron j is g_j·M; each population gets one
weight scale s = max |g·M| / w_max over all its projections (py-spinnaker2's
own convention, 127/max|W| per post-population), weights are rounded to
integers (ties away from zero, :func:`nmc.passes.quantize.quantize_weights`),
and every voltage parameter is divided by s (threshold/s, c/s, v_reset/s),
which leaves the spike trains of the exact arithmetic unchanged. A ``Quant``
annotation with fewer bits on the weights lowers w_max accordingly.

Latency and delays: each projection adds one step, and a synapse with
py-spinnaker2 delay parameter d delivers after d + 1 steps. A population
trails the reference by L = max over its forward inputs of L_src + 1 − D_min
steps (inputs 0; D = the graph's Delay in steps, a ``Delay`` node directly
after an input or neuron layer becoming a synaptic delay of that source's
projections), and every synapse gets d = L − L_src − 1 + D (+ 1 for a
recurrent input, whose back edge delays by one step in the reference). So skip
paths of different lengths and graph delays become synaptic delays: a layer
that needs any d > 0 uses the ``lif`` / ``lif_curr_exp`` model (weights ±15,
d ≤ 7 from ``[models.*]``), every other layer the int8 ``_no_delay`` models.
A recurrent input that would need d < 0 is refused.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.annotations import Placement, Quant
from nmc.errors import PassError, UnsupportedNodeError
from nmc.graph_meta import GraphMeta
from nmc.ir import Graph
from nmc.nodes import EGRU
from nmc.passes.quantize import quantize_weights
from nmc.semantics import Kind, classes, hook_of, lookup, register_hook

from ..linear import compose, param_vec, step_rate
from .cost import cost_report
from .program import KERNEL_MODELS, Population, Projection, S2Program, pe_slices
from .target import SpiNNaker2Target, target_model
from .options import SpiNNaker2Options
from . import ssm_lower  # noqa: F401  (registers the SSM nodes' spinnaker2 lower hooks)
from .plasticity import learn_spec, plastic_terms

F32_MAX = float(np.finfo(np.float32).max)


_vec = param_vec


def _dynamics(name, node, dt, integ, n, warn):
    """(model, α, g, c, bias gain, decay) per neuron, see the module docstring: the node type's
    ``spinnaker2`` ``dynamics`` hook (registered below, one per neuron family)."""
    hook = lookup(node).hook("dynamics", "spinnaker2") if lookup(node) is not None else None
    if hook is None:
        raise UnsupportedNodeError(f"{type(node).__name__} has no SpiNNaker 2 neuron model", node=name,
                                   hint="use IF, LIF, CubaLIF (or I, LI, CubaLI readouts)")
    return hook(name, node, dt, integ, n, warn)


@register_hook("spinnaker2", "mac_kind", EGRU)
def _egru_mac_kind(node, name: str, bundle) -> str:
    """What ``nmc profile`` counts the graded events into EGRU ``name`` as: ``ternary_codes`` when its
    kernels store packed 2-bit codes (:mod:`.egru_packed`: every code of the column is decoded, at
    ``core.cycles_per_ternary_code``), else ``macs`` (a kept int8/float32 weight each)."""
    from .egru_packed import is_packed

    prog = getattr(bundle, "program", None)
    pop = next((p for p in getattr(prog, "populations", ()) if p.name == name), None)
    return "ternary_codes" if pop is not None and pop.kernel is not None and is_packed(pop.kernel) else "macs"


@register_hook("spinnaker2", "dynamics", nir.IF, nir.I)
def _if_dynamics(name, node, dt, integ, n, warn):
    g = dt * _vec(node, "r", n)
    return "lif_no_delay", np.ones(n), g, np.zeros(n), g, None


@register_hook("spinnaker2", "dynamics", nir.LIF, nir.LI)
def _lif_dynamics(name, node, dt, integ, n, warn):
    a = step_rate(_vec(node, "tau", n), dt, integ, name)
    g = a * _vec(node, "r", n)
    return "lif_no_delay", 1 - a, g, a * _vec(node, "v_leak", n), g, None


@register_hook("spinnaker2", "dynamics", nir.CubaLIF, nir.CubaLI)
def _cuba_dynamics(name, node, dt, integ, n, warn):
    a_s, a_m = step_rate(_vec(node, "tau_syn", n), dt, integ, name), step_rate(_vec(node, "tau_mem", n), dt, integ, name)
    g = a_m * _vec(node, "r", n) * a_s * _vec(node, "w_in", n)
    bias_gain = a_m * _vec(node, "r", n) * _vec(node, "w_in", n)  # steady state of a constant current input
    return "lif_curr_exp_no_delay", 1 - a_m, g, a_m * _vec(node, "v_leak", n), bias_gain, 1 - a_s


def population_types() -> tuple[type, ...]:
    """The neuron types lowered as py-spinnaker2 populations: those with a ``spinnaker2``
    ``dynamics`` hook in the registry (IF, LIF, CubaLIF and their non-spiking readouts)."""
    return tuple(c for c in classes(Kind.NEURON) if lookup(c).hook("dynamics", "spinnaker2") is not None)


def lower(graph: Graph, ctx) -> S2Program:
    spec = ctx.spec
    opts = SpiNNaker2Options.of(ctx)
    meta = GraphMeta.of(graph)
    dt, integ = meta.dt, meta.integrator
    order, back = graph.schedule()
    for name in order:   # node types this target refuses with a reason of their own (their "refuse" hook)
        refuse = lookup(graph.nodes[name]).hook("refuse", "spinnaker2") if lookup(graph.nodes[name]) else None
        if refuse is not None:
            refuse(name, graph.nodes[name])
    flat, virt = _delays_as_sources(graph, dt)
    order2, back2 = flat.schedule()
    # node types with a spinnaker2 "lower" hook in the registry (the SSM nodes and LayerNorm, .ssm_lower)
    # lower themselves
    hooked = tuple(c for c in classes() if lookup(c).hook("lower", "spinnaker2") is not None)
    kernels = (EGRU,) + hooked
    s2_neurons, graph_inputs = population_types(), set(graph.inputs)
    readout_outs = [o for o in graph.outputs if not (len(graph.preds(o)) == 1 and (
        graph.preds(o)[0] in graph_inputs or isinstance(graph.nodes[graph.preds(o)[0]], s2_neurons + kernels)))]
    lin = compose(flat, order2, back2, target="spinnaker2", neurons=s2_neurons + kernels, also=readout_outs)
    warnings = []

    def warn(msg, node):
        warnings.append({"message": msg, "node": node})
        ctx.warnings.add(msg, node=node, source="spinnaker2")

    pops: dict[str, Population] = {}
    projs: list[Projection] = []
    quantum = graded_inputs(opts)
    for name in order:
        if name in graph_inputs:
            pops[name] = Population(name, "spike_list", int(np.prod(graph.shape_out(name))), latency=0,
                                    quantum=quantum)
    layers = [k for k in order if isinstance(graph.nodes[k], s2_neurons + kernels)]
    terms_of = {k: _terms(k, lin[k][0], virt, order) for k in layers}
    lat_of = _latencies(graph, layers, terms_of, pops)
    model_max = {m: (int(spec.get(f"models.{m}.weight_max")), int(spec.get(f"models.{m}.delay_max", 0)))
                 for m in ("lif_no_delay", "lif_conv2d", "lif_curr_exp_no_delay", "lif", "lif_curr_exp")}
    for name in layers:
        node = graph.nodes[name]
        if isinstance(node, EGRU):
            pops[name] = _egru_population(name, node, lin[name], pops, virt, egru_weights(graph, name, opts))
            continue
        if hooked and isinstance(node, hooked):
            pops[name] = lookup(node).hook("lower", "spinnaker2")(graph, name, node, lin[name], pops, virt,
                                                                  lat_of[name])
            continue
        n = int(np.prod(graph.shape_out(name)))
        model, alpha, g, c, bias_gain, decay = _dynamics(name, node, dt, integ, n, warn)
        terms, bias = terms_of[name], lin[name][1]
        lat = lat_of[name]
        b = np.asarray(bias, float).reshape(-1)
        if lookup(node).current_based and np.any(b != 0):
            # py-spinnaker2 has no current offset: the bias is an input of weight b from a source population
            # sending k events every step (the reference's semantics, the current rises through exc/inh_decay)
            src = f"__bias__{name}"
            drive = np.abs(b * g)
            others = max((float(np.abs(np.asarray(t[3]).T * g[:, None]).max()) for t in terms if np.size(t[3])),
                         default=0.0)
            k = int(min(16, max(1, np.ceil(drive.max() / others - 1e-9)))) if others > 0 else 1
            pops[src] = Population(src, "spike_list", 1, latency=lat - 1, constant_events=k)
            lat_of[src] = lat - 1
            terms = terms + [(src, np.zeros(1, np.int64), False, (b / k).reshape(1, n))]
            b = np.zeros_like(b)
        delays = [_synapse_delays(name, t, lat, lat_of) for t in terms]
        if any(np.any(d > 0) for d in delays):
            model = DELAY_MODEL[model]
            dmax = model_max[model][1]
            worst = max(int(d.max()) for d in delays)
            if worst > dmax:
                raise UnsupportedNodeError(f"needs a synaptic delay of {worst + 1} steps; model '{model}' takes at "
                                           f"most {dmax + 1}", node=name, limit=dmax, actual=worst,
                                           hint="shorten the Delay or balance the path lengths into this layer")
            warn(f"uses synaptic delays (up to {worst + 1} steps): model '{model}', weights in "
                 f"±{model_max[model][0]}", name)
        c = c + bias_gain * b
        # effective real drives and one scale per population
        # an input event stands for ``quantum`` of input value: its drive is quantum·g·M
        q_in = [pops[t[0]].quantum if t[0] in pops and pops[t[0]].model == "spike_list" else 1.0 for t in terms]
        mats = [np.asarray(t[3]).T * g[:, None] * qi for t, qi in zip(terms, q_in)]
        g_conv = g * q_in[0] if len(q_in) == 1 else g
        conv_of = {} if any(t in virt for t in lin[name][0]) else _conv_terms(flat, name, model, lin[name][0],
                                                                              g_conv, opts)
        if conv_of:
            model = "lif_conv2d"
        wmax = model_max[model][0]
        q = [graph.ann(p, Quant) for p in graph.preds(name)]
        bits = min([a.bits for a in q if a is not None and a.scheme == "int"], default=None)
        if bits is not None:
            wmax = min(wmax, 2 ** (bits - 1) - 1)
        peak = max((float(np.abs(m).max()) for m in mats if m.size), default=0.0)
        learn = plastic_terms(graph, name, terms, pops, model, g)   # learning rules: their bound sets the scale
        if learn and max(e[2] for e in learn.values()) > 4 * peak > 0:
            warn(f"the learning rule's weight bound sets the weight scale, {max(e[2] for e in learn.values()) / peak:.3g}"
                 " times the initial weights' peak: one integer weight step is that much coarser", name)
        peak = max([peak] + [e[2] for e in learn.values()])
        scale = peak / wmax if peak > 0 else 1.0
        for ti, ((src, _, rec, _), m, d) in enumerate(zip(terms, mats, delays)):
            if src in conv_of:  # the same rounding applied to the kernel: bit-equal to the dense form (conv.py)
                k_int, _ = quantize_weights(conv_of[src][0], bits=16, qmax=wmax, clip=scale * wmax)
                projs.append(Projection(pre=src, post=name, kernel=k_int, conv=conv_of[src][1]))
                continue
            w_int, _ = quantize_weights(m, bits=16, qmax=wmax, clip=scale * wmax)
            dm = np.where(w_int != 0, d[None, :], 0).astype(np.int32) if np.any(d > 0) else None
            projs.append(Projection(pre=src, post=name, w=w_int, recurrent=rec, delay=dm,
                                    plastic=learn_spec(learn[ti], g / scale, wmax, dt) if ti in learn else None))
        spiking = lookup(node).spiking
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
    outputs, kinds, readout = {}, {}, {}
    for o in graph.outputs:
        preds = graph.preds(o)
        src = preds[0] if len(preds) == 1 and preds[0] in pops else None
        if src is None and o in readout_outs:  # a linear readout (e.g. an LM's decoder) runs on the host
            terms, bias = lin[o]
            if len(terms) == 1:
                (s_name, (m, back)), = terms.items()
                if s_name in pops and not back and pops[s_name].model != "spike_list":
                    src = s_name
                    readout[o] = {"w": np.asarray(m, float), "b": np.asarray(bias, float).reshape(-1)}
        if src is None:
            raise UnsupportedNodeError("an output must be fed by one neuron layer on SpiNNaker 2, directly or "
                                       "through linear layers (a host readout)", node=o,
                                       hint="end the network with a LIF (spikes) or LI (voltage) layer, or one "
                                            "linear readout of one layer")
        outputs[o] = src
        kinds[o] = ("spikes" if pops[src].spiking else "events" if pops[src].model in KERNEL_MODELS else "v")
    target = getattr(ctx, "target", None)
    if not isinstance(target, SpiNNaker2Target):
        target = target_model(spec, {"egru_weights": opts.egru_weights})
    _read_placement(graph, pops, target)
    prog = S2Program(list(pops.values()), projs, inputs, outputs, kinds,
                     sys_tick_s=float(opts.sys_tick or spec.get("timing.sys_tick_s")),
                     curr_exp_order=opts.curr_exp_order, readout=readout)
    prog.report.update(cost_report(prog, graph, spec, ctx, target))
    prog.report["warnings"] = warnings
    prog.report["latency"] = {p.name: p.latency for p in prog.populations}
    prog.report["host_readout"] = {o: {"source": outputs[o], "weights": int(r["w"].size),
                                       "macs_per_step": int(np.count_nonzero(r["w"]))} for o, r in readout.items()}
    prog.report["weight_scale"] = {p.name: p.scale for p in prog.populations if p.model != "spike_list"}
    ctx.reports["spinnaker2"] = prog.report
    return prog

DELAY_MODEL = {"lif_no_delay": "lif", "lif_curr_exp_no_delay": "lif_curr_exp"}


@register_hook("spinnaker2", "delay_steps", nir.Delay)
def _delay_steps(node, n: int, dt: float) -> np.ndarray:
    """A node that becomes a synaptic delay of its source's projections: the delay of each of the
    source's ``n`` neurons in whole model steps, round-half-even(delay / dt) (int64)."""
    return np.rint(np.broadcast_to(np.asarray(node.delay, float).reshape(-1), (n,)) / dt).astype(np.int64)


def _delays_as_sources(graph: Graph, dt: float) -> tuple[Graph, dict]:
    """A copy of the graph where every Delay node fed directly by an Input or a
    neuron layer becomes a virtual source (an Input of the same shape), so the
    linear composition keeps its paths apart; ``{delay node: (real source,
    steps per source neuron)}``. Delays anywhere else are refused."""
    virt = {}
    flat = None
    for name, node in graph.nodes.items():
        delay_steps = hook_of(node, "delay_steps", "spinnaker2")
        if delay_steps is None:
            continue
        preds = graph.preds(name)
        src = preds[0] if len(preds) == 1 else None
        if src is None or not (src in graph.inputs or isinstance(graph.nodes[src], population_types())):
            raise UnsupportedNodeError("a Delay must come directly after one input or neuron layer on SpiNNaker 2 "
                                       "(it becomes a synaptic delay of that layer's projections)", node=name,
                                       hint="move the Delay before the weights (delays commute with linear maps)")
        steps = delay_steps(node, int(np.prod(graph.shape_out(src))), dt)
        if np.any(steps < 0):
            raise UnsupportedNodeError("negative delay", node=name, hint="delays must be ≥ 0")
        if flat is None:
            flat = graph.copy()
        flat.remove_edge(src, name)
        flat.replace_node(name, nir.Input(input_type={"input": np.asarray(graph.shape_out(src))}))
        virt[name] = (src, steps)
    return (flat if flat is not None else graph), virt


def _terms(name, composed: dict, virt: dict, order: list) -> list:
    """[(real source, delay steps per source neuron, recurrent, matrix (n_src, n_in))]. A term
    through a Delay is recurrent when its real source is not scheduled before ``name``."""
    out = []
    for s, (m, back) in composed.items():
        if s in virt:
            r, steps = virt[s]
            out.append((r, steps, order.index(r) >= order.index(name), m))
        else:
            out.append((s, np.zeros(m.shape[0], np.int64), bool(back), m))
    return out


def _latencies(graph, layers, terms_of, pops) -> dict:
    """Chip steps each layer trails the reference: L = max over forward terms of
    L_src + 1 − min(delay) (≥ 0), or 1 with no forward input; inputs 0."""
    lat = {k: p.latency for k, p in pops.items()}
    for name in layers:
        fwd = [(s, d) for s, d, rec, _ in terms_of[name] if not rec]
        lat[name] = max([max(0, lat[s] + 1 - (int(d.min()) if d.size else 0)) for s, d in fwd], default=1)
    return lat


def _synapse_delays(name, term, lat, lat_of) -> np.ndarray:
    """py-spinnaker2 delay parameter per source neuron (the chip delivers after d + 1
    steps): d = L_post − L_src − 1 + D, plus 1 for a recurrent term (the
    reference's back edge delays by one step)."""
    src, steps, rec, _ = term
    d = lat - lat_of[src] - 1 + steps + (1 if rec else 0)
    if np.any(d < 0):
        raise UnsupportedNodeError(f"input from '{src}' (latency {lat_of[src]}) arrives after this layer "
                                   f"(latency {lat}) needs it", node=name,
                                   hint="recurrent edges must connect layers at the same depth or come from deeper "
                                        "layers through a Delay")
    return d.astype(np.int64)


def _conv_terms(graph, name, model, terms, g, opts) -> dict:
    """{source: (real kernel with the neurons' input gain folded in, geometry)}
    when this LIF/IF layer is fed by a single [pool →] Conv2d (see :mod:`.conv`)
    and its gain is uniform per output channel; else {} (dense projections)."""
    if model != "lif_no_delay" or len(terms) != 1 or not opts.conv:
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


def egru_weights(graph: Graph, name: str, opts: SpiNNaker2Options) -> str:
    """The weight format of EGRU node ``name``'s kernels: ``ternary`` (packed 2-bit, :mod:`.egru_packed`)
    when the quantize pass made it ternary (``quantize{scheme=ternary}``), else the option ``egru_weights``."""
    q = graph.ann(name, Quant)
    return "ternary" if q is not None and q.scheme == "ternary" else opts.egru_weights


def _egru_population(name, node, composed, pops, virt, weights: str = "int8") -> Population:
    """An EGRU node → a population run by generated PE kernels (see :mod:`.egru`);
    ``weights``: ``int8`` (per-row scales, default), ``float32`` or ``ternary`` (per-row absmean
    scale, packed 2-bit codes; the kernel gets ``wbits`` = 2) — :func:`egru_weights`."""
    from .egru import quantize_rows

    terms, bias = composed
    if len(terms) != 1 or any(v[1] or s in virt for s, v in terms.items()):
        raise UnsupportedNodeError("an EGRU layer must be fed by exactly one layer or input (feed-forward)",
                                   node=name, hint="concatenate inputs before the EGRU")
    (src, (M, _)), = terms.items()
    wx = np.asarray(node.w_x, float) @ np.asarray(M, float).T  # fold the linear chain into the input weights
    bx = np.asarray(node.b_x, float) + np.asarray(node.w_x, float) @ np.asarray(bias, float).reshape(-1)
    wx_i, sx = quantize_rows(wx, weights=weights)
    wh_i, sh = quantize_rows(node.w_h, weights=weights)
    H = int(node.hidden_size)
    kernel = {"wx": wx_i, "sx": sx, "wh": wh_i, "sh": sh, "bx": bx.astype(np.float32),
              "bh": np.asarray(node.b_h, np.float32), "thr": np.asarray(node.thr, np.float32)}
    if weights == "ternary":
        from .egru_packed import WBITS

        kernel["wbits"] = np.array(WBITS, np.int32)
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


def graded_inputs(opts: SpiNNaker2Options) -> float:
    """The input quantum Q (option ``input_quantum``, default 1): graded inputs on SpiNNaker 2.

    py-spinnaker2 feeds inputs through ``spike_list`` populations ({neuron: [steps]}) and its
    neuron models add an integer weight per received packet; the chip's 32-bit packet payloads
    (HARDWARE.md, unverified) are not exposed by those models, and a weight-scaled copy of the
    input per bit would multiply the input's synapse SRAM. So a value x of an input unit in a
    step is sent as k = x/Q **repeated events** of that unit (a step listed k times), each
    adding Q·W: counts (Q = 1) are exact, values on a grid Q are exact, other values and
    negative ones are refused (a typed error names the input). Q is folded into the input's
    weights before their integer quantisation. Cost: k packets and k synaptic events per
    unit and step instead of one — the program report's ``input_events`` states it (from the
    calibration data when given), the per-PE work per tick counts events (:func:`.target.input_rates`),
    and the energy profile counts k events per value (``S2Program.input_events``)."""
    return float(opts.input_quantum)   # > 0 and finite: checked when the options were parsed


def _read_placement(graph: Graph, pops: dict, target: SpiNNaker2Target) -> None:
    """PE per unit of every population from the Placement annotations the passes wrote: the
    ``partition`` pass is their only writer (Backend.lowering_requires), lowering reads them and
    never changes them. It placed neuron layers, EGRU and SSM kernels as its units and every
    LayerNorm kernel on one PE of its own after them (:meth:`.target.SpiNNaker2Target.own_core_nodes`);
    a population without a Placement (a graph no ``partition`` ran on) is a PassError naming the
    pass. The chip of a neuron layer's or SSM kernel's units is read too (EGRU and LayerNorm
    kernels carry none in the program). Checks, not decisions: an EGRU node's kernels on the PEs
    the partition chose must fit the PE SRAM by the exact kernel bytes (the partition packed them
    with the same byte model, so an overflow is an internal error), and an SSM or LayerNorm
    kernel's runs must fit ``core.synapse_memory_bytes``."""
    own = set(target.own_core_nodes(graph))
    for name, p in pops.items():
        if p.model == "spike_list":
            continue
        a = graph.ann(name, Placement)
        if a is None or a.core is None:
            raise PassError("spinnaker2's lowering reads the Placement the 'partition' pass writes, and this "
                            "population has none", node=name,
                            hint="end --passes with partition (the default pipeline has it; nmc.compile appends it)")
        p.pe = np.asarray(a.core, dtype=np.int32).reshape(-1)
        if a.chip is not None and p.model != "egru_kernel" and name not in own:
            p.chip = np.asarray(a.chip, dtype=np.int32).reshape(-1)
        p.max_atoms_per_core = int(np.bincount(p.pe - p.pe.min()).max())
        if p.model == "egru_kernel":
            _check_kernels_fit(p, target, name)
        if p.model == "ssm_kernel":
            _check_ssm_fits(p, target, name)


def _check_ssm_fits(p, target, name: str) -> None:
    """Every PE's runs of an SSM kernel within ``core.synapse_memory_bytes``, by the byte model the partition
    packed with (:meth:`.target.SpiNNaker2Target.ssm_run_bytes`); a node too large for one PE is refused."""
    limit = target.limits.memory_bytes
    if not limit:
        return
    used: dict[int, int] = {}
    for pe, units in pe_slices(p):
        used[pe] = used.get(pe, 0) + target.ssm_run_bytes(p.kernel, units)
    worst = max(used, key=used.get)
    if used[worst] > int(limit):
        raise UnsupportedNodeError(f"its SSM kernel needs {used[worst]} bytes on PE {worst}, more than "
                                   f"core.synapse_memory_bytes = {int(limit)}", node=name, limit=int(limit),
                                   actual=used[worst], hint="use fewer modes or channels per SSM layer")


def _check_kernels_fit(p, target, name: str) -> None:
    """Every PE's EGRU kernels within the memory the partition packed against
    (``core.synapse_memory_bytes``; it guarantees this). The cost report compares
    each PE's whole SRAM with ``core.data_bytes``."""
    limit = target.limits.memory_bytes
    if not limit:
        return
    used: dict[int, int] = {}
    for pe, units in pe_slices(p):
        used[pe] = used.get(pe, 0) + target.kernel_bytes(p.kernel, units)
    worst = max(used, key=used.get)
    if used[worst] > int(limit):
        raise AssertionError(f"internal error: the partition put {used[worst]} bytes of EGRU kernel '{name}' on "
                             f"PE {worst}, more than core.synapse_memory_bytes = {int(limit)}; the partition "
                             "packs with the same byte model (backends/spinnaker2/target.py), so this is a bug")
