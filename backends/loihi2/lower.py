"""Graph → :class:`LoihiProgram` (Lava's fixed-point LIF + Dense/Sparse).

Structure. Sources are graph ``Input`` nodes and neuron nodes (LIF, CubaLIF,
IF, LI, CubaLI, I); every chain of linear nodes between them (Affine, Linear,
Scale, Conv1d/2d, SumPool2d/AvgPool2d, Flatten; branches summed) is composed
into one float matrix per (source, neuron) pair plus a bias vector, by pushing
an identity batch through the nodes (so conv+pool become one Sparse matrix).
Each pair becomes one Lava ``Dense`` (``Sparse`` when its density is below
``sparse_below``), each neuron node one Lava ``LIF`` process. A graph Output fed
through linear nodes from one neuron layer or SSM (e.g. a classifier's decoder)
is a host readout: the composed matrix and bias on the port (``OutputPort.readout_w``,
``readout_b``), applied in float64 to what the chip sends (as spinnaker2 does).

Latency. Lava's Dense delivers one step later, so a neuron group whose
sources are at latency L is at latency L + 1 (inputs: 0). All forward sources
of a group must agree, and a recurrent (back-edge) source must sit at the same
latency as its target: then Lava's one-step delay on the back edge equals the
reference's. The group's ``latency`` says how many Lava steps it trails the
float reference (``nmc.reference``): ``lava[t + L] ≙ reference[t]``.

Neuron mapping (per neuron, a = dt/τ (euler) or 1 − e^{−dt/τ} (exact)):

* LIF/LI: ``dv = round(4096·a)``, ``du = 4095`` (u = this step's input), gain
  ``g = a·R``, constant drive ``c = a·(v_leak + R·b)``;
* IF/I: ``dv = 0``, ``du = 4095``, ``g = dt·R``, ``c = dt·R·b``;
* CubaLIF/CubaLI: ``du = round(4096·a_syn) − 1`` (Lava adds 1), ``dv =
  round(4096·a_mem)``, ``g = a_mem·R·a_syn·w_in``, ``c = a_mem·(v_leak +
  R·w_in·b)``. Lava's bias enters v, not u: it is applied at the current's
  steady state c and ``u_init`` (:func:`_cuba_bias_u`) starts u at the
  opposite transient, so v receives the reference's rising current exactly.

Every rate a is the one Lava's 12-bit decay realises (``dv/4096``), in the gain
as in the decay (:func:`_as_decayed`): steady states stay exact.

Pre-roll. Lava applies the bias from its first step, L steps before the
group's first input arrives; ``v_init`` (:func:`_preroll_init`) cancels it so
v is ≈ 0 at the aligned t = 0, as in the reference.

Scaling. Each neuron's dynamics are divided by its unit U (its threshold; for
non-spiking readouts a bound on |v|), so all neurons of a group share one
threshold mantissa ``vth`` and ``v_int = 64·vth·v/U``. ``vth`` is chosen per
group by :func:`.numerics.choose_vth` — the largest that overflows none of
Lava's widths (bias, weight exponent, current, membrane; read from
``hw_configs/loihi2.toml [numerics]``), from the calibration data's ranges
when given — unless ``--option vth_mant=N`` overrides it. A synapse's target
integer drive per unit input is ``T = vth·g·M/U``; it is quantised to Lava's
8-bit mantissa with one exponent per synapse: ``T ≈ w·2^e``. A mixed-sign
matrix becomes two Lava synapses (option ``split_signs``, default on), an
excitatory and an inhibitory one, each with 8 bits of magnitude and its own
exponent (one Dense with mixed signs keeps 7). ``weight_bits`` b < 8 coarsens
the grid; a ``Quant`` annotation's ``bits`` are used. The constant drive
becomes ``bias_mant·2^bias_exp ≈ 64·vth·c/U``. v_reset must be 0 (Lava resets
to 0). The choice and every limit are in the fidelity report (``numerics``).
"""
from __future__ import annotations

import math

import nir
import numpy as np

from nmc.annotations import Placement, Quant
from nmc.errors import DesignRuleError, OptionError, PassError, UnsupportedNodeError
from nmc.graph_meta import GraphMeta
from nmc.ir import Graph
from nmc.semantics import Kind, classes, lookup, register_hook

