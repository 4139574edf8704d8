"""Diagonal state-space model (SSM) equations, framework-free.

Every function here uses only array operators (``+ − * / @``, ``.real``,
``.imag``) and the ``exp`` / ``expm1`` / ``where`` / ``abs`` of the namespace ``xp`` it is
given (``numpy`` by default; :mod:`nmc.nn.ssm` passes ``torch`` so training
runs the same expressions with autograd). The reference simulator and the
backends reuse these exact equations; keep them the single statement of the
semantics.

Continuous time, one diagonal system with P modes, input u (H,), output y::

    x'(t) = Λ ⊙ x(t) + B·u(t)          Λ: (P,) real or complex, B: (P, H)
    y(t)  = ρ·Re(C·x(t)) + D ⊙ u(t)     C: (H_out, P),  D: (H_out,) (H_out = H)

For a complex Λ only one mode of each conjugate pair is stored (S4D/S5's
conjugate symmetry), so the readout doubles the real part: ρ = 2 for complex
Λ, ρ = 1 (and Re a no-op) for real Λ.

Discretisation with step Δ > 0 (per mode, broadcast over Λ), ``method``:

* ``zoh`` (zero-order hold on u over the step; exact for piecewise-constant u)::

      Λ̄ = exp(Δ·Λ)              B̄ = (exp(Δ·Λ) − 1)/Λ ⊙ B      (computed as expm1(Δ·Λ)/Λ)

* ``bilinear`` (Tustin)::

      Λ̄ = (1 + Δ·Λ/2)/(1 − Δ·Λ/2)      B̄ = Δ/(1 − Δ·Λ/2) ⊙ B

:func:`discretize` returns (Λ̄, γ) with B̄ = γ[:, None] ⊙ B, so B itself is
never copied per step.

Discrete step k (fixed tick: Δ_k = Δ; per-event mode: Δ_k = Δ·τ_k, where τ_k
is event k's own interval since the previous event in ticks)::

    x_k = Λ̄(Δ_k) ⊙ x_{k−1} + γ(Δ_k) ⊙ (B·u_k)          x_0 = 0
    y_k = ρ·Re(C·x_k) + D ⊙ u_k

A complex product is written on real and imaginary parts where it meets a
real array (``B·u = B.real·u + i·B.imag·u``; ``Re(C·x) = C.real·x.real −
C.imag·x.imag``): the same form a backend uses for a 2×2 real rotation block.

Outputs after the linear readout (:mod:`nmc.nn.ssm`): GELU/ReLU; a **delta
threshold** (graded events that fire only on change, :func:`delta_encode`);
or a spiking neuron. The stochastic spiking SSM neuron (:func:`bernoulli_spike`)
fires ``s_k = [ξ_k < σ(y_k)]`` with ξ_k uniform in [0, 1).

Initialisations (Gu et al. 2022, "On the parameterization and initialization
of diagonal state space models", N = 2·P state size, n = 0 … P−1):
S4D-Lin Λ_n = −½ + iπn; S4D-Inv Λ_n = −½ + i(N/π)(N/(2n+1) − 1);
S4D-Real (real Λ) Λ_n = −(n + 1).
"""
from __future__ import annotations

import math

import numpy as np

METHODS = ("zoh", "bilinear")
INITS = ("lin", "inv", "real")


def s4d_lin(modes: int) -> np.ndarray:
    """S4D-Lin eigenvalues Λ_n = −½ + iπn, n = 0 … modes−1 (complex128)."""
    n = np.arange(modes, dtype=np.float64)
    return -0.5 + 1j * math.pi * n


def s4d_inv(modes: int) -> np.ndarray:
    """S4D-Inv eigenvalues Λ_n = −½ + i(N/π)(N/(2n+1) − 1), N = 2·modes (complex128)."""
    n = np.arange(modes, dtype=np.float64)
    N = 2.0 * modes
    return -0.5 + 1j * (N / math.pi) * (N / (2 * n + 1) - 1)


def s4d_real(modes: int) -> np.ndarray:
    """S4D-Real eigenvalues Λ_n = −(n + 1) (float64)."""
    return -(np.arange(modes, dtype=np.float64) + 1)


def init_eigenvalues(init: str, modes: int) -> np.ndarray:
    """Λ for ``init`` in :data:`INITS` (``lin``/``inv`` complex, ``real`` real)."""
    if init not in INITS:
        raise ValueError(f"unknown SSM init {init!r}; use one of {INITS}")
    return {"lin": s4d_lin, "inv": s4d_inv, "real": s4d_real}[init](modes)


