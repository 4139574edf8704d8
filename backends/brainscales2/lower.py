"""Graph → :class:`BSS2Program`: synapse rows, 6-bit weights, analog parameters.

* Layers: LIF, CubaLIF (spiking) and LI, CubaLI (readouts, membrane recorded);
  sources are Inputs (binary spikes) and those layers. Linear chains are fused
  by :func:`backends.linear.compose`. What cannot map (EGRU / graded events,
  Delay, Threshold) is refused by :mod:`.rules` with the reason and the target
  that can take it; IF/I become leaky with the longest τ (warned). A real-diagonal
  ``nmc.DiagSSM`` feeding a LIF layer alone, with one decay and D = 0, becomes that
  layer's synaptic current (a CubaLIF, :mod:`.ssm`), exactly.
* Time: the chip is continuous-time. Each layer's continuous time constant is
  the one whose one-step decay equals the graph's discrete decay (Euler
  1 − dt/τ or exact e^{−dt/τ}): τ = −dt/ln(decay). The speed-up (hardware
  time = model time / speed-up) is chosen per network by :mod:`.timescale`
  within ``timing.speedup_range``: the smallest that puts the longest τ at the
  top of the DAC range (finest relative step of the linear DAC), refused when
  no speed-up fits every τ (``--option speedup=X`` overrides, still checked).
  Every hardware τ and the largest threshold sit on exact DAC codes
  (:func:`_dac_exact`; the voltage unit absorbs the threshold's step), and
  the gains come from the realised τ: a LIF layer keeps its steady state, a
  current-based layer's sampled response equals the discrete one
  (:func:`_cuba_gain`). A current-based spiking layer holds v at v_reset for
  half a step after a spike (:func:`_refractory`).
* Weights: the drive of one input spike in threshold units, D = g·M/U (g =
  a·R for LIF, a_mem·R·w_in·τ_mem/τ_syn for CubaLIF), 6-bit with one LSB per
  layer (:func:`_weights`: the quantize pass's ``Quant.w_int`` when it applies
  unchanged, else s = max|D|/63, w6 = clip(round_half_away(D/s), ±63)); the sign
  goes on the row.
* Biases: the circuits have no bias current, and a leak-potential shift R·b
  leaves the DAC range for long τ, so a layer's bias b is an input of weight b
  from the host source ``__bias__`` (:data:`.program.BIAS_SOURCE`), which fires
  once every step through its own synapse rows (the program's
  ``constant_inputs``; the emulator and the PyNN script drive it) — the
  reference's semantics. The bias does not set the layer's LSB: a bias beyond
  63 LSB is split over k sources ``__bias__``, ``__bias__1``, … (repeated
  events, k ≤ option ``bias_repeat_max``, default 8).
* Reset: a circuit resets to a potential; reset by subtraction becomes a
  reset to each neuron's mean residue after a spike, measured on the float
  reference (:func:`_subtract_residues`).
* Circuits: a neuron whose inputs all have one sign takes
  ``fan_in_unsigned`` per circuit, a mixed-sign one ``fan_in_signed``; more
  inputs merge ⌈in-degree/fan-in⌉ circuits into one logical neuron.
* Rows, columns and labels: label groups from the ``rewire`` pass's ``RowMap``
  (or :func:`passes.rewire.rewire_matrix` for composed projections), then
  :func:`.synapses.array_config` (merged neurons take several synapses per row).
* Analog parameters in threshold units (U = the layer's largest threshold) and
  hardware seconds → 10-bit DAC codes through the calibration table.
* Placement: hemispheres, then sequential runs when one chip is not enough,
  chosen by the ``partition`` pass (:mod:`nmc.passes.hemispheres`, with the
  circuits and rows of :func:`plan` through the target model) and read here from
  the Placement it wrote (the passes are its only writer: a graph without one is
  refused, naming the pass; ``nmc.compile`` appends ``partition`` to a pipeline
  that lacks it). The mapping report gives rows, circuits and runs used
  against their lower bounds, per layer and per projection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Quant, RowMap
from nmc.errors import DesignRuleError, PassError, UnsupportedNodeError, Warnings
from nmc.graph_meta import GraphMeta
from nmc.ir import Graph
from nmc.passes.quantize import round_half_away
from nmc.passes import hemispheres as H
from nmc.passes.rewire import rewire_matrix
from nmc.semantics import Kind, entries, kind_of, lookup, register_hook

from ..linear import compose, param_vec, step_rate
from . import calibration as C
from .target import BrainScaleS2Target
from . import rules
from .ssm import as_synaptic_currents
from . import ppu_lower as PL
from . import synapses as S
from . import timescale as TS
from .options import BrainScaleS2Options
from .program import BIAS_SOURCE, BSS2Program, Layer, Projection

#: The neuron types the analog layers run: those with a membrane time constant (the registry's
#: ``membrane_tau``: LIF, CubaLIF, LI, CubaLI, spiking ones first as refusals list them; IF and I
#: become leaky first, by their ``leaky`` hook).
LAYERS = tuple(sorted((e.cls for e in entries() if e.is_neuron and e.membrane_tau is not None),
                      key=lambda c: not lookup(c).spiking))


_vec = param_vec


def _decay(tau, dt, integ, node: str):
    return 1 - step_rate(tau, dt, integ, node)


def _made_leaky(node) -> bool:
    """A neuron type without a leak, which carries a ``brainscales2`` ``leaky`` hook (IF, I)."""
    e = lookup(node)
    return e is not None and e.hook("leaky", "brainscales2") is not None


def _leaky_integrators(graph: Graph, ctx, dt: float, speed: float, warnings) -> Graph:
    """Analog neurons always leak: IF/I nodes become LIF/LI with the longest
    membrane time constant the DAC reaches (same input gain dt·R per step),
    which is exact only while the run is short against that τ (warned). The node types that need
    it carry a ``brainscales2`` ``leaky`` hook (below): (node, n, τ, R) → the leaky node."""
    todo = [k for k, n in graph.nodes.items() if _made_leaky(n)]
    if not todo:
        return graph
    g = graph.copy()
    tau = float(ctx.spec.get("dac.range.tau_mem")[1]) * speed  # model seconds
    if dt >= tau:
        raise UnsupportedNodeError(
            f"{type(graph.nodes[todo[0]]).__name__} neurons need a circuit that does not leak within a step, but the "
            f"longest membrane time constant the DAC reaches is {tau:g} s of model time (speed-up {speed:g}) and "
            f"the step is dt = {dt:g} s", node=todo[0], limit=f"dt < {tau:g} s", actual=f"dt = {dt:g} s",
            hint="a network in discrete time (dt = 1, as sinabs exports) has no analog equivalent at this dt: run it "
                 "on a digital target, or compile with a dt far below that τ and R scaled by 1/dt")
    for k in todo:
        node = g.nodes[k]
        n = int(np.prod(g.shape_out(k)))
        g.nodes[k] = lookup(node).hook("leaky", "brainscales2")(node, n, tau, _vec(node, "r", n) * tau)
        warnings.add(f"{type(node).__name__} has no analog equivalent (every circuit leaks): mapped to a leaky "
                         f"neuron with the longest time constant, τ = {tau:g} s of model time", node=k, source="brainscales2")
    return g


@register_hook("brainscales2", "leaky", nir.IF)
def _leaky_if(node, n: int, tau: float, r: np.ndarray):
    return nir.LIF(tau=np.full(n, tau), r=r, v_leak=np.zeros(n), v_threshold=_vec(node, "v_threshold", n).copy(),
                   v_reset=_vec(node, "v_reset", n).copy())


@register_hook("brainscales2", "leaky", nir.I)
def _leaky_i(node, n: int, tau: float, r: np.ndarray):
    return nir.LI(tau=np.full(n, tau), r=r, v_leak=np.zeros(n))


#: Synaptic operations the reset-residue measurement may cost (the inputs are shortened beyond it).
RESIDUE_MAX_SYNOPS = 5e7


def _subtract_residues(graph: Graph, ctx, names: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """Per neuron of the layers that reset by subtraction: the mean membrane left after a spike
    (v − v_th, clipped to [0, v_th)) on the float reference of ``graph``, run on the calibration
    data or the seeded synthetic probe. A circuit resets to a potential, so reset by subtraction
    becomes a reset to this mean residue: a rate-coded IF neuron driven by d threshold units per
    step fires d per step on the reference but only 1/⌈1/d⌉ after a reset to 0 (0.25 instead of
    0.32 at d = 0.32), a loss that compounds layer after layer (ResNet-style ANN → SNN conversions
    fell to 18 %). Neurons that never spike keep v_reset (0 residue)."""
    if not names:
        return {}, ""
    from nmc.passes.fidelity import fit_budget, layer_inputs, simulate

    inputs, src = layer_inputs(graph, ctx.data, 100, ctx.seed)
    inputs, _ = fit_budget(graph, inputs, RESIDUE_MAX_SYNOPS, budget="RESIDUE_MAX_SYNOPS")
    res = simulate(graph, inputs, names)
    out = {}
    for k in names:
        n = int(np.prod(graph.shape_out(k)))
        s = np.asarray(res[f"{k}.spikes"], float).reshape(-1, n)
        v = np.asarray(res[f"{k}.v"], float).reshape(-1, n)       # after the step's reset
        thr = _vec(graph.nodes[k], "v_threshold", n)
        cnt = s.sum(0)
        mean = np.where(cnt > 0, (v * s).sum(0) / np.maximum(cnt, 1), 0.0)
        out[k] = np.clip(mean, 0.0, np.nextafter(thr, 0)) + _vec(graph.nodes[k], "v_reset", n) * (cnt == 0)
    return out, src


def _dac_exact(x: float, param: str, spec) -> float:
    """The value nearest x that the nominal linear DAC of ``param`` produces exactly."""
    lo, hi = C.ranges(spec)[param]
    step = (hi - lo) / int(spec.get("dac.code_max"))
    return lo + step * round((x - lo) / step)


def _cuba_gain(a_m, a_s, tau_m, tau_s, dt):
    """Current jump ΔJ per unit input (times R·w_in) such that the chip's response to an event at the
    start of a step, sampled at the end of step t — ΔJ·τ_s/(τ_s − τ_m)·(q_s^{t+1} − q_m^{t+1}), q = e^{−dt/τ}
    of the realised τ — equals the discrete reference's a_m·a_s·(q_s^{t+1} − q_m^{t+1})/(q_s − q_m) (its
    own q = 1 − a): ΔJ = a_m·a_s·(τ_s − τ_m)/(τ_s·(q_s − q_m)); for τ_s → τ_m the limit
    a_m·a_s·τ/(q·dt). (Matching only the total effect, ΔJ·τ_s/τ_m = a_m, is off by O(dt/τ) in the
    first steps after every event.)"""
    qs, qm = 1 - a_s, 1 - a_m
    close = np.abs(tau_s - tau_m) <= 1e-9 * tau_m
    dq = np.where(close, 1.0, qs - qm)
    return np.where(close, a_m * a_s * tau_m / (np.where(qm > 0, qm, 1.0) * dt),
                    a_m * a_s * (tau_s - tau_m) / (tau_s * np.where(np.abs(dq) > 0, dq, 1.0)))


def _refractory(ctx, spec, dt: float, speed: float, cuba_spiking: bool) -> float:
    """Refractory time (hardware s). NIR has none; the user's ``t_refrac`` (model s) wins. A current-based
    layer crosses threshold inside a step (fraction f) and, reset there, goes on integrating the rest of the
    step, which the discrete model — reset at the step's end — discards: holding v at v_reset for half a
    step (the mean of 1 − f), within the DAC range, cancels it on average (class agreement with the
    reference on the strong-bias recurrent CubaLIF: 90 % without, 96 % with). Event-driven LIF layers take
    their input at the step's end, where they also cross: 0 for them."""
    user = BrainScaleS2Options.of(ctx).t_refrac
    if user is not None:
        return float(user) / speed
    if not cuba_spiking:
        return 0.0
    return min(0.5 * dt / speed, float(spec.get("dac.range.t_refrac")[1]))


