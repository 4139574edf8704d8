"""Trainable layers whose forward pass is exactly nmc's reference semantics.

Neuron layers are step-wise (one timestep per call, state inside); combine
them with ordinary ``torch.nn`` layers (Linear, Conv2d, AvgPool2d, Flatten) in
``nn.Sequential`` or your own module, train with surrogate gradients, then
``nmc.save(model, "model.pt")`` and ``nmc compile model.pt --target ...``.

>>> net = torch.nn.Sequential(torch.nn.Linear(64, 128), nmc.nn.LIF(128, beta=0.8),
...                           torch.nn.Linear(128, 10), nmc.nn.LIF(10, beta=0.8))   # doctest: +SKIP
>>> out = nmc.nn.run(net, x)          # x: (T, B, 64) → (T, B, 10)        # doctest: +SKIP

State-space layers (:class:`DiagSSM`, :class:`SSMBlock`, :class:`DiagSSMStack`,
:class:`StochasticSpikingSSM`) work on whole sequences instead: ``layer(x)``
maps (T, B, ...) → (T, B, ...) with a parallel scan for training, and
``layer.step(x_t, state) -> (y_t, state)`` runs them step by step with explicit
state; their equations are :mod:`nmc.ssm_math`. ``nmc.save`` writes them with
their ``nmc.DiagSSM`` / ``nmc.StochasticSSMNeuron`` / ``nmc.LayerNorm`` nodes
(:mod:`nmc.nodes_ssm`).

Ternary (1.58-bit) EGRU weights: :mod:`nmc.nn.ternary` trains them
(quantisation-aware, straight-through estimator, one absmean scale per row) and
bakes them to exactly ternary×scale for ``quantize{scheme=ternary}``;
:mod:`nmc.nn.distill` distils a student from a teacher's logits.
"""
from __future__ import annotations

import torch
from torch import nn

from .egru import EGRU, EGRULanguageModel
from .neurons import IF, LI, LIF, NEURON_CLASSES, RLIF, CubaLIF, surrogate
from .persist import load_module
from .ssm import DiagSSM, DiagSSMStack, SSMBlock
from .stochastic_ssm import StochasticSpikingSSM

__all__ = ["LIF", "RLIF", "CubaLIF", "IF", "LI", "EGRU", "EGRULanguageModel", "DiagSSM", "SSMBlock", "DiagSSMStack",
           "StochasticSpikingSSM", "surrogate", "run", "reset", "load"]


def reset(model: nn.Module) -> None:
    """Clear the state of every stateful nmc.nn layer in ``model``."""
    for m in model.modules():
        if hasattr(m, "reset_state"):
            m.reset_state()


def run(model: nn.Module, x: torch.Tensor, *, reset_first: bool = True) -> torch.Tensor:
    """Run a step-wise model over a sequence x (T, B, ...) → stacked outputs (T, B, ...)."""
    if reset_first:
        reset(model)
    return torch.stack([model(x[t]) for t in range(x.shape[0])])


def load(path) -> nn.Module:
    """Rebuild the trainable module saved by :func:`nmc.save` (weights-only load; :mod:`nmc.nn.persist`)."""
    return load_module(path)
