"""The fine-step integration of :class:`~.emulator.BSS2Emulator`, two ways.

One model step of a layer is ``S`` fine steps of hardware time. Per fine step
``k`` and neuron (float64, this order of operations — the two implementations
below are bit-identical, the tests check it)::

    cuba:   I ← I + drive[k];  v ← v_leak + (v − v_leak)·a + I·coef;  I ← I·b
            (exact over h for dv/dt = (v_leak − v + I)/τ_mem, dI/dt = −I/τ_syn)
    other:  v ← v_leak + (v − v_leak)·a + drive[k]
    noise:  v ← v + noise[k]                 (pre-drawn: N(0,1)·σ/√S)
    refractory (ref > 0):  v ← v_reset;  ref ← max(ref − h, 0)
    v > v_threshold:  fired[k] = 1;  spike = 1;  v ← v_reset;  ref ← t_refrac

:func:`fine_steps_numpy` runs it as array operations over (batch, neurons)
per fine step (a dozen array passes with temporaries each); :func:`fine_steps`
fuses the loop per neuron with numba, so a model step costs one pass over the
state. The emulator uses the compiled one when numba is importable.

With ``event_timing="step"`` and no noise every input of a model step lands on
one fine step ``k_in`` (0 for cuba layers, S − 1 for the others), so
:func:`fine_steps_step` takes that one (B, n) drive and adds 0.0 on the other
fine steps: the same operations in the same order, bit-identical to
:func:`fine_steps` on a drive that is zero outside ``k_in``, without the
(S, B, n) drive and per-fine-step spike arrays.

Closed form over the step (:func:`fine_steps_step` with
``closed=True``, what the emulator runs on that path): where no threshold
crossing is possible inside the step, the S fine steps of a neuron are one
update in closed form (float64, constants from :func:`pack_step`: ``a^S``,
``b^S`` by ``np.power``; ``X_K = Σ_{m<K} a^{K−1−m}·b^m``, the current's
contribution to v after K fine steps per unit of I·coef; ``X_max = max_{K≤S} X_K``)::

    other (drive on fine step S − 1):  v ← v_leak + (v − v_leak)·a^S + d;
        then  v > v_threshold:  spike;  v ← v_reset;  ref ← t_refrac
        taken iff ref = 0, v_leak ≤ v_threshold and v ≤ v_threshold at the step's
        start (the S − 1 idle fine steps move v monotonically toward v_leak, so
        the only crossing possible is on the last one, where it is checked)
    cuba (drive on fine step 0):  I₀ = I + d;  v ← v_leak + (v − v_leak)·a^S + I₀·coef·X_S;
        I ← I₀·b^S;  no spike
        taken iff ref = 0, v_leak ≤ v_threshold and the bound on v over the step
        v_leak + max(v − v_leak, 0) + max(I₀·coef, 0)·X_max stays below
        v_threshold − CLOSED_MARGIN·(|v_threshold| + |v_leak| + 1)

Every other neuron-step (refractory, a possible crossing, v_leak above
threshold) runs the fine-step iteration, bit for bit as before; so do noise,
``event_timing="real"`` and :func:`fine_steps_numpy` (the iteration is the
reference the closed form is tested against). Error bound of one closed-form
step against the iteration: with u = 2⁻⁵³ and M = |v_leak| + |v − v_leak| +
|I₀·coef|·X_max + |d|,  |Δv| ≤ 4(S + 1)·u·M and |ΔI| ≤ 2(S + 1)·u·|I₀|
(each fine step rounds a product and two sums; the closed form a handful).
The dynamics contract (a, b < 1), so the differences do not grow over steps;
a spike can differ from the iteration's only where the iterated v lies
within that bound of v_threshold at a check (none in the tests' networks
and the bench workloads: spike trains identical).

Synaptic input (:class:`Projection`): an event of source p adds
the *integer* effective weights of p's synapses (6-bit magnitudes × row sign,
summed per neuron; float64 holds every partial sum exactly, far below 2^53),
then the sum is multiplied once by the layer's LSB (one rounding). So the input
does not depend on the order of summation nor on the batch: a batch-64 run
equals 64 batch-1 runs bit for bit. Every projection walks the active sources
only (as the chip routes events): their synapses by source (CSR) when at most
:data:`CSR_DENSITY` dense (expanded convolutions, pooling), else their dense
weight rows (a matmul of the same integers onto fewer than :data:`ROWS_MIN_POST`
neurons); the integer sum of a sample is kept in a row buffer and added,
× LSB, to the layer's drive (:meth:`Projection.add_to`) — no (B, n) temporaries.

Fused layer step (:class:`LayerInput`, what the emulator runs on the step-timing
path when every projection into a layer is walked): per sample, each projection's
integer sum in a row buffer, × LSB, added in projection order to a zeroed drive row,
then that sample's :func:`fine_steps_step` on the row — the same operations as
``add_to`` per projection followed by ``fine_steps_step``, so bit-identical, without
writing and re-reading the (B, n) drive. Its CSR synapses are stored as patterns
(offsets from a source's first target, weights) shifted by that target: sources
whose synapses are a shifted copy of another's (the positions of an expanded
convolution) share one copy, which stays in cache. The sums are exact, so neither
the order of synapses nor the sharing changes a bit.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path stays usable without it
    njit = None

#: projections at most this dense are accumulated per active source instead of by matmul
CSR_DENSITY = 0.25

#: dense projections onto fewer neurons than this take the matmul (a walk's rows are too short to pay)
ROWS_MIN_POST = 32

#: parameter arrays a layer needs, in the order the kernels take them
PARAM_KEYS = ("v_leak", "a", "coef", "b", "v_reset", "v_threshold", "t_refrac")

#: relative margin below threshold that a current-based neuron's bound must keep for the closed form
CLOSED_MARGIN = 2.0 ** -40


def fine_steps_numpy(v, i, ref, drive, noise, cuba, P, h):
    """Array version: returns (v, i, ref, spikes (B, n), fired per fine step (S, B, n))."""
    S = drive.shape[0]
    spk = np.zeros(v.shape)
    fired_sub = np.zeros(drive.shape)
    for k in range(S):
        if cuba:
            i = i + drive[k]
            v = P["v_leak"] + (v - P["v_leak"]) * P["a"] + i * P["coef"]
            i = i * P["b"]
        else:
            v = P["v_leak"] + (v - P["v_leak"]) * P["a"] + drive[k]
        if noise is not None:
            v = v + noise[k]
        refr = ref > 0
        if refr.any():  # refractory: held at v_reset
            v = np.where(refr, P["v_reset"], v)
            ref = np.maximum(ref - h, 0.0)
        fired = v > P["v_threshold"]
        if fired.any():
            fired_sub[k] = fired
            spk = np.maximum(spk, fired)
            v = np.where(fired, P["v_reset"], v)
            ref = np.where(fired, P["t_refrac"], ref)
    return v, i, ref, spk, fired_sub


if njit is not None:

    @njit(cache=True)
    def _loop(v, i, ref, drive, noise, has_noise, cuba, vl, a, coef, b, vr, vth, tr, h):
        S, B, n = drive.shape
        spk = np.zeros((B, n))
        fired_sub = np.zeros((S, B, n))
        for bb in range(B):
            for j in range(n):
                vv, ii, rr = v[bb, j], i[bb, j], ref[bb, j]
                for k in range(S):
                    if cuba:
                        ii = ii + drive[k, bb, j]
                        vv = vl[j] + (vv - vl[j]) * a[j] + ii * coef[j]
                        ii = ii * b[j]
                    else:
                        vv = vl[j] + (vv - vl[j]) * a[j] + drive[k, bb, j]
                    if has_noise:
                        vv = vv + noise[k, bb, j]
                    if rr > 0:
                        vv = vr[j]
                        rr = max(rr - h, 0.0)
                    if vv > vth[j]:
                        fired_sub[k, bb, j] = 1.0
                        spk[bb, j] = 1.0
                        vv = vr[j]
                        rr = tr[j]
                v[bb, j], i[bb, j], ref[bb, j] = vv, ii, rr
        return v, i, ref, spk, fired_sub


    @njit(cache=True, inline="always")
    def _row_step(v, i, ref, d, spk, todo, below, bb, k_in, cuba, vl, a, coef, b, vr, vth, tr, aS, bS, gS, gmax,
                  h, S, closed, margin):
        """One sample's model step (row ``bb`` of v, i, ref, spk) for its drive row ``d`` (n,)."""
        n = d.shape[0]
        if closed and not cuba:   # the closed form without branches (vectorised); the rest iterate below
            n_todo = 0
            for j in range(n):
                # every operand loaded before the selects: a load under a condition (vr[j] only where f)
                # keeps LLVM from turning the selects into vector blends (2.9 → 1.1 ns per neuron)
                vv, rr, th, lj, rj, tj = v[bb, j], ref[bb, j], vth[j], vl[j], vr[j], tr[j]
                ok = (rr == 0.0) & (vv <= th) & below[j]
                w = lj + (vv - lj) * aS[j] + d[j]
                f = ok & (w > th)
                v[bb, j] = rj if f else (w if ok else vv)
                spk[bb, j] = 1.0 if f else 0.0
                ref[bb, j] = tj if f else rr
                todo[j] = not ok
                n_todo += not ok
            if n_todo == 0:
                return
        for j in range(n):
            if not todo[j]:
                continue
            vv, ii, rr = v[bb, j], i[bb, j], ref[bb, j]
            dj = d[j]
            if closed and cuba and rr == 0.0 and below[j]:
                # closed form if v provably stays at or below threshold over the step
                i0 = ii + dj
                up = vl[j] + max(vv - vl[j], 0.0) + max(i0 * coef[j], 0.0) * gmax[j]
                if up < vth[j] - margin * (abs(vth[j]) + abs(vl[j]) + 1.0):
                    v[bb, j] = vl[j] + (vv - vl[j]) * aS[j] + i0 * coef[j] * gS[j]
                    i[bb, j] = i0 * bS[j]
                    continue
            for k in range(S):
                x = dj if k == k_in else 0.0
                if cuba:
                    ii = ii + x
                    vv = vl[j] + (vv - vl[j]) * a[j] + ii * coef[j]
                    ii = ii * b[j]
                else:
                    vv = vl[j] + (vv - vl[j]) * a[j] + x
                if rr > 0:
                    vv = vr[j]
                    rr = max(rr - h, 0.0)
                if vv > vth[j]:
                    spk[bb, j] = 1.0
                    vv = vr[j]
                    rr = tr[j]
            v[bb, j], i[bb, j], ref[bb, j] = vv, ii, rr

    @njit(cache=True)
    def _loop_step(v, i, ref, d, k_in, cuba, vl, a, coef, b, vr, vth, tr, aS, bS, gS, gmax, h, S, closed, margin):
        B, n = d.shape
        spk = np.zeros((B, n))
        below = np.empty(n, np.bool_)   # v_leak ≤ v_threshold
        for j in range(n):
            below[j] = vl[j] <= vth[j]
        todo = np.ones(n, np.bool_)      # neurons of the sample that iterate
        for bb in range(B):
            _row_step(v, i, ref, d[bb], spk, todo, below, bb, k_in, cuba, vl, a, coef, b, vr, vth, tr, aS, bS, gS,
                      gmax, h, S, closed, margin)
        return spk

    @njit(cache=True)
    def _layer_step(x, pstart, rows, rstart, scale, pat, base, ptr, idx, val, wt, v, i, ref, k_in, cuba, vl, a, coef,
                    b, vr, vth, tr, aS, bS, gS, gmax, h, S, closed, margin):
        B = x.shape[0]
        n = v.shape[1]
        spk = np.zeros((B, n))
        below = np.empty(n, np.bool_)
        for j in range(n):
            below[j] = vl[j] <= vth[j]
        todo = np.ones(n, np.bool_)
        d = np.empty(n)      # the sample's drive: Σ over projections (in order) of integer sum × LSB
        buf = np.empty(n)    # one projection's integer sum
        for bb in range(B):
            d[:] = 0.0
            for m in range(pstart.shape[0] - 1):
                buf[:] = 0.0
                for p in range(pstart[m], pstart[m + 1]):
                    xp = x[bb, p]
                    if xp == 0.0:
                        continue
                    if rows[m]:
                        r = p - pstart[m] + rstart[m]
                        if xp == 1.0:
                            for j in range(n):
                                buf[j] += wt[r, j]
                        else:
                            for j in range(n):
                                buf[j] += xp * wt[r, j]
                        continue
                    c, o = pat[p], base[p]
                    if xp == 1.0:
                        for q in range(ptr[c], ptr[c + 1]):
                            buf[o + idx[q]] += val[q]
                    else:
                        for q in range(ptr[c], ptr[c + 1]):
                            buf[o + idx[q]] += xp * val[q]
                sc = scale[m]
                for j in range(n):
                    d[j] += buf[j] * sc
            _row_step(v, i, ref, d, spk, todo, below, bb, k_in, cuba, vl, a, coef, b, vr, vth, tr, aS, bS, gS,
                      gmax, h, S, closed, margin)
        return spk

    @njit(cache=True)
    def _add_csr(x, ptr, idx, val, scale, out, buf):
        R, n_pre = x.shape
        for r in range(R):
            buf[:] = 0.0
            for p in range(n_pre):
                xp = x[r, p]
                if xp == 1.0:
                    for q in range(ptr[p], ptr[p + 1]):
                        buf[idx[q]] += val[q]
                elif xp != 0.0:
                    for q in range(ptr[p], ptr[p + 1]):
                        buf[idx[q]] += xp * val[q]
            for j in range(buf.shape[0]):
                out[r, j] += buf[j] * scale
        return out

    @njit(cache=True)
    def _add_rows(x, wt, scale, out, buf):
        R, n_pre = x.shape
        n = wt.shape[1]
        for r in range(R):
            buf[:] = 0.0
            for p in range(n_pre):
                xp = x[r, p]
                if xp == 1.0:
                    for j in range(n):
                        buf[j] += wt[p, j]
                elif xp != 0.0:
                    for j in range(n):
                        buf[j] += xp * wt[p, j]
            for j in range(n):
                out[r, j] += buf[j] * scale
        return out


