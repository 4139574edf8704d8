"""Gradual magnitude pruning during training (Zhu & Gupta 2017), for any torch model.

The density (fraction of weights kept) of every pruned weight array follows a
cubic schedule from ``initial_density`` d_i (1: dense) to ``final_density`` d_f
between steps t0 = ``start``·N and t1 = ``end``·N of an N-step run::

    d_t = d_f + (d_i − d_f) · (1 − (t − t0) / (t1 − t0))³      for t0 ≤ t ≤ t1

(d_i before t0, d_f after t1) — the sparsity s = 1 − d is Zhu & Gupta's
``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³``: it prunes fast while many
redundant weights remain and slowly near the target. Every ``every`` steps
(and at t1) each array's mask is recomputed on its own: keep the ⌈d_t·n⌉
weights of largest magnitude (stable ties; the rule of nmc's
``sparsify{scope=layer}``). Pruned weights are zero, so they never grow back.

Masked weights are held at zero in the forward pass and after every optimizer
step: :meth:`GradualPruner.step` (call it after ``optimizer.step()``) or
:meth:`GradualPruner.attach`, which registers it as the optimizer's step post
hook; gradients of masked weights are zeroed too, so Adam's moments for them
stay at zero. ``state_dict()`` / ``load_state_dict()`` carry the masks and the
step, so a run resumes where it stopped.

>>> pruner = GradualPruner(recurrent_weights(lm), 0.1, total_steps=1500, start=0.0, end=0.6, every=50)
... # doctest: +SKIP
>>> pruner.attach(opt)       # after every opt.step(): advance, update masks when due, re-zero  # doctest: +SKIP
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def cubic_density(step: int, total_steps: int, final_density: float, *, start: float = 0.0, end: float = 1.0,
                  initial_density: float = 1.0) -> float:
    """Density at ``step`` of the cubic schedule over the fractions [start, end] of ``total_steps``."""
    t0, t1 = start * total_steps, end * total_steps
    if step >= t1:
        return float(final_density)
    if step <= t0:
        return float(initial_density)
    frac = (step - t0) / (t1 - t0)
    return float(final_density + (initial_density - final_density) * (1.0 - frac) ** 3)


def magnitude_mask(w: torch.Tensor, density: float) -> torch.Tensor:
    """Mask (same dtype as ``w``) keeping exactly ⌈density·n⌉ entries of largest |w| (stable ties)."""
    n = w.numel()
    k = min(n, math.ceil(density * n - 1e-9))
    flat = torch.zeros(n, dtype=w.dtype, device=w.device)
    if k > 0:
        order = torch.argsort(-w.detach().abs().reshape(-1), stable=True)
        flat[order[:k]] = 1
    return flat.reshape(w.shape)


def recurrent_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The recurrent cells' weight arrays of ``model`` by name: nmc.nn EGRU ``w_x``/``w_h`` and
    torch.nn.GRU/LSTM/RNN ``weight_ih_l*``/``weight_hh_l*`` (not biases, embeddings or decoders)."""
    from .egru import EGRU

    out: dict[str, nn.Parameter] = {}
    for mname, m in model.named_modules():
        pre = f"{mname}." if mname else ""
        if isinstance(m, EGRU):
            out[pre + "w_x"], out[pre + "w_h"] = m.w_x, m.w_h
        elif isinstance(m, nn.RNNBase):
            for pname, p in m.named_parameters(recurse=False):
                if pname.startswith(("weight_ih_l", "weight_hh_l")):
                    out[pre + pname] = p
    return out


