"""``quantize``: integer weights with per-layer or per-output-channel scales.

Schemes (``scheme``):

* ``int`` with ``bits`` = n ≤ 16: symmetric, w_int ∈ [−q, q], q = 2^(n−1) − 1
  (or ``qmax``); ``scale`` = clip / q where ``clip`` is the max |w|
  (``method=maxabs``), the ``percentile`` of |w| (``percentile``), or chosen on
  calibration data (``calibrate``: per layer, the clip among a few candidates
  that best preserves the output spike counts of the float network);
* ``ternary`` (1.58 bit, the absmean rule of BitNet b1.58): per row
  (``per_channel``) or per layer, s = mean |w| over the weights that exist and
  w_int = round(clip(w / s, −1, 1)) with the rounding below (ties away from
  zero: |w| ≥ s/2 becomes ±1, |w| < s/2 becomes 0), ``scale`` = s; a row with
  s = 0 (all zero) gets w_int = 0 and scale 1; a row that is already ternary —
  its non-zero weights share one magnitude a, as the weights
  :mod:`nmc.nn.ternary` saves — keeps ``scale`` = a (its w_int is sign(w)
  under the rule anyway), so the rule is idempotent: quantizing s·t gives back
  (t, s) exactly (:func:`ternary_rows`);
* ``binary``: w_int ∈ {−1, 1}, α = mean |w|.
  With ``calibrate``, α of ternary/binary is multiplied by the factor among a
  few candidates that best preserves the output spike counts.

Rounding is to nearest, ties away from zero (``np.round`` would round ties to
even; we use ``sign(x)·floor(|x| + 0.5)``), then saturation to [−q, q].
Weights already pruned (a ``Sparsity`` or ``RowMap`` annotation, i.e. after
``sparsify``/``rewire``) stay 0 in ``w_int`` under every scheme, and the
statistics (max, percentile, α) are taken over the kept weights only.

The float weights stay in the node; the pass writes
``Quant(bits, scheme, scale, w_int, method)`` on every weight node (Affine,
Linear, Conv1d/2d, and EGRU, whose ``w_int`` is ``[w_x | w_h]`` side by side
with one scale per gate row). The dense (Affine/Linear) inputs of one neuron
node — e.g. its feed-forward and its recurrent weights — are quantized
*jointly* (one scale per neuron, or one per layer), so the neuron can be
rescaled exactly (:func:`nmc.passes.fidelity.integer_graph`): dividing its
input current and every voltage (threshold, v_leak, v_reset, bias) by that
scale leaves the spike train unchanged; for binary/ternary this folds α into
the threshold. Backends do exactly that with ``scale``.

SSM nodes (``nmc.DiagSSM``, ``nmc.StochasticSSMNeuron``) get their one-tick Λ̄ (decay and
rotation), B̄, C̄, D in fixed point instead (``SSMQuant``, :mod:`nmc.passes.quantize_ssm`),
and the report an ``ssm`` section with each array's error.

The fidelity report (``reports/quantize.json``), on the calibration data or a
seeded synthetic input (shortened for huge networks so one simulation costs at
most ``max_sim_synops`` multiply-accumulates; ``simulated`` records the steps
and samples run and, when shortened, from what and why): per layer the weight error; per neuron node the
output-spike agreement with the float network, the events of both, and — for
the integer-domain network — its agreement with the dequantized one (a
self-check of the rescaling rule), the rescaled threshold range in weight
LSBs and the bits the state needs (peak |v|, |i| in LSBs, plus the
``numerics.activation_shift`` of the spec). With a HardwareSpec that has
``numerics.state_bits``, a state needing more bits (it would saturate) is a
warning naming the layer; so is a layer silenced by quantization (it fired in
float and never after).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Quant, RowMap, Sparsity
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc import semantics
from nmc.nodes import EGRU, is_dense, is_spiking
from nmc.rowblocks import row_blocks

from . import quantize_ssm
from .fidelity import activity_key, dequantized, fit_budget, integer_graph, layer_inputs, simulate
from .quantize_ssm import SSM_NODES
from .manager import Pass, PassContext, register

SCHEMES = ("int", "ternary", "binary")
METHODS = ("maxabs", "percentile", "calibrate")
CLIP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # int: clip = fraction · max|w|
ALPHA_GAINS = (0.6, 0.8, 1.0, 1.25, 1.5)  # ternary/binary: α · gain

# backwards-compatible names (older callers import these from here)
_layer_inputs = layer_inputs
_simulate = simulate
__all__ = ["quantize_weights", "round_half_away", "ternary_codes", "ternary_rows", "dequantized", "integer_graph", "Quantize", "weight_arrays"]


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties away from zero: sign(x)·⌊|x| + ½⌋ (float64)."""
    x = np.asarray(x, dtype=np.float64)
    r = np.abs(x)
    r += 0.5
    np.floor(r, out=r)
    return np.copysign(r, x, out=r)


