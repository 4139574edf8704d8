"""Compiled (numba) loops of the emulator's PE-kernel populations: EGRU, DiagSSM and graded projections.

The same float32 arithmetic as the numpy emulation, bit for bit — :func:`.egru.step_batch`
(and the C ``nmc_egru_step``), :func:`.ssm_lower.input_stage` + :func:`.ssm.diag_step` (and the C
``nmc_ssm_diag_step``), :func:`.emulator._accumulate` — each float32 operation rounded as
written, left to right, no fused multiply-add (numba without ``fastmath`` emits none), the tanh
table of :mod:`.egru` with the same clamping. One call per population and chip step runs the
whole batch; per sample the loops walk its events in increasing index order and skip a zero
value as the C kernels do (the numpy emulation adds ±0 for a sample without the event, which
leaves its sum bit for bit unchanged: it starts at +0 and round-to-nearest never makes −0 from
+0). The inner loops run over a weight row (gate rows, modes, channels) made contiguous once per
population (:func:`egru_params`, :func:`diag_params`: transposed copies), so they vectorise
without reordering any sample's sums. A DiagSSM step of a batch (:data:`LANES_MIN` samples or more)
holds its running sums for all samples at once, the sample innermost (lanes), and walks the same
events per sample in the same order, so it vectorises over the batch; it adds a zero event's ±0
product where the per-sample loop skips it (the same bits, as above).

Used by :class:`~.emulator.S2Emulator` when numba is importable (:data:`ENABLED`; the tests
switch it off to compare both paths); a stochastic SSM and a LayerNorm keep the numpy step.
"""
from __future__ import annotations

import numpy as np

from .egru import LUT, LUT_N, LUT_STEP_INV, LUT_X0

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy emulation stays usable without it
    njit = None

#: whether the emulator uses these loops (numba importable)
ENABLED = njit is not None

#: batches of at least this many samples run the DiagSSM step with the samples as lanes (innermost)
LANES_MIN = 2

F32 = np.float32
_LUT = np.ascontiguousarray(LUT, F32)

