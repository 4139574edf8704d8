"""Float32 error bounds for comparing two simulators of the same network
(import as ``from float_bounds import ...`` inside tests/).

Both sides compute the same update in float32 but may sum in another order or
with other instructions (BLAS kernels, AVX-512 vs AVX2 vs the scalar path that
``ATEN_CPU_CAPABILITY=default`` selects). With u = 2⁻²⁴ ≈ 5.96e-8 (float32
unit roundoff; ``EPS32`` = 2u is the machine epsilon), one step of a neuron layer

* sums the K terms of its input current: each side's error is at most
  γ_K·Σ|w·x| ≤ K·u·A with A = Σ|w|·|x| + |b| (+ Σ|w_rec|·|s| for recurrent input),
  the standard bound for recursive or pairwise summation in any order;
* updates its state with a fixed handful of operations (leak coefficient,
  subtraction, multiply, add, reset; the coefficient dt/τ itself rounded):
  at most C = 6 roundings, each ≤ u·(|v| + |i| + A).

The difference of two such computations is at most twice one side's error, so
the local difference of step t is at most ``EPS32·(K·A_t + C·(A_t + |v_t| + |i_t|))``.
Every neuron update is a contraction in the state (decay factors in [0, 1]; the
synaptic current reaches v with a gain ≤ 1 per step), so a difference carried
from earlier steps does not grow: the membrane difference at step t is bounded
by the **sum of the local bounds up to t** (:func:`membrane_bound`). It grows
with steps × magnitude × eps, and holds on any x86-64 CPU. A real modelling
difference (a step of delay, a wrong coefficient) is of the order of A itself,
far above it (the tests keep K·C·T·u ≪ 1).

Spike trains are compared for identity: a flip needs a membrane within this
bound of the threshold at some step, which the tests' random inputs do not
produce (the test would show it).
"""
from __future__ import annotations

import numpy as np
import torch

EPS32 = float(np.finfo(np.float32).eps)
#: Roundings of one state update besides the input sum (see module docstring).
UPDATE_ROUNDINGS = 6


def input_magnitude(layer, x: np.ndarray) -> np.ndarray:
    """A_t = Σ|w|·|x_t| + |b| of a torch Linear/Conv layer on inputs (T, B, ...) → (T, B, *out)."""
    with torch.no_grad():
        xa = torch.as_tensor(np.abs(x), dtype=torch.float64)
        T, B = xa.shape[:2]
        w = layer.weight.detach().double().abs()
        b = layer.bias.detach().double().abs() if getattr(layer, "bias", None) is not None else None
        if isinstance(layer, torch.nn.Conv2d):
            y = torch.nn.functional.conv2d(xa.reshape(T * B, *xa.shape[2:]), w, b, layer.stride, layer.padding,
                                           layer.dilation, layer.groups)
        else:
            y = xa.reshape(T * B, -1) @ w.T + (0 if b is None else b)
        return y.reshape(T, B, *y.shape[1:]).numpy()


def fan_in(layer) -> int:
    """K: the terms summed per output of a Linear/Conv layer (plus its bias)."""
    w = layer.weight
    return int(np.prod(w.shape[1:])) + (1 if getattr(layer, "bias", None) is not None else 0)


def recurrent_magnitude(w_rec, spikes: np.ndarray) -> np.ndarray:
    """Σ|w_rec|·|s_{t−1}| (spikes (T, B, n) → previous step's, zero at t = 0)."""
    s = np.abs(np.asarray(spikes, np.float64))
    prev = np.concatenate([np.zeros_like(s[:1]), s[:-1]])
    return prev @ np.abs(np.asarray(w_rec.detach() if hasattr(w_rec, "detach") else w_rec, np.float64)).T


def membrane_bound(A: np.ndarray, K: int, v: np.ndarray, i: np.ndarray | None = None) -> np.ndarray:
    """Bound on |v_a − v_b| at every step (T, B, ...): cumulative sum of the local bounds."""
    v = np.abs(np.asarray(v, np.float64)).reshape(A.shape)
    state = v + (0 if i is None else np.abs(np.asarray(i, np.float64)).reshape(A.shape))
    local = EPS32 * (K * A + UPDATE_ROUNDINGS * (A + state))
    return np.cumsum(local, axis=0)


def assert_within(v_a: np.ndarray, v_b: np.ndarray, bound: np.ndarray) -> None:
    err = np.abs(np.asarray(v_a, np.float64) - np.asarray(v_b, np.float64))
    bound = np.asarray(bound).reshape(err.shape)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"membrane differs by {err[worst]:.3g} at step {worst[0]} against a float32 "
                                  f"bound of {bound[worst]:.3g} (max difference {err.max():.3g})")
