"""A diagonal SSM on Loihi 2 in Lava's public fixed-point processes (:mod:`.graded` units and links).

The float system (:mod:`nmc.ssm_math`, one tick, P modes, H channels)::

    x_k = Λ̄ ⊙ x_{k−1} + B̄·u_k        B̄ = γ ⊙ B        y_k = ρ·Re(C·x_k) + D ⊙ u_k

Which public Lava process can hold the state
--------------------------------------------
* ``rf.RF`` (resonate-and-fire, fixed_pt ``PyRFModelFixed``) holds one complex
  mode with 12-bit sin/cos decays, but it sends only a 1-bit phase spike
  (``Re ≥ vth ∧ Im ≥ 0 ∧ Im_prev < 0``), never the state, so ``C·x`` cannot be
  formed from it; its decays are also one per process (Var shape (1,)). Not used.
* ``s4d.S4d`` / ``SigmaS4dDelta`` have floating-point models only.
* ``lif.LIF`` decays in 12 bits but sends binary spikes only.
* ``sdn.Sigma`` accumulates graded input exactly and sends its 24-bit state:
  with a Dense link from itself to itself (weights ``Λ̄ − I``) it is the leaky
  (and, for complex modes, rotating) integrator. This is the mapping.

The mapping (per SSM node; the state unit has 2P rows ``[Re x; Im x]`` for
complex Λ, P rows for real Λ)::

    input u (payload, u_int = S_u·u) ──Dense B──▶ Sigma x (x_int = S_x·x) ──Dense C──▶ y unit (y_int = S_y·y)
          └──────────────── DelayDense D (delay 1) ─────────────────────────────────────▶ ┘
                                               Sigma x ◀──Dense (Λ̄ − I)── Sigma x

* **Recurrence**: ``Λ̄ − I`` as a real matrix, per complex mode the 2×2 block
  ``[[a − 1, −b], [b, a − 1]]`` (Λ̄ = a + ib; a real mode: ``λ − 1``). So
  ``x_t = x_{t−1} + ⌊(Λ̄ − I)·x_{t−1}⌋ + ⌊B̄·u⌋``: one step per loop, exact
  for Λ̄ = 1.
* **Weights**: every matrix M is a sum of *slices* (:func:`slice_matrix`):
  slice j is ``w_j·2^{e_j}`` with ``w_j`` integers ``|w| ≤ weight_max`` (255)
  and one exponent ``e_j`` in ``[weight_exp_min, weight_exp_max]``
  (``hw_configs/loihi2.toml [numerics]``) for the whole matrix, chosen from the
  largest residual ``|M − Σ_{i<j} slices|``; each slice's positive and negative
  entries become two links (one sign per Lava Dense keeps 8 bits of magnitude;
  the shared exponent keeps a rotation block a scaled rotation). The recurrence
  gets ``slices`` slices (default 2); B, C, D one each.
* **Rounding**: a link with ``e < 0`` floors its sum (arithmetic shift): per
  step and row an error in (−1, 0] LSB; links with ``e ≥ 0`` are exact.
* **Scales** ``S_x``, ``S_y`` are powers of two, the largest for which the
  worst case (every input at its largest payload ``2^(input_bits−1)``, in
  phase) keeps every payload within ``graded_payload_bits`` (24) and every
  link's ``Σ|w|·|s|`` within ``accumulator_bits`` (Lava's int32): no value
  can wrap, for any valid input; and for which B̄·S_x/S_u, C·S_y/S_x and
  D·S_y/S_u stay within one slice's range ``weight_max·2^weight_exp_max``
  (a small input range, e.g. binary spikes, would otherwise ask for a state
  scale whose input weights no 8-bit weight with a 3-bit exponent holds).
* **Output stage** (the y unit): ``none`` → ``GradedVec`` (vth 0: sends y);
  ``relu`` → ``GradedReluVec`` (vth 0); ``delta`` → ``Delta`` with
  ``vth = ⌊θ·S_y⌋ + 1`` (integers: ``|d| ≥ ⌊θS_y⌋ + 1 ⇔ |d| > θS_y``) followed
  by a receiving ``Sigma`` (identity link) that holds ``ŷ`` = the sum of the
  events, the layer's output. ``gelu`` and a spiking (``lif``) stage are
  refused: Lava has no fixed-point GELU, and nmc does not yet map an SSM
  driving LIF neurons.
* **Latency** (Lava steps behind the reference, the source at L): state L + 1,
  y L + 2 (D's DelayDense delay 1 lines u up with C·x), the delta receiver L + 3.

:func:`error_bound` bounds |y_Loihi − y_float| from the realised parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nmc.errors import UnsupportedNodeError
from nmc.hw import packaged, read_numbers

from .graded import GradedLink, GradedUnit
from .numerics import LavaLimits

#: output stages a diagonal SSM maps with, and the unit kind of each
OUTPUT_UNITS = {"none": "graded", "relu": "relu", "delta": "delta"}


@dataclass(frozen=True)
class SSMLimits:
    """The widths the mapping must respect (from the spec's ``[numerics]``)."""
    weight_max: int
    weight_exp_min: int
    weight_exp_max: int
    payload_max: int          # 2^(graded_payload_bits − 1) − 1
    acc_max: int              # 2^(accumulator_bits − 1) − 1

    @classmethod
    def from_spec(cls, spec=None) -> "SSMLimits":
        spec = spec if spec is not None else packaged("loihi2")
        lim = LavaLimits.from_spec(spec)
        n = read_numbers(spec, {k: f"numerics.{k}" for k in ("graded_payload_bits", "accumulator_bits")})
        return cls(lim.weight_max, lim.weight_exp_min, lim.weight_exp_max,
                   2 ** (n["graded_payload_bits"] - 1) - 1, 2 ** (n["accumulator_bits"] - 1) - 1)


def slice_matrix(m: np.ndarray, slices: int, lim: SSMLimits, what: str, node: str):
    """``m`` ≈ Σ_j w_j·2^{e_j} (see the module docstring). Returns ([(w int64, e)], realised float)."""
    m = np.asarray(m, np.float64)
    resid = m.copy()
    out = []
    for _ in range(slices):
        top = float(np.abs(resid).max(initial=0.0))
        if top == 0.0:
            break
        e = math.ceil(math.log2(top / lim.weight_max))
        if e > lim.weight_exp_max:
            raise UnsupportedNodeError(
                f"{what} needs weights up to {top:.4g}, beyond 8-bit weights with exponent <= {lim.weight_exp_max}",
                node=node, limit=lim.weight_max * 2.0 ** lim.weight_exp_max, actual=top,
                hint="scale the layer down (smaller B/C/D or input_bits) or raise numerics.weight_exp_max in --hw")
        e = max(e, lim.weight_exp_min)
        w = np.clip(np.rint(resid / 2.0 ** e), -lim.weight_max, lim.weight_max).astype(np.int64)
        if not w.any():
            break
        out.append((w, e))
        resid = resid - w * 2.0 ** e
        if e == lim.weight_exp_min:       # a finer slice would have the same exponent
            break
    return out, m - resid


def _links(name: str, src: str, dst: str, parts, delay: int = 0, bits: int = 24) -> list[GradedLink]:
    """One link per slice and sign (Lava keeps 8 bits of magnitude for one-signed weights)."""
    out = []
    for j, (w, e) in enumerate(parts):
        for sign, tag in ((1, "p"), (-1, "n")):
            ws = np.where(sign * w > 0, w, 0).astype(np.int32)
            if ws.any():
                out.append(GradedLink(f"{name}.{j}{tag}", src, dst, ws, int(e), bits, delay))
    return out


def _acc_ok(links: list[GradedLink], src_max: np.ndarray, lim: SSMLimits) -> bool:
    """Every link's worst-case Σ|w|·|s| within the accumulator."""
    return all(float((np.abs(k.weights).astype(np.float64) @ src_max).max(initial=0.0)) <= lim.acc_max
               for k in links)


def _pow2_below(x: float) -> float:
    return 2.0 ** math.floor(math.log2(x))


@dataclass
class SSMMapping:
    """The units and links of one SSM node and what they realise (float units)."""
    units: list[GradedUnit]
    links: list[GradedLink]
    out: str                     # the unit holding the layer's output (scale S_y)
    latency: int                 # of ``out``
    s_u: float
    s_x: float
    s_y: float
    lam_hat: np.ndarray          # realised Λ̄ (P,), complex or real
    bx_hat: np.ndarray           # realised [Re B̄; Im B̄] (n_x, H) per float input
    cx_hat: np.ndarray           # realised ρ·[Re C, −Im C] (H, n_x) per float state
    d_hat: np.ndarray            # realised D as a matrix (H, n_in)
    r_x: int                     # rounding links into the state (e < 0)
    r_y: int                     # rounding links into y (e < 0)
    report: dict = field(default_factory=dict)


def real_form(lam_bar, gamma, b, c):
    """(A' = Λ̄ − I, Bx = [Re B̄; Im B̄], Cx = ρ[Re C, −Im C]) as real matrices (complex Λ: 2P states)."""
    lam_bar = np.asarray(lam_bar)
    bbar = np.asarray(gamma)[:, None] * np.asarray(b)
    c = np.asarray(c)
    if np.iscomplexobj(lam_bar):
        a, w = lam_bar.real - 1.0, lam_bar.imag
        A = np.block([[np.diag(a), np.diag(-w)], [np.diag(w), np.diag(a)]])
        bbar = bbar.astype(np.complex128)
        Bx = np.vstack([bbar.real, bbar.imag])
        cc = c.astype(np.complex128)
        Cx = 2.0 * np.hstack([cc.real, -cc.imag])
        return A, Bx, Cx
    return np.diag(lam_bar.astype(np.float64) - 1.0), bbar.astype(np.float64), c.astype(np.float64)


def _modes(v: np.ndarray, P: int, cplx: bool) -> np.ndarray:
    """Per-mode 2-norm over the (Re, Im) rows/columns of a real-form vector/matrix's last axis."""
    return np.hypot(v[..., :P], v[..., P:]) if cplx else np.abs(v)


def map_diag_ssm(name: str, src: str, *, lam_bar, gamma, b, c, d, in_scale: float, input_bits: int | None = None,
                 u_bound: float | None = None, src_bits: int | None = None, output: str = "none",
                 theta: float = 0.0, slices: int = 2, src_latency: int = 0, spec=None) -> SSMMapping:
    """Map one diagonal SSM (discretised: Λ̄, γ per mode; B (P, n_in), C (H, P), D (H,) or a matrix
    (H, n_in)) fed by ``src`` (payloads ``u_int = in_scale·u``; ``|u_int| ≤ u_bound``, default
    2^(input_bits−1); links from it carry ``src_bits``-bit messages, default input_bits) onto Lava's
    fixed-point units."""
    if output not in OUTPUT_UNITS:
        raise UnsupportedNodeError(
            f"an SSM output stage {output!r} has no Lava fixed-point process",
            node=name, hint=f"train with output in {sorted(OUTPUT_UNITS)} for loihi2 "
                            "(gelu has no fixed-point model in Lava; an SSM driving LIF neurons is not mapped yet)")
    lim = SSMLimits.from_spec(spec)
    lam_bar = np.asarray(lam_bar)
    cplx = bool(np.iscomplexobj(lam_bar))
    P = lam_bar.shape[0]
    A, Bx, Cx = real_form(lam_bar, gamma, b, c)
    d = np.asarray(d, np.float64)
    Dm = np.diag(d) if d.ndim == 1 else d
    H_out = Cx.shape[0]
    state, y = f"{name}.x", f"{name}.y"

    # recurrence: dimensionless, independent of the scales
    a_parts, A_hat = slice_matrix(A, slices, lim, "the recurrence Λ̄ − I", name)
    lam_hat = (1.0 + np.diag(A_hat)[:P] + 1j * np.diag(A_hat[P:, :P])) if cplx else 1.0 + np.diag(A_hat)
    mag = np.abs(lam_hat)
    if (mag >= 1.0).any():
        p = int(np.argmax(mag))
        raise UnsupportedNodeError(
            f"mode {p}: |Λ̄| = {abs(lam_bar[p]):.6f} rounds to {mag[p]:.6f} >= 1 in 8-bit weights with exponent >= "
            f"{lim.weight_exp_min} (1 − |Λ̄| below about 2^{lim.weight_exp_min - 1}): the state would not decay",
            node=name, limit=1.0, actual=float(mag[p]),
            hint="train with a larger step Δ or a faster decay (Re Λ more negative), or lower numerics.weight_exp_min")
    a_links = _links(f"{name}.A", state, state, a_parts)

    U_int = float(u_bound) if u_bound is not None else 2.0 ** (input_bits - 1)
    src_bits = src_bits if src_bits is not None else input_bits
    U = U_int / in_scale
    decay = 1.0 - mag
    s_x = _pow2_below(lim.payload_max / ((_modes(np.abs(Bx).sum(1), P, cplx) * U / decay).max() * 1.0625 + 1e-300))
    w_top = lim.weight_max * 2.0 ** lim.weight_exp_max         # the largest weight one slice holds
    s_x = min(s_x, _pow2_below(w_top * in_scale / (np.abs(Bx).max() + 1e-300)))   # B̄·S_x/S_u within it
    for _ in range(64):                            # halve until every width holds
        b_parts, B_hat = slice_matrix(Bx * s_x / in_scale, 1, lim, "B̄ (input → state)", name)
        b_links = _links(f"{name}.B", src, state, b_parts, bits=src_bits)
        r_x = sum(k.weight_exp < 0 for k in a_links + b_links)
        g = _modes(np.abs(B_hat).sum(1), P, cplx) * U_int            # per-mode input drive (state LSB)
        x_max = (g + math.sqrt(2.0 if cplx else 1.0) * r_x) / decay   # |x_int| per mode, worst case
        x_rows = np.concatenate([x_max, x_max]) if cplx else x_max
        if x_max.max() <= lim.payload_max and _acc_ok(a_links, x_rows, lim) and \
                _acc_ok(b_links, np.full(Bx.shape[1], U_int), lim):
            break
        s_x /= 2.0
    bx_hat = B_hat * in_scale / s_x

    y_float = np.abs(Cx) @ (x_rows / s_x) + np.abs(Dm).sum(1) * U
    s_y = _pow2_below(lim.payload_max / (y_float.max() * 1.0625 + 1e-300))
    s_y = min(s_y, _pow2_below(w_top * s_x / (np.abs(Cx).max() + 1e-300)),       # C·S_y/S_x, D·S_y/S_u
              _pow2_below(w_top * in_scale / (np.abs(Dm).max() + 1e-300)))     # within one slice's range
    for _ in range(64):
        c_parts, C_hat = slice_matrix(Cx * s_y / s_x, 1, lim, "C (state → output)", name)
        d_parts, D_hat = slice_matrix(Dm * s_y / in_scale, 1, lim, "D (input → output)", name)
        c_links = _links(f"{name}.C", state, y, c_parts)
        d_links = _links(f"{name}.D", src, y, d_parts, delay=1, bits=src_bits)
        r_y = sum(k.weight_exp < 0 for k in c_links + d_links)
        y_max = np.abs(C_hat) @ x_rows + np.abs(D_hat).sum(1) * U_int + r_y
        if y_max.max() <= lim.payload_max and _acc_ok(c_links, x_rows, lim) and \
                _acc_ok(d_links, np.full(Dm.shape[1], U_int), lim):
            break
        s_y /= 2.0

    units = [GradedUnit(state, "sigma", (A.shape[0],), 0, s_x, src_latency + 1, name)]
    links = a_links + b_links + c_links + d_links
    kind = OUTPUT_UNITS[output]
    vth = int(math.floor(theta * s_y)) + 1 if kind == "delta" else 0
    units.append(GradedUnit(y, kind, (H_out,), vth, s_y, src_latency + 2, name))
    out, lat = y, src_latency + 2
    if kind == "delta":                           # the receiver: ŷ = Σ events
        out, lat = f"{name}.held", src_latency + 3
        units.append(GradedUnit(out, "sigma", (H_out,), 0, s_y, lat, name))
        links.append(GradedLink(f"{name}.R", y, out, np.eye(H_out, dtype=np.int32), 0, 24, 0))
    report = {"s_u": in_scale, "s_x": s_x, "s_y": s_y, "recurrence_slices": len(a_parts),
              "max_lambda_error": float(np.abs(lam_hat - lam_bar).max()), "links": len(links),
              "delta_vth": vth if kind == "delta" else None, "y_payload_max": float(y_max.max()),
              "x_payload_max": float(x_max.max())}
    return SSMMapping(units, links, out, lat, in_scale, s_x, s_y, lam_hat, bx_hat, C_hat * s_x / s_y,
                      D_hat * in_scale / s_y, r_x, r_y, report)


def error_bound(m: SSMMapping, lam_bar, gamma, b, c, d, u_max: float) -> np.ndarray:
    """Per-output bound on |y_Loihi − y_float| (float units) for inputs with |u| ≤ ``u_max``, all t.

    Per mode p (complex scalar; a real mode the same with √2 → 1), the float state obeys
    ``x_k = λ x_{k−1} + g_k`` (|g| ≤ G = Σ_h|B̄_ph|·u_max, so |x| ≤ X = G/(1 − |λ|)); Loihi's, divided
    by S_x, ``x̃_k = λ̂ x̃_{k−1} + ĝ_k + ρ_k`` with the realised λ̂, ĝ and the floors
    |ρ_k| ≤ √2·r_x/S_x. The error e = x̃ − x obeys
    ``e_k = λ̂ e_{k−1} + (λ̂ − λ) x_{k−1} + (ĝ_k − g_k) + ρ_k``, so
    ``|e| ≤ E = (|λ̂ − λ|·X + ΔG + √2·r_x/S_x)/(1 − |λ̂|)``, ΔG = Σ_h|B̂_ph − B̄_ph|·u_max.
    The readout y = Σ_p Cx_p·(Re x_p, Im x_p) + D u then differs by at most
    ``Σ_p (|Ĉx_p|·E_p + |Ĉx_p − Cx_p|·X_p) + Σ_h|D̂ − D|·u_max + r_y/S_y``
    (|·| the 2-norm of a mode's (Re, Im) column pair; r_y/S_y: the floors of the C and D links).
    ReLU is 1-Lipschitz, so the bound holds for ``relu`` outputs too (not for ``delta``).
    """
    lam_bar = np.asarray(lam_bar)
    cplx = bool(np.iscomplexobj(lam_bar))
    P = lam_bar.shape[0]
    _, Bx, Cx = real_form(lam_bar, gamma, b, c)
    G = _modes(np.abs(Bx).sum(1), P, cplx) * u_max
    dG = _modes(np.abs(m.bx_hat - Bx).sum(1), P, cplx) * u_max
    X = G / (1.0 - np.abs(lam_bar))
    lam_hat = np.asarray(m.lam_hat)
    E = (np.abs(lam_hat - lam_bar) * X + dG + math.sqrt(2.0 if cplx else 1.0) * m.r_x / m.s_x) / (1.0 - np.abs(lam_hat))
    cn = _modes(np.abs(m.cx_hat), P, cplx)
    dc = _modes(np.abs(m.cx_hat - Cx), P, cplx)
    d = np.asarray(d, np.float64)
    dD = np.abs(m.d_hat - (np.diag(d) if d.ndim == 1 else d)).sum(1)
    return cn @ E + dc @ X + dD * u_max + m.r_y / m.s_y


def single_ssm_program(m: SSMMapping, src: str, H: int, input_bits: int, out: str = "y"):
    """A :class:`~.program.LoihiProgram` of one mapped SSM: input ``src`` (H graded payloads of
    ``input_bits``) → the SSM → output ``out`` (the layer's output unit, float = payload / S_y)."""
    from .program import InputPort, LoihiProgram, OutputPort, with_io

    shape = m.units[-1].shape
    return with_io(LoihiProgram(inputs=[InputPort(src, (H,), input_bits)], units=list(m.units),
                                links=list(m.links), outputs=[OutputPort(out, m.out, "graded", shape)],
                                meta={"ssm": {m.units[0].node: m.report}}))
