"""Graph → :class:`LoihiProgram` (Lava's fixed-point LIF + Dense/Sparse).

Structure. Sources are graph ``Input`` nodes and neuron nodes (LIF, CubaLIF,
IF, LI, CubaLI, I); every chain of linear nodes between them (Affine, Linear,
Scale, Conv1d/2d, SumPool2d/AvgPool2d, Flatten; branches summed) is composed
into one float matrix per (source, neuron) pair plus a bias vector, by pushing
an identity batch through the nodes (so conv+pool become one Sparse matrix).
Each pair becomes one Lava ``Dense`` (``Sparse`` when its density is below
``sparse_below``), each neuron node one Lava ``LIF`` process.

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
  R·w_in·b)`` — an input bias b is applied to v at its steady-state value (Lava's
  bias enters v, not u): exact only for b = 0, stated in the fidelity report.

Pre-roll. Lava applies the bias from its first step, L steps before the
group's first input arrives; ``v_init`` (:func:`_preroll_init`) cancels it so
v is ≈ 0 at the aligned t = 0, as in the reference.

Scaling. Each neuron's dynamics are divided by its unit U (its threshold; for
non-spiking readouts a bound on |v|), so all neurons of a group share one
threshold mantissa ``vth`` (option ``vth_mant``, default 2¹²) and
``v_int = 64·vth·v/U``. A synapse's target integer drive per unit input is
``T = vth·g·M/U``; it is quantised to Lava's 8-bit mantissa with one exponent
per synapse: ``T ≈ w·2^e`` (mixed signs: w even, |w| ≤ 254; one sign:
|w| ≤ 255; ``weight_bits`` b < 8 coarsens the grid). When the graph carries a
``Quant`` annotation its ``bits`` are used. The constant drive becomes
``bias_mant·2^bias_exp ≈ 64·vth·c/U``. v_reset must be 0 (Lava resets to 0).
"""
from __future__ import annotations

import math

import nir
import numpy as np

from nmc.annotations import Placement, Quant
from nmc.errors import DesignRuleError, OptionError, UnsupportedNodeError
from nmc.ir import Graph

from ..linear import NEURONS, compose, param_vec, step_rate
from .program import InputPort, LoihiProgram, NeuronGroup, OutputPort, Synapse

SPIKING = (nir.LIF, nir.CubaLIF, nir.IF)

DEFAULTS = {"vth_mant": 4096, "weight_bits": 8, "input_bits": 0, "sparse_below": 0.25}


def _neuron_params(name, node, dt, integ, n, warn):
    """Per-neuron (du, dv, g, c_leak, bias_gain, spiking, kind)."""
    def f(k):
        return param_vec(node, k, n)

    def rate(tau):
        return step_rate(tau, dt, integ, name)

    if isinstance(node, (nir.IF, nir.I)):
        g = dt * f("r")
        return np.full(n, 4095), np.zeros(n, int), g, np.zeros(n), g
    if isinstance(node, (nir.LIF, nir.LI)):
        a = rate(f("tau"))
        g = a * f("r")
        return np.full(n, 4095), np.rint(4096 * a).astype(int), g, a * f("v_leak"), g
    a_s, a_m = rate(f("tau_syn")), rate(f("tau_mem"))
    du = np.rint(4096 * a_s).astype(int) - 1
    if np.any(du < 0):
        warn("synaptic decay dt/tau_syn < 1/8192 rounds to Lava's minimum du+1 = 1/4096", name)
    g = a_m * f("r") * a_s * f("w_in")
    return (np.clip(du, 0, 4095), np.rint(4096 * a_m).astype(int), g, a_m * f("v_leak"),
            a_m * f("r") * f("w_in"))


def _quantize(T: np.ndarray, bits: int):
    """T ≈ w·2^e with w on Lava's 8-bit grid. Returns (w int32, e, rel_err)."""
    m = float(np.abs(T).max()) if T.size else 0.0
    if m == 0.0:
        return np.zeros(T.shape, np.int32), 0, 0.0
    mixed = bool(T.min() < 0 < T.max())
    q = 2 ** ((9 if mixed else 8) - bits)          # grid step inside Lava's 8-bit weight
    kmax = 2 ** (bits - 1) - 1 if mixed else 2 ** bits - 1
    e = math.ceil(math.log2(m / (q * kmax)))
    k = np.clip(np.rint(T / 2.0 ** e / q), -kmax if mixed else -kmax, kmax)
    w = (k * q).astype(np.int32)
    err = float(np.abs(w * 2.0 ** e - T).max() / m)
    return w, int(e), err


