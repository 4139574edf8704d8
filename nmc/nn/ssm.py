"""Diagonal state-space layers (S4D / S5 style), trainable, with step-by-step inference.

:class:`DiagSSM` is one MIMO diagonal SSM with P modes on H channels (S5's
layout: Λ (P,), B (P, H), C (H, P), D (H,), a learnable log step log Δ per
mode). Its equations are :mod:`nmc.ssm_math` (ZOH or bilinear discretisation,
the step update and the readout), called here with ``xp=torch``; the output
stage is one of :data:`OUTPUTS`:

* ``none`` — y itself; ``gelu`` / ``relu`` — elementwise;
* ``delta`` — graded events that fire only on change: a channel emits when
  |y − ŷ| > θ (ŷ = its value at its last event, initially 0), the layer
  outputs the held value ŷ (what the receiver of the events reconstructs);
  ``activity`` is the fraction of (step, channel) pairs that fired;
* ``lif`` — :class:`nmc.nn.LIF` driven by y (its keyword arguments in ``lif``);
  the layer outputs spikes.

Two paths, equal within float tolerance (tests/nn/test_ssm.py states the bound):

* ``scan(u, state=None, tau=None) -> (y, state)`` and ``forward(u, tau=None)``:
  u (T, B, H) → y (T, B, H) with the linear recurrence computed by the
  parallel scan of :mod:`nmc.nn.scan` (the ``delta``/``lif`` output stages are
  sequential but elementwise);
* ``step(u_t, state=None, tau=None) -> (y_t, state)``: one tick (or one event).

State is explicit: a dict with ``x`` (B, P) (complex for complex Λ) and, per
output stage, ``held`` (B, H) or ``v`` (B, H); ``None`` means all zeros.

Time: by default every step is one tick (Δ_k = Δ). Asynchronous input passes
``tau``: each event's own interval since the previous event, in ticks, shape
(T, B) (or (T,)) to ``scan`` and (B,) (or a scalar) to ``step``; step k is
then discretised with Δ_k = Δ·τ_k (:func:`nmc.ssm_math.discretize` per event).
With all τ_k = 1 both modes give the same numbers. Under ZOH the input of
event k is held over the interval before it, so an event with τ_k = 0 changes
nothing (γ = 0): give events that share a timestamp as one input vector.

Parameters: Re Λ = −exp(``lam_log_neg_re``) (stays negative, so |Λ̄| < 1 under
ZOH and bilinear), Im Λ = ``lam_im`` (complex only); B and C as real and
imaginary parts (``b_re``, ``b_im``, ``c_re``, ``c_im``); ``d``; ``log_step``.
Initialisation: ``init`` S4D-Lin/S4D-Inv (complex) or S4D-Real (real),
log Δ uniform in [log dt_min, log dt_max] (S4D/S5), B ~ N(0, 1/H), C ~ N(0, 1/P)
(variance split between real and imaginary parts), D ~ N(0, 1).

:func:`nmc.save` writes all three layers (and :class:`nmc.nn.StochasticSpikingSSM`)
with their graph of ``nmc.DiagSSM`` / ``nmc.LayerNorm`` nodes
(:mod:`nmc.frontends.torch.ssm`; none of the latter for ``norm="none"``);
``nmc compile`` reads it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nmc import ssm_math as M

from .neurons import LIF
from .scan import linear_scan

OUTPUTS = ("none", "gelu", "relu", "delta", "lif")


class _DiagModes(nn.Module):
    """Eigenvalues Λ (shape ``modes``) and log step (shape ``step_shape``, broadcast over Λ)."""

    def _init_modes(self, modes: tuple[int, ...], step_shape: tuple[int, ...], *, complex: bool, init: str | None,
                    method: str, dt_min: float, dt_max: float) -> None:
        if method not in M.METHODS:
            raise ValueError(f"unknown discretisation {method!r}; use one of {M.METHODS}")
        init = init or ("lin" if complex else "real")
        lam = M.init_eigenvalues(init, modes[-1])
        if complex != bool(np.iscomplexobj(lam)):
            raise ValueError(f"init {init!r} gives {'complex' if np.iscomplexobj(lam) else 'real'} eigenvalues "
                             f"but complex={complex}; use init 'lin' or 'inv' with complex=True, 'real' with complex=False")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        lam = np.broadcast_to(lam, modes)
        self.complex, self.init, self.method = bool(complex), init, method
        self.lam_log_neg_re = nn.Parameter(torch.tensor(np.log(-lam.real), dtype=torch.float32))
        if complex:
            self.lam_im = nn.Parameter(torch.tensor(lam.imag, dtype=torch.float32))
        lo, hi = math.log(dt_min), math.log(dt_max)
        self.log_step = nn.Parameter(torch.rand(step_shape) * (hi - lo) + lo)

    def _pair(self, name: str, shape, std: float) -> None:
        """A real or complex parameter matrix as ``{name}_re`` (+ ``{name}_im``), entries of total variance std²."""
        s = std / math.sqrt(2) if self.complex else std
        setattr(self, f"{name}_re", nn.Parameter(torch.randn(shape) * s))
        if self.complex:
            setattr(self, f"{name}_im", nn.Parameter(torch.randn(shape) * s))

    def _matrix(self, name: str) -> torch.Tensor:
        re = getattr(self, f"{name}_re")
        return torch.complex(re, getattr(self, f"{name}_im")) if self.complex else re

    def eigenvalues(self) -> torch.Tensor:
        """Λ (continuous time)."""
        re = -torch.exp(self.lam_log_neg_re)
        return torch.complex(re, self.lam_im) if self.complex else re

    def step_size(self) -> torch.Tensor:
        """Δ = exp(log_step), per mode/channel."""
        return torch.exp(self.log_step)

    def discretized(self, tau=None):
        """(Λ̄, γ) for one tick (tau None) or per event (Δ_k = Δ·τ_k, tau of any leading shape)."""
        step = self.step_size()
        if tau is not None:
            tau = torch.as_tensor(tau, dtype=step.dtype, device=step.device)
            step = step * tau.reshape(tau.shape + (1,) * step.dim())
        return M.discretize(self.eigenvalues(), step, self.method, xp=torch)

    @staticmethod
    def _check_tau(tau, lead: tuple[int, ...], what: str):
        if tau is None:
            return None
        tau = torch.as_tensor(tau, dtype=torch.float32)
        if tau.dim() and tuple(tau.shape) != lead[: tau.dim()]:
            raise ValueError(f"tau has shape {tuple(tau.shape)}; {what} needs {lead} or a prefix of it")
        if torch.any(tau < 0) or not torch.all(torch.isfinite(tau)):
            raise ValueError("tau (per-event intervals in ticks) must be finite and >= 0")
        while tau.dim() and tau.dim() < len(lead):     # (T,) → (T, B): one interval for the whole batch
            tau = tau.unsqueeze(-1).expand(*tau.shape, lead[tau.dim()])
        return tau


class DiagSSM(_DiagModes):
    """Diagonal SSM layer on ``d_model`` channels with ``state_size`` modes (see the module docstring)."""

    def __init__(self, d_model: int, state_size: int = 64, *, complex: bool = True, init: str | None = None,
                 method: str = "zoh", dt_min: float = 1e-3, dt_max: float = 1e-1, output: str = "gelu",
                 theta: float = 0.05, lif: dict | None = None):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
        self.d_model, self.state_size, self.output = int(d_model), int(state_size), output
        H, P = self.d_model, self.state_size
        self._init_modes((P,), (P,), complex=complex, init=init, method=method, dt_min=dt_min, dt_max=dt_max)
        self._pair("b", (P, H), 1 / math.sqrt(H))
        self._pair("c", (H, P), 1 / math.sqrt(P))
        self.d = nn.Parameter(torch.randn(H))
        if output == "delta" and not theta > 0:
            raise ValueError(f"the delta output needs theta > 0, got {theta}")
        self.theta = float(theta)
        self.lif = LIF(H, **(lif or {})) if output == "lif" else None
        self.activity: torch.Tensor | None = None
        self._config = {"d_model": H, "state_size": P, "complex": bool(complex), "init": self.init, "method": method,
                        "dt_min": float(dt_min), "dt_max": float(dt_max), "output": output, "theta": self.theta,
                        "lif": dict(lif or {}) if output == "lif" else None}

    def config(self) -> dict:
        """Constructor arguments (for nmc.save / nmc.nn.load; the weights are the state_dict)."""
        return dict(self._config)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, state_size={self.state_size}, complex={self.complex}, init={self.init}, "
                f"method={self.method}, output={self.output}")

    def _out_step(self, y, state):
        """Stateful output stages (delta, lif) for one step: (o, new entries of the state)."""
        if self.output == "delta":
            held = state.get("held") if state else None
            _, held, fired = M.delta_encode(y, torch.zeros_like(y) if held is None else held, self.theta, xp=torch)
            return held, {"held": held}, fired
        v = state.get("v") if state else None
        self.lif.state = {} if v is None else {"v": v}
        s = self.lif(y)
        return s, {"v": self.lif.state["v"]}, s

    def _out_elementwise(self, y):
        if self.output == "gelu":
            return F.gelu(y)
        if self.output == "relu":
            return F.relu(y)
        return y

    def scan(self, u: torch.Tensor, state: dict | None = None, tau=None) -> tuple[torch.Tensor, dict]:
        """Parallel path: u (T, B, H) → (y (T, B, H), state after the last step)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"DiagSSM.scan expects a whole sequence (T, B, {self.d_model}), got {tuple(u.shape)} "
                             f"(use step() for one step)")
        tau = self._check_tau(tau, tuple(u.shape[:2]), "scan")
        lam_bar, gamma = self.discretized(tau)
        x = linear_scan(lam_bar, gamma * M.project(u, self._matrix("b")), None if state is None else state.get("x"))
        y = M.readout(x, self._matrix("c"), self.d, u)
        new = {"x": x[-1]}
        if self.output in ("delta", "lif"):
            outs, fired = [], []
            st = state
            for t in range(y.shape[0]):
                o, extra, f = self._out_step(y[t], st)
                st = extra
                outs.append(o)
                fired.append(f)
            self.activity = torch.stack(fired).float().mean().detach()
            return torch.stack(outs), {**new, **st}
        return self._out_elementwise(y), new

    def step(self, u_t: torch.Tensor, state: dict | None = None, tau=None) -> tuple[torch.Tensor, dict]:
        """One step: u_t (B, H) → (y_t (B, H), new state)."""
        tau = self._check_tau(tau, tuple(u_t.shape[:1]), "step")
        lam_bar, gamma = self.discretized(tau)
        x_prev = state.get("x") if state else None
        if x_prev is None:
            x_prev = torch.zeros(u_t.shape[:-1] + (self.state_size,), dtype=lam_bar.dtype, device=u_t.device)
        x = M.ssm_step(x_prev, M.project(u_t, self._matrix("b")), lam_bar, gamma)
        y = M.readout(x, self._matrix("c"), self.d, u_t)
        if self.output in ("delta", "lif"):
            o, extra, _ = self._out_step(y, state)
            return o, {"x": x, **extra}
        return self._out_elementwise(y), {"x": x}

    def forward(self, u: torch.Tensor, tau=None) -> torch.Tensor:
        """u (T, B, H) → y (T, B, H) from the zero state (parallel path)."""
        return self.scan(u, None, tau)[0]