def available() -> bool:
    return njit is not None


def pack(P, n: int) -> tuple:
    """A layer's parameters as the contiguous float64 (n,) arrays the compiled loop takes."""
    return tuple(np.ascontiguousarray(np.broadcast_to(np.asarray(P[k], np.float64), (n,))) for k in PARAM_KEYS)


def fine_steps(v, i, ref, drive, noise, cuba, P, h):
    """Compiled version of :func:`fine_steps_numpy` (same arguments and results;
    ``v``, ``i``, ``ref`` are updated in place and returned). ``P`` may be the
    parameter dict or its :func:`pack` (saves the packing per call)."""
    prm = P if isinstance(P, tuple) else pack(P, v.shape[1])
    v, i, ref = (np.ascontiguousarray(x, dtype=np.float64) for x in (v, i, ref))
    has_noise = noise is not None
    nz = np.ascontiguousarray(noise, dtype=np.float64) if has_noise else np.zeros((1, 1, 1))
    return _loop(v, i, ref, np.ascontiguousarray(drive, dtype=np.float64), nz, has_noise, bool(cuba), *prm, float(h))


def pack_step(P, n: int, S: int) -> tuple:
    """:func:`pack` plus the closed-form constants of a model step of ``S`` fine steps
    (the closed form of the module docstring): ``a^S``, ``b^S``, ``X_S`` and ``max_{K≤S} X_K`` with
    ``X_K = Σ_{m<K} a^{K−1−m}·b^m`` (``X_1 = 1``, ``X_{K+1} = a·X_K + b^K``), float64 (n,)."""
    prm = pack(P, n)
    a, b = prm[1], prm[3]
    x, bk, g = np.ones(n), b.copy(), np.ones(n)
    for _ in range(S - 1):
        x = a * x + bk
        bk = bk * b
        g = np.maximum(g, x)
    return prm + (np.power(a, S), np.power(b, S), x, g)