def _model_taus(node, n: int, dt: float, integ: str, name: str) -> dict[str, np.ndarray]:
    """The continuous time constants (model seconds) whose one-step decay equals the graph's."""
    if lookup(node).current_based:
        return {"tau_mem": -dt / np.log(_decay(_vec(node, "tau_mem", n), dt, integ, name)),
                "tau_syn": -dt / np.log(_decay(_vec(node, "tau_syn", n), dt, integ, name))}
    return {"tau_mem": -dt / np.log(_decay(_vec(node, "tau", n), dt, integ, name))}


def _timescale(graph: Graph, ctx, dt: float, integ: str) -> TS.Timescale:
    """The speed-up (:mod:`.timescale`) for every τ of the LIF/CubaLIF/LI/CubaLI layers
    (IF/I have none: they get the longest τ of the chosen range)."""
    spec = ctx.spec
    taus = {}
    for k, node in graph.nodes.items():
        if isinstance(node, LAYERS):
            n = int(np.prod(graph.shape_out(k)))
            dm = _decay(_vec(node, lookup(node).membrane_tau, n), dt, integ, k)
            if np.any(dm <= 0):
                raise UnsupportedNodeError("dt ≥ τ: the decay per step is not positive", node=k,
                                           hint="use a smaller --dt")
            taus[k] = _model_taus(node, n, dt, integ, k)
    opts = BrainScaleS2Options.of(ctx)
    if opts.t_refrac:   # a user refractory time must fit its DAC range too
        taus["--option t_refrac"] = {"t_refrac": np.array([float(opts.t_refrac)])}
    user = opts.speedup
    ts = TS.choose(taus, {p: C.ranges(spec)[p] for p in ("tau_mem", "tau_syn", "t_refrac")},
                   tuple(spec.get("timing.speedup_range")), float(spec.get("timing.speedup")),
                   None if user is None else float(user))
    return ts