from ..linear import NEURONS, compose, param_vec, step_rate
from .options import Loihi2Options
from .numerics import MARGIN, LavaLimits, LoihiNumerics, choose_vth, max_row_error, measured_ranges, quantize_bias, \
    quantize_weights, worst_case_ranges
from .program import InputPort, LoihiProgram, NeuronGroup, OutputPort, Synapse
from .ssm_lower import Source, SSMLowering
from .target import Loihi2Target


def _neuron_params(name, node, dt, integ, n, warn, scale):
    """Per-neuron (du, dv, g, c_leak, bias_gain); ``scale``: the decays' unit (4096 on Lava): the node
    type's ``loihi2`` ``neuron_params`` hook (registered below, one per neuron family)."""
    entry = lookup(node)
    hook = entry.hook("neuron_params", "loihi2") if entry is not None else None
    if hook is None:
        raise UnsupportedNodeError(f"{type(node).__name__} has no Loihi 2 neuron model", node=name,
                                   hint="use IF, LIF, CubaLIF (or I, LI, CubaLI readouts)")
    return hook(name, node, dt, integ, n, warn, scale)


@register_hook("loihi2", "neuron_params", nir.IF, nir.I)
def _if_params(name, node, dt, integ, n, warn, scale):
    g = dt * param_vec(node, "r", n)
    return np.full(n, scale - 1), np.zeros(n, int), g, np.zeros(n), g


@register_hook("loihi2", "neuron_params", nir.LIF, nir.LI)
def _lif_params(name, node, dt, integ, n, warn, scale):
    a = step_rate(param_vec(node, "tau", n), dt, integ, name)
    dv = np.rint(scale * a).astype(int)
    a = _as_decayed(a, dv, scale)
    g = a * param_vec(node, "r", n)
    return np.full(n, scale - 1), dv, g, a * param_vec(node, "v_leak", n), g


@register_hook("loihi2", "neuron_params", nir.CubaLIF, nir.CubaLI)
def _cuba_params(name, node, dt, integ, n, warn, scale):
    def f(k):
        return param_vec(node, k, n)

    def rate(tau):
        return step_rate(tau, dt, integ, name)

    a_s, a_m = rate(f("tau_syn")), rate(f("tau_mem"))
    du = np.rint(scale * a_s).astype(int) - 1
    if np.any(du < 0):
        warn(f"synaptic decay dt/tau_syn < 1/{2 * scale} rounds to Lava's minimum du+1 = 1/{scale}", name)
    du = np.clip(du, 0, scale - 1)
    dv = np.rint(scale * a_m).astype(int)
    a_s, a_m = _as_decayed(a_s, du + 1, scale), _as_decayed(a_m, dv, scale)
    g = a_m * f("r") * a_s * f("w_in")
    return du, dv, g, a_m * f("v_leak"), a_m * f("r") * f("w_in")


def _as_decayed(a, d, scale):
    """The rate a as Lava's 12-bit decay d/4096 (d/scale) realises it, where d > 0. The input gain uses
    the same rate as the decay, so the steady state (gain/decay) stays exact and only the time
    constant moves by the decay's rounding (≤ ½ LSB of 1/4096); a gain at the exact rate against
    the rounded decay would shift every steady state by up to 0.5/d (0.4 % at τ = 33·dt)."""
    return np.where(np.asarray(d) > 0, np.asarray(d, float) / float(scale), a)


