"""``quantize``: integer weights with per-layer or per-output-channel scales.

Schemes (``scheme``):

* ``int`` with ``bits`` = n ≤ 16: symmetric, w_int ∈ [−q, q], q = 2^(n−1) − 1
  (or ``qmax``); ``scale`` = clip / q where ``clip`` is the max |w|
  (``method=maxabs``), the ``percentile`` of |w| (``percentile``), or chosen on
  calibration data (``calibrate``: per layer, the clip among a few candidates
  that best preserves the output spike counts of the float network);
* ``ternary`` (1.58 bit): w_int ∈ {−1, 0, 1}, α = mean |w| over the weights
  kept, keep |w| > 0.7·mean|w| (the usual absmean rule);
* ``binary``: w_int ∈ {−1, 1}, α = mean |w|.

Rounding is to nearest, ties away from zero (``np.round`` would round ties to
even; we use ``sign(x)·floor(|x| + 0.5)``), then saturation to [−q, q].

The float weights stay in the node; the pass writes
``Quant(bits, scheme, scale, w_int, method)`` on every weight node (Affine,
Linear, Conv1d/2d; EGRU's ``w_x``/``w_h`` use ``QuantEGRU``). Because every
neuron is linear in its input current, dividing the current *and* every
voltage parameter (threshold, v_leak, v_reset, bias) by the same per-neuron
scale leaves the spike train unchanged; backends do exactly that with
``scale`` (for binary/ternary, α is folded into the threshold this way).
So the quantized network is simulated as the float graph with weights
``w_int·scale`` — what :func:`dequantized` returns — and compared with the
float network in the fidelity report (``reports/quantize.json``): per layer
the weight error, the output-spike agreement, and the end-to-end output
difference, on the calibration data or a seeded synthetic input. A layer that
spiked in float but is silent after quantization is a warning naming it.
With a HardwareSpec, the membrane range reached (in units of the integer
weights) is compared with ``numerics.state_bits``.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Quant
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import EGRU, is_spiking

from .manager import Pass, PassContext, register

SCHEMES = ("int", "ternary", "binary")
METHODS = ("maxabs", "percentile", "calibrate")
WEIGHT_TYPES = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_weights(w: np.ndarray, bits: int = 8, scheme: str = "int", per_channel: bool = False,
                     method: str = "maxabs", percentile: float = 99.9, qmax: int | None = None,
                     clip: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(w_int, scale) with w ≈ w_int · scale. ``scale`` has shape () or, per
    output channel, (out, 1, ...) broadcastable to w. ``clip`` overrides the
    clipping value (used by calibration)."""
    w = np.asarray(w, dtype=np.float64)
    if scheme not in SCHEMES:
        raise OptionError(f"unknown quantization scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
    axes = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else None
    keep = dict(axis=axes, keepdims=True) if axes is not None else {}
    a = np.abs(w)
    if scheme in ("ternary", "binary"):
        alpha = a.mean(**keep) if a.size else np.float64(0)
        if scheme == "binary":
            w_int = np.where(w >= 0, 1, -1)
            scale = alpha
        else:
            mask = a > 0.7 * alpha
            kept = np.where(mask, a, 0).sum(**keep) / np.maximum(mask.sum(**keep), 1)
            w_int = np.where(mask, np.sign(w), 0)
            scale = kept
        scale = np.where(np.asarray(scale) > 0, scale, 1.0)
        return w_int.astype(np.int32), np.asarray(scale, dtype=np.float64)
    if not 1 < bits <= 16:
        raise OptionError(f"bits must be in 2..16 for integer quantization, got {bits}",
                          hint="use scheme=binary for 1 bit, scheme=ternary for 1.58 bit")
    q = int(qmax) if qmax is not None else 2 ** (bits - 1) - 1
    if clip is None:
        if method == "percentile":
            clip = np.percentile(a, percentile, axis=axes, keepdims=axes is not None) if a.size else 0.0
        else:
            clip = a.max(**keep) if a.size else 0.0
    clip = np.asarray(clip, dtype=np.float64)
    scale = np.where(clip > 0, clip / q, 1.0)
    w_int = np.clip(round_half_away(w / scale), -q, q)
    return w_int.astype(np.int32), scale


def weight_arrays(node) -> dict[str, np.ndarray]:
    if isinstance(node, WEIGHT_TYPES):
        return {"weight": np.asarray(node.weight)}
    if isinstance(node, EGRU):
        return {"w_x": np.asarray(node.w_x), "w_h": np.asarray(node.w_h)}
    return {}


def dequantized(g: Graph) -> Graph:
    """The float graph with every quantized weight replaced by ``w_int·scale``."""
    out = g.copy()
    for name, node in out.nodes.items():
        q = out.ann(name, Quant)
        if q is None or q.w_int is None:
            continue
        deq = np.asarray(q.w_int, dtype=np.float64) * np.asarray(q.scale, dtype=np.float64)
        if isinstance(node, EGRU):  # w_int holds [w_x | w_h] side by side (one scale per gate row)
            n_in = node.w_x.shape[1]
            node.w_x, node.w_h = deq[:, :n_in], deq[:, n_in:]
        else:
            node.weight = deq.reshape(np.shape(node.weight))
    return out


def _layer_inputs(g: Graph, data: dict | None, steps: int, seed: int) -> tuple[dict, str]:
    if data:
        arrs = {k: np.asarray(v, dtype=np.float64) for k, v in data.items() if k in g.inputs}
        if len(arrs) == len(g.inputs):
            return arrs, "calibration data"
    rng = np.random.default_rng(seed)
    return {k: (rng.random((steps, 4, *g.shape_out(k))) < 0.2).astype(np.float64) for k in g.inputs}, \
        "synthetic Bernoulli(0.2) spikes, 4 samples"


def _simulate(g: Graph, inputs: dict, record: list[str]) -> dict:
    from nmc.reference import ReferenceSimulator

    batched = all(np.asarray(v).ndim == len(g.shape_out(k)) + 2 for k, v in inputs.items())
    return ReferenceSimulator(g).run(inputs, record=record, batched=batched)


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

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        if self.method not in METHODS:
            raise OptionError(f"unknown quantization method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.method == "calibrate" and not ctx.data:
            raise OptionError("quantize{method=calibrate} needs calibration data", hint="pass --calibrate data.npz")
        weights = [n for n, node in g.nodes.items() if weight_arrays(node)]
        for name in weights:
            self._annotate(g, name, None)
        inputs, source = _layer_inputs(g, ctx.data, self.steps, ctx.seed)
        neurons = [n for n, node in g.nodes.items() if is_spiking(node) or isinstance(node, (nir.LI, nir.CubaLI, EGRU))]
        ref = _simulate(g, inputs, neurons)
        if self.method == "calibrate" and self.scheme == "int":
            self._calibrate(g, weights, inputs, ref)
        qg = dequantized(g)
        got = _simulate(qg, inputs, neurons)
        report = {"bits": self.bits, "scheme": self.scheme, "per_channel": self.per_channel, "method": self.method,
                  "input": source, "layers": {}, "neurons": {}}
        for name in weights:
            q = g.ann(name, Quant)
            for key, w in weight_arrays(g.nodes[name]).items():
                deq = weight_arrays(qg.nodes[name])[key]
                err = np.abs(deq - w)
                report["layers"][name if key == "weight" else f"{name}.{key}"] = {
                    "max_abs_error": float(err.max()) if err.size else 0.0,
                    "rel_rms_error": float(np.sqrt((err ** 2).mean()) / (np.sqrt((w ** 2).mean()) + 1e-30)),
                    "levels_used": int(np.unique(q.w_int).size)}
        for n in neurons:
            key = f"{n}.spikes" if f"{n}.spikes" in ref else f"{n}.out"
            a, b = ref[key], got[key]
            entry = {"agreement": float(np.mean(a == b)) if key.endswith("spikes") else None,
                     "float_events": float(np.count_nonzero(a)), "quantized_events": float(np.count_nonzero(b))}
            if key.endswith(".out"):
                entry["max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
            report["neurons"][n] = entry
            if np.count_nonzero(a) > 0 and np.count_nonzero(b) == 0:
                ctx.warnings.add(f"quantization silences layer '{n}': it fired {int(np.count_nonzero(a))} times "
                                 f"in float and never after quantization (try more bits or per_channel=true)",
                                 node=n, source="quantize")
        outs = [f"{o}" for o in g.outputs]
        report["end_to_end"] = {o: {"max_abs_diff": float(np.max(np.abs(ref[o] - got[o]))) if ref[o].size else 0.0,
                                    "mean_abs_diff": float(np.mean(np.abs(ref[o] - got[o]))) if ref[o].size else 0.0}
                                for o in outs}
        if ctx.spec is not None and ctx.spec.has("numerics.state_bits"):
            report["state_bits_available"] = int(ctx.spec.get("numerics.state_bits"))
        ctx.reports["quantize"] = report
        return g

    def _annotate(self, g: Graph, name: str, clip):
        node = g.nodes[name]
        arrs = weight_arrays(node)
        if isinstance(node, EGRU):
            w = np.concatenate([arrs["w_x"], arrs["w_h"]], axis=1)  # one scale per gate row for x and h
        else:
            w = arrs["weight"]
        w_int, scale = quantize_weights(w, self.bits, self.scheme, self.per_channel, self.method, self.percentile,
                                        self.qmax, clip=clip)
        g.annotate(name, Quant(bits=self.bits if self.scheme == "int" else (2 if self.scheme == "ternary" else 1),
                               scheme=self.scheme, scale=np.asarray(scale), w_int=w_int, method=self.method))

    def _calibrate(self, g: Graph, weights, inputs, ref):
        """Per layer, pick the clip (fraction of max |w|) that best keeps the float output spike counts."""
        outs = g.outputs
        target = {o: ref[o] for o in outs}
        for name in weights:
            w = next(iter(weight_arrays(g.nodes[name]).values()))
            axes = tuple(range(1, w.ndim)) if self.per_channel and w.ndim > 1 else None
            mx = np.abs(w).max(axis=axes, keepdims=axes is not None)
            best, best_err = None, np.inf
            for frac in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
                self._annotate(g, name, mx * frac)
                got = _simulate(dequantized(g), inputs, [])
                err = sum(float(np.abs(got[o].sum(0) - target[o].sum(0)).mean()) for o in outs)
                if err < best_err - 1e-12:
                    best, best_err = frac, err
            self._annotate(g, name, mx * best)
