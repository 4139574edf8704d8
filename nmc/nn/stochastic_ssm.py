"""Stochastic spiking SSM neurons: an N-dimensional learnable state per neuron, a Bernoulli spike.

Each of the ``size`` neurons h is its own single-input diagonal SSM (the
per-neuron form of :mod:`nmc.ssm_math`): Λ, B, C of shape (H, N), D (H,),
log Δ per neuron::

    x_{k,h} = Λ̄_h ⊙ x_{k−1,h} + γ_h ⊙ B_h·u_{k,h}          (N-dimensional state, x_0 = 0)
    y_{k,h} = ρ·Re(Σ_n C_hn·x_{k,hn}) + D_h·u_{k,h}
    p_{k,h} = σ(y_{k,h});   s_{k,h} = [ξ_{k,h} < p_{k,h}]   ξ uniform in [0, 1)

The spike does not feed back into the state, so the recurrence is linear and
trains with the parallel scan (:mod:`nmc.nn.scan`); ``step`` runs one tick.
Gradient of the spike (``gradient``): ``straight_through`` treats s as p
(∂s/∂y = σ'(y)); ``surrogate`` uses ∂s/∂y = 1/(1 + slope·|y|)² (the fast
sigmoid of :class:`nmc.nn.surrogate`, centred where p = ½).

Randomness is seeded: the layer owns a CPU ``torch.Generator`` seeded with
``seed`` (``reseed(seed)`` restarts it); ``scan``/``step``/``forward`` take a
``generator=`` to use another one, or ``noise=`` to give ξ explicitly. ξ is
drawn in (T, B, H) order, one step after another, so a seeded scan and the
same seed's step loop draw the same ξ.

``tau`` (per-event Δt in ticks) works as in :class:`nmc.nn.DiagSSM`. After a
call, ``prob`` holds p and ``activity`` the mean spike rate.
Defaults: real Λ (S4D-Real), B = 1, C ~ N(0, 1/N), D = 1 (the input reaches y with gain 1).
:func:`nmc.save` writes it with its ``nmc.StochasticSSMNeuron`` node, which draws ξ from the
counter-based generator :func:`nmc.nodes_ssm.hash_uniform` (every target draws the same); pass
``noise=nmc.nodes_ssm.noise(seed, T, B, H)`` here to draw those ξ in torch too.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nmc import ssm_math as M

from .scan import linear_scan
from .ssm import _DiagModes

GRADIENTS = ("straight_through", "surrogate")


class _BernoulliSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, xi, kind, slope):
        p = torch.sigmoid(y)
        ctx.save_for_backward(y, p)
        ctx.kind, ctx.slope = kind, slope
        return (xi < p).to(y.dtype)

    @staticmethod
    def backward(ctx, g):
        y, p = ctx.saved_tensors
        d = p * (1 - p) if ctx.kind == "straight_through" else 1 / (1 + ctx.slope * y.abs()) ** 2
        return g * d, None, None, None


class StochasticSpikingSSM(_DiagModes):
    """``size`` stochastic spiking neurons with ``state_size``-dimensional SSM states (module docstring)."""

    def __init__(self, size: int, state_size: int = 4, *, complex: bool = False, init: str | None = None,
                 method: str = "zoh", dt_min: float = 1e-2, dt_max: float = 1.0,
                 gradient: str = "straight_through", slope: float = 5.0, seed: int = 0):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown spike gradient {gradient!r}; use one of {GRADIENTS}")
        self.size, self.state_size = int(size), int(state_size)
        H, N = self.size, self.state_size
        self._init_modes((H, N), (H, 1), complex=complex, init=init, method=method, dt_min=dt_min, dt_max=dt_max)
        self.b_re = nn.Parameter(torch.ones(H, N))
        if self.complex:
            self.b_im = nn.Parameter(torch.zeros(H, N))
        self._pair("c", (H, N), 1 / math.sqrt(N))
        self.d = nn.Parameter(torch.ones(H))
        self.gradient, self.slope = gradient, float(slope)
        self._config = {"size": H, "state_size": N, "complex": bool(complex), "init": self.init, "method": method,
                        "dt_min": float(dt_min), "dt_max": float(dt_max), "gradient": gradient, "slope": self.slope}
        self.generator = torch.Generator(device="cpu")
        self.reseed(seed)
        self.prob: torch.Tensor | None = None
        self.activity: torch.Tensor | None = None

    def config(self) -> dict:
        """Constructor arguments (for nmc.save / nmc.nn.load; the weights are the state_dict)."""
        return {**self._config, "seed": self.seed}

    def reseed(self, seed: int) -> None:
        """Restart the layer's generator at ``seed``."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def extra_repr(self) -> str:
        return (f"size={self.size}, state_size={self.state_size}, complex={self.complex}, init={self.init}, "
                f"method={self.method}, gradient={self.gradient}, seed={self.seed}")

    def _fire(self, y, noise, generator):
        if noise is None:
            noise = torch.rand(y.shape, generator=generator or self.generator, dtype=torch.float32)
        noise = noise.to(device=y.device, dtype=y.dtype)
        if noise.shape != y.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, the spikes {tuple(y.shape)}")
        s = _BernoulliSpike.apply(y, noise, self.gradient, self.slope)
        self.prob = torch.sigmoid(y).detach()
        self.activity = s.detach().mean()
        return s

    def pre_activation(self, u: torch.Tensor, state: dict | None = None, tau=None):
        """y (T, B, H) of the parallel path and the last state x (B, H, N)."""
        if u.dim() != 3 or u.shape[-1] != self.size:
            raise ValueError(f"StochasticSpikingSSM expects a whole sequence (T, B, {self.size}), got {tuple(u.shape)} "
                             f"(use step() for one step)")
        tau = self._check_tau(tau, tuple(u.shape[:2]), "scan")
        lam_bar, gamma = self.discretized(tau)
        x = linear_scan(lam_bar, gamma * M.project_diag(u, self._matrix("b")), None if state is None else state.get("x"))
        return M.readout_diag(x, self._matrix("c"), self.d, u), x[-1]

    def scan(self, u: torch.Tensor, state: dict | None = None, tau=None, *, generator=None, noise=None):
        """Parallel path: u (T, B, H) → (spikes (T, B, H), state)."""
        y, x = self.pre_activation(u, state, tau)
        return self._fire(y, noise, generator), {"x": x}

    def step(self, u_t: torch.Tensor, state: dict | None = None, tau=None, *, generator=None, noise=None):
        """One tick: u_t (B, H) → (spikes (B, H), state)."""
        tau = self._check_tau(tau, tuple(u_t.shape[:1]), "step")
        lam_bar, gamma = self.discretized(tau)
        x = state.get("x") if state else None
        if x is None:
            x = torch.zeros(u_t.shape + (self.state_size,), dtype=lam_bar.dtype, device=u_t.device)
        x = M.ssm_step(x, M.project_diag(u_t, self._matrix("b")), lam_bar, gamma)
        y = M.readout_diag(x, self._matrix("c"), self.d, u_t)
        return self._fire(y, noise, generator), {"x": x}

    def forward(self, u: torch.Tensor, tau=None, *, generator=None) -> torch.Tensor:
        """u (T, B, H) → spikes (T, B, H) from the zero state."""
        return self.scan(u, None, tau, generator=generator)[0]
