"""Discrete-time neuron dynamics shared by the reference simulator and ``nmc.nn``.

One function per update, on torch tensors, so the trainable layers of
:mod:`nmc.nn` and :mod:`nmc.reference` compute exactly the same thing (same
operations in the same order). ``dt`` is the timestep in seconds; NIR stores
continuous-time ODEs and no dt, so it is a compile option.

Integrators (``integrator``):

* ``euler`` (forward Euler, snnTorch's convention when R = τ/dt):
  ``v ← v + (dt/τ)·(v_leak − v + R·x)``
* ``exact`` (zero-order hold on the input over one step):
  ``v ← v_leak + (v − v_leak)·e^{−dt/τ} + R·x·(1 − e^{−dt/τ})``

Current-based neurons (CubaLIF, CubaLI) first update the synaptic current with
this step's input, then the membrane with the **new** current
(``I_t = I_{t−1} + (dt/τ_syn)(−I_{t−1} + w_in·x_t)``; ``v_t`` uses ``I_t``), so
an input spike reaches the membrane in the same step (snnTorch's Synaptic).

Spiking: ``s = H(v − v_threshold)`` with H(0) = 0 (strictly above threshold
fires). Reset after the spike, in the same step: ``zero`` → ``v = v_reset``;
``subtract`` → ``v = v − v_threshold``. Integrators ``I``/``IF`` follow
``v ← v + dt·R·x``.
"""
from __future__ import annotations

from typing import Callable

import torch


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 1 where x > 0 else 0 (so H(0) = 0)."""
    return (x > 0).to(x.dtype)


def leaky(v, x, tau, r, v_leak, dt: float, integrator: str):
    if integrator == "euler":
        return v + (dt / tau) * (v_leak - v + r * x)
    a = torch.exp(-dt / tau)
    return v_leak + (v - v_leak) * a + r * x * (1 - a)


def synaptic(i, x, tau_syn, w_in, dt: float, integrator: str):
    if integrator == "euler":
        return i + (dt / tau_syn) * (-i + w_in * x)
    a = torch.exp(-dt / tau_syn)
    return i * a + w_in * x * (1 - a)


def integrate(v, x, r, dt: float):
    return v + dt * r * x


def fire(v, v_threshold, v_reset, mode: str, spike_fn: Callable = heaviside):
    """Spike and reset; returns (spikes, v_after_reset)."""
    s = spike_fn(v - v_threshold)
    if mode == "subtract":
        v = v - s * v_threshold
    else:
        v = v * (1 - s) + s * v_reset
    return s, v


def egru_step(x, c, y, w_x, w_h, b_x, b_h, thr, spike_fn: Callable = heaviside):
    """One EGRU step (equations in :class:`nmc.nodes.EGRU`); returns (y, c, o).

    x: (B, in), c and y: (B, H); w_x: (3H, in), w_h: (3H, H).
    """
    h = thr.shape[-1]
    gx = x @ w_x.T + b_x
    gh = y @ w_h.T + b_h
    z = torch.sigmoid(gx[..., :h] + gh[..., :h])
    r = torch.sigmoid(gx[..., h:2 * h] + gh[..., h:2 * h])
    g = torch.tanh(gx[..., 2 * h:] + r * gh[..., 2 * h:])
    c_hat = z * c + (1 - z) * g
    o = spike_fn(c_hat - thr)
    y_new = o * c_hat
    c_new = c_hat - o * thr
    return y_new, c_new, o
