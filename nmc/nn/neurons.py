"""Trainable step-wise neuron layers whose forward pass *is* the reference semantics.

Each layer takes one timestep ``x`` of shape (B, *shape), keeps its state
inside (``reset_state()`` clears it; the batch size is taken from the first
call) and returns the layer output for that step. The update equations are
the functions of :mod:`nmc.dynamics`, the same the reference simulator runs,
so a model built from these layers gives the same numbers in training and on
the ``reference`` target (bit-for-bit in the same dtype).

Parameters are the NIR node's fields, stored as buffers (so ``state_dict`` and
``torch.export`` carry them): ``tau`` (s), ``r``, ``v_leak``, ``v_threshold``,
``v_reset``; current-based layers add ``tau_syn`` and ``w_in``. Defaults give a
unit input gain per step under Euler integration (R = τ/dt, w_in = τ_syn/dt),
snnTorch's convention, so ``LIF(beta=0.9)`` behaves like snnTorch's
``Leaky(beta=0.9, reset_delay=False)``.

Spikes use the Heaviside step forward (H(0) = 0) and a surrogate gradient
backward: ``fast_sigmoid`` (default) ∂s/∂v = 1 / (1 + slope·|v − ϑ|)², or
``triangle`` max(0, 1 − slope·|v − ϑ|).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nmc import dynamics as D

RESETS = ("zero", "subtract")
INTEGRATORS = ("euler", "exact")


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, slope, kind):
        ctx.save_for_backward(x)
        ctx.slope, ctx.kind = slope, kind
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.kind == "triangle":
            d = torch.clamp(1 - ctx.slope * x.abs(), min=0)
        else:
            d = 1 / (1 + ctx.slope * x.abs()) ** 2
        return g * d, None, None


class surrogate:
    """Spike function: Heaviside forward, surrogate gradient backward (picklable)."""

    def __init__(self, kind: str = "fast_sigmoid", slope: float = 10.0):
        if kind not in ("fast_sigmoid", "triangle"):
            raise ValueError(f"unknown surrogate {kind!r}")
        self.kind, self.slope = kind, float(slope)

    def __call__(self, x):
        return _Spike.apply(x, self.slope, self.kind)


def _vec(v, size, dtype=torch.float32) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype)
    return t.expand(size).clone() if t.dim() == 0 else t.reshape(size).clone()


class _Neuron(nn.Module):
    kind = ""

    def __init__(self, size, dt: float, integrator: str, reset: str, surrogate_kind: str, slope: float):
        super().__init__()
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}")
        self.shape = (size,) if isinstance(size, int) else tuple(size)
        self.dt, self.integrator, self.reset = float(dt), integrator, reset
        self.surrogate_kind, self.slope = surrogate_kind, float(slope)
        self.spike_fn = surrogate(surrogate_kind, slope)
        self.state: dict[str, torch.Tensor] = {}
        # the non-tensor configuration as buffers too, so state_dicts and torch.export programs carry it
        self.register_buffer("cfg_dt", torch.tensor(self.dt, dtype=torch.float64))
        self.register_buffer("cfg_reset", torch.tensor(RESETS.index(reset)))
        self.register_buffer("cfg_integrator", torch.tensor(INTEGRATORS.index(integrator)))

    def _buf(self, name, value):
        self.register_buffer(name, _vec(value, self.shape))

    def reset_state(self) -> None:
        self.state = {}

    def _get(self, key, x):
        v = self.state.get(key)
        if v is None or v.shape != x.shape:
            v = torch.zeros_like(x)
        return v

    def config(self) -> dict:
        """Constructor arguments that are not tensors (for nmc.save / nmc.nn.load)."""
        return {"size": list(self.shape), "dt": self.dt, "integrator": self.integrator, "reset": self.reset,
                "surrogate": self.surrogate_kind, "slope": self.slope}

    def extra_repr(self) -> str:
        return f"shape={self.shape}, dt={self.dt}, integrator={self.integrator}, reset={self.reset}"


class LIF(_Neuron):
    """Leaky integrate-and-fire (NIR LIF): ``τ dv/dt = (v_leak − v) + R·x``; output spikes.

    Give either ``tau`` (s) or ``beta`` (= 1 − dt/τ under Euler, e^{−dt/τ} under exact).
    """

    kind = "LIF"

    def __init__(self, size, tau=None, *, beta=None, r=None, v_leak=0.0, v_threshold=1.0, v_reset=0.0,
                 dt: float = 1e-3, integrator: str = "euler", reset: str = "subtract",
                 surrogate: str = "fast_sigmoid", slope: float = 10.0):
        super().__init__(size, dt, integrator, reset, surrogate, slope)
        tau = _tau_from(tau, beta, dt, integrator, default=5e-3)
        self._buf("tau", tau)
        self._buf("r", r if r is not None else self.tau / dt if integrator == "euler" else 1.0)
        self._buf("v_leak", v_leak)
        self._buf("v_threshold", v_threshold)
        self._buf("v_reset", v_reset)

    def forward(self, x):
        v = D.leaky(self._get("v", x), x, self.tau, self.r, self.v_leak, self.dt, self.integrator)
        s, v = D.fire(v, self.v_threshold, self.v_reset, self.reset, self.spike_fn)
        self.state = {"v": v}
        return s


class RLIF(LIF):
    """LIF with all-to-all recurrent weights: input x + W_rec·s_{t−1} (one step of delay)."""

    kind = "RLIF"

    def __init__(self, size, tau=None, **kw):
        super().__init__(size, tau, **kw)
        n = int(math.prod(self.shape))
        self.recurrent = nn.Linear(n, n, bias=False)

    def forward(self, x):
        s_prev = self._get("s", x)
        rec = (s_prev.reshape(x.shape[0], -1) @ self.recurrent.weight.T).reshape(x.shape)
        s = super().forward(x + rec)
        self.state["s"] = s
        return s


class CubaLIF(_Neuron):
    """Current-based LIF (NIR CubaLIF): ``τ_syn dI/dt = −I + w_in·x``, then the LIF membrane driven by I."""

    kind = "CubaLIF"

    def __init__(self, size, tau_mem=None, tau_syn=None, *, alpha=None, beta=None, r=None, w_in=None,
                 v_leak=0.0, v_threshold=1.0, v_reset=0.0, dt: float = 1e-3, integrator: str = "euler",
                 reset: str = "subtract", surrogate: str = "fast_sigmoid", slope: float = 10.0):
        super().__init__(size, dt, integrator, reset, surrogate, slope)
        self._buf("tau_mem", _tau_from(tau_mem, beta, dt, integrator, default=5e-3))
        self._buf("tau_syn", _tau_from(tau_syn, alpha, dt, integrator, default=2e-3))
        euler = integrator == "euler"
        self._buf("r", r if r is not None else (self.tau_mem / dt if euler else 1.0))
        self._buf("w_in", w_in if w_in is not None else (self.tau_syn / dt if euler else 1.0))
        self._buf("v_leak", v_leak)
        self._buf("v_threshold", v_threshold)
        self._buf("v_reset", v_reset)

    def forward(self, x):
        i = D.synaptic(self._get("i", x), x, self.tau_syn, self.w_in, self.dt, self.integrator)
        v = D.leaky(self._get("v", x), i, self.tau_mem, self.r, self.v_leak, self.dt, self.integrator)
        s, v = D.fire(v, self.v_threshold, self.v_reset, self.reset, self.spike_fn)
        self.state = {"v": v, "i": i}
        return s


class IF(_Neuron):
    """Integrate-and-fire (NIR IF): ``dv/dt = R·x``; output spikes. Default R = 1/dt (v += x)."""

    kind = "IF"

    def __init__(self, size, *, r=None, v_threshold=1.0, v_reset=0.0, dt: float = 1e-3, reset: str = "subtract",
                 surrogate: str = "fast_sigmoid", slope: float = 10.0):
        super().__init__(size, dt, "euler", reset, surrogate, slope)
        self._buf("r", r if r is not None else 1.0 / dt)
        self._buf("v_threshold", v_threshold)
        self._buf("v_reset", v_reset)

    def forward(self, x):
        v = D.integrate(self._get("v", x), x, self.r, self.dt)
        s, v = D.fire(v, self.v_threshold, self.v_reset, self.reset, self.spike_fn)
        self.state = {"v": v}
        return s


class LI(_Neuron):
    """Leaky integrator (NIR LI), a non-spiking readout: output the membrane v."""

    kind = "LI"

    def __init__(self, size, tau=None, *, beta=None, r=None, v_leak=0.0, dt: float = 1e-3,
                 integrator: str = "euler"):
        super().__init__(size, dt, integrator, "zero", "fast_sigmoid", 10.0)
        self._buf("tau", _tau_from(tau, beta, dt, integrator, default=5e-3))
        self._buf("r", r if r is not None else (self.tau / dt if integrator == "euler" else 1.0))
        self._buf("v_leak", v_leak)

    def forward(self, x):
        v = D.leaky(self._get("v", x), x, self.tau, self.r, self.v_leak, self.dt, self.integrator)
        self.state = {"v": v}
        return v

    def config(self) -> dict:
        return {"size": list(self.shape), "dt": self.dt, "integrator": self.integrator}


def _tau_from(tau, decay, dt, integrator, default):
    if tau is not None and decay is not None:
        raise ValueError("give either a time constant or a decay factor, not both")
    if decay is not None:
        d = torch.as_tensor(decay, dtype=torch.float64)
        if torch.any((d <= 0) | (d >= 1)):
            raise ValueError("decay factors (beta/alpha) must be in (0, 1)")
        return (dt / (1 - d)) if integrator == "euler" else (-dt / torch.log(d))
    return default if tau is None else tau


NEURON_CLASSES = {c.__name__: c for c in (LIF, RLIF, CubaLIF, IF, LI)}
