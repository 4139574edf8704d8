"""PyTorch frontend, state-space layers: nmc.nn SSM layers → :mod:`nmc.nodes_ssm` nodes.

* :class:`nmc.nn.DiagSSM` → ``nmc.DiagSSM`` (Λ, Δ = exp(log Δ), B, C, D, method,
  output none/gelu/relu/delta with θ); ``output="lif"`` → ``nmc.DiagSSM``
  (output none) → NIR ``LIF`` ``<name>.lif`` (the layer's :class:`nmc.nn.LIF`);
* :class:`nmc.nn.StochasticSpikingSSM` → ``nmc.StochasticSSMNeuron`` with the
  layer's seed. The node draws ξ from its counter-based generator
  (:func:`nmc.nodes_ssm.hash_uniform`), not from the layer's torch generator:
  give the layer ``noise=nmc.nodes_ssm.noise(seed, T, B, H)`` to draw the same;
* ``nn.LayerNorm`` over the last dimension → ``nmc.LayerNorm``;
* :class:`nmc.nn.SSMBlock` / :class:`nmc.nn.DiagSSMStack` → their parts, the
  residual sum as summed edges (:func:`stack_graph`); ``norm="none"`` has no
  LayerNorm nodes, ``residual=False`` no skip edges.

Every node is in tick mode (``time="tick"``); :func:`nmc.reference_ssm.with_time`
switches a graph to per-event Δt. What cannot convert (a LayerNorm over more
than one dimension) is an :class:`~nmc.errors.UnsupportedNodeError` naming the layer.
"""
from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from nmc import nn as nnn
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron

SSM_LAYERS = (nnn.DiagSSM, nnn.StochasticSpikingSSM)