def ternary_codes(w: np.ndarray, s) -> np.ndarray:
    """round(clip(w / s, −1, 1)) with ties away from zero (int32); 0 where s = 0 (broadcast)."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(np.asarray(w, dtype=np.float64) / np.where(s > 0, s, 1.0), -1.0, 1.0)
    return np.where(s > 0, round_half_away(r), 0.0).astype(np.int32)


def ternary_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``ternary`` scheme per row of a 2-D ``w``: (t int8 ∈ {−1, 0, 1}, s float64 (rows,)) with
    s = mean |w| of the row, t = round(clip(w / s, −1, 1)) (ties away from zero), s = 1 and t = 0 for
    an all-zero row, s = a for a row whose non-zero weights all have magnitude a; w ≈ s[:, None]·t."""
    t, s = quantize_weights(np.asarray(w, dtype=np.float64), scheme="ternary", per_channel=True)
    return t.astype(np.int8), np.asarray(s, dtype=np.float64).reshape(-1)


def quantize_weights(w: np.ndarray, bits: int = 8, scheme: str = "int", per_channel: bool = False,
                     method: str = "maxabs", percentile: float = 99.9, qmax: int | None = None,
                     clip: np.ndarray | float | None = None, mask: np.ndarray | None = None,
                     gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(w_int, scale) with w ≈ w_int · scale; w_int int32. ``scale`` has shape
    () or, per output channel (axis 0), (out, 1, ...) broadcastable to w.

    ``clip`` overrides the clipping value of ``int`` (calibration); ``gain``
    multiplies α of ternary/binary; ``mask`` (bool, shape of w): only these
    weights exist — statistics over them, w_int = 0 elsewhere.
    ``method`` ∈ maxabs | percentile (| calibrate, which here means maxabs
    unless ``clip`` is given)."""
    if scheme not in SCHEMES:
        raise OptionError(f"unknown quantization scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
    if scheme == "int" and not (method == "percentile" and clip is None):   # no whole-array statistic but max
        return _int_in_blocks(np.asarray(w), bits, per_channel, qmax, clip, mask)
    w = np.asarray(w, dtype=np.float64)
    dense = mask is None   # every weight exists: no masking work on big dense layers
    m = np.ones(w.shape, dtype=bool) if dense and scheme != "int" else \
        (None if dense else np.asarray(mask, dtype=bool).reshape(w.shape))
    axes = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else None
    keep = dict(axis=axes, keepdims=axes is not None)
    a = np.abs(w) if dense else np.where(m, np.abs(w), 0.0)
    if scheme in ("ternary", "binary"):
        cnt = m.sum(**keep)
        alpha = a.sum(**keep) / np.maximum(cnt, 1)
        if scheme == "binary":
            w_int = np.where(w >= 0, 1, -1)
            scale = alpha
        else:
            w_int = ternary_codes(w, alpha)
            # an already-ternary row/layer (one non-zero magnitude a) keeps a: idempotent on s·t
            amax = a.max(**keep, initial=0.0)
            amin = np.where(a > 0, a, np.inf).min(**keep, initial=np.inf)
            scale = np.where((amax > 0) & (amin == amax), amax, alpha)
        scale = np.where(np.asarray(scale) > 0, np.asarray(scale) * gain, 1.0)
        return np.where(m, w_int, 0).astype(np.int32), np.asarray(scale, dtype=np.float64)
    q = _int_qmax(bits, qmax)
    if clip is None:
        if method == "percentile" and a.size:
            clip = np.nan_to_num(np.nanpercentile(a if dense else np.where(m, a, np.nan), percentile, axis=axes,
                                                  keepdims=axes is not None), nan=0.0)
        else:
            clip = a.max(**keep, initial=0.0)
    clip = np.asarray(clip, dtype=np.float64)
    clip = np.where(clip > 0, clip, a.max(**keep, initial=0.0))  # a zero percentile (mostly zeros): use the max
    scale = clip / q
    # a clip so small that clip/q underflows to 0 (a subnormal percentile) falls back to the max; 1.0
    # only for an all-zero (or all-subnormal) layer/channel — never above the max-based scale
    mx = a.max(**keep, initial=0.0) / q
    scale = np.where(scale > 0, scale, np.where(mx > 0, mx, 1.0))
    w_int = round_half_away(w / scale)
    np.clip(w_int, -q, q, out=w_int)
    if not dense:
        w_int[~m] = 0
    return w_int.astype(np.int32), scale


def _int_in_blocks(w: np.ndarray, bits: int, per_channel: bool, qmax, clip, mask) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_weights`' ``int`` scheme with a max-|w| (or given) clip, one row block at a time
    (:func:`nmc.rowblocks.row_blocks`): the same formulas, so the same bits, with float64 temporaries
    of one block instead of five of the whole matrix (a dense 10⁸-synapse layer: 800 MB each)."""
    q = _int_qmax(bits, qmax)
    m = None if mask is None else np.asarray(mask, dtype=bool).reshape(w.shape)
    axes = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else None
    blocks = row_blocks(w.shape)

    def absmax(r):
        a = np.abs(np.asarray(w[r], dtype=np.float64))
        if m is not None:
            a = np.where(m[r], a, 0.0)
        return a.max(axis=axes, keepdims=axes is not None, initial=0.0)

    amax = np.concatenate([absmax(r) for r in blocks]) if axes is not None else \
        np.max([absmax(r) for r in blocks], initial=0.0)
    clip = np.asarray(amax if clip is None else clip, dtype=np.float64)
    clip = np.where(clip > 0, clip, amax)
    scale = clip / q
    mx = amax / q
    scale = np.where(scale > 0, scale, np.where(mx > 0, mx, 1.0))
    rowwise = scale.ndim == w.ndim and w.ndim > 0 and scale.shape[0] == w.shape[0]
    out = np.empty_like(w, dtype=np.int32)   # the memory order of w, as w.astype would give (bundles store it)
    for r in blocks:
        x = round_half_away(np.asarray(w[r], dtype=np.float64) / (scale[r] if rowwise else scale))
        np.clip(x, -q, q, out=x)
        if m is not None:
            x[~m[r]] = 0
        out[r] = x
    return out, scale


def _int_qmax(bits: int, qmax) -> int:
    if not 1 < bits <= 16:
        raise OptionError(f"bits must be in 2..16 for integer quantization, got {bits}",
                          hint="use scheme=binary for 1 bit, scheme=ternary for 1.58 bit")
    q = int(qmax) if qmax is not None else 2 ** (bits - 1) - 1
    if q < 1:
        raise OptionError(f"qmax must be ≥ 1, got {q}")
    return q


def _levels(w_int) -> int:
    """Distinct integer values (a count over the value range, linear in the size: no sort)."""
    w = np.asarray(w_int).reshape(-1)
    if w.size == 0:
        return 0
    lo, hi = int(w.min()), int(w.max())
    seen = np.zeros(hi - lo + 1, dtype=bool)
    for r in row_blocks(w.shape):   # int64 copies of one block, not of the whole matrix
        seen |= np.bincount(w[r].astype(np.int64) - lo, minlength=hi - lo + 1) > 0
    return int(np.count_nonzero(seen))


def weight_arrays(node) -> dict[str, np.ndarray]:
    """The node's synaptic weight fields (its registry entry's ``weights``) as arrays."""
    e = semantics.lookup(node)
    return {f: np.asarray(getattr(node, f)) for f in (e.weights if e is not None else ())}


def _matrix(node) -> np.ndarray:
    """The weight array a Quant describes (EGRU: [w_x | w_h])."""
    arrs = weight_arrays(node)
    return np.concatenate([arrs["w_x"], arrs["w_h"]], axis=1) if isinstance(node, EGRU) else arrs["weight"]


def quant_units(g: Graph) -> list[tuple[str, ...]]:
    """Weight nodes quantized together: the dense inputs (Affine/Linear, each
    feeding only that node) of one neuron node form one unit; every other
    weight node is a unit of its own."""
    units, done = [], set()
    for n in g.nodes:
        dense = [p for p in g.preds(n) if is_dense(g.nodes[p])
                 and g.succs(p) == [n] and p not in done]
        if len(dense) > 1 and len({np.shape(g.nodes[p].weight)[0] for p in dense}) == 1:
            units.append(tuple(dense))
            done.update(dense)
    for n, node in g.nodes.items():
        if weight_arrays(node) and n not in done and not isinstance(node, SSM_NODES):   # SSMs: quantize_ssm
            units.append((n,))
    order = {n: i for i, n in enumerate(g.nodes)}
    return sorted(units, key=lambda u: order[u[0]])


@register
@dataclass(frozen=True)
class Quantize(Pass):
    name = "quantize"
    summary = "integer/ternary/binary weights with per-layer or per-channel scales, fidelity report"
    provides = ("quant",)
    bits: int = 8
    scheme: str = "int"
    per_channel: bool = False
    method: str = "maxabs"
    percentile: float = 99.9
    qmax: int | None = None
    steps: int = 64
    max_sim_synops: float = 1e8
    bounds = {"qmax": (1, None), "steps": (1, None), "max_sim_synops": (1, None)}

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        if self.method not in METHODS:
            raise OptionError(f"unknown quantization method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.scheme not in SCHEMES:
            raise OptionError(f"unknown quantization scheme {self.scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
        if not 0 < self.percentile <= 100:
            raise OptionError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.method == "calibrate" and not ctx.data:
            raise OptionError("quantize{method=calibrate} needs calibration data", hint="pass --calibrate data.npz")
        units = quant_units(g)
        for u in units:
            self._annotate(g, u)
        ssm = {n: quantize_ssm.quantize_node(n, node, self.bits) for n, node in g.nodes.items()
               if isinstance(node, SSM_NODES)}
        for n, q in ssm.items():
            g.annotate(n, q)
        inputs, source = layer_inputs(g, ctx.data, self.steps, ctx.seed)
        inputs, simulated = fit_budget(g, inputs, self.max_sim_synops, budget="max_sim_synops")
        neurons = [n for n, node in g.nodes.items()
                   if is_spiking(node) or isinstance(node, (nir.LI, nir.CubaLI, EGRU, *SSM_NODES))]
        ref = simulate(g, inputs, neurons)
        calib = self._calibrate(g, units, inputs, ref) if self.method == "calibrate" else {}
        qg = dequantized(g)
        got = simulate(qg, inputs, neurons)
        ig, info = integer_graph(g)
        conv = [n for n in neurons if info.get(n, {}).get("converted")]
        igot = simulate(ig, inputs, conv)
        report = {"bits": self.bits, "scheme": self.scheme, "per_channel": self.per_channel, "method": self.method,
                  "input": source, "simulated": simulated, "joint_units": [list(u) for u in units if len(u) > 1], "layers": {},
                  "neurons": {}}
        if calib:
            report["calibration"] = calib
        if ssm:
            report["ssm"] = {n: quantize_ssm.report(n, g.nodes[n], q) for n, q in ssm.items()}
        self._layer_errors(g, qg, report)
        shift = int(ctx.spec.get("numerics.activation_shift")) if ctx.spec is not None and \
            ctx.spec.has("numerics.activation_shift") else 0
        state_bits = int(ctx.spec.get("numerics.state_bits")) if ctx.spec is not None and \
            ctx.spec.has("numerics.state_bits") else None
        if state_bits is not None:
            report["state_bits_available"] = state_bits
        for n in neurons:
            key = activity_key(ref, n)
            a, b = ref[key], got[key]
            entry = {"agreement": float(np.mean(a == b)) if key.endswith("spikes") else None,
                     "float_events": float(np.count_nonzero(a)), "quantized_events": float(np.count_nonzero(b))}
            if key.endswith(".out"):
                entry["max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
            it = info.get(n, {"converted": False, "reason": "not a neuron"})
            entry["integer_domain"] = it["converted"]
            if it["converted"]:
                entry.update(self._integer_entry(g, ig, n, it["scale"], b, igot, shift))
                need = entry["state_bits_needed"]
                if state_bits is not None and need > state_bits:
                    ctx.warnings.add(f"the state of '{n}' reaches ±{entry['state_peak_lsb']:.0f} weight LSBs: "
                                     f"{need} bits needed, the target holds {state_bits} (it would saturate; "
                                     f"use fewer weight bits, e.g. quantize{{bits={max(2, self.bits - (need - state_bits))}}})",
                                     node=n, source="quantize")
            else:
                entry["integer_domain_reason"] = it["reason"]
            report["neurons"][n] = entry
            if np.count_nonzero(a) > 0 and np.count_nonzero(b) == 0:
                ctx.warnings.add(f"quantization silences layer '{n}': it fired {int(np.count_nonzero(a))} times "
                                 f"in float and never after quantization (try more bits or per_channel=true)",
                                 node=n, source="quantize")
        report["end_to_end"] = {
            o: {"max_abs_diff": float(np.max(np.abs(ref[o] - got[o]))) if ref[o].size else 0.0,
                "mean_abs_diff": float(np.mean(np.abs(ref[o] - got[o]))) if ref[o].size else 0.0,
                "count_diff": float(np.mean(np.abs(ref[o].sum(0) - got[o].sum(0)))) if ref[o].size else 0.0}
            for o in g.outputs}
        ctx.reports["quantize"] = report
        return g

    # ---------------------------------------------------------------- helpers
    def _annotate(self, g: Graph, unit: tuple[str, ...], clip=None, gain: float = 1.0) -> None:
        mats = [_matrix(g.nodes[n]) for n in unit]
        masks = []
        for n, w in zip(unit, mats):
            pruned = g.ann(n, Sparsity) is not None or g.ann(n, RowMap) is not None
            masks.append(w != 0 if pruned else None)   # None: every weight exists
        if len(unit) == 1:
            w, m = mats[0], masks[0]
        else:
            w = np.concatenate(mats, axis=1)
            m = None if all(x is None for x in masks) else np.concatenate(
                [np.ones(wn.shape, dtype=bool) if x is None else x for wn, x in zip(mats, masks)], axis=1)
        method = "maxabs" if self.method == "calibrate" else self.method
        w_int, scale = quantize_weights(w, self.bits, self.scheme, self.per_channel, method, self.percentile,
                                        self.qmax, clip=clip, mask=m, gain=gain)
        bits = self.bits if self.scheme == "int" else (2 if self.scheme == "ternary" else 1)
        off = 0
        for n, wn in zip(unit, mats):
            part = w_int[:, off:off + wn.shape[1]] if len(unit) > 1 else w_int
            off += wn.shape[1] if len(unit) > 1 else 0
            g.annotate(n, Quant(bits=bits, scheme=self.scheme, scale=np.asarray(scale), w_int=part,
                                method=self.method))

    def _calibrate(self, g: Graph, units, inputs, ref) -> dict:
        """Per unit, the clip fraction (int) or α gain (ternary/binary) that best
        keeps the float output spike counts (mean |Δcount| over outputs)."""
        outs = g.outputs
        chosen = {}
        for u in units:
            w = np.concatenate([_matrix(g.nodes[n]) for n in u], axis=1) if len(u) > 1 else _matrix(g.nodes[u[0]])
            axes = tuple(range(1, w.ndim)) if self.per_channel and w.ndim > 1 else None
            mx = np.abs(w).max(axis=axes, keepdims=axes is not None, initial=0.0)
            cands = CLIP_FRACTIONS if self.scheme == "int" else ALPHA_GAINS
            best, best_err, errs = cands[0], np.inf, {}
            for c in cands:
                if self.scheme == "int":
                    self._annotate(g, u, clip=mx * c)
                else:
                    self._annotate(g, u, gain=c)
                got = simulate(dequantized(g), inputs, [])
                err = sum(float(np.abs(got[o].sum(0) - ref[o].sum(0)).mean()) for o in outs)
                errs[str(c)] = err
                if err < best_err - 1e-12:
                    best, best_err = c, err
            if self.scheme == "int":
                self._annotate(g, u, clip=mx * best)
            else:
                self._annotate(g, u, gain=best)
            chosen["+".join(u)] = {"clip_fraction" if self.scheme == "int" else "alpha_gain": best,
                                   "output_count_error": errs}
        return chosen

    @staticmethod
    def _layer_errors(g: Graph, qg: Graph, report: dict) -> None:
        for name, node in g.nodes.items():
            q = g.ann(name, Quant)
            if q is None:
                continue
            for key, w in weight_arrays(node).items():
                deq = weight_arrays(qg.nodes[name])[key]
                err = deq - w
                np.abs(err, out=err)
                mx = float(err.max()) if err.size else 0.0
                np.square(err, out=err)   # in place: one float64 temporary of the matrix, not three
                report["layers"][name if key == "weight" else f"{name}.{key}"] = {
                    "max_abs_error": mx,
                    "rel_rms_error": float(np.sqrt(err.mean()) / (np.sqrt((w ** 2).mean()) + 1e-30)),
                    "levels_used": _levels(q.w_int)}

    @staticmethod
    def _integer_entry(g: Graph, ig: Graph, n: str, s: np.ndarray, deq_act, igot: dict, shift: int) -> dict:
        key = activity_key(igot, n)
        thr = getattr(ig.nodes[n], "v_threshold", None)
        peak = max(float(np.abs(igot[f"{n}.v"]).max(initial=0.0)),
                   float(np.abs(igot.get(f"{n}.i", np.zeros(1))).max(initial=0.0)))
        if thr is not None:
            peak = max(peak, float(np.abs(thr).max(initial=0.0)))
        return {"integer_agreement": float(np.mean(igot[key] == deq_act)) if key.endswith("spikes") else
                float(np.max(np.abs(igot[key] * s.reshape(g.shape_out(n)) - deq_act), initial=0.0)),
                "threshold_lsb": [float(np.min(thr)), float(np.max(thr))] if thr is not None else None,
                "state_peak_lsb": peak,
                "state_bits_needed": int(math.ceil(math.log2(peak + 1))) + 1 + shift}
