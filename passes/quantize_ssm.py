"""Fixed-point quantisation of the SSM nodes (:mod:`nmc.nodes_ssm`), part of the ``quantize`` pass.

A chip runs the discretised system of one tick (tick mode)::

    x_k = Λ̄ ⊙ x_{k−1} + B̄·u_k          B̄ = γ ⊙ B        (Λ̄, γ: nmc.ssm_math.discretize)
    y_k = Re(C̄·x_k) + D ⊙ u_k           C̄ = ρ·C          (ρ = 2 for complex Λ, else 1)

and the pass writes its parameters in fixed point (:class:`nmc.annotations.SSMQuant`):

* Λ̄ (decay and, for complex Λ, rotation): real and imaginary parts each a signed
  Q1.15 integer, ``lam_int = round(Λ̄·2¹⁵)`` (ties away from zero), saturated to
  |·| ≤ 2¹⁵ − 1, and a mode that would round to 0 kept at one LSB of decay
  (2⁻¹⁵: it forgets within a tick either way) — so |Λ̄_q| < 1 stays stable;
* B̄, C̄: ``bits``-bit signed integers with one power-of-two scale 2^−f per **row**
  (B̄: per mode of a DiagSSM (P, H), per neuron of a StochasticSSMNeuron (H, N); C̄: per
  output channel / neuron), ``f`` the largest with max|row|·2^f ≤ 2^(bits−1) − 1 (real and
  imaginary parts share it); D: one scale for the array. So a target applies them with shifts.
  Per-row scales because B̄ = γ ⊙ B scales each mode's row by γ ≈ Δ_p: with the S4D
  initialisation the rows of a trained layer span an order of magnitude (0.009 … 0.13 in
  ``examples/ssm_events``' diag model), and one scale per array left the slow modes' rows
  3–4 bits — the measured cause of that model's 1.1 pp loss at 8 bits (per-row: none).

The float meaning of the quantised node is :func:`dequantized_node`: the same node
type with Λ = log(Λ̄_q)/Δ and B = B̄_q/γ(Λ, Δ) under ZOH (so its one-tick step is
exactly Λ̄_q, B̄_q), C = C̄_q/ρ, D = D_q; the fidelity report compares its run with
the float one. A node in the per-event Δt mode has no fixed Λ̄ to quantise and is
refused (:class:`~nmc.errors.OptionError` naming it).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nmc import ssm_math as M
from nmc.annotations import SSMQuant
from nmc.errors import OptionError
from nmc.nodes_ssm import DiagSSM, StochasticSSMNeuron

#: Fraction bits of Λ̄'s parts (signed Q1.15, 16-bit words).
LAM_FRAC = 15
SSM_NODES = (DiagSSM, StochasticSSMNeuron)


def _round(x):
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def _parts(a) -> np.ndarray:
    """(..., 2): real and imaginary parts."""
    a = np.asarray(a)
    return np.stack([a.real, a.imag if np.iscomplexobj(a) else np.zeros(a.shape)], axis=-1).astype(np.float64)


def _fixed(a, bits: int) -> tuple[np.ndarray, int]:
    """(int parts (..., 2), f) with a ≈ parts·2^−f, the largest f that fits ``bits`` signed bits."""
    p = _parts(a)
    q = 2 ** (bits - 1) - 1
    mx = float(np.max(np.abs(p), initial=0.0))
    f = int(np.floor(np.log2(q / mx))) if mx > 0 else bits - 1
    return np.clip(_round(p * 2.0 ** f), -q, q).astype(np.int32), f


def _fixed_rows(a, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(int parts (..., 2), f (rows,)) with a[r] ≈ parts[r]·2^−f[r], the largest f per row (first axis)
    that fits ``bits`` signed bits; an all-zero row gets f = bits − 1."""
    p = _parts(a)
    q = 2 ** (bits - 1) - 1
    mx = np.max(np.abs(p).reshape(p.shape[0], -1), axis=1, initial=0.0)
    with np.errstate(divide="ignore"):
        f = np.where(mx > 0, np.floor(np.log2(q / np.where(mx > 0, mx, 1.0))), bits - 1).astype(np.int32)
    return np.clip(_round(p / row_scale(f, p)), -q, q).astype(np.int32), f


def row_scale(frac, ints) -> np.ndarray:
    """2^−frac broadcast over an int array ``ints`` (..., 2) (or its value shape): ``frac`` one scale for the
    array (a scalar) or one per row (first axis)."""
    f = np.asarray(frac, np.float64)
    return 2.0 ** -f.reshape(f.shape + (1,) * (np.ndim(ints) - f.ndim))