def lower(graph: Graph, ctx) -> LoihiProgram:
    opts = {k: ctx.options.get(k, v) if ctx.options.get(k) is not None else v for k, v in DEFAULTS.items()}
    vth = int(opts["vth_mant"])
    if not 1 <= vth < 2 ** 17:
        raise OptionError("vth_mant must be in 1..131071 (Lava's 17-bit threshold mantissa)", actual=vth)
    from nmc.nodes import EGRU

    egru = [k for k, n in graph.nodes.items() if isinstance(n, EGRU)]
    if egru:  # Loihi 2 has graded spikes and microcode neurons, but nmc has no EGRU microcode program
        raise UnsupportedNodeError(
            f"EGRU cells ({', '.join(egru)}) need a gated cell with sigmoid/tanh and graded events; Loihi 2 could "
            "run one only as a custom microcode neuron model, which needs Intel's lava-loihi (not public) and "
            "which nmc does not generate; Lava's public fixed-point processes have no such neuron", node=egru[0],
            hint="compile EGRU models for spinnaker2 (generated PE kernels)")
    dt = float(graph.meta.get("dt", 1e-4))
    integ = graph.meta.get("integrator", "euler")
    order, back = graph.schedule()
    lin = compose(graph, order, back, target="loihi2")
    warn = lambda msg, node: ctx.warnings.add(msg, node=node, source="loihi2")  # noqa: E731
    prog = LoihiProgram(meta={"dt": dt, "integrator": integ, "vth_mant": vth, "fidelity": {}})
    latency: dict[str, int] = {}
    for name in graph.inputs:
        prog.inputs.append(InputPort(name, tuple(graph.shape_out(name)), int(opts["input_bits"])))
        latency[name] = 0
    bits_default = int(opts["weight_bits"])
    for name in order:
        node = graph.nodes[name]
        if not isinstance(node, NEURONS):
            continue
        shape = tuple(graph.shape_out(name))
        n = int(np.prod(shape))
        terms, bias_in = lin[name]
        du, dv, g, c_leak, bgain = _neuron_params(name, node, dt, integ, n, warn)
        spiking = isinstance(node, SPIKING)
        reset = graph.reset_mode(name) if spiking else "zero"
        if spiking:
            if np.any(np.asarray(node.v_reset) != 0):
                raise UnsupportedNodeError("Lava's LIF resets to 0; v_reset must be 0", node=name,
                                           actual=float(np.abs(node.v_reset).max()), hint="retrain with v_reset = 0")
            unit = np.broadcast_to(np.asarray(node.v_threshold, float), shape).reshape(-1)
            if np.any(unit <= 0):
                raise UnsupportedNodeError("v_threshold must be > 0", node=name, actual=float(unit.min()))
        else:
            decay = np.maximum(dv / 4096.0, 1.0 / 64)
            drive = sum(np.abs(m).sum(axis=0) for m, _ in terms.values()) * np.abs(g)
            b = np.abs(c_leak + bgain * bias_in)
            unit = np.full(n, max(float(((drive + b) / decay).max()), 1e-12))
        if isinstance(node, (nir.CubaLIF, nir.CubaLI)) and np.any(bias_in != 0):
            warn("an input bias into a current-based neuron is applied at its steady-state value "
                 "(Lava's bias adds to v, not to the current)", name)
        fwd = [s for s, (_, b) in terms.items() if not b]
        lats = {latency[s] for s in fwd if s in latency}
        if len(lats) > 1:
            raise UnsupportedNodeError("paths of different depth meet here; every Lava synapse adds one step so they "
                                       "would arrive misaligned", node=name, actual=sorted(lats),
                                       hint="make skip connections span the same number of neuron layers")
        latency[name] = (lats.pop() if lats else 0) + 1
        # synapses
        fid = {"weight_rel_error": 0.0, "v_error_per_step": 0.0}
        for s, (m, is_back) in terms.items():
            T = (vth * (g / unit))[:, None] * m.T          # (n_dst, n_src)
            srcname = s
            bits = bits_default
            q = _weight_quant(graph, name, s)
            if q is not None:
                bits = int(q.bits)
            w, e, err = _quantize(T, min(bits, 8))
            fid["weight_rel_error"] = max(fid["weight_rel_error"], err)
            # worst-case membrane error per step (threshold units), every input active (payload 1)
            dW = np.abs(w * 2.0 ** e - T) / vth
            scale_in = 2 ** (int(opts["input_bits"]) - 1) if isinstance(graph.nodes[s], nir.Input) and int(
                opts["input_bits"]) > 0 else 1
            fid["v_error_per_step"] += float(dW.sum(axis=1).max()) * scale_in
            density = np.count_nonzero(w) / max(w.size, 1)
            nbits = 0
            if isinstance(graph.nodes[s], nir.Input) and int(opts["input_bits"]) > 0:
                nbits = int(opts["input_bits"])
            prog.synapses.append(Synapse(f"{srcname}->{name}", srcname, name, w, e, nbits,
                                         "sparse" if density < float(opts["sparse_below"]) else "dense", is_back))
        # bias
        B = 64.0 * vth * (c_leak + bgain * bias_in) / unit
        bexp = np.zeros(n, np.int32)
        nz = np.abs(B) > 4095
        bexp[nz] = np.ceil(np.log2(np.abs(B[nz]) / 4095)).astype(np.int32)
        if np.any(bexp > 7):
            raise UnsupportedNodeError("bias too large for Lava's 13-bit mantissa and 3-bit exponent", node=name,
                                       limit=4095 * 128, actual=float(np.abs(B).max()),
                                       hint="lower vth_mant (e.g. --option vth_mant=1024)")
        bmant = np.rint(B / 2.0 ** bexp).astype(np.int32)
        fid["decay_v_rel_error"] = _rel(dv / 4096.0, _rate_of(node, dt, integ, n, "v"))
        fid["threshold_unit"] = "per-neuron v_threshold" if spiking else float(unit[0])
        prog.meta["fidelity"][name] = fid
        uniform = lambda a: int(a[0]) if np.all(a == a[0]) else a.astype(np.int32)  # noqa: E731
        v_init = _preroll_init(bmant.astype(np.int64) << bexp, dv, latency[name], 64 * vth, name, warn)
        prog.groups.append(NeuronGroup(name, type(node).__name__, shape, uniform(du), uniform(dv),
                                       vth if spiking else 2 ** 17 - 1, bmant, bexp, reset, spiking,
                                       (64.0 * vth / unit).astype(np.float64), latency[name], v_init))
    for s in prog.synapses:
        if s.recurrent and latency[s.src] != latency[s.dst]:
            raise UnsupportedNodeError(f"recurrent edge from '{s.src}' (latency {latency[s.src]}) to '{s.dst}' "
                                       f"(latency {latency[s.dst]}) would be misaligned in Lava", node=s.dst,
                                       hint="recurrent connections must stay within one layer")
    for name in graph.outputs:
        preds = graph.preds(name)
        if len(preds) != 1 or not isinstance(graph.nodes[preds[0]], NEURONS):
            raise UnsupportedNodeError("a loihi2 output must be fed directly by one neuron layer", node=name,
                                       hint="end the network with a LIF (spikes) or LI (membrane) layer")
        grp = prog.group(preds[0])
        prog.outputs.append(OutputPort(name, grp.name, "spikes" if grp.spiking else "v", grp.shape))
    prog.meta.update(_placement(graph, prog, ctx))
    ctx.reports["loihi2"] = {"fidelity": prog.meta["fidelity"], "latency": latency,
                             **{k: v for k, v in prog.meta.items() if k.startswith("cores")}}
    return prog