class GradualPruner:
    """Cubic gradual magnitude pruning of named weight arrays (see the module docstring).

    ``params``: {name: parameter} (e.g. :func:`recurrent_weights`) or (name, parameter) pairs;
    ``final_density`` in (0, 1]; the schedule runs from ``start``·``total_steps`` to
    ``end``·``total_steps`` (fractions, 0 ≤ start < end ≤ 1 — ``start == end`` prunes at once
    at that step, one-shot); masks are recomputed every ``every`` steps.
    """

    def __init__(self, params: dict[str, nn.Parameter] | Iterable[tuple[str, nn.Parameter]], final_density: float,
                 *, total_steps: int, start: float = 0.0, end: float = 0.75, every: int = 100,
                 initial_density: float = 1.0):
        self.params = dict(params)
        if not self.params:
            raise ValueError("no weight arrays to prune")
        if not 0.0 < final_density <= 1.0:
            raise ValueError(f"final_density must be in (0, 1], got {final_density}")
        if not 0.0 < initial_density <= 1.0 or initial_density < final_density:
            raise ValueError(f"initial_density must be in [final_density, 1], got {initial_density}")
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1 (fractions of training), got start={start}, end={end}")
        if total_steps < 1 or every < 1:
            raise ValueError(f"total_steps and every must be >= 1, got {total_steps}, {every}")
        self.final_density, self.initial_density = float(final_density), float(initial_density)
        self.total_steps, self.start, self.end, self.every = int(total_steps), float(start), float(end), int(every)
        self.t = 0
        self.density = 1.0                       # density the masks hold now
        self.masks = {k: torch.ones_like(p, memory_format=torch.contiguous_format) for k, p in self.params.items()}
        self._hooks = [p.register_hook(self._grad_hook(k)) for k, p in self.params.items()]
        self.update(0)

    # -- schedule ---------------------------------------------------------------------------------
    def target_density(self, t: int | None = None) -> float:
        t = self.t if t is None else t
        return cubic_density(t, self.total_steps, self.final_density, start=self.start, end=self.end,
                             initial_density=self.initial_density)

    def due(self, t: int) -> bool:
        """Whether the masks are recomputed at step t: every ``every`` steps from t0, and at t1."""
        t0, t1 = self.start * self.total_steps, self.end * self.total_steps
        if t < t0:
            return False
        return (t - math.ceil(t0)) % self.every == 0 or (t >= t1 and self.density > self.final_density)

    # -- masks ------------------------------------------------------------------------------------
    def _grad_hook(self, name):
        return lambda g: g * self.masks[name]

    @torch.no_grad()
    def update(self, t: int | None = None) -> None:
        """Recompute every mask for the schedule's density at step t (when due), then apply."""
        t = self.t if t is None else t
        if self.due(t):
            d = self.target_density(t)
            if d < self.density:
                for k, p in self.params.items():
                    self.masks[k] = magnitude_mask(p * self.masks[k], d)
                self.density = d
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the masked weights in place."""
        for k, p in self.params.items():
            p.mul_(self.masks[k])

    def step(self) -> None:
        """Advance one training step: call after ``optimizer.step()``."""
        self.t += 1
        self.update(self.t)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Run :meth:`step` after every ``optimizer.step()``; returns the hook handle."""
        return optimizer.register_step_post_hook(lambda *_: self.step())

    def detach(self) -> None:
        """Remove the gradient hooks (masks stay applied to the weights)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def sparsity(self) -> dict[str, float]:
        """Measured fraction of zeros of each pruned array."""
        return {k: float((p == 0).float().mean()) for k, p in self.params.items()}

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"t": self.t, "density": self.density, "masks": {k: m.clone() for k, m in self.masks.items()},
                "config": {"final_density": self.final_density, "initial_density": self.initial_density,
                           "total_steps": self.total_steps, "start": self.start, "end": self.end,
                           "every": self.every}}

    def load_state_dict(self, sd: dict) -> None:
        missing = set(self.params) ^ set(sd["masks"])
        if missing:
            raise KeyError(f"pruner state names other weight arrays: {sorted(missing)}")
        for k, m in sd["masks"].items():
            if tuple(m.shape) != tuple(self.params[k].shape):
                raise ValueError(f"mask of '{k}' has shape {tuple(m.shape)}, the weight {tuple(self.params[k].shape)}")
            self.masks[k] = m.to(self.params[k].dtype).clone()
        cfg = sd.get("config", {})
        for key in ("final_density", "initial_density", "start", "end"):
            if key in cfg:
                setattr(self, key, float(cfg[key]))
        for key in ("total_steps", "every"):
            if key in cfg:
                setattr(self, key, int(cfg[key]))
        self.t, self.density = int(sd["t"]), float(sd["density"])
        self.apply()