def lower(graph: Graph, ctx) -> LoihiProgram:
    opts = Loihi2Options.of(ctx)
    spec = getattr(ctx, "spec", None)
    lim, num = LavaLimits.from_spec(spec), LoihiNumerics.from_spec(spec)   # spec None: the packaged one
    scale, ts = num.decay_scale, num.threshold_shift
    vunit = 2 ** ts            # v LSB per threshold mantissa LSB: spike when v > vth << threshold_shift
    gshift = 2.0 ** (ts - num.activation_shift)   # a_in enters u << activation_shift, the threshold << ts
    user_vth = opts.vth_mant
    if user_vth is not None and not 1 <= user_vth <= lim.vth_max:
        raise OptionError(f"vth_mant must be in 1..{lim.vth_max} (Lava's threshold mantissa)", actual=user_vth)
    from nmc.nodes import EGRU

    egru = [k for k, n in graph.nodes.items() if isinstance(n, EGRU)]
    if egru:  # Loihi 2 has graded spikes and microcode neurons, but nmc has no EGRU microcode program
        raise UnsupportedNodeError(
            f"EGRU cells ({', '.join(egru)}) need a gated cell with sigmoid/tanh and graded events; Loihi 2 could "
            "run one only as a custom microcode neuron model, which needs Intel's lava-loihi (not public) and "
            "which nmc does not generate; Lava's public fixed-point processes have no such neuron", node=egru[0],
            hint="compile EGRU models for spinnaker2 (generated PE kernels)")
    meta = GraphMeta.of(graph)
    dt, integ = meta.dt, meta.integrator
    order, back = graph.schedule()
    # node types with a loihi2 "lower" hook in the registry (the SSM nodes, .ssm_lower) lower themselves
    hooked = tuple(c for c in classes(Kind.NEURON) if lookup(c).hook("lower", "loihi2") is not None)
    # outputs fed through linear layers (e.g. a classifier's decoder after an SSM): a host readout
    readout_outs = [o for o in graph.outputs if not (len(graph.preds(o)) == 1 and isinstance(
        graph.nodes[graph.preds(o)[0]], (nir.Input,) + NEURONS + hooked))]
    lin = compose(graph, order, back, target="loihi2", neurons=NEURONS + hooked, also=readout_outs)
    warn = lambda msg, node: ctx.warnings.add(msg, node=node, source="loihi2")  # noqa: E731
    prog = LoihiProgram(meta={"dt": dt, "integrator": integ, "vth_mant": user_vth if user_vth is not None else "auto",
                                    "fidelity": {}}, numerics=num)
    latency: dict[str, int] = {}
    hooks = SSMLowering(prog, spec, graph=graph, data=ctx.data)
    for name in graph.inputs:
        bits = _ssm_input_bits(graph, name, lin, hooked, ctx.data, opts.input_bits)
        prog.inputs.append(InputPort(name, tuple(graph.shape_out(name)), bits))
        latency[name] = 0
        hooks.sources[name] = Source(name, 1.0, 2.0 ** (bits - 1) if bits else 1.0, bits, 0)
        if bits != opts.input_bits:
            prog.meta.setdefault("input_bits", {})[name] = {"bits": bits, "from": "calibration data"}
    bits_default = opts.weight_bits if opts.weight_bits is not None else num.weight_bits
    from .learning import bound_vth, learned_range, plastic_pairs

    plastic = plastic_pairs(graph)
    for name in order:
        node = graph.nodes[name]
        if hooked and isinstance(node, hooked):
            latency[name] = lookup(node).hook("lower", "loihi2")(hooks, name, node, *lin[name]).latency
            continue
        if not isinstance(node, NEURONS):
            continue
        if hooked and any(isinstance(graph.nodes[s], hooked) for s in lin[name][0]):
            raise UnsupportedNodeError(f"a {type(node).__name__} layer fed by an SSM node is not mapped on loihi2 yet",
                                       node=name, hint="end the loihi2 network at the SSM, or run it on spinnaker2")
        shape = tuple(graph.shape_out(name))
        n = int(np.prod(shape))
        terms, bias_in = lin[name]
        du, dv, g, c_leak, bgain = _neuron_params(name, node, dt, integ, n, warn, scale)
        spiking = lookup(node).spiking
        reset = graph.reset_mode(name) if spiking else "zero"
        if spiking:
            if np.any(np.asarray(node.v_reset) != 0):
                raise UnsupportedNodeError("Lava's LIF resets to 0; v_reset must be 0", node=name,
                                           actual=float(np.abs(node.v_reset).max()), hint="retrain with v_reset = 0")
            unit = np.broadcast_to(np.asarray(node.v_threshold, float), shape).reshape(-1)
            if np.any(unit <= 0):
                raise UnsupportedNodeError("v_threshold must be > 0", node=name, actual=float(unit.min()))
        else:
            decay = np.maximum(dv / float(scale), 1.0 / 64)
            drive = sum(np.abs(m).sum(axis=0) for m, _ in terms.values()) * np.abs(g)
            b = np.abs(c_leak + bgain * bias_in)
            unit = np.full(n, max(float(((drive + b) / decay).max()), 1e-12))
        fwd = [s for s, (_, b) in terms.items() if not b]
        lats = {latency[s] for s in fwd if s in latency}
        if len(lats) > 1:
            raise UnsupportedNodeError("paths of different depth meet here; every Lava synapse adds one step so they "
                                       "would arrive misaligned", node=name, actual=sorted(lats),
                                       hint="make skip connections span the same number of neuron layers")
        latency[name] = (lats.pop() if lats else 0) + 1
        # numerics: drive per unit input in thresholds, constant drive, then the group's vth
        G = {s: (g / unit)[:, None] * m.T for s, (m, _) in terms.items()}     # (n_dst, n_src)
        c = (c_leak + bgain * bias_in) / unit
        cuba = lookup(node).current_based
        amp = {s: _input_amp(graph, s, opts) for s in terms}
        a_u = (np.asarray(du, float) + 1) / float(scale)
        # a learning synapse's weights may reach its rule's bounds: the ranges and vth allow for them (.learning)
        Gr = {s: learned_range(graph, plastic.get((s, name)), x, g / unit) for s, x in G.items()}
        u_max, v_max = worst_case_ranges([(Gr[s], amp[s]) for s in terms], c, a_u, dv / float(scale), spiking, cuba)
        ranges_from = "worst case (every source active every step)"
        if spiking and ctx.data:
            meas = measured_ranges(graph, ctx.data, name, unit, (a_m_of(node, dt, integ, n) * param_vec(
                node, "r", n) / unit) if cuba else np.zeros(n))
            if meas is not None:
                u_max = min(u_max, max(meas[0], float(np.abs(c).max()) * 2)) if cuba else u_max
                v_max = min(v_max, meas[1])
                ranges_from = f"calibration data (float reference, x{MARGIN:g} margin)"
        if user_vth is not None:
            vth = user_vth
            choice = {"vth_mant": vth, "bound_by": "--option vth_mant"}
        else:
            ch = choose_vth(name, lim, c=c, G_abs_max=max((float(np.abs(x).max()) for x in Gr.values() if x.size),
                                                        default=0.0) * gshift, u_max=u_max, v_max=v_max,
                            ranges_from=ranges_from)
            vth = bound_vth(graph, [plastic[(s, name)] for s in terms if (s, name) in plastic], ch.vth, g / unit,
                            gshift, lim)    # a learning synapse saturates at its rule's bound (.learning)
            choice = {"vth_mant": vth, "bound_by": ch.bound_by, **ch.ranges,
                      "limits": {k: (None if math.isinf(x) else float(x)) for k, x in ch.limits.items()}}
        # synapses
        fid = {"weight_rel_error": 0.0, "v_error_per_step": 0.0, "numerics": choice}
        for s, (m, is_back) in terms.items():
            T = G.pop(s)   # = vth·G·gshift, in place: G[s] is not read again (one n_dst×n_src array fewer)
            T *= vth
            T *= gshift
            srcname = s
            bits = bits_default
            q = _weight_quant(graph, name, s)
            if q is not None:
                bits = int(q.bits)
            # a mixed-sign matrix in one Dense keeps 7 bits of magnitude (Lava drops the lowest bit) under one
            # exponent; split into an excitatory and an inhibitory Dense, each gets 8 bits and its own exponent
            split = opts.split_signs and bits >= num.weight_bits and T.min() < 0 < T.max() \
                and (s, name) not in plastic    # a learning synapse stays one Dense (.learning)
            parts = [("", (0, None)), (".inh", (None, 0))] if split else [("", None)]
            part = np.empty_like(T) if split else None   # one buffer for both signs' parts, T's memory order
            for suffix, bounds in parts:
                Tp = T if bounds is None else np.clip(T, *bounds, out=part)   # one sign's copy at a time
                w, e, err = quantize_weights(Tp, min(bits, num.weight_bits), lim)
                fid["weight_rel_error"] = max(fid["weight_rel_error"], err)
                # worst-case membrane error per step (threshold units), every input active (payload 1)
                fid["v_error_per_step"] += max_row_error(w, e, Tp, vth * gshift) * amp[s] + (1.0 / vth if e < 0 else 0.0)
                density = np.count_nonzero(w) / max(w.size, 1)
                nbits = 0
                if s in graph.inputs and opts.input_bits > 0:
                    nbits = opts.input_bits
                prog.synapses.append(Synapse(f"{srcname}->{name}{suffix}", srcname, name, w, e, nbits,
                                             "sparse" if density < opts.sparse_below else "dense", is_back))
        # bias
        B = float(vunit) * vth * c
        if np.any(np.abs(B) > lim.bias_max):
            raise UnsupportedNodeError("bias too large for Lava's 13-bit mantissa and 3-bit exponent", node=name,
                                       limit=lim.bias_max, actual=float(np.abs(B).max()),
                                       hint=f"lower vth_mant below {lim.bias_max / (vunit * np.abs(c).max()):.0f}, or "
                                            "drop --option vth_mant: the compiler then chooses it")
        bmant, bexp = quantize_bias(B, lim)
        fid["decay_v_rel_error"] = _rel(dv / float(scale), _rate_of(node, dt, integ, n, "v"))
        fid.update(spike_time_drift(dv, _rate_of(node, dt, integ, n, "v"), float(scale)))
        fid["threshold_unit"] = "per-neuron v_threshold" if spiking else float(unit[0])
        prog.meta["fidelity"][name] = fid
        uniform = lambda a: int(a[0]) if np.all(a == a[0]) else a.astype(np.int32)  # noqa: E731
        bias_int = bmant.astype(np.int64) << bexp
        u_init = _cuba_bias_u(bias_int, du, latency[name], scale) if cuba else np.zeros(n, np.int64)
        v_init = _preroll_init(bias_int, dv, latency[name], vunit * vth, name, warn, num, u_init, du)
        prog.groups.append(NeuronGroup(name, type(node).__name__, shape, uniform(du), uniform(dv),
                                       vth if spiking else lim.vth_max, bmant, bexp, reset, spiking,
                                       (float(vunit) * vth / unit).astype(np.float64), latency[name], v_init,
                                       u_init.astype(np.int32) if np.any(u_init) else 0))
        if spiking:
            hooks.sources[name] = Source(name, 1.0, 1.0, 0, latency[name])
    for s in prog.synapses:
        if s.recurrent and latency[s.src] != latency[s.dst]:
            raise UnsupportedNodeError(f"recurrent edge from '{s.src}' (latency {latency[s.src]}) to '{s.dst}' "
                                       f"(latency {latency[s.dst]}) would be misaligned in Lava", node=s.dst,
                                       hint="recurrent connections must stay within one layer")
    for name in graph.outputs:
        preds = graph.preds(name)
        rw = rb = None
        if name in readout_outs:        # through linear layers from one neuron layer / SSM: read out on the host
            terms, bias = lin[name]
            src_name, (m, is_back) = next(iter(terms.items())) if len(terms) == 1 else (None, (None, True))
            if src_name is None or is_back or not isinstance(graph.nodes[src_name], NEURONS + hooked):
                raise UnsupportedNodeError("a loihi2 output must be fed by one neuron layer or SSM, directly or "
                                           "through linear layers (a host readout)", node=name,
                                           hint="end the network with a LIF (spikes) or LI (membrane) layer, or "
                                                "one linear readout of one layer")
            preds = [src_name]
            rw = np.asarray(m.dense() if hasattr(m, "dense") else m, np.float64)
            rb = np.asarray(bias, np.float64).reshape(-1)
        if len(preds) == 1 and hooked and isinstance(graph.nodes[preds[0]], hooked):    # a graded unit
            src = hooks.sources[preds[0]]
            shape = prog.unit(src.lava).shape if rw is None else tuple(graph.shape_out(name))
            prog.outputs.append(OutputPort(name, src.lava, "graded", shape, rw, rb))
            continue
        if len(preds) != 1 or not isinstance(graph.nodes[preds[0]], NEURONS):
            raise UnsupportedNodeError("a loihi2 output must be fed directly by one neuron layer", node=name,
                                       hint="end the network with a LIF (spikes) or LI (membrane) layer")
        grp = prog.group(preds[0])
        shape = grp.shape if rw is None else tuple(graph.shape_out(name))
        prog.outputs.append(OutputPort(name, grp.name, "spikes" if grp.spiking else "v", shape, rw, rb))
    prog.meta.update(_placement(graph, prog, ctx))
    ctx.reports["loihi2"] = {"fidelity": prog.meta["fidelity"], "latency": latency,
                             **{k: v for k, v in prog.meta.items() if k.startswith("cores")}}
    return prog