def _indeg(projs, layer) -> np.ndarray:
    return sum(((q.w6 != 0).sum(1) for q in projs if q.post == layer.name), np.zeros(layer.size, np.int64))


def _weight_node(graph: Graph, layer: str, src: str, m: np.ndarray):
    """The weight node (Affine/Linear: a weight matrix of the composed matrix's shape) that alone
    carries src → layer (its weight is the composed matrix), else None."""
    for p in graph.preds(layer):
        node = graph.nodes[p]
        if kind_of(node) is Kind.WEIGHT and graph.preds(p) == [src] and getattr(node.weight, "ndim", 0) == 2:
            w = np.asarray(node.weight, float)
            if w.shape == m.T.shape and np.allclose(w, m.T, rtol=0, atol=1e-12):
                return p
    return None


def _weights(graph: Graph, layer: str, terms: dict, gain: np.ndarray, wmax: int, repeat_max: int = 8):
    """Signed 6-bit weights per source, one LSB per layer (the neuron's synaptic
    input gain is shared by all its rows). The drive of one event in threshold
    units is D = gain·W; LSB s = max|D|/wmax; w6 = clip(round_half_away(D/s), ±wmax).
    When one weight node alone feeds the layer, carries a ``Quant`` annotation
    with ≤ wmax levels and one scale, and the gain is uniform, its ``w_int`` is
    used as is (s = scale·gain): the quantize pass's fidelity report then
    describes exactly these weights."""
    out, how = {}, {}
    if len(terms) == 1 and np.ptp(gain) <= 1e-12 * abs(gain[0]):
        (s, (m, _)), = terms.items()
        p = _weight_node(graph, layer, s, m)
        q = graph.ann(p, Quant) if p is not None else None
        if (q is not None and q.scheme == "int" and q.w_int is not None and np.size(q.scale) == 1
                and int(np.abs(q.w_int).max(initial=0)) <= wmax):
            out[s] = np.asarray(q.w_int, np.int64).reshape(m.T.shape)
            out[None] = float(np.asarray(q.scale).reshape(-1)[0]) * float(gain[0])
            how[s] = f"Quant annotation of '{p}' ({q.bits}-bit {q.method})"
            return out, how
    D = {s: np.asarray(m).T * gain[:, None] for s, (m, _) in terms.items()}
    Db = D.pop(BIAS_SOURCE, None)
    peak = max((float(np.abs(d).max()) for d in D.values() if d.size), default=0.0)
    bpeak = float(np.abs(Db).max()) if Db is not None else 0.0
    if peak == 0.0:
        peak = bpeak
    # the bias does not set the LSB (an outlier bias would coarsen every weight): it is split over k bias
    # sources firing every step (repeated events), k = ⌈bias/(wmax·LSB)⌉ ≤ bias_repeat_max
    scale = max(peak / wmax, bpeak / (wmax * repeat_max)) if peak > 0 else 1.0
    for s, d in D.items():
        out[s] = np.clip(round_half_away(d / scale), -wmax, wmax).astype(np.int64)
        how[s] = "requantized in lowering (per-layer LSB over all projections into the layer, biases excluded)"
    if Db is not None:
        k = max(1, math.ceil(bpeak / (wmax * scale) - 1e-9))
        for j in range(k):
            out[bias_source(j)] = np.clip(round_half_away(Db / k / scale), -wmax, wmax).astype(np.int64)
            how[bias_source(j)] = f"bias, one of {k} constant sources (repeated events) at the layer's LSB"
    out[None] = scale
    return out, how


