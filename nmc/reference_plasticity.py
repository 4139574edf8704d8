"""The float reference simulator's learning rules: one :class:`Learner` per projection carrying a
:class:`nmc.plasticity.Plasticity` annotation (equations and conventions there).

:class:`nmc.reference.ReferenceSimulator` builds the learners, hands each projection's step the
learner's weight tensor (updated in place, so the next step uses the new weights), and after every
timestep calls :meth:`Learner.update` with the projection's summed input (pre) and its post neuron
node's output (post spikes). Float64 torch, like the rest of the reference.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .errors import OptionError
from .plasticity import Plasticity, check_changes, post_of


class Learner:
    """State of one plastic projection: W (out, in) shared by the batch, the pre/post traces (B, ·),
    the eligibility, SPORE's θ, the rewiring mask and labels, and the third factor."""

    def __init__(self, name: str, rule: Plasticity, graph, weight: torch.Tensor, dt: float):
        self.name, self.rule, self.dt = name, rule, float(dt)
        self.post = post_of(name, graph, rule)
        self.w0 = weight.detach().clone()
        self.w = weight            # the projection step's own tensor: updated in place
        self.reset(1)

    # ------------------------------------------------------------------ state
    def reset(self, batch: int) -> None:
        """Initial weights, empty traces, no modulator, the seeded generators restarted."""
        r, w = self.rule, self.w
        n_out, n_in = w.shape
        self.w.copy_(self.w0)
        self.mask = None
        if r.fan_in:
            order = np.argsort(-np.abs(self.w0.numpy()), axis=1, kind="stable")[:, :r.fan_in]
            m = np.zeros((n_out, n_in), bool)
            np.put_along_axis(m, order, True, axis=1)
            self.mask = torch.as_tensor(m)
        if r.rule == "spore":
            w0 = self.w0.numpy()
            with np.errstate(divide="ignore"):
                theta = np.where(w0 > 0, r.theta0 + np.log(np.where(w0 > 0, w0, 1.0)), 0.0)
            self.theta = torch.as_tensor(theta, dtype=w.dtype)
            self._weights_from_theta()
        elif self.mask is not None:
            self.w.mul_(self.mask)
        self.steps = 0
        self.rewired = 0
        self.rng = np.random.Generator(np.random.PCG64(r.seed))
        self.noise = torch.Generator().manual_seed(int(r.seed))
        self.reset_traces(batch)

    def reset_traces(self, batch: int) -> None:
        """Empty traces and eligibility, no modulator, for ``batch`` elements; weights, θ, the
        connectome and the generators keep what they learned and where they are."""
        r, w = self.rule, self.w
        n_out, n_in = w.shape
        self.batch = batch
        dtype = w.dtype
        self.x = torch.zeros((batch, n_in), dtype=dtype)
        self.y = torch.zeros((batch, n_out), dtype=dtype)
        eshape = (batch, n_in) if r.third_factor == "error" else (batch, n_out, n_in)
        self.e = torch.zeros(eshape, dtype=dtype) if r.third_factor != "none" else None
        self.modulator = torch.zeros((batch, n_out) if r.third_factor == "error" else (batch,), dtype=dtype)
        self.baseline = torch.zeros((batch,), dtype=dtype)

    def set_rule(self, **changes) -> None:
        """Change rule parameters mid-run (a learning-rate or temperature schedule); the new rule
        is checked like the annotation. State (weights, traces) is kept."""
        check_changes(changes, self.name)
        self.rule = dataclasses.replace(self.rule, **changes)

    def modulate(self, value) -> None:
        """The third factor from now on: a reward (scalar or one per batch element) or, for
        ``third_factor="error"``, the error per post neuron ((out,) or (B, out))."""
        r = self.rule
        if r.third_factor == "none":
            raise OptionError(f"projection '{self.name}' has no third factor to modulate", node=self.name,
                              hint="set third_factor='reward' or 'error' in its Plasticity annotation")
        v = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=self.w.dtype)
        want = self.modulator.shape
        try:
            v = torch.broadcast_to(v, want).clone()
        except RuntimeError:
            raise OptionError(f"the {r.third_factor} for '{self.name}' has shape {tuple(v.shape)}, expected "
                              f"{tuple(want)} (or one that broadcasts to it)", node=self.name) from None
        if not torch.all(torch.isfinite(v)):
            raise OptionError(f"the {r.third_factor} for '{self.name}' is not finite", node=self.name)
        self.modulator = v

    # ----------------------------------------------------------------- update
    def update(self, pre: torch.Tensor, post: torch.Tensor) -> None:
        """One timestep of the rule: ``pre`` (B, in) the projection's input, ``post`` (B, out) the post spikes."""
        r, dt = self.rule, self.dt
        pre, post = pre.reshape(pre.shape[0], -1), post.reshape(post.shape[0], -1)
        self.x.mul_(math.exp(-dt / r.tau_plus))
        self.y.mul_(math.exp(-dt / r.tau_minus))
        pair = None
        if not (r.rule == "stdp" and r.third_factor == "error"):
            pair = r.a_plus * post[:, :, None] * self.x[:, None, :] - r.a_minus * self.y[:, :, None] * pre[:, None, :]
        m = self._third_factor()
        B = pre.shape[0]
        if r.rule == "spore":
            decay_e = math.exp(-dt / r.tau_e)
            if self.e is not None:
                self.e.mul_(decay_e).add_(self.w[None] * pair)
                grad = r.c_reward * torch.einsum("b,boi->oi", m, self.e) / B
            else:
                grad = 0.0
            drift = (r.prior_mean - self.theta) / r.prior_std ** 2 + grad
            xi = torch.randn(self.theta.shape, generator=self.noise, dtype=self.theta.dtype)
            self.theta.add_(r.beta * dt * drift + math.sqrt(2 * r.beta * r.temperature * dt) * xi)
            self.theta.clamp_(r.theta_min, r.theta_max)
            self._weights_from_theta()
        else:
            if r.third_factor == "none":
                dw = pair.mean(0)
            elif r.third_factor == "reward":
                self.e.mul_(math.exp(-dt / r.tau_e)).add_(pair)
                dw = r.lr * torch.einsum("b,boi->oi", m, self.e) / B
            else:  # error: presynaptic eligibility times the post neuron's error
                self.e.mul_(math.exp(-dt / r.tau_e)).add_(pre)
                dw = r.lr * (m.T @ self.e) / B
            self.w.add_(dw)
            if r.decay:
                self.w.mul_(1.0 - r.decay)
            self.w.clamp_(r.w_min, r.w_max)
            if self.mask is not None:
                self.w.mul_(self.mask)
        self.x.add_(pre)
        self.y.add_(post)
        self.steps += 1
        if r.fan_in and self.steps % r.rewire_every == 0:
            self._rewire()

    def _third_factor(self) -> torch.Tensor:
        r = self.rule
        m = self.modulator
        if r.third_factor == "reward" and r.tau_baseline > 0:
            rel = m - self.baseline
            self.baseline.add_((self.dt / r.tau_baseline) * (m - self.baseline))
            return rel
        return m

    def _weights_from_theta(self) -> None:
        r = self.rule
        w = torch.where(self.theta > 0, torch.exp(self.theta - r.theta0), torch.zeros_like(self.theta))
        if self.mask is not None:
            w = w * self.mask
        self.w.copy_(w)

    def _rewire(self) -> None:
        """Prune |w| < prune_below (SPORE: θ ≤ 0) and re-create each on a free random label (fan-in kept)."""
        r = self.rule
        mask = self.mask.numpy()
        if r.rule == "spore":
            dead = mask & ~(self.theta.numpy() > 0)
        else:
            dead = mask & (np.abs(self.w.numpy()) < r.prune_below)
        rows = np.flatnonzero(dead.any(axis=1))
        if rows.size == 0:
            return
        mask = mask.copy()
        new_w = torch.zeros((), dtype=self.w.dtype) + r.w_new
        for j in rows:
            gone = np.flatnonzero(dead[j])
            free = np.flatnonzero(~mask[j])
            k = min(gone.size, free.size)
            new = self.rng.choice(free, size=k, replace=False) if k else np.empty(0, int)
            src = gone[:k]
            mask[j, src] = False
            mask[j, new] = True
            targets = np.concatenate([new, gone[k:]])   # labels kept when no free one was left
            self.w[j, src] = 0.0
            self.w[j, targets] = new_w
            if self.e is not None and self.e.dim() == 3:
                self.e[:, j, src] = 0.0
                self.e[:, j, targets] = 0.0
            if r.rule == "spore":
                self.theta[j, src] = 0.0
                self.theta[j, targets] = r.theta0 + math.log(r.w_new)
            self.rewired += gone.size
        self.mask = torch.as_tensor(mask)

    # ---------------------------------------------------------------- reading
    def labels(self) -> np.ndarray:
        """(out, fan_in) presynaptic labels of each post neuron, sorted (rewiring only)."""
        m = self.mask.numpy()
        return np.stack([np.flatnonzero(row) for row in m]) if m.shape[0] else np.zeros((0, self.rule.fan_in), int)