def _preroll_init(bias, dv, L, vth64, name, warn, num, u_init=None, du=None):
    """Initial v so that after the L pre-roll steps (Lava steps before this group's
    first input arrives, in which only the bias and the decaying ``u_init`` act) v
    is 0 again, as the reference's v at t = −1: v_L = q^L·v0 + Σ_{k=1..L} q^{L−k}·(u_k
    + B) = 0 with q = 1 − dv/4096 and u_k = u_init·q_u^k (rounded; the residue is
    a few LSB of the 64·vth-per-threshold scale; 4096 and 64 are ``num``'s decay scale and
    2^threshold_shift)."""
    scale = float(num.decay_scale)
    q = 1.0 - np.asarray(dv, float) / scale
    bias = np.asarray(bias, float)
    u0 = np.zeros(len(bias)) if u_init is None else np.asarray(u_init, float)
    if not np.any(bias) and not np.any(u0):
        return np.zeros(len(bias), np.int32)
    qu = 1.0 - (np.asarray(du, float) + 1) / scale if du is not None else 0.0
    v0 = -sum((u0 * qu ** k + bias) / np.maximum(q ** k, 1e-9) for k in range(1, L + 1))
    lim = 0.99 * vth64
    if np.any(np.abs(v0) > lim):
        warn("bias too strong to cancel during the Lava pre-roll; initial v clipped below threshold", name)
    return np.rint(np.clip(v0, -num.v_max + 1, lim)).astype(np.int32)