if njit is not None:

    @njit(cache=True, inline="always")
    def _tanh(x, lut):
        # .egru.tanh_f32: u = (x + 8)·16; table ends outside (0, 256); k = ⌊u⌋ ≤ 255; linear interpolation
        u = (x + np.float32(LUT_X0)) * np.float32(LUT_STEP_INV)
        if u <= np.float32(0.0):
            return lut[0]
        if u >= np.float32(LUT_N - 1):
            return lut[LUT_N - 1]
        k = min(int(u), LUT_N - 2)
        f = u - np.float32(k)
        return lut[k] + f * (lut[k + 1] - lut[k])

    @njit(cache=True, inline="always")
    def _sigmoid(x, lut):
        return np.float32(0.5) * _tanh(np.float32(0.5) * x, lut) + np.float32(0.5)

    @njit(cache=True)
    def _accumulate(x, wT):
        """a[b] = Σ_i x[b, i]·w[i], i increasing over the sample's non-zero values; ``wT`` (n, m)."""
        B, n = x.shape
        m = wT.shape[1]
        a = np.zeros((B, m), np.float32)
        for b in range(B):
            for i in range(n):
                v = x[b, i]
                if v != 0:
                    for j in range(m):
                        a[b, j] = a[b, j] + v * wT[i, j]
        return a

    @njit(cache=True)
    def _egru(wxT, sx, bx, whT, sh, bh, thr, lut, c, x, yp):
        B = x.shape[0]
        H = thr.shape[0]
        R = 3 * H
        y = np.empty((B, H), np.float32)
        cn = np.empty((B, H), np.float32)
        ax = np.empty(R, np.float32)
        ah = np.empty(R, np.float32)
        zero, one = np.float32(0.0), np.float32(1.0)
        for b in range(B):
            for r in range(R):
                ax[r] = zero
                ah[r] = zero
            for i in range(x.shape[1]):
                v = x[b, i]
                if v != 0:
                    for r in range(R):
                        ax[r] = ax[r] + wxT[i, r] * v
            for j in range(yp.shape[1]):
                v = yp[b, j]
                if v != 0:
                    for r in range(R):
                        ah[r] = ah[r] + whT[j, r] * v
            for u in range(H):
                gz = (ax[u] * sx[u] + bx[u]) + (ah[u] * sh[u] + bh[u])
                gr = (ax[H + u] * sx[H + u] + bx[H + u]) + (ah[H + u] * sh[H + u] + bh[H + u])
                gxg = ax[2 * H + u] * sx[2 * H + u] + bx[2 * H + u]
                ghg = ah[2 * H + u] * sh[2 * H + u] + bh[2 * H + u]
                z = _sigmoid(gz, lut)
                rr = _sigmoid(gr, lut)
                g = _tanh(gxg + rr * ghg, lut)
                ch = z * c[b, u] + (one - z) * g
                if ch > thr[u]:
                    y[b, u] = ch
                    cn[b, u] = ch - thr[u]
                else:
                    y[b, u] = zero
                    cn[b, u] = ch
        return y, cn

    @njit(cache=True)
    def _out_value(yh, hv, th, code, lut, gelu_a, gelu_k):
        # the DiagSSM output stage of one sample's channel, the C kernel's float32 operations in its
        # order: code 1 ReLU max(y, 0); 2 GELU (tanh form, the table's tanh) (½·y)·(1 + tanh(k·(y +
        # a·y·y·y))); 3 held: y when |y − hv| > θ, else the held value hv (the caller stores the
        # result as the new held value); else y. Scalars in, a value out, a plain njit function: with
        # the arrays as arguments (an inline helper that stores into out/held) the batch-64 loop ran
        # at 0.4× and at 0.96× as inline="always" with these scalars (ssm_s4d, ReLU)
        zero, half, one = np.float32(0.0), np.float32(0.5), np.float32(1.0)
        if code == 1:
            return yh if yh > zero else zero
        if code == 2:
            t = yh * yh
            t = t * yh
            t = gelu_a * t
            t = yh + t
            t = gelu_k * t
            return (half * yh) * (one + _tanh(t, lut))
        if code == 3:
            return yh if abs(yh - hv) > th else hv
        return yh

    @njit(cache=True)
    def _diag(x, w_in, b_in, lr, li, brT, biT, crT, ciT, d, theta, code, lut, xr, xi, held, on,
              gelu_a, gelu_k):
        B = x.shape[0]
        H = d.shape[0]
        P = lr.shape[0]
        out = np.zeros((B, H), np.float32)
        u = np.empty(H, np.float32)
        ar = np.empty(P, np.float32)
        ai = np.empty(P, np.float32)
        y = np.empty(H, np.float32)
        zero = np.float32(0.0)
        for b in range(B):
            if not on[b]:
                continue
            for h in range(H):                       # input stage: u = Σ_i s_i·M[i] + b
                u[h] = zero
            for i in range(x.shape[1]):
                v = x[b, i]
                if v != 0:
                    for h in range(H):
                        u[h] = u[h] + v * w_in[i, h]
            for h in range(H):
                u[h] = u[h] + b_in[h]
            for p in range(P):
                ar[p] = zero
                ai[p] = zero
            for i in range(H):                       # B̄·u, events in increasing channel order
                v = u[i]
                if v != 0:
                    for p in range(P):
                        ar[p] = ar[p] + brT[i, p] * v
                        ai[p] = ai[p] + biT[i, p] * v
            for p in range(P):                       # x' = Λ̄·x + acc
                r0, i0 = xr[b, p], xi[b, p]
                xr[b, p] = (lr[p] * r0 - li[p] * i0) + ar[p]
                xi[b, p] = (li[p] * r0 + lr[p] * i0) + ai[p]
            for h in range(H):
                y[h] = zero
            for p in range(P):                       # per channel: + C̄re·x_re, − C̄im·x_im, p increasing
                r0, i0 = xr[b, p], xi[b, p]
                for h in range(H):
                    y[h] = y[h] + crT[p, h] * r0
                    y[h] = y[h] - ciT[p, h] * i0
            for h in range(H):
                out[b, h] = _out_value(y[h] + d[h] * u[h], held[b, h], theta[h], code, lut, gelu_a, gelu_k)
            if code == 3:                            # the held values move with the output
                for h in range(H):
                    held[b, h] = out[b, h]
        return out


    @njit(cache=True)
    def _diag_lanes(x, w_in, b_in, lr, li, brT, biT, crT, ciT, d, theta, code, lut, xr, xi, held, on,
                    gelu_a, gelu_k):
        # _diag with the samples as the innermost index (lanes): every running sum held for the whole
        # batch, each sample's float32 operations the same and in the same order as in _diag; a zero
        # event is added (±0 leaves a sum that starts at +0 bit for bit unchanged) instead of skipped
        B = x.shape[0]
        H = d.shape[0]
        P = lr.shape[0]
        n = x.shape[1]
        out = np.zeros((B, H), np.float32)
        xT = np.empty((n, B), np.float32)
        u = np.zeros((H, B), np.float32)
        ar = np.zeros((P, B), np.float32)
        ai = np.zeros((P, B), np.float32)
        sr = np.empty((P, B), np.float32)
        si = np.empty((P, B), np.float32)
        y = np.zeros((H, B), np.float32)
        for b in range(B):
            for i in range(n):
                xT[i, b] = x[b, i]
            for p in range(P):
                sr[p, b] = xr[b, p]
                si[p, b] = xi[b, p]
        for i in range(n):                           # input stage: u = Σ_i s_i·M[i] + b
            xi_ = xT[i]
            for h in range(H):
                w = w_in[i, h]
                uh = u[h]
                for b in range(B):
                    uh[b] = uh[b] + xi_[b] * w
        for h in range(H):
            uh, bh = u[h], b_in[h]
            for b in range(B):
                uh[b] = uh[b] + bh
        for i in range(H):                           # B̄·u, channels in increasing order
            ui = u[i]
            for p in range(P):
                wr, wi = brT[i, p], biT[i, p]
                arp, aip = ar[p], ai[p]
                for b in range(B):
                    arp[b] = arp[b] + wr * ui[b]
                    aip[b] = aip[b] + wi * ui[b]
        for p in range(P):                           # x' = Λ̄·x + acc
            lrp, lip, srp, sip, arp, aip = lr[p], li[p], sr[p], si[p], ar[p], ai[p]
            for b in range(B):
                r0, i0 = srp[b], sip[b]
                srp[b] = (lrp * r0 - lip * i0) + arp[b]
                sip[b] = (lip * r0 + lrp * i0) + aip[b]
        for p in range(P):                           # per channel: + C̄re·x_re, − C̄im·x_im, p increasing
            srp, sip = sr[p], si[p]
            for h in range(H):
                cr, ci = crT[p, h], ciT[p, h]
                yh = y[h]
                for b in range(B):
                    yh[b] = yh[b] + cr * srp[b]
                    yh[b] = yh[b] - ci * sip[b]
        for h in range(H):
            dh, yh, uh = d[h], y[h], u[h]
            for b in range(B):
                yh[b] = yh[b] + dh * uh[b]
        for b in range(B):
            if not on[b]:
                continue
            for p in range(P):
                xr[b, p] = sr[p, b]
                xi[b, p] = si[p, b]
            for h in range(H):
                out[b, h] = _out_value(y[h, b], held[b, h], theta[h], code, lut, gelu_a, gelu_k)
            if code == 3:                            # the held values move with the output
                for h in range(H):
                    held[b, h] = out[b, h]
        return out