NORMS = ("layer", "none")


def _norm(norm: str, d_model: int) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
    return nn.LayerNorm(d_model) if norm == "layer" else nn.Identity()


def _options(m) -> dict:
    """The block options that differ from their defaults (a default model's saved spec keeps its bytes)."""
    opts = {"norm": m.norm_kind, "residual": m.residual, "bias": m.bias}
    return {k: v for k, v in opts.items() if v != {"norm": "layer", "residual": True, "bias": True}[k]}


class SSMBlock(nn.Module):
    """One residual block of the S4D/S5 recipe (pre-norm): ``x + Dropout(Linear(DiagSSM(LayerNorm(x))))``.

    LayerNorm normalises each step over the channels, so the block is causal
    and its step path equals its parallel path (BatchNorm would not be).

    Options for chips without a normalisation unit or summed (residual) inputs into an SSM
    (loihi2: one source per SSM, no bias into it): ``norm="none"`` drops the LayerNorm
    (``self.norm`` is the identity), ``residual=False`` gives ``Dropout(Linear(DiagSSM(x)))``
    and ``bias=False`` builds the mixing Linear without a bias.
    """

    def __init__(self, d_model: int, state_size: int = 64, *, dropout: float = 0.0, norm: str = "layer",
                 residual: bool = True, bias: bool = True, **ssm_kw):
        super().__init__()
        self.norm = _norm(norm, d_model)
        self.ssm = DiagSSM(d_model, state_size, **ssm_kw)
        self.mix = nn.Linear(d_model, d_model, bias=bool(bias))
        self.drop = nn.Dropout(dropout)
        self.dropout = float(dropout)
        self.norm_kind, self.residual, self.bias = norm, bool(residual), bool(bias)

    def config(self) -> dict:
        """Constructor arguments (for nmc.save / nmc.nn.load)."""
        c = self.ssm.config()
        return {"dropout": self.dropout, **_options(self), **c}

    def _out(self, x, y):
        y = self.drop(self.mix(y))
        return x + y if self.residual else y

    def scan(self, x, state=None, tau=None):
        y, st = self.ssm.scan(self.norm(x), state, tau)
        return self._out(x, y), st

    def step(self, x_t, state=None, tau=None):
        y, st = self.ssm.step(self.norm(x_t), state, tau)
        return self._out(x_t, y), st

    def forward(self, x, tau=None):
        return self.scan(x, None, tau)[0]