def _cuba_bias_u(bias, du, L, scale):
    """Initial current u of a current-based group with an input bias. Lava adds the bias B
    (the current's steady-state contribution, see the module docstring) to v, but the
    reference's current rises to it: I_t = w_in·b·(1 − q_u^{t+1}). Starting u at
    −B·q_u^{−L} makes Lava's u carry the transient −B·q_u^{t+1} at the aligned step t,
    so v receives exactly the reference's rising current (u decays alone, u is not reset)."""
    qu = 1.0 - (np.asarray(du, float) + 1) / float(scale)
    bias = np.asarray(bias, float)
    if not np.any(bias):
        return np.zeros(len(bias), np.int64)
    return np.rint(-bias / np.maximum(qu ** L, 1e-9)).astype(np.int64)


def _ssm_input_bits(graph: Graph, name: str, lin: dict, hooked: tuple, data: dict | None, bits: int) -> int:
    """The payload width of graph input ``name``: ``input_bits`` when given (> 0); else, for an input
    that feeds only SSM nodes (their scales follow the source's range, :mod:`.ssm`) and whose
    calibration data hold integers other than 0/1, the smallest signed width k that holds them
    (−2^(k−1) ≤ x ≤ 2^(k−1) − 1, k ≤ 24) — the values a user feeds are then the payloads; else 0
    (binary spikes, the default)."""
    if bits or not data or name not in data or not hooked:
        return bits
    users = [k for k, (terms, _) in lin.items() if name in terms and isinstance(graph.nodes[k], NEURONS + hooked)]
    if not users or not all(isinstance(graph.nodes[k], hooked) for k in users):
        return bits
    x = np.asarray(data[name], np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x != np.rint(x)) or np.all((x == 0) | (x == 1)):
        return bits
    k = 2
    while k < 24 and not (x.max() <= 2 ** (k - 1) - 1 and x.min() >= -2 ** (k - 1)):
        k += 1
    return k