def discrete(node):
    """(Λ̄, B̄, C̄) of one tick: B̄ = γ ⊙ B ((P, H) or (H, N)), C̄ = ρ·C."""
    step = node.step if isinstance(node, DiagSSM) else node.step[:, None]
    lam_bar, gamma = M.discretize(node.lam, step, node.method)
    bbar = gamma[:, None] * node.b if isinstance(node, DiagSSM) else gamma * node.b
    return lam_bar, bbar, (2.0 if node.complex else 1.0) * node.c


def quantize_node(name: str, node, bits: int) -> SSMQuant:
    if node.time != "tick":
        raise OptionError("quantize: an SSM in the per-event Δt mode has no fixed Λ̄ to quantise", node=name,
                          hint="compile the tick-mode model (nmc.reference_ssm.with_time(graph, 'tick'))")
    lam_bar, bbar, cbar = discrete(node)
    if not node.complex and np.any(lam_bar <= 0):
        raise OptionError("quantize: a bilinear mode with Δ·|Λ| ≥ 2 has Λ̄ ≤ 0 (it alternates sign each tick)",
                          node=name, hint="use method='zoh' or a smaller Δ")
    q = 2 ** LAM_FRAC - 1
    lam = np.clip(_round(_parts(lam_bar) * 2.0 ** LAM_FRAC), -q, q)
    dead = np.all(lam == 0, axis=-1)
    lam[..., 0] = np.where(dead, 1, lam[..., 0])
    b_int, b_frac = _fixed_rows(bbar, bits)
    c_int, c_frac = _fixed_rows(cbar, bits)
    d_int, d_frac = _fixed(node.d, bits)
    return SSMQuant(bits=bits, lam_frac=LAM_FRAC, lam_int=lam.astype(np.int32), b_frac=b_frac, b_int=b_int,
                    c_frac=c_frac, c_int=c_int, d_frac=d_frac, d_int=d_int[..., 0])


def _value(parts: np.ndarray, frac, complex_: bool):
    v = parts.astype(np.float64) * row_scale(frac, parts)
    return v[..., 0] + 1j * v[..., 1] if complex_ else v[..., 0]


def dequantized_node(node, q: SSMQuant):
    """The float node whose one-tick step uses exactly the quantised Λ̄_q, B̄_q, C̄_q, D_q (module docstring)."""
    cplx = node.complex
    lam_bar = _value(np.asarray(q.lam_int), int(q.lam_frac), cplx)
    step = node.step if isinstance(node, DiagSSM) else node.step[:, None]
    lam = np.log(lam_bar.astype(np.complex128) if cplx else lam_bar) / step
    _, gamma = M.discretize(lam, step, "zoh")
    bbar = _value(np.asarray(q.b_int), q.b_frac, cplx)
    b = bbar / (gamma[:, None] if isinstance(node, DiagSSM) else gamma)
    c = _value(np.asarray(q.c_int), q.c_frac, cplx) / (2.0 if cplx else 1.0)
    d = np.asarray(q.d_int, dtype=np.float64) * 2.0 ** -int(q.d_frac)
    kw = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
          if f.name not in ("input_type", "output_type", "metadata")}
    kw.update(lam=lam, b=b, c=c, d=d, method="zoh")
    return type(node)(**kw)


def report(name: str, node, q: SSMQuant) -> dict:
    """Per array: max abs and relative rms error of the quantised one-tick parameters."""
    lam_bar, bbar, cbar = discrete(node)
    cplx = node.complex
    got = {"lam_bar": _value(np.asarray(q.lam_int), int(q.lam_frac), cplx),
           "b_bar": _value(np.asarray(q.b_int), q.b_frac, cplx),
           "c_bar": _value(np.asarray(q.c_int), q.c_frac, cplx),
           "d": np.asarray(q.d_int, dtype=np.float64) * 2.0 ** -int(q.d_frac)}
    want = {"lam_bar": lam_bar, "b_bar": bbar, "c_bar": cbar, "d": node.d}
    bits = lambda f: int(f) if np.ndim(f) == 0 else [int(v) for v in np.asarray(f).reshape(-1)]  # noqa: E731
    out = {"lam_frac_bits": int(q.lam_frac), "b_frac_bits": bits(q.b_frac), "c_frac_bits": bits(q.c_frac),
           "d_frac_bits": int(q.d_frac), "complex": cplx}
    for k in want:
        err = np.abs(got[k] - want[k])
        out[k] = {"max_abs_error": float(err.max(initial=0.0)),
                  "rel_rms_error": float(np.sqrt(np.mean(err ** 2)) / (np.sqrt(np.mean(np.abs(want[k]) ** 2)) + 1e-30))}
    out["max_abs_lam_bar"] = float(np.max(np.abs(got["lam_bar"]), initial=0.0))
    return out