def _preroll_init(bias, dv, L, vth64, name, warn):
    """Initial v so that after the L pre-roll steps (Lava steps before this group's
    first input arrives, in which only the bias acts) v is 0 again, as the
    reference's v at t = −1: v0 = −B·Σ_{k<L} q^k / q^L with q = 1 − dv/4096
    (rounded; the residue is a few LSB of the 64·vth-per-threshold scale)."""
    q = 1.0 - np.asarray(dv, float) / 4096.0
    if not np.any(bias):
        return np.zeros(len(bias), np.int32)
    geo = sum(q ** k for k in range(L))
    v0 = -bias * geo / np.maximum(q ** L, 1e-9)
    lim = 0.99 * vth64
    if np.any(np.abs(v0) > lim):
        warn("bias too strong to cancel during the Lava pre-roll; initial v clipped below threshold", name)
    return np.rint(np.clip(v0, -2 ** 23 + 1, lim)).astype(np.int32)


def _weight_quant(graph: Graph, dst: str, src: str):
    """The Quant annotation of the single weight node between src and dst, if any."""
    cands = [p for p in graph.preds(dst) if graph.ann(p, Quant) is not None and src in graph.preds(p)]
    return graph.ann(cands[0], Quant) if len(cands) == 1 else None


def _rate_of(node, dt, integ, n, which):
    if isinstance(node, (nir.IF, nir.I)):
        return np.zeros(n)
    tau = getattr(node, "tau", None) if isinstance(node, (nir.LIF, nir.LI)) else node.tau_mem
    tau = np.broadcast_to(np.asarray(tau, float), (n,)).reshape(-1)
    return dt / tau if integ == "euler" else 1 - np.exp(-dt / tau)


def _rel(a, b):
    b = np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if np.any(b) else 0.0


def _placement(graph: Graph, prog: LoihiProgram, ctx) -> dict:
    """Cores used (from Placement annotations, else a fill-cores-in-order count)
    against the lower bound ceil(neurons / neurons_per_core), per the spec."""
    spec = getattr(ctx, "spec", None)
    per_core = None
    if spec is not None:
        per_core = int(spec.get("core.neurons_max"))
    placed = [graph.ann(g.name, Placement) for g in prog.groups]
    out: dict = {}
    if all(p is not None and p.core is not None for p in placed) and placed:
        cores = np.concatenate([np.asarray(p.core).reshape(-1) for p in placed])
        out["cores_used"] = int(len(np.unique(cores)))
        out["placement_source"] = "Placement annotations"
        if per_core:
            counts = np.unique(cores, return_counts=True)[1]
            if counts.max() > per_core:
                from nmc.errors import Violation

                raise DesignRuleError([Violation(rule="neurons_per_core", node=None, limit=per_core,
                                                 actual=int(counts.max()), hint="re-run place")])
    if per_core:
        total = sum(g.n for g in prog.groups)
        out["cores_lower_bound"] = int(math.ceil(total / per_core))
        out.setdefault("cores_used", int(sum(math.ceil(g.n / per_core) for g in prog.groups)))
        out.setdefault("placement_source", "one core range per layer (no Placement annotation)")
    return out
