"""Parallel scan of the diagonal linear recurrence x_k = a_k ⊙ x_{k−1} + b_k (torch).

Hillis–Steele inclusive scan over the time axis (dim 0): ⌈log₂ T⌉ rounds, each
combining element k with element k − s by the associative operator
``(a₁, b₁) then (a₂, b₂) = (a₂·a₁, a₂·b₁ + b₂)``. Work O(T log T), depth
O(log T), only multiplications and additions (no division, no logarithm), so
it is as well conditioned as the step loop for |a| ≤ 1: every output is a sum
of at most T terms (Π a)·b, each product of at most T factors.
"""
from __future__ import annotations

import torch


def linear_scan(a: torch.Tensor, b: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
    """All states x_1 … x_T of x_k = a_k ⊙ x_{k−1} + b_k, x_0 = ``x0`` (zeros if None).

    b: (T, ...); a: broadcastable to b (a fixed-tick a has no time axis).
    Returns a tensor shaped like b.
    """
    T = b.shape[0]
    A = a.expand_as(b)
    if x0 is not None:
        b = torch.cat([(A[0] * x0 + b[0])[None], b[1:]])
    s = 1
    while s < T:
        b = torch.cat([b[:s], A[s:] * b[:-s] + b[s:]])
        A = torch.cat([A[:s], A[s:] * A[:-s]])
        s *= 2
    return b
