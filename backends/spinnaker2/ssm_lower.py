"""The spinnaker2 lowering hooks of the SSM nodes (``nmc.semantics.register_hook("spinnaker2", "lower", ...)``).

:func:`.lower.lower` calls a node's ``lower`` hook for every node type that has one
(as it does the EGRU path) and reads the PEs of the population it returns from the Placement the
``partition`` pass wrote. An ``nmc.DiagSSM``
or ``nmc.StochasticSSMNeuron`` becomes an ``ssm_kernel`` population run by the
generated PE kernels of :mod:`.ssm`, with the fixed-point parameters of the node's
``SSMQuant`` annotation (the quantize pass) as the kernel's float32 words
(:func:`.ssm.params`, exact). Its input stage on the PE: the linear nodes between
its source population and it, composed into one matrix M (n_src, H) and bias b,
applied in float32 to the source's values of the previous chip step, event by event
in increasing source index (the EGRU receivers' order, :func:`.emulator._accumulate`)::

    u = +0;  for each source i with a value s_i ≠ 0, increasing i:  u = u + s_i·M[i];   u = u + b

then one kernel step (:func:`.ssm.diag_step` / :func:`.ssm.stochastic_step`). A direct
edge (M = I, b = 0) gives u = s exactly. The population trails its source by one
chip step and starts at its latency tick (before it, no input has reached it; a
stochastic kernel stepped on zeros would draw spikes and advance its counter k).
On chip the stochastic kernel's k is the PE's step counter since that tick.

An ``nmc.LayerNorm`` becomes an ``ssm_kernel`` population too, run by the kernel of
:mod:`.ssm_norm` on one PE: its input is the residual stream of an SSM stack, the sum of
several sources' composed values (``sources``), each taken from the PE's delay line of that
source at step t − 1 − d_s, d_s = L − L_s − 1, so every term lines up with the same reference
step (:mod:`.ssm_norm`'s docstring states the order of the sum).

Refused with the reason (typed errors naming the node): no ``SSMQuant`` (a pipeline
without ``quantize``), several sources into a DiagSSM / StochasticSSMNeuron, a recurrent input,
a source behind a Delay, a source without a population.
"""
from __future__ import annotations

import numpy as np

from nmc.annotations import SSMQuant
from nmc.errors import UnsupportedNodeError
from nmc.nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron
from nmc.semantics import register_hook

from .program import Population
from .ssm import OUTPUT_CODES, params
from .ssm_norm import norm_step
from .ssm_norm import params as norm_params

F32 = np.float32
CODE_OUTPUTS = {v: k for k, v in OUTPUT_CODES.items()}


@register_hook("spinnaker2", "lower", DiagSSM, StochasticSSMNeuron)
def lower_ssm(graph, name: str, node, composed, pops: dict, virt: dict, latency: int) -> Population:
    q = graph.ann(name, SSMQuant)
    if q is None:
        raise UnsupportedNodeError(f"a {type(node).__name__} on spinnaker2 runs the quantize pass's fixed-point "
                                   "parameters (SSMQuant), and this pipeline has no quantize", node=name,
                                   hint="add quantize{bits=8} to --passes (the default pipeline has it)")
    terms, bias = composed
    if len(terms) != 1:
        raise UnsupportedNodeError(f"an SSM on spinnaker2 takes one source, got {len(terms)}: {', '.join(terms)}",
                                   node=name, hint="feed the SSM from one layer (concatenate upstream)")
    (src, (m, back)), = terms.items()
    if back or src in virt:
        raise UnsupportedNodeError("a recurrent or delayed input into an SSM is not mapped on spinnaker2", node=name,
                                   hint="the SSM's own recurrence is its state; feed it forward without a Delay")
    if src not in pops:
        raise UnsupportedNodeError(f"an SSM fed by '{src}' (no population on spinnaker2) is not mapped", node=name,
                                   hint="feed it from the input, a neuron layer, an EGRU or another SSM")
    kernel = {k: np.asarray(v, F32) for k, v in params(node, q).items() if k not in ("output", "seed")}
    if isinstance(node, DiagSSM):
        kernel["out"] = np.asarray(OUTPUT_CODES[node.output], np.int32)
    else:
        kernel["seed"] = np.asarray(node.seed, np.uint32)
    m = np.asarray(m.toarray() if hasattr(m, "toarray") else m, np.float64)
    kernel["w_in"] = m.astype(F32)                                   # (n_src, H)
    kernel["b_in"] = np.asarray(bias, np.float64).reshape(-1).astype(F32)
    n = int(kernel["d"].shape[0])
    return Population(name, "ssm_kernel", n, latency=latency, spiking=isinstance(node, StochasticSSMNeuron),
                      kernel=kernel, source=src)