class DiagSSMStack(nn.Module):
    """Per-step network: ``Linear(d_in → d_model)`` → ``n_layers`` × :class:`SSMBlock` → LayerNorm →
    ``Linear(d_model → d_out)``; (T, B, d_in) → (T, B, d_out). Pool over time yourself (mean or last step)
    for sequence classification. ``ssm_kw`` go to every :class:`DiagSSM`.

    ``norm``, ``residual`` and ``bias`` are :class:`SSMBlock`'s options, for every block; ``norm="none"``
    also drops the final LayerNorm and ``bias=False`` the encoder's bias (the decoder keeps its bias).
    ``norm="none", residual=False, bias=False`` with a ``none``/``relu``/``delta`` output is the stack
    loihi2 maps: Linear → DiagSSM → Linear → DiagSSM … with one source per SSM, the decoder a host readout.
    """

    def __init__(self, d_in: int, d_model: int, d_out: int, *, n_layers: int = 2, state_size: int = 64,
                 dropout: float = 0.0, norm: str = "layer", residual: bool = True, bias: bool = True, **ssm_kw):
        super().__init__()
        self.encoder = nn.Linear(d_in, d_model, bias=bool(bias))
        self.blocks = nn.ModuleList(SSMBlock(d_model, state_size, dropout=dropout, norm=norm, residual=residual,
                                             bias=bias, **ssm_kw) for _ in range(n_layers))
        self.norm = _norm(norm, d_model)
        self.decoder = nn.Linear(d_model, d_out)
        self.n_layers, self.dropout = int(n_layers), float(dropout)
        self.norm_kind, self.residual, self.bias = norm, bool(residual), bool(bias)

    def config(self) -> dict:
        """Constructor arguments (for nmc.save / nmc.nn.load)."""
        c = self.blocks[0].ssm.config() if len(self.blocks) else {}
        c = {k: v for k, v in c.items() if k != "d_model"}
        return {"d_in": self.encoder.in_features, "d_model": self.encoder.out_features,
                "d_out": self.decoder.out_features, "n_layers": self.n_layers, "dropout": self.dropout,
                **_options(self), **c}

    def scan(self, x, state: list | None = None, tau=None):
        h = self.encoder(x)
        states = []
        for i, blk in enumerate(self.blocks):
            h, st = blk.scan(h, None if state is None else state[i], tau)
            states.append(st)
        return self.decoder(self.norm(h)), states

    def step(self, x_t, state: list | None = None, tau=None):
        h = self.encoder(x_t)
        states = []
        for i, blk in enumerate(self.blocks):
            h, st = blk.step(h, None if state is None else state[i], tau)
            states.append(st)
        return self.decoder(self.norm(h)), states

    def forward(self, x, tau=None):
        return self.scan(x, None, tau)[0]

    def activity(self) -> list[float]:
        """Per block: fraction of (step, channel) that emitted in the last scan (delta/lif outputs), else nan."""
        return [float("nan") if b.ssm.activity is None else float(b.ssm.activity) for b in self.blocks]
