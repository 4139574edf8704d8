"""Reference-simulator steps of the SSM nodes (:mod:`nmc.nodes_ssm`), registered as their
``("reference", "step")`` hooks; imported by :mod:`nmc.reference`.

Equations: :mod:`nmc.ssm_math` with ``xp=torch`` (the same expressions
:mod:`nmc.nn.ssm` trains with), complex state in the complex dtype matching the
simulator's float dtype. A step takes an optional ``tau`` (B,): each batch
element's interval in ticks for this step; ``None`` is one tick. Only nodes
with ``time == "event"`` use it (:func:`nmc.reference_ssm.run_events`); a
``"tick"`` node ignores it, as a chip would.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nmc import ssm_math as M
from nmc.nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron, hash_uniform
from nmc.semantics import register_hook

from .reference_steps import Step


def _complex_dtype(dtype):
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class _SSMStep(Step):
    """Shared: parameters as tensors (complex where the node's are), discretisation per step."""

    event_time = True   # accepts a per-step tau (nmc.reference_ssm.run_events)

    def __init__(self, sn):
        super().__init__(sn)
        n = sn.node
        self.cdtype = _complex_dtype(sn.dtype)
        for k in ("lam", "b", "c"):
            a = getattr(n, k)
            self.p[k] = torch.as_tensor(a, dtype=self.cdtype if np.iscomplexobj(a) else sn.dtype)
        # Δ broadcast over Λ's last axis: (P,) for DiagSSM, (H, 1) against Λ (H, N) per neuron
        self.p["step"] = self._param(n.step if n.lam.ndim == 1 else n.step[:, None])
        self.p["d"] = self._param(n.d)
        self.xdtype = self.cdtype if n.complex else sn.dtype
        self._fixed = M.discretize(self.p["lam"], self.p["step"], n.method, xp=torch)

    def discretized(self, tau):
        """(Λ̄, γ) for this step: one tick, or Δ·τ per batch element in event mode."""
        if tau is None or self.sn.node.time != "event":
            return self._fixed
        tau = torch.as_tensor(tau, dtype=self.sn.dtype).reshape((-1,) + (1,) * self.p["step"].dim())
        return M.discretize(self.p["lam"], self.p["step"] * tau, self.sn.node.method, xp=torch)


@register_hook("reference", "step", DiagSSM)
class DiagSSMStep(_SSMStep):
    """:class:`nmc.nodes_ssm.DiagSSM`: x, y by ssm_math, then the output stage; records the
    delta output's fired flags as ``spikes``."""

    def __init__(self, sn):
        super().__init__(sn)
        self.p["theta"] = self._param(sn.node.theta)

    def init_state(self, batch):
        n = self.sn.node
        return {"x": torch.zeros((batch, n.modes), dtype=self.xdtype),
                "held": torch.zeros((batch, n.channels), dtype=self.sn.dtype)}

    def step(self, u, st, tau=None):
        n, p = self.sn.node, self.p
        u = u.reshape(u.shape[0], -1)
        lam_bar, gamma = self.discretized(tau)
        x = M.ssm_step(st["x"], M.project(u, p["b"]), lam_bar, gamma)
        y = M.readout(x, p["c"], p["d"], u)
        rec: dict = {}
        held = st["held"]
        if n.output == "gelu":
            y = F.gelu(y)
        elif n.output == "relu":
            y = F.relu(y)
        elif n.output == "delta":
            _, held, fired = M.delta_encode(y, held, p["theta"], xp=torch)
            y = held
            rec["spikes"] = fired.to(self.sn.dtype)
        return y, {"x": x, "held": held}, rec


@register_hook("reference", "step", StochasticSSMNeuron)
class StochasticSSMStep(_SSMStep):
    """:class:`nmc.nodes_ssm.StochasticSSMNeuron`: per-neuron SSM, spike [ξ < σ(y)] with ξ from
    :func:`nmc.nodes_ssm.hash_uniform` (step counter k, j = b·H + h); records ``spikes`` and ``p``."""

    def __init__(self, sn):
        super().__init__(sn)
        self.H = int(sn.node.lam.shape[0])
        self._j = None

    def init_state(self, batch):
        n = self.sn.node
        self._j = (np.arange(batch, dtype=np.uint64)[:, None] * self.H + np.arange(self.H, dtype=np.uint64)[None])
        return {"x": torch.zeros((batch, *n.lam.shape), dtype=self.xdtype), "k": 0}

    def step(self, u, st, tau=None):
        n, p = self.sn.node, self.p
        u = u.reshape(u.shape[0], -1)
        lam_bar, gamma = self.discretized(tau)
        x = M.ssm_step(st["x"], M.project_diag(u, p["b"]), lam_bar, gamma)
        y = M.readout_diag(x, p["c"], p["d"], u)
        k = st["k"]
        j = self._j if self._j is not None and self._j.shape[0] == u.shape[0] else \
            np.arange(u.shape[0] * self.H, dtype=np.uint64).reshape(u.shape[0], self.H)
        xi = torch.as_tensor(hash_uniform(n.seed, np.uint32(k % 2 ** 32), (j % 2 ** 32).astype(np.uint32)),
                             dtype=torch.float64)
        prob = torch.sigmoid(y.to(torch.float64))
        s = (xi < prob).to(self.sn.dtype)
        return s, {"x": x, "k": k + 1}, {"spikes": s, "p": prob.to(self.sn.dtype)}


@register_hook("reference", "step", LayerNorm)
class LayerNormStep(Step):
    def __init__(self, sn):
        super().__init__(sn)
        self.p["w"] = self._param(sn.node.weight)
        self.p["b"] = self._param(sn.node.bias)

    def step(self, x, st):
        x = x.reshape(x.shape[0], -1)
        return F.layer_norm(x, (x.shape[-1],), self.p["w"], self.p["b"], self.sn.node.eps), st, {}