def fine_steps_step(v, i, ref, d, k_in, cuba, prm, h, S, closed: bool = True):
    """:func:`fine_steps` for a drive ``d`` (B, n) that arrives on fine step ``k_in`` only
    (0 for cuba layers, S − 1 for the others; ``prm``: the :func:`pack_step`); no noise.
    ``closed``: the closed form of the module docstring where it applies (else the step
    iteration for every neuron, bit-identical to :func:`fine_steps`). Updates ``v``, ``i``,
    ``ref`` in place (float64, C-contiguous) and returns the step's spikes (B, n)."""
    if int(k_in) != (0 if cuba else int(S) - 1):
        raise ValueError("the step drive lands on fine step 0 (cuba) or S − 1 (other layers)")
    return _loop_step(v, i, ref, np.ascontiguousarray(d, dtype=np.float64), int(k_in), bool(cuba), *prm,
                      float(h), int(S), bool(closed), CLOSED_MARGIN)


class Projection:
    """One projection's synapses as the input kernels take them: the integer effective
    matrix (post, pre) ``w_int`` and the layer's LSB ``scale``; by source (CSR) when at
    most :data:`CSR_DENSITY` dense, else as dense (pre, post) rows. With numba, both are
    walked per active source (a step's work ∝ its events, as the chip routes them), except
    dense rows onto fewer than :data:`ROWS_MIN_POST` neurons; those, and everything without
    numba, take one matmul of the same integers (the same sums: they are exact)."""

    def __init__(self, w_int: np.ndarray, scale):
        w = np.asarray(w_int)
        self.n_post, self.n_pre = w.shape
        self.scale = scale
        self.csr = available() and w.size > 0 and np.count_nonzero(w) <= CSR_DENSITY * w.size
        wt = np.ascontiguousarray(w.T)
        if self.csr:
            pre, post = np.nonzero(wt)
            # unsigned, as the fused inputs' (:class:`LayerInputs`): the compiled scatter indexes without
            # the negative-index wraparound test
            self.ptr = np.searchsorted(pre, np.arange(self.n_pre + 1)).astype(np.uint64)
            self.idx = post.astype(np.uint64)
            self.val = wt[pre, post].astype(np.float64)
        else:
            self.wt = wt.astype(np.float64)

    def add_to(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out += self(x)`` for events ``x`` (R, pre) and ``out`` (R, post) float64
        C-contiguous, bit for bit (per row: the integer sum, × LSB, added to ``out``),
        without the (R, post) temporaries."""
        x2 = np.ascontiguousarray(x, dtype=np.float64)
        if not available() or (not self.csr and self.n_post < ROWS_MIN_POST):
            out += (x2 @ self.wt) * self.scale
        elif self.csr:
            _add_csr(x2, self.ptr, self.idx, self.val, float(self.scale), out, np.empty(self.n_post))
        else:
            _add_rows(x2, self.wt, float(self.scale), out, np.empty(self.n_post))
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Input of events ``x`` (..., pre) → (..., post): Σ integer weights, then × LSB."""
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.n_pre)
        return self.add_to(x2, np.zeros((x2.shape[0], self.n_post))).reshape(*lead, self.n_post)