def _input_amp(graph: Graph, src: str, opts: Loihi2Options) -> float:
    """Largest payload a source sends: 1 for spikes, 2^(input_bits−1) for graded inputs."""
    if src in graph.inputs and opts.input_bits > 0:
        return float(2 ** (opts.input_bits - 1))
    return 1.0


def a_m_of(node, dt, integ, n):
    """Per-step membrane rate a_m of a current-based node."""
    return step_rate(param_vec(node, "tau_mem", n), dt, integ, "")


def _weight_quant(graph: Graph, dst: str, src: str):
    """The Quant annotation of the single weight node between src and dst, if any."""
    cands = [p for p in graph.preds(dst) if graph.ann(p, Quant) is not None and src in graph.preds(p)]
    return graph.ann(cands[0], Quant) if len(cands) == 1 else None


def _rate_of(node, dt, integ, n, which):
    field = lookup(node).membrane_tau
    if field is None:   # IF, I: no leak
        return np.zeros(n)
    tau = np.broadcast_to(np.asarray(getattr(node, field), float).reshape(-1), (n,))   # per-neuron arrays of any shape
    return dt / tau if integ == "euler" else 1 - np.exp(-dt / tau)


def spike_time_drift(dv, rate, scale: float = 4096.0) -> dict:
    """How far the 12-bit decay moves spike times (a limit of Lava's LIF, not a choice).

    The reference decays by ``1 − rate`` per step, Lava by ``q = 1 − dv/scale`` (``scale``: the
    numerics' decay scale, 4096 for Lava's 12-bit decays); the gain uses Lava's
    rate, so every steady state is exact and a membrane rising from its reset value towards it,
    ``v_k = v_∞·(1 − q^k)``, crosses a threshold the reference crosses after t steps after
    ``t·ln(1 − rate)/ln(q)`` steps: the drift is ``ε·t`` with ``ε = |ln(1 − rate)/ln(q) − 1|``
    (up to ``τ/(8192·dt)`` from the ½-LSB rounding of dv). No choice of threshold or gain removes
    it for every drive. Spike times stay within one step of the reference for inter-spike
    intervals (or times since the last reset) up to ``1/ε`` steps; longer ones drift ``ε`` per step.
    Returns ``spike_time_drift_per_step`` (ε, worst neuron) and ``one_step_within_steps``
    (⌊1/ε⌋, None when ε = 0)."""
    rate = np.broadcast_to(np.asarray(rate, float), np.shape(dv))
    q = 1.0 - np.asarray(dv, float) / float(scale)
    ok = (rate > 0) & (rate < 1) & (q > 0) & (q < 1)
    eps = float(np.max(np.abs(np.log1p(-rate[ok]) / np.log(q[ok]) - 1.0))) if np.any(ok) else 0.0
    return {"spike_time_drift_per_step": round(eps, 6),
            "one_step_within_steps": int(1.0 / eps) if eps > 0 else None}