@register_hook("spinnaker2", "lower", LayerNorm)
def lower_layer_norm(graph, name: str, node, composed, pops: dict, virt: dict, latency: int) -> Population:
    """An ``nmc.LayerNorm`` → an ``ssm_kernel`` population with the :mod:`.ssm_norm` kernel, its
    sources' composed matrices stacked into ``w_in`` and each source's delay in ``delay``."""
    terms, bias = composed
    if not terms:
        raise UnsupportedNodeError("a LayerNorm on spinnaker2 needs an input (it has only a constant)", node=name,
                                   hint="feed it from the input, a neuron layer or an SSM")
    srcs, mats = [], []
    for src, (m, back) in terms.items():
        if back or src in virt:
            raise UnsupportedNodeError(f"a recurrent or delayed input ('{src}') into a LayerNorm is not mapped on "
                                       "spinnaker2", node=name, hint="feed the LayerNorm forward without a Delay")
        if src not in pops:
            raise UnsupportedNodeError(f"a LayerNorm fed by '{src}' (no population on spinnaker2) is not mapped",
                                       node=name, hint="feed it from the input, a neuron layer or an SSM")
        srcs.append(src)
        mats.append(np.asarray(m.toarray() if hasattr(m, "toarray") else m, np.float64))
    kernel = {k: np.asarray(v, F32) for k, v in norm_params(node).items()}
    kernel["w_in"] = np.concatenate(mats, axis=0).astype(F32)                    # (Σ n_src, H), source order
    kernel["b_in"] = np.asarray(bias, np.float64).reshape(-1).astype(F32)
    kernel["delay"] = np.asarray([latency - pops[s].latency - 1 for s in srcs], np.int32)
    kernel["src_size"] = np.asarray([m.shape[0] for m in mats], np.int32)
    return Population(name, "ssm_kernel", int(kernel["gamma"].shape[0]), latency=latency, spiking=False,
                      kernel=kernel, source=srcs[0], sources=tuple(srcs))


def kernel_params(kernel: dict) -> dict:
    """The :func:`.ssm.params` dict of an ``ssm_kernel`` population's kernel arrays (as stored);
    a LayerNorm's: :func:`.ssm_norm.params`."""
    if "gamma" in kernel:
        return {k: np.asarray(kernel[k], F32) for k in ("gamma", "beta", "eps")}
    p = {k: np.asarray(kernel[k], F32) for k in ("lr", "li", "br", "bi", "cr", "ci", "d")}
    if "theta" in kernel:
        p["theta"] = np.asarray(kernel["theta"], F32)
        p["output"] = CODE_OUTPUTS[int(kernel["out"])]
    else:
        p["seed"] = int(kernel["seed"])
    return p


def input_stage(kernel: dict, x: np.ndarray) -> np.ndarray:
    """u (B, H) float32 from the source's values x (B, n_src) (module docstring)."""
    from .emulator import _accumulate

    return (_accumulate(np.asarray(x, F32), kernel["w_in"]) + kernel["b_in"][None]).astype(F32)