class LayerInput:
    """All projections into one layer as one fused kernel's arrays: the sources side by side
    (projection ``m`` takes columns ``pstart[m]:pstart[m+1]`` of the concatenated events), CSR
    synapses as shared shifted patterns (source ``p``: pattern ``pat[p]`` at ``base[p]``; see the
    module docstring), dense rows stacked. :meth:`step` computes each
    sample's drive in a row buffer — per projection, in order: the integer sum, × LSB, added to
    the row (the operations of :meth:`Projection.add_to` on a zeroed drive) — and runs that
    sample's :func:`fine_steps_step` on it at once, so the (B, n) drive is never written.
    ``walked``: every projection is walked per active source (with numba: CSR, or dense rows onto
    at least :data:`ROWS_MIN_POST` neurons); only then does the fused kernel apply — a matmul
    projection's sum would take another order."""

    def __init__(self, projections: list):
        self.projections = tuple(projections)
        self.walked = available() and len(self.projections) > 0 and all(
            q.csr or q.n_post >= ROWS_MIN_POST for q in self.projections)
        if not self.walked:
            return
        n = self.projections[0].n_post
        self.pstart = np.cumsum([0] + [q.n_pre for q in self.projections]).astype(np.int64)
        self.rows = np.array([not q.csr for q in self.projections], np.bool_)
        self.rstart = np.cumsum([0] + [0 if q.csr else q.n_pre for q in self.projections])[:-1].astype(np.int64)
        self.scale = np.array([float(q.scale) for q in self.projections], np.float64)
        # a CSR source's synapses as a pattern (offsets from its first target, weights) shifted to that
        # target: sources with equal patterns (the positions of a convolution) share one copy
        keys: dict = {}
        pat, base, ptr, idx, val = [], [], [0], [], []
        for q in self.projections:
            for p in range(q.n_pre):
                if q.csr:
                    lo, hi = q.ptr[p], q.ptr[p + 1]
                    o = int(q.idx[lo]) if hi > lo else 0
                    rel, w = q.idx[lo:hi] - o, q.val[lo:hi]
                else:   # dense rows: an empty pattern (the kernel reads the rows)
                    lo = hi = o = 0
                    rel, w = np.zeros(0, np.uint64), np.zeros(0)
                c = keys.setdefault((rel.tobytes(), w.tobytes()), len(keys))
                if c == len(ptr) - 1:
                    idx.append(rel)
                    val.append(w)
                    ptr.append(ptr[-1] + hi - lo)
                pat.append(c)
                base.append(o)
        # unsigned: the compiled scatter then indexes without the negative-index wraparound test
        self.pat, self.base = np.array(pat, np.uint64), np.array(base, np.uint64)
        self.ptr = np.array(ptr, np.uint64)
        self.idx = np.concatenate(idx).astype(np.uint64)
        self.val = np.concatenate(val).astype(np.float64)
        wts = [q.wt for q in self.projections if not q.csr]
        self.wt = np.ascontiguousarray(np.concatenate(wts)) if wts else np.zeros((0, n))

    def step(self, xs: list, v, i, ref, k_in, cuba, prm, h, S, closed: bool = True) -> np.ndarray:
        """The layer's model step for events ``xs`` (one (B, pre) array per projection, in order):
        ``v``, ``i``, ``ref`` updated in place; returns the spikes (B, n), bit for bit
        :meth:`Projection.add_to` of each projection onto a zero drive, then :func:`fine_steps_step`."""
        if int(k_in) != (0 if cuba else int(S) - 1):
            raise ValueError("the step drive lands on fine step 0 (cuba) or S − 1 (other layers)")
        x = np.ascontiguousarray(np.concatenate(xs, axis=1) if len(xs) > 1 else xs[0], dtype=np.float64)
        return _layer_step(x, self.pstart, self.rows, self.rstart, self.scale, self.pat, self.base, self.ptr, self.idx,
                           self.val, self.wt,
                           v, i, ref, int(k_in), bool(cuba), *prm, float(h), int(S), bool(closed), CLOSED_MARGIN)