def _rel(a, b):
    b = np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if np.any(b) else 0.0


def _placement(graph: Graph, prog: LoihiProgram, ctx) -> dict:
    """Cores used, read from the Placement annotations the partition pass wrote (the passes are
    their only writer), against the lower bound ceil(neurons / neurons_per_core) of the target
    model (:meth:`~nmc.target_model.CoreLimits.cores_for_neurons`). A core over the limit (a
    ``partition{max_neurons_per_core=N}`` above the spec's) is a design-rule error. A layer
    without a Placement (a pipeline without ``partition``) is a PassError naming the pass, but
    for a context built by hand with neither a spec nor any Placement (no cores to count)."""
    spec = getattr(ctx, "spec", None)
    names = [g.name for g in prog.groups] + sorted({u.node for u in prog.units})
    placed = [graph.ann(x, Placement) for x in names]
    missing = [x for x, p in zip(names, placed) if p is None or p.core is None]
    if not names or (spec is None and len(missing) == len(names)):
        return {}
    if missing:
        raise PassError("loihi2's lowering reads the Placement the 'partition' pass writes, and this layer has "
                        "none", node=missing[0],
                        hint="end --passes with partition (the default pipeline has it; nmc.compile appends it)")
    cores = np.concatenate([np.asarray(p.core).reshape(-1) for p in placed])
    out: dict = {"cores_used": int(len(np.unique(cores))), "placement_source": "Placement annotations"}
    if spec is None:
        return out
    target = getattr(ctx, "target", None)
    lim = (target if isinstance(target, Loihi2Target) else Loihi2Target(spec)).limits
    if lim.neurons_max:
        counts = np.unique(cores, return_counts=True)[1]
        if counts.max() > lim.neurons_max:
            from nmc.errors import Violation

            raise DesignRuleError([Violation(rule="neurons_per_core", node=None, limit=lim.neurons_max,
                                             actual=int(counts.max()), hint="re-run place")])
        out["cores_lower_bound"] = lim.cores_for_neurons(sum(g.n for g in prog.groups) + sum(u.n for u in prog.units))
    return out
