"""The loihi2 lowering hooks of the SSM nodes (``nmc.semantics.register_hook("loihi2", "lower", ...)``).

:func:`.lower.lower` calls a node's ``lower`` hook for every node type that
has one (instead of its LIF path), with a :class:`SSMLowering` context. A
``DiagSSM`` becomes the units and links of :func:`.ssm.map_diag_ssm`; the linear
nodes between its source and it (composed into one matrix M, u = Mᵀ·s) are
folded into B and D. Its source may be a graph Input (payloads: spikes, or
graded ``input_bits`` integers: the float input *is* the payload; without
``input_bits``, an input that feeds only SSM nodes takes its width from the
calibration data when they hold integers other than 0/1,
:func:`.lower._ssm_input_bits`), a spiking
neuron layer (0/1) or another DiagSSM (its output payload, scale S_y). The range
of what a DiagSSM sends (its consumers' ``u_bound``) is its worst case, or, with
calibration data, the float reference's largest |y| on them × ``MARGIN`` where
that is smaller (:func:`.numerics.measured_output`; reported as ``y_range_from``).

Refused with the reason: a ``StochasticSSMNeuron`` (no public Lava process
draws random numbers: matching its counter-based generator and σ(y) needs a
custom microcode neuron, which needs Intel's lava-loihi and which nmc does not
generate); a DiagSSM with several sources, a recurrent (back-edge) input, a
bias on its input, per-channel delta thresholds (Lava's ``Delta`` has one
``vth`` per process), or the ``gelu`` output stage (:mod:`.ssm`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nmc import ssm_math as M
from nmc.errors import UnsupportedNodeError
from nmc.nodes_ssm import DiagSSM, StochasticSSMNeuron
from nmc.semantics import register_hook

from .numerics import MARGIN, measured_output
from .ssm import error_bound, map_diag_ssm


@dataclass
class Source:
    """What a lowered node sends, as an SSM sees it: float value = payload / ``scale``, |payload| ≤ ``bound``."""
    lava: str             # the InputPort / NeuronGroup / GradedUnit that sends it
    scale: float
    bound: float
    bits: int             # num_message_bits of a link from it (0: binary spikes)
    latency: int


@dataclass
class SSMLowering:
    prog: object           # the LoihiProgram being built
    spec: object
    sources: dict = field(default_factory=dict)    # graph node name → Source
    graph: object = None   # the graph and the compile's calibration data (ctx.data), for measured ranges
    data: dict | None = None


@register_hook("loihi2", "lower", DiagSSM)
def lower_diag_ssm(lw: SSMLowering, name: str, node: DiagSSM, terms: dict, bias: np.ndarray) -> Source:
    if len(terms) != 1:
        raise UnsupportedNodeError(f"a DiagSSM on loihi2 takes one source, got {len(terms)}: {', '.join(terms)}",
                                   node=name, hint="feed the SSM from one layer (concatenate upstream)")
    (src, (m, back)), = terms.items()
    if back:
        raise UnsupportedNodeError("a recurrent (back-edge) input into a DiagSSM is not mapped on loihi2", node=name,
                                   hint="the SSM's own recurrence is its state; feed it forward")
    if np.any(bias != 0):
        raise UnsupportedNodeError("a bias on a DiagSSM's input has no place in Lava's Sigma (no bias input)",
                                   node=name, actual=float(np.abs(bias).max()), hint="train without the input bias")
    if src not in lw.sources:
        raise UnsupportedNodeError(f"a DiagSSM fed by '{src}' (a non-spiking layer) is not mapped on loihi2",
                                   node=name, hint="feed it from the input, a spiking layer or another DiagSSM")
    s = lw.sources[src]
    theta = np.asarray(node.theta, float).reshape(-1)
    if node.output == "delta" and not np.all(theta == theta[0]):
        raise UnsupportedNodeError("per-channel delta thresholds: Lava's Delta process has one vth for all its "
                                   "neurons", node=name, hint="train with one θ per layer (nmc.nn.DiagSSM theta=...)")
    mt = np.asarray(m.dense() if hasattr(m, "dense") else m, np.float64).T       # u = Mᵀ·s: (H, n_src)
    lam_bar, gamma = M.discretize(node.lam, node.step, node.method)
    b = np.asarray(node.b) @ mt
    d = np.diag(node.d) @ mt
    mp = map_diag_ssm(name, s.lava, lam_bar=lam_bar, gamma=gamma, b=b, c=node.c, d=d,
                      in_scale=s.scale, u_bound=s.bound, src_bits=s.bits, output=node.output,
                      theta=float(theta[0]), src_latency=s.latency, spec=lw.spec)
    lw.prog.units.extend(mp.units)
    lw.prog.links.extend(mp.links)
    # the derived bound on |y_loihi2 − y_float| for every input within the source's range (ssm.error_bound)
    bound = error_bound(mp, lam_bar, gamma, b, node.c, d, s.bound / s.scale)
    rep = {**mp.report, "y_error_bound": float(bound.max()), "u_max": s.bound / s.scale}
    # what the SSM sends, as its consumers' ranges see it: the worst case, or (with calibration data) the
    # float reference's largest |y| there × MARGIN when smaller (a worst case over every input in phase can
    # be far above what data reach, and a next SSM's input weights shrink with it: Σ|w|·|u| fits int32)
    y_bound = float(mp.report["y_payload_max"])
    meas = measured_output(lw.graph, lw.data, name) if lw.graph is not None else None
    if meas is not None and meas * mp.s_y < y_bound:
        y_bound = max(meas * mp.s_y, 1.0)
        rep["y_range_from"] = f"calibration data (float reference, x{MARGIN:g} margin)"
        rep["y_payload_bound"] = y_bound
    lw.prog.meta.setdefault("fidelity", {})[name] = {"ssm": rep}
    out = Source(mp.out, mp.s_y, y_bound, 24, mp.latency)
    lw.sources[name] = out
    return out


@register_hook("loihi2", "internal_macs", DiagSSM)
def diag_ssm_macs(node: DiagSSM, received: np.ndarray) -> np.ndarray:
    """The MACs of a DiagSSM's links that the graph's synapses do not show, per (step·sample, channel),
    for ``nmc profile`` (runtime/energy.py counts one MAC per graded input event into each channel).
    Per input event the B link fans out to the n_x = 2P (complex) or P state rows and the D link adds
    one: n_x + 1, of which one is counted, so n_x more. Every step (the Sigma state is sent every step)
    the recurrence's nonzeros (4 per complex mode, the 2×2 block; 1 per real mode), spread over the H
    channels, and the C link's n_x per channel."""
    P, H = node.modes, node.channels
    n_x = 2 * P if node.complex else P
    per_step = (4 * P if node.complex else P) / H + n_x
    return received * n_x + per_step


@register_hook("loihi2", "lower", StochasticSSMNeuron)
def refuse_stochastic_ssm(lw: SSMLowering, name: str, node, terms, bias):
    raise UnsupportedNodeError(
        "a StochasticSSMNeuron needs a seeded random number per neuron and step (its counter-based lowbias32 "
        "generator) and σ(y): no public Lava process (lava-nc 0.10 lava/proc) draws random numbers or has a "
        "fixed-point sigmoid; Loihi 2 could run it only as a custom microcode neuron, which needs Intel's "
        "lava-loihi (not public) and which nmc does not generate", node=name,
        hint="compile the stochastic SSM for spinnaker2 or reference")