def bias_source(j: int) -> str:
    """The j-th constant bias source (``__bias__``, ``__bias__1``, ...)."""
    return BIAS_SOURCE if j == 0 else f"{BIAS_SOURCE}{j}"


def _labels(graph: Graph, layer: str, src: str, w6: np.ndarray, per_row: int):
    """Label groups, labels and a row order: from the rewire pass's ``RowMap`` on
    the weight node that alone carries src → layer, when it covers every synapse;
    otherwise :func:`rewire_matrix` here (composed chains, neuron → neuron edges)."""
    n_post, n_pre = w6.shape
    for p in graph.preds(layer):
        rm = graph.ann(p, RowMap) if graph.preds(p) == [src] else None
        if rm is None or rm.group is None:
            continue
        grp, lab, sr = (np.asarray(rm.group, np.int64), np.asarray(rm.label, np.int64),
                        np.asarray(rm.synapse_row, np.int64))
        ok = (grp.shape == (n_pre,) and lab.shape == (n_pre,) and sr.shape == (n_post, n_pre)
              and np.all(sr[w6 != 0] >= 0) and np.all((lab >= 0) & (lab < per_row))
              and np.unique(grp * per_row + lab).size == n_pre)
        if ok:
            return grp, lab, sr, f"rewire pass (RowMap of '{p}')"
    r = rewire_matrix(w6.astype(float), fan_in=max(n_pre, 1), per_row=per_row)
    return r["group"], r["label"], r["synapse_row"], "rewire_matrix in lowering (no RowMap for this projection)"


