"""Shared helpers of the quantize/sparsify passes: inputs to measure on, runs of
the float reference, and the integer-domain graph of a quantized network.

The rescaling rule (:func:`integer_graph`). Every neuron model of NIR is
linear in its input current and its voltages: for LIF
``v ← v + (dt/τ)(v_leak − v + R·x)``, spike when ``v > v_th``, reset to
``v_reset`` or by subtracting ``v_th``. Dividing the input x **and** every
voltage parameter (``v_threshold``, ``v_leak``, ``v_reset``) of a neuron by the
same positive s divides v by s at every step and leaves the spike train
unchanged (same for IF, CubaLIF — its current i divides by s too, ``w_in``
stays —, LI, CubaLI, I, whose graded output divides by s). With the input
weights ``w ≈ w_int·s`` the neuron then integrates the integers ``w_int``
directly and fires at ``v_threshold/s`` — for binary/ternary weights this is
folding α into the threshold. An Affine bias becomes ``bias/s`` (no longer an
integer: a target quantizes it in its own threshold units). The rule is exact
when every weight node feeding the neuron carries the *same* per-neuron
scale (the quantize pass gives the dense inputs of one neuron node one joint
scale for this reason); otherwise the neuron stays in float units.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.annotations import Quant, SSMQuant
from nmc.ir import Graph
from nmc.nodes import EGRU, is_dense, is_neuron, is_spiking_neuron, is_weight

from .quantize_ssm import SSM_NODES, dequantized_node

VOLTAGES = ("v_threshold", "v_leak", "v_reset")


def layer_inputs(g: Graph, data: dict | None, steps: int, seed: int) -> tuple[dict, str]:
    """``ctx.data`` when it covers every input node, else a seeded synthetic
    input: Bernoulli(0.2) spikes, ``steps`` steps, 4 samples."""
    if data:
        arrs = {k: np.asarray(v, dtype=np.float64) for k, v in data.items() if k in g.inputs}
        if len(arrs) == len(g.inputs):
            return arrs, "calibration data"
    rng = np.random.default_rng(seed)
    return {k: (rng.random((steps, 4, *g.shape_out(k))) < 0.2).astype(np.float64) for k in g.inputs}, \
        "synthetic Bernoulli(0.2) spikes, 4 samples"


def synapses_per_step(g: Graph) -> int:
    """Multiply-accumulates of one float-reference step for one sample: every
    weight of a dense node, every weight × output position of a convolution,
    both matrices of an EGRU."""
    total = 0
    for name, node in g.nodes.items():
        if is_dense(node):
            total += int(np.size(node.weight))
        elif is_weight(node):             # a convolution: each weight at every output position
            out = g.shape_out(name)
            total += int(np.size(node.weight)) * int(np.prod(out[1:]))
        elif isinstance(node, EGRU):
            total += int(np.size(node.w_x)) + int(np.size(node.w_h))
    return total


def fit_budget(g: Graph, inputs: dict, max_synops: float, min_steps: int = 16, *,
               budget: str | None = None) -> tuple[dict, dict]:
    """Shorten the fidelity inputs of a huge network so one simulation costs at
    most ``max_synops`` multiply-accumulates (synapses/step × steps × samples):
    first fewer steps (down to ``min_steps``), then fewer samples (down to 1),
    then as many steps as the budget allows for those samples.
    Returns (inputs, what is simulated: steps, samples, synaptic_ops and, when
    shortened, ``shortened`` saying from what and why, naming the limit ``budget``
    (the caller's option or constant; None: the note gives only its value))."""
    syn = max(synapses_per_step(g), 1)
    arrs = {k: np.asarray(v) for k, v in inputs.items()}
    batched = all(v.ndim == len(g.shape_out(k)) + 2 for k, v in arrs.items())
    T = min(v.shape[0] for v in arrs.values()) if arrs else 0
    B = min(v.shape[1] for v in arrs.values()) if arrs and batched else 1
    info = {"steps": T, "samples": B, "synaptic_ops": syn * T * B}
    if not max_synops or syn * T * B <= max_synops:
        return arrs, info
    t = max(min(T, min_steps), min(T, int(max_synops // (syn * B))))
    b = B if syn * t * B <= max_synops else max(1, min(B, int(max_synops // (syn * t))))
    t = max(min(T, min_steps), min(T, int(max_synops // (syn * b))))     # fewer samples leave room for steps
    arrs = {k: (v[:t, :b] if batched else v[:t]) for k, v in arrs.items()}
    return arrs, {"steps": t, "samples": b, "synaptic_ops": syn * t * b,
                  "shortened": f"{T} steps × {B} samples would cost {syn * T * B:.3g} synaptic ops per simulation "
                               f"({syn} per step), over " + (f"{budget}={max_synops:.3g}" if budget else
                                                                f"the budget of {max_synops:.3g} synaptic ops")}


def simulate(g: Graph, inputs: dict, record: list[str]) -> dict:
    """Reference run from reset; inputs (T, *shape) or (T, B, *shape)."""
    from nmc.reference import ReferenceSimulator

    batched = all(np.asarray(v).ndim == len(g.shape_out(k)) + 2 for k, v in inputs.items())
    return ReferenceSimulator(g).run(inputs, record=record, batched=batched)


def activity_key(res: dict, n: str) -> str:
    return f"{n}.spikes" if f"{n}.spikes" in res else f"{n}.out"


def dequantized(g: Graph) -> Graph:
    """The float graph with every quantized weight replaced by ``w_int·scale``."""
    out = g.copy()
    for name, node in out.nodes.items():
        if out.ann(name, SSMQuant) is not None:   # an SSM's fixed-point one-tick parameters
            out.nodes[name] = dequantized_node(node, out.ann(name, SSMQuant))
            continue
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


def neuron_scale(g: Graph, weight: str, neuron: str) -> np.ndarray | None:
    """The scale of weight node ``weight`` as one value per neuron of ``neuron``
    (flat, C-order), or None when it has no Quant."""
    q = g.ann(weight, Quant)
    if q is None or q.w_int is None:
        return None
    s = np.asarray(q.scale, dtype=np.float64)
    n = int(np.prod(g.shape_out(neuron)))
    if s.size == 1:
        return np.full(n, float(s.reshape(-1)[0]))
    s = s.reshape(-1)  # one per output row / channel
    if s.size == n:
        return s
    shape = g.shape_out(neuron)
    if s.size == shape[0]:  # per channel of a conv output (C, H[, W])
        return np.repeat(s, n // shape[0])
    return None


def integer_graph(g: Graph) -> tuple[Graph, dict]:
    """The network in integer-weight units (see the module docstring).

    Returns (graph, info): in the graph each convertible neuron node is fed by
    its weight nodes' ``w_int`` (as floats), biases ``bias/s``, and has its
    voltages divided by its per-neuron scale s; every other quantized weight
    stays ``w_int·scale``. ``info[neuron]`` = {"scale": (n,) or None,
    "converted": bool, "reason": str}. Simulating this graph gives the same
    spikes as :func:`dequantized` (up to float rounding at exact ties).
    """
    out = dequantized(g)
    info: dict = {}
    converted_w: dict[str, np.ndarray] = {}
    for n, node in g.nodes.items():
        if not is_neuron(node):
            continue
        if isinstance(node, EGRU):
            info[n] = {"scale": None, "converted": False, "reason": "EGRU is nonlinear in its input (no rescaling)"}
            continue
        if isinstance(node, SSM_NODES):
            info[n] = {"scale": None, "converted": False, "reason": "an SSM has its own fixed-point formats (SSMQuant)"}
            continue
        preds = g.preds(n)
        scales = [neuron_scale(g, p, n) if is_weight(g.nodes[p]) else None for p in preds]
        reason = ""
        if any(s is None for s in scales):
            bad = preds[[s is None for s in scales].index(True)]
            reason = f"input '{bad}' is not a quantized weight node"
        elif any(not np.allclose(s, scales[0], rtol=1e-12, atol=0) for s in scales[1:]):
            reason = "its weight inputs have different scales"
        elif any(len(g.succs(p)) != 1 for p in preds):
            reason = "a weight input also feeds another node"
        elif not is_spiking_neuron(node) and not all(isinstance(g.nodes[s], nir.Output) for s in g.succs(n)):
            reason = "graded (non-spiking) output feeding further layers"
        if reason:
            info[n] = {"scale": None, "converted": False, "reason": reason}
            continue
        s = scales[0]
        shape = g.shape_out(n)
        nd = out.nodes[n]
        for k in VOLTAGES:
            v = getattr(nd, k, None)
            if v is None:
                continue
            v = np.asarray(v, dtype=np.float64)
            full = np.broadcast_to(v.reshape(-1) if v.size == s.size else v.reshape(-1)[:1], s.shape) / s
            setattr(nd, k, full.reshape(v.shape if v.size == s.size else shape))
        for p in preds:
            converted_w[p] = s
        info[n] = {"scale": s, "converted": True, "reason": ""}
    for p, s in converted_w.items():
        q = g.ann(p, Quant)
        nd = out.nodes[p]
        nd.weight = np.asarray(q.w_int, dtype=np.float64).reshape(np.shape(nd.weight))
        b = getattr(nd, "bias", None)
        if b is not None and np.ndim(b) > 0:
            b = np.asarray(b, dtype=np.float64)
            per = s if b.size == s.size else s.reshape(b.size, -1)[:, 0]  # conv bias: one per channel
            nd.bias = (b.reshape(-1) / per).reshape(b.shape)
    return out, info