def is_complex(a) -> bool:
    """True for a complex numpy array or torch tensor."""
    f = getattr(a, "is_complex", None)
    return bool(f()) if callable(f) else bool(np.iscomplexobj(a))


def discretize(lam, step, method: str = "zoh", xp=np):
    """(Λ̄, γ) for eigenvalues ``lam`` and step ``step`` (broadcast): see the module docstring.

    ``step`` may carry leading dimensions (per event, per batch) that broadcast
    against ``lam``'s last dimension (the modes).
    """
    z = step * lam
    if method == "zoh":
        return xp.exp(z), xp.expm1(z) / lam     # expm1: no cancellation for small |Δ·Λ|
    if method == "bilinear":
        den = 1 - z / 2
        return (1 + z / 2) / den, step / den
    raise ValueError(f"unknown discretisation {method!r}; use one of {METHODS}")


def project(u, b):
    """B·u over the last axis of u (..., H) with B (P, H) → (..., P); complex B split into parts."""
    if is_complex(b):
        return u @ b.real.T + 1j * (u @ b.imag.T)
    return u @ b.T


def readout(x, c, d, u):
    """y = ρ·Re(C·x) + D ⊙ u for states x (..., P), C (H, P), D (H,), u (..., H)."""
    if is_complex(x):
        y = 2 * (x.real @ c.real.T - x.imag @ c.imag.T) if is_complex(c) else 2 * (x.real @ c.T)
    else:
        y = x @ c.T
    return y + d * u


def project_diag(u, b):
    """Per-neuron input: B ⊙ u for u (..., H) and B (H, N) → (..., H, N) (one SISO system per neuron)."""
    return u[..., None] * b


def readout_diag(x, c, d, u):
    """Per-neuron readout y = ρ·Re(Σ_n C ⊙ x) + D ⊙ u for x (..., H, N), C (H, N), D (H,), u (..., H)."""
    y = (x * c).real.sum(-1)
    return (2 * y if is_complex(x) else y) + d * u


def ssm_step(x, bu, lam_bar, gamma):
    """x_k = Λ̄ ⊙ x_{k−1} + γ ⊙ (B·u_k), given ``bu`` = B·u_k (:func:`project`)."""
    return lam_bar * x + gamma * bu


def delta_encode(y, held, theta, xp=np):
    """Graded events on change: fire where |y − held| > θ; returns (events, new_held, fired).

    ``events`` = y − held where fired, else 0 (what a sigma-delta link sends);
    ``new_held`` = y where fired, else ``held`` (what the receiver reconstructs).
    """
    fired = xp.abs(y - held) > theta
    events = xp.where(fired, y - held, 0 * y)
    return events, xp.where(fired, y, held), fired


def bernoulli_spike(y, xi):
    """Stochastic spike s = [ξ < σ(y)] (1.0 or 0.0) for uniform ξ in [0, 1)."""
    p = 1 / (1 + np.exp(-np.asarray(y, dtype=np.float64)))
    return (np.asarray(xi) < p).astype(np.float64)


def simulate(u, lam, b, c, d, step, method: str = "zoh", tau=None):
    """Reference run (numpy, float64, one step at a time) of the diagonal SSM.

    u: (T, ..., H) inputs; ``tau``: None (fixed tick) or (T, ...) per-event
    intervals in ticks (step k uses Δ·τ_k). Returns (y (T, ..., H), x_T).
    """
    u = np.asarray(u, dtype=np.float64)
    lam = np.asarray(lam)
    lam = lam.astype(np.complex128 if np.iscomplexobj(lam) else np.float64)
    b = np.asarray(b).astype(lam.dtype)
    c = np.asarray(c)
    c = c.astype(np.complex128 if np.iscomplexobj(c) else np.float64)
    d = np.asarray(d, dtype=np.float64)
    step = np.asarray(step, dtype=np.float64)
    x = np.zeros(u.shape[1:-1] + lam.shape, dtype=lam.dtype)
    ys = []
    for k in range(u.shape[0]):
        dk = step if tau is None else step * np.asarray(tau, np.float64)[k][..., None]
        lam_bar, gamma = discretize(lam, dk, method)
        x = ssm_step(x, project(u[k], b), lam_bar, gamma)
        ys.append(readout(x, c, d, u[k]))
    return np.stack(ys), x
