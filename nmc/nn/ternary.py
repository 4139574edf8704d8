"""Ternary (1.58-bit) weights for EGRU models: quantisation-aware training with a
straight-through estimator and one absmean scale per row.

The rule (the same as ``quantize{scheme=ternary,per_channel=true}``,
:func:`nmc.passes.quantize.ternary_rows`): per row of a weight matrix (out, in),

    s = mean |w|  over the row;   t = round(clip(w / s, −1, 1)) ∈ {−1, 0, +1}
    (rounding to nearest, ties away from zero: |w| ≥ s/2 → ±1; s = 0 → t = 0, s = 1)

and the forward pass uses s·t. Backward, the straight-through estimator passes
the gradient of s·t to the latent float weight unchanged
(a custom autograd function: the forward value is exactly s·t, not w + (s·t − w), which
rounds), so training moves the latent weights and the forward pass only ever sees ternary×scale.

:func:`ternarize` puts this on the ``w_x`` and ``w_h`` of every :class:`nmc.nn.EGRU`
in a module (a ``torch.nn.utils.parametrize`` parametrization: the latent weight is
``parametrizations.w_x.original``); :func:`bake` replaces each by its s·t for good,
so the saved model's weights are exactly ternary×scale per row (float32 ±s or 0).
The compiler's rule keeps such a row as it is (a row whose non-zero weights share one
magnitude keeps that magnitude as its scale), so the compiled kernels hold exactly
these t and s.

A language model's first EGRU layer sees the embedding folded into its input weights on
chip (one-hot token → a column of w_x·E): :func:`fold_embedding` makes that product the
layer's own input matrix (embedding = identity, ``embed`` = vocab) so it is ternarized too.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .egru import EGRU, EGRULanguageModel

WEIGHTS = ("w_x", "w_h")


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def ternary_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, s) of a 2-D ``w`` by the rule above: t (rows, cols) in {−1, 0, 1} (w's dtype, no −0), s (rows, 1)."""
    w = w.detach()
    s = w.abs().mean(dim=1, keepdim=True)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    t = torch.where(s > 0, _round_half_away(torch.clamp(w / safe, -1.0, 1.0)), torch.zeros_like(w)) + 0.0
    return t, safe


class _Ternary(torch.autograd.Function):
    """Forward exactly s·t; backward the straight-through estimator (the gradient unchanged)."""

    @staticmethod
    def forward(ctx, w):
        t, s = ternary_rows(w)
        return s * t

    @staticmethod
    def backward(ctx, g):
        return g


def ternary_weight(w: torch.Tensor) -> torch.Tensor:
    """s·t of ``w`` (rule above), exactly, with the straight-through gradient to ``w``."""
    return _Ternary.apply(w)


class TernarySTE(nn.Module):
    """Parametrization: the weight seen by the forward pass is :func:`ternary_weight` of the latent one."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return ternary_weight(w)


def egru_layers(model: nn.Module) -> list[EGRU]:
    return [m for m in model.modules() if isinstance(m, EGRU)]


def ternarize(model: nn.Module, names=WEIGHTS) -> nn.Module:
    """Make the weights ``names`` of every EGRU in ``model`` ternary in the forward pass (in place)."""
    layers = egru_layers(model)
    if not layers:
        raise ValueError("the model has no nmc.nn.EGRU layer to ternarize")
    for layer in layers:
        for n in names:
            if not parametrize.is_parametrized(layer, n):
                parametrize.register_parametrization(layer, n, TernarySTE())
    return model


def bake(model: nn.Module) -> nn.Module:
    """Replace every ternarized weight by its s·t for good (in place); the model then holds plain
    parameters that are exactly ternary×scale per row, ready for :func:`nmc.save`."""
    for layer in egru_layers(model):
        for n in list(getattr(layer, "parametrizations", {}) or {}):
            parametrize.remove_parametrizations(layer, n, leave_parametrized=True)
    return model


def is_ternary(w: torch.Tensor) -> bool:
    """Whether every row of ``w`` is s·t: its non-zero entries share one magnitude."""
    a = w.detach().abs()
    big = a.max(dim=1, keepdim=True).values
    return bool(torch.all((a == 0) | (a == big)))


def fold_embedding(lm: EGRULanguageModel) -> EGRULanguageModel:
    """A copy of ``lm`` with the embedding folded into the first EGRU layer's input weights:
    ``w_x ← w_x·Eᵀ`` (3H, vocab), the embedding the identity (vocab × vocab, frozen), so the
    function is unchanged and the layer's input matrix is what the chip stores."""
    if lm.tie:
        raise ValueError("a tied decoder shares the embedding; fold only an untied model")
    V = lm.vocab
    new = EGRULanguageModel(V, V, lm.hidden, tie=False, chars=lm.chars, **lm.egru_kw)
    with torch.no_grad():
        new.load_state_dict({k: v for k, v in lm.state_dict().items()
                             if not k.startswith("embed.") and k != "layers.0.w_x"}, strict=False)
        new.embed.weight.copy_(torch.eye(V, dtype=new.embed.weight.dtype))
        new.layers[0].w_x.copy_(lm.layers[0].w_x @ lm.embed.weight.T)
    new.embed.weight.requires_grad_(False)
    return new