def _c(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.to(torch.complex128).numpy().copy() if t.is_complex() else t.double().numpy().copy()


def diag_node(m: nnn.DiagSSM) -> DiagSSM:
    out = "none" if m.output == "lif" else m.output
    return DiagSSM(lam=_c(m.eigenvalues()), step=_c(m.step_size()), b=_c(m._matrix("b")), c=_c(m._matrix("c")),
                   d=_c(m.d), method=m.method, output=out, theta=m.theta if out == "delta" else 0.0)


def stochastic_node(m: nnn.StochasticSpikingSSM) -> StochasticSSMNeuron:
    return StochasticSSMNeuron(lam=_c(m.eigenvalues()), step=_c(m.step_size()).reshape(-1), b=_c(m._matrix("b")),
                               c=_c(m._matrix("c")), d=_c(m.d), method=m.method, seed=m.seed)


def layernorm_node(name: str, m: nn.LayerNorm) -> LayerNorm:
    shp = tuple(m.normalized_shape)
    if len(shp) != 1:
        raise UnsupportedNodeError(f"LayerNorm over {len(shp)} dimensions {shp} is not supported", node=name,
                                   hint="normalise over the last (channel) dimension only")
    w = _c(m.weight) if m.weight is not None else np.ones(shp)
    b = _c(m.bias) if getattr(m, "bias", None) is not None else np.zeros(shp)
    return LayerNorm(weight=w, bias=b, eps=float(m.eps))


def convert(s, name: str, m: nn.Module, dt: float, convert_layer) -> None:
    """Add the nodes of SSM layer / LayerNorm ``m`` to the frontend's ``_Sub`` ``s``; ``convert_layer``
    is :func:`nmc.frontends.torch.convert._convert` (for a DiagSSM's LIF output)."""
    if isinstance(m, nn.LayerNorm):
        s.chain(name, layernorm_node(name, m))
    elif isinstance(m, nnn.StochasticSpikingSSM):
        s.chain(name, stochastic_node(m))
    else:
        s.chain(name, diag_node(m))
        if m.output == "lif":
            sub = convert_layer(f"{name}.lif", m.lif, (m.d_model,), (m.d_model,), dt)
            for k, node in sub.nodes.items():
                if k == sub.entry:
                    s.chain(k, node)
                else:
                    s.nodes[k] = node
            s.edges += sub.edges
            s.anns += sub.anns
            s.warnings += sub.warnings
            s.exit = sub.exit
            if hasattr(sub, "integrator"):
                s.integrator = sub.integrator


def stack_graph(m: nn.Module, dt: float, attach, convert_layer) -> Graph:
    """A :class:`nmc.nn.DiagSSMStack` or :class:`nmc.nn.SSMBlock` as a graph: its layers under their
    module paths, each block's residual ``x + mix(ssm(norm(x)))`` as summed edges into the next layer
    (``mix(ssm(x))`` alone for ``residual=False``; no norm node for ``norm="none"``).
    ``attach``/``convert_layer``: the frontend's ``_attach``/``_convert``."""
    from .convert import _Sub

    warnings: list = []
    integrators: dict = {}
    stack = isinstance(m, nnn.DiagSSMStack)
    d_in = m.encoder.in_features if stack else m.ssm.d_model
    g = Graph(meta={"dt": float(dt)})
    g.add_node("input", nir.Input(input_type={"input": np.array([d_in])}))

    def one(name, layer, preds):
        sub = convert_layer(name, layer, None, None, dt)
        return attach(g, sub, preds, warnings, integrators)

    cur = ["input"]
    if stack:
        cur = [one("encoder", m.encoder, cur)]
    blocks = [(f"blocks.{i}.", b) for i, b in enumerate(m.blocks)] if stack else [("", m)]
    for prefix, blk in blocks:
        s = _Sub()
        if isinstance(blk.norm, nn.LayerNorm):          # norm="none": the identity, no node
            s.chain(f"{prefix}norm", layernorm_node(f"{prefix}norm", blk.norm))
        convert(s, f"{prefix}ssm", blk.ssm, dt, convert_layer)
        mix = attach(g, s, cur, warnings, integrators)
        mixed = one(f"{prefix}mix", blk.mix, [mix])
        cur = cur + [mixed] if blk.residual else [mixed]
    if stack:
        if isinstance(m.norm, nn.LayerNorm):
            cur = [one("norm", m.norm, cur)]
        cur = [one("decoder", m.decoder, cur)]
    out = m.decoder.out_features if stack else m.ssm.d_model
    return finish_graph(g, cur, [out], integrators, dt, warnings)


def finish_graph(g: Graph, exits, out_shape, integrators: dict, dt: float, warnings: list) -> Graph:
    """Close a converted graph: an Output of ``out_shape`` fed by every node in ``exits``, one
    integrator for the neurons (``integrators``: node → the one its module asked for), the SSM
    nodes' discrete time marked (:func:`mark_discrete_time`), the conversion's warnings in its meta."""
    g.add_node("output", nir.Output(output_type={"output": np.array(out_shape)}))
    for p in exits:
        g.add_edge(p, "output")
    if integrators:
        from .convert import _unify_integrators

        _unify_integrators(g, integrators, dt, warnings)
    mark_discrete_time(g)
    if warnings:
        g.meta["warnings"] = [{"node": n, "message": msg} for n, msg in warnings]
    return g


def mark_discrete_time(g: Graph) -> None:
    """SSM nodes are discrete-time cells (their own Δ per tick) with no reset: a graph of them and
    stateless layers stores the integrator and reset mode (neither changes its numbers), so
    ``normalize`` does not warn that they were not given."""
    from nmc.annotations import Reset
    from nmc.nodes import is_spiking_neuron

    if not any(isinstance(n, (DiagSSM, StochasticSSMNeuron)) for n in g.nodes.values()):
        return
    g.meta.setdefault("integrator", "euler")
    if all(g.ann(k, Reset) is not None for k, n in g.nodes.items()
           if is_spiking_neuron(n) and not isinstance(n, StochasticSSMNeuron)):
        g.meta.setdefault("reset", "zero")