def init_state(kernel: dict, batch: int) -> dict:
    """The kernel state of a batch (:func:`.ssm.init_state`'s layout) from the kernel arrays
    (a LayerNorm has none)."""
    if "gamma" in kernel:
        return {}
    shp = (batch, *np.shape(kernel["lr"]))
    st = {"xr": np.zeros(shp, F32), "xi": np.zeros(shp, F32)}
    if "theta" in kernel:
        st["held"] = np.zeros((batch, np.shape(kernel["d"])[0]), F32)
    return st


def step(kernel: dict, st: dict, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """One chip step of an ssm_kernel population: (s, v, state); s the output (graded values or
    spikes), v the held value (diag) or σ(y) (stochastic). ``k`` (B,): each row's step counter."""
    from .ssm import diag_step, stochastic_step

    p = kernel_params(kernel)
    u = input_stage(kernel, x)
    if "gamma" in kernel:   # LayerNorm: x is its sources' delayed values, concatenated in source order
        out = norm_step(p, u)
        return out, out, st
    if "theta" in kernel:
        out, st2, _ = diag_step(p, st, u)
        return out, out, st2
    s, st2, prob = stochastic_step(p, {**st, "k": np.asarray(k, np.int64)[:, None]}, u)
    st2.pop("k")
    return s, prob.astype(F32), st2


@register_hook("spinnaker2", "internal_macs", DiagSSM, StochasticSSMNeuron)
def ssm_kernel_macs(node, received: np.ndarray) -> np.ndarray:
    """The float32 multiply-adds of an SSM kernel (:mod:`.ssm`) that the graph's synapses do not show, per
    (step·sample, unit), for ``nmc profile`` (runtime/energy.py counts the input stage: one MAC per input
    event into each unit). The kernel computes every mode in complex form (a real mode's imaginary parts
    are zeros it multiplies too). DiagSSM (P modes, H channels): a channel's u_h ≠ 0 (it received an
    event) adds its B̄ column, 2P; every step Λ̄ ⊙ x (4P, spread over the H channels), the channel's
    C̄ row (2P) and D (1). StochasticSSMNeuron (N states): every step B̄·u_h, Λ̄ ⊙ x, C̄ (2N + 4N + 2N)
    and D (1), input or not."""
    received = np.asarray(received, np.float64)
    if isinstance(node, DiagSSM):
        P, H = node.modes, node.channels
        return (received > 0) * 2.0 * P + 4.0 * P / H + 2.0 * P + 1.0
    return np.full(received.shape, 8.0 * node.state_size + 1.0)


#: operations per channel and step of the LayerNorm kernel (:mod:`.ssm_norm`, ``nmc_ssm_norm_step``),
#: counted from its three loops over the H channels as multiply-adds, a subtraction folded into the
#: operation it feeds: the mean's sum ``sum + u[h]`` (1); the variance's ``v + e·e`` with
#: ``e = u[h] − mean`` (1); the normalise ``(u[h] − mean)·r`` (1) and ``y·γ[h] + β[h]`` (1) — the
#: ``macs_per_step`` 4H that ``nmc inspect`` shows (nmc/nodes_ssm.py)
NORM_MACS_PER_CHANNEL = 4


@register_hook("spinnaker2", "internal_macs", LayerNorm)
def norm_kernel_macs(node, received: np.ndarray) -> np.ndarray:
    """The LayerNorm kernel's operations per (step·sample, channel) for ``nmc profile``: it normalises
    every channel every step, input or not, :data:`NORM_MACS_PER_CHANNEL` each. A LayerNorm is no
    unit of the network (runtime/energy.py calls this with ``received`` all zeros, for its shape).
    Not counted: the step's three divisions and square root (per step, not per channel: 4 float
    operations against the 4H counted) and the input stage's products ``x_i·w_in`` of the sources'
    values (its delay lines' sources are not graph synapses of a unit)."""
    return np.full(np.shape(received), float(NORM_MACS_PER_CHANNEL))