@dataclass
class Plan:
    """The layers and projections of a graph on BrainScaleS-2 before placement:
    what the partition pass places (circuits per logical neuron, rows per layer,
    through :meth:`.target.BrainScaleS2Target.layer_demands`) and lowering maps."""

    graph: Graph                 # after IF/I → leaky
    layers: list
    projs: list
    warns: list                  # (node, message), added to ctx.warnings by lowering
    how: dict
    tscale: TS.Timescale
    plastic: dict = None         # (source, layer) → plastic projection info (.ppu_lower)

    def demands(self) -> tuple[list[dict], list[tuple[str, str]]]:
        """([{name, circuits, rows}] in schedule order, recurrent (pre, post) projections)."""
        rows = {l.name: sum(q.n_rows for q in self.projs if q.post == l.name) for l in self.layers}
        return ([{"name": l.name, "circuits": l.circuits, "rows": rows[l.name]} for l in self.layers],
                [(q.pre, q.post) for q in self.projs if q.recurrent])


def plan(graph: Graph, ctx, residues=None, warnings=None) -> Plan:
    """Layers, weights, circuits and rows of ``graph`` (no placement). ``residues``:
    a function (graph, IF layers that reset by subtraction) → (residue per layer,
    its source) for the reset potentials (lowering measures them; the partition
    pass, which needs only circuits and rows, passes None); ``warnings``: where the
    IF/I → leaky warnings go (None: dropped)."""
    spec = ctx.spec
    meta = GraphMeta.of(graph)
    dt, integ = meta.dt, meta.integrator
    graph, ssm_currents = as_synaptic_currents(graph, dt, integ)   # real DiagSSM → LIF pairs: CubaLIF (.ssm)
    warns = []
    for k, m in ssm_currents.items():
        warns.append((m["lif"], f"DiagSSM '{k}' ({m['modes']} real modes, one decay {m['decay']:.6g}) runs as this "
                                f"layer's synaptic current, τ_syn = {m['tau_syn']:.4g} s"))
    rules.check(graph)
    tscale = _timescale(graph, ctx, dt, integ)
    speed = tscale.speedup
    # the residue reset is derived for rate-coded IF neurons (ANN → SNN conversions: the spiking types
    # made leaky here, their ``leaky`` hook); a leaky neuron's residue decays before its next spike,
    # so LIF/CubaLIF keep the reset to v_reset (warned below)
    residue, residue_from = ({}, "") if residues is None else residues(graph, [
        k for k, nd in graph.nodes.items() if _made_leaky(nd) and lookup(nd).spiking
        and graph.reset_mode(k) == "subtract"])
    graph = _leaky_integrators(graph, ctx, dt, speed, warnings if warnings is not None else Warnings())
    order, back = graph.schedule()
    lin = compose(graph, order, back, target="brainscales2", neurons=LAYERS)
    fan_s = int(spec.get("synapse_array.fan_in_signed"))
    fan_u = int(spec.get("synapse_array.fan_in_unsigned"))
    per_row = int(spec.get("synapse_array.sources_per_row"))
    wmax = int(spec.get("synapse_array.weight_max"))
    per_driver = int(spec.get("synapse_array.rows_per_driver"))
    layers, projs, how, plastic_of = [], [], {}, {}
    for name in order:
        node = graph.nodes[name]
        if not isinstance(node, LAYERS):
            continue
        n = int(np.prod(graph.shape_out(name)))
        cuba, spiking = lookup(node).current_based, lookup(node).spiking
        # hardware τ on an exact nominal DAC code (the longest τ of the network is one: see .timescale), and the
        # gains from the realised τ so the sampled response equals the discrete reference's (see _cuba_gain)
        dac = lambda t, p: np.array([_dac_exact(x, p, spec) for x in np.asarray(t, float) / speed])  # noqa: E731
        if cuba:
            tm, ts = _vec(node, "tau_mem", n), _vec(node, "tau_syn", n)
            dm, ds = _decay(tm, dt, integ, name), _decay(ts, dt, integ, name)
            hw_m, hw_s = dac(-dt / np.log(dm), "tau_mem"), dac(-dt / np.log(ds), "tau_syn")
            g = _cuba_gain(1 - dm, 1 - ds, hw_m * speed, hw_s * speed, dt) * _vec(node, "r", n) * _vec(node, "w_in", n)
            params = {"tau_mem": hw_m, "tau_syn": hw_s}
        else:
            tm = _vec(node, "tau", n)
            dm = _decay(tm, dt, integ, name)
            hw_m = dac(-dt / np.log(dm), "tau_mem")
            # v jumps by the event's weight and decays with the realised τ: keep the steady state a·R·x/(1 − q)
            g = (1 - dm) * _vec(node, "r", n) * (1 - np.exp(-dt / (hw_m * speed))) / (1 - dm)
            params = {"tau_mem": hw_m, "tau_syn": np.full(n, float(spec.get("dac.range.tau_syn")[0]))}
        if np.any(dm <= 0):
            raise UnsupportedNodeError("dt ≥ τ: the decay per step is not positive", node=name, hint="use a smaller --dt")
        terms, bias = lin[name]
        bias = np.asarray(bias, float).reshape(-1)
        if np.any(bias != 0):
            # a bias is an input of weight b from a source that fires every step (no analog bias current;
            # as a leak-potential shift R·b it would land far outside the DAC range for long τ)
            terms = {**terms, BIAS_SOURCE: [bias.reshape(1, n), False]}
        U = float(np.max(_vec(node, "v_threshold", n))) if spiking else 1.0
        if spiking:  # the largest threshold lands exactly on a DAC code: the voltage unit absorbs the DAC step
            U = U / _dac_exact(1.0, "v_threshold", spec)
        leak = _vec(node, "v_leak", n)
        params["t_refrac"] = np.full(n, _refractory(ctx, spec, dt, speed, cuba and spiking))
        params.update({"v_threshold": (_vec(node, "v_threshold", n) / U) if spiking else np.full(n, 3.0),
                       "v_leak": leak / U, "v_reset": (_vec(node, "v_reset", n) / U) if spiking else np.zeros(n)})
        if name in residue:
            params["v_reset"] = residue[name] / U
            warns.append((name, "BrainScaleS-2 neurons reset to a potential; reset by subtraction is approximated "
                                "by a reset to each neuron's mean residue above zero after a spike (measured on the "
                                f"{residue_from}; mean {float(residue[name].mean() / U):.3g} of the threshold)"))
        elif spiking and graph.reset_mode(name) == "subtract":
            warns.append((name, "BrainScaleS-2 neurons reset to v_reset; reset by subtraction is approximated "
                                "by a reset to v_reset"))
        if np.any(g <= 0):
            raise UnsupportedNodeError("a non-positive input gain (r or w_in ≤ 0) has no analog equivalent", node=name)
        w6s, src_how = _weights(graph, name, terms, g / U, wmax, BrainScaleS2Options.of(ctx).bias_repeat_max)
        for s_ in w6s:
            if s_ is not None and s_ not in terms:   # the further bias sources
                terms[s_] = [None, False]
        scale = w6s.pop(None)
        # plastic projections: a synapse for every pair that may learn, weight 0 included (.ppu_lower)
        plastic = PL.layer_synapses(graph, name, terms, w6s, g / U, scale, _weight_node, per_row)
        sgns = {s_: plastic[s_]["signs"] if s_ in plastic else np.sign(w) for s_, w in w6s.items()}
        # circuits per logical neuron: a circuit takes fan_in_unsigned inputs of one sign, fan_in_signed mixed
        indeg = sum((w != 0).sum(1) for w in sgns.values()) if w6s else np.zeros(n, int)
        mixed = np.zeros(n, bool)
        if w6s:
            W_all = np.concatenate(list(sgns.values()), axis=1)
            mixed = (W_all > 0).any(1) & (W_all < 0).any(1)
        circuits = np.maximum(1, -(-indeg // np.where(mixed, fan_s, fan_u))).astype(np.int64)
        for s, w6 in w6s.items():
            group, label, rank_order, src = _labels(graph, name, s, w6, per_row)
            if "group" in plastic.get(s, {}):   # rewiring: one label group, label = source index
                group, label, rank_order = plastic[s]["group"], plastic[s]["label"], None
                src = "one label group for rewiring (label = source index)"
            a = S.array_config(w6, group, label, circuits, rank_order, signs=sgns[s])
            projs.append(Projection(s, name, w6, a["rows"], label, a["n_rows"], bool(terms[s][1]), a["row_sign"],
                                    np.arange(a["n_rows"]) // per_driver, group=group, col=a["col"],
                                    row_group=a["row_group"], arr_w=a["arr_w"], arr_label=a["arr_label"],
                                    rows_lb=S.rows_lower_bound(sgns[s], circuits, per_row)))
            how[f"{s}->{name}"] = {"weights": src_how[s], "labels": src}
            if s in plastic:
                plastic_of[(s, name)] = plastic[s]
        params["unit"] = np.full(n, U)  # model voltage per threshold unit (the chip works in threshold units)
        for p, (lo, hi) in C.ranges(spec).items():  # DAC codes saturate: say so, never silently
            v = np.asarray(params[p], float)
            out = (v < lo - 1e-12 * abs(lo)) | (v > hi + 1e-12 * abs(hi))
            if out.any() and (spiking or p not in ("v_threshold", "v_reset")):
                warns.append((name, f"{p} of {int(out.sum())} neuron(s) outside the DAC range [{lo:g}, {hi:g}] "
                                    f"(values {float(v[out].min()):g}..{float(v[out].max()):g}): clipped to the range"))
        layers.append(Layer(name, n, ("cuba" if spiking else "cubali") if cuba else ("lif" if spiking else "li"),
                            spiking, params, {}, circuits, scale))
    return Plan(graph, layers, projs, warns, how, tscale, plastic_of)


def _where(graph: Graph, pl: Plan, target: BrainScaleS2Target) -> dict:
    """Hemisphere, run and first circuit of every neuron: the Placement the partition pass
    wrote, checked against the layers' circuits and rows (a pass after partition may have
    changed them). No Placement (a pipeline without ``partition``) is a PassError naming it."""
    limits = target.hemisphere_limits()
    demands, _ = pl.demands()
    where = H.read(graph, {l.name: l.size for l in pl.layers}, limits) if pl.layers else {}
    if where is None:
        raise PassError("brainscales2's lowering reads the Placement the 'partition' pass writes, and the graph "
                        "has none", node=pl.layers[0].name,
                        hint="end --passes with partition (the default pipeline does; nmc.compile appends it)")
    bad = H.check(demands, where, limits)
    if bad:
        raise DesignRuleError(bad, target="brainscales2")
    return where


def lower(graph: Graph, ctx) -> BSS2Program:
    spec = ctx.spec
    pl = plan(graph, ctx, residues=lambda g, names: _subtract_residues(g, ctx, names), warnings=ctx.warnings)
    graph, layers, projs, how, tscale = pl.graph, pl.layers, pl.projs, pl.how, pl.tscale
    dt, speed = GraphMeta.of(graph).dt, tscale.speedup
    fan_u = int(spec.get("synapse_array.fan_in_unsigned"))
    per_driver = int(spec.get("synapse_array.rows_per_driver"))
    for nm, msg in pl.warns:
        ctx.warnings.add(msg, node=nm, source="brainscales2")
    # placement: hemispheres, chips, sequential runs (the partition pass's Placement)
    n_circ = int(spec.get("chip.neuron_circuits"))
    target = getattr(ctx, "target", None)
    target = target if isinstance(target, BrainScaleS2Target) else BrainScaleS2Target(spec)
    limits = target.hemisphere_limits()
    rows_of = {l.name: sum(q.n_rows for q in projs if q.post == l.name) for l in layers}
    where = _where(graph, pl, target)
    driver_base = {}
    for q in projs:  # synapse drivers: consecutive per layer, per projection in order
        b = driver_base.get(q.post, 0)
        q.row_driver = q.row_driver + b
        driver_base[q.post] = b + -(-q.n_rows // per_driver)
    total = int(sum(int(l.circuits.sum()) for l in layers))
    cal_path = BrainScaleS2Options.of(ctx).calibration
    cal = C.load(cal_path, n_circ, spec) if cal_path else C.synthetic(n_circ, spec, seed=ctx.seed)
    cal["readout"] = {"bits": int(spec.get("readout.bits")), "noise_lsb": float(spec.get("readout.noise_lsb"))}
    n_tab = len(cal["table"]["tau_mem"]["gain"])
    for l in layers:
        w = where[l.name]
        first = w["first_circuit"]
        l.hemisphere = w["hemisphere"]
        for p in C.PARAMS:
            l.codes[p] = C.codes_for(l.params[p], p, first % n_tab, cal)
            l.codes[f"{p}_nominal"] = C.codes_for(l.params[p], p, first % n_tab,
                                                  {"table": C.nominal(n_tab, cal["code_max"], cal["ranges"]),
                                                   "code_max": cal["code_max"]})
        l.params["first_circuit"] = first.astype(float)
        l.params["run"] = w["run"].astype(float)
        l.params["hemisphere"] = w["hemisphere"].astype(float)
    outputs = {}
    for o in graph.outputs:
        p = graph.preds(o)
        if len(p) != 1 or p[0] not in {l.name for l in layers}:
            raise UnsupportedNodeError("an output must be fed directly by one neuron layer on BrainScaleS-2", node=o)
        outputs[o] = p[0]
    runs = 1 + max((int(where[l.name]["run"].max(initial=0)) for l in layers), default=0)
    rows_used = 0
    per_run = []
    for r in range(runs):
        parts = {l.name: int(np.sum(where[l.name]["run"] == r)) for l in layers}
        rr = {l.name: rows_of[l.name] * len(np.unique(where[l.name]["hemisphere"][where[l.name]["run"] == r]))
              for l in layers if parts[l.name]}
        rows_used += sum(rr.values())
        per_run.append({"layers": {k: v for k, v in parts.items() if v},
                        "circuits": int(sum(l.circuits[where[l.name]["run"] == r].sum() for l in layers)),
                        "rows": int(sum(rr.values()))})
    rows_lb = int(sum(q.rows_lb for q in projs))
    circ_lb = int(sum(int(np.maximum(1, -(-_indeg(projs, l) // fan_u)).sum()) for l in layers))
    chip_rows = limits["rows_per_hemisphere"] * limits["hemispheres"]
    prog = BSS2Program(layers, projs, {k: int(np.prod(graph.shape_out(k))) for k in graph.inputs}, outputs, dt, speed,
                       {k: v for k, v in cal.items()},
                       constant_inputs=[bias_source(j) for j in range(len(projs))
                                        if any(q.pre == bias_source(j) for q in projs)],
                       plasticity=PL.rules(graph, projs, pl.plastic, dt, BrainScaleS2Options.of(ctx).ppu_period, runs,
                                           spec))
    prog.report.update({"timescale": tscale.report(), "rows_used": rows_used, "rows_lower_bound": rows_lb, "circuits_used": total,
                   "circuits_lower_bound": circ_lb, "runs_used": runs,
                   "runs_lower_bound": max(1, math.ceil(circ_lb / n_circ), math.ceil(rows_lb / chip_rows)),
                   "calibration": cal["source"],
                   "layers": {l.name: {"neurons": l.size, "circuits": int(l.circuits.sum()),
                                       "merged_neurons": int(np.sum(l.circuits > 1)),
                                       "rows": rows_of[l.name], "weight_lsb_threshold_units": l.scale,
                                       "runs": sorted({int(x) for x in where[l.name]["run"]}),
                                       "hemispheres": sorted({int(x) for x in where[l.name]["hemisphere"]})}
                              for l in layers},
                   "projections": {f"{q.pre}->{q.post}": {"rows": q.n_rows, "rows_lower_bound": q.rows_lb,
                                                          "synapses": int(np.count_nonzero(q.w6)), **how[f"{q.pre}->{q.post}"]}
                                   for q in projs},
                   "runs": per_run,
                   "split": ("one chip" if runs == 1 else
                             f"{runs} sequential runs of one chip (or {runs} chips): each run records its output "
                             "spikes and the next replays them")})
    ctx.reports["mapping"] = prog.report
    return prog