def _c(a, dtype=F32):
    return np.ascontiguousarray(np.asarray(a), dtype)


def accumulate(x: np.ndarray, wT: np.ndarray) -> np.ndarray:
    """:func:`.emulator._accumulate` compiled: x (B, n) graded values · wT (n, m) float32."""
    return _accumulate(_c(x), _c(wT))


def egru_params(kernel: dict) -> tuple:
    """An EGRU kernel's arrays for :func:`egru_step`: the weights as float32 (exact: int8, ternary
    or float32 values) transposed to (inputs, gate rows), the rest contiguous float32."""
    return (_c(np.asarray(kernel["wx"]).T), _c(kernel["sx"]), _c(kernel["bx"]), _c(np.asarray(kernel["wh"]).T),
            _c(kernel["sh"]), _c(kernel["bh"]), _c(kernel["thr"]))


def egru_step(prm: tuple, c: np.ndarray, x: np.ndarray, y_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.egru.step_batch` compiled: (y, c') from c, the input x and the previous events y_prev (B, ·)."""
    return _egru(*prm[:7], _LUT, _c(c), _c(x), _c(y_prev))


def diag_params(kernel: dict) -> tuple:
    """A DiagSSM ``ssm_kernel`` population's arrays for :func:`diag_step` (B̄, C̄ transposed so the
    inner loops run over contiguous modes / channels)."""
    from .ssm import GELU_A, GELU_K

    return (_c(kernel["w_in"]), _c(kernel["b_in"]), _c(kernel["lr"]), _c(kernel["li"]),
            _c(np.asarray(kernel["br"]).T), _c(np.asarray(kernel["bi"]).T), _c(np.asarray(kernel["cr"]).T),
            _c(np.asarray(kernel["ci"]).T), _c(kernel["d"]), _c(kernel["theta"]), int(kernel["out"]), _LUT,
            GELU_A, GELU_K)


def diag_step(prm: tuple, st: dict, x: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Input stage and DiagSSM kernel step of the rows ``on`` (B,) bool, from the source's values
    x (B, n_src); the state ``st`` (xr, xi, held: C-contiguous float32, batch rows first) is updated
    in place. Returns the output (B, H) (rows not ``on``: zeros, their state untouched)."""
    (w_in, b_in, lr, li, brT, biT, crT, ciT, d, theta, code, lut, ga, gk) = prm
    f = _diag_lanes if x.shape[0] >= LANES_MIN else _diag
    return f(_c(x), w_in, b_in, lr, li, brT, biT, crT, ciT, d, theta, code, lut, st["xr"], st["xi"],
                 st["held"], np.ascontiguousarray(on, np.bool_), ga, gk)
