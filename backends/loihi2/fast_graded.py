"""A compiled (numba) run loop for Loihi 2 programs of graded units and links alone (a mapped SSM).

:class:`~.emulator.LoihiEmulator` runs a program with LIF groups in :mod:`.fast`; a program that
holds only graded units and their links (:mod:`.graded`: Lava's fixed_pt ``Sigma``, ``GradedVec``,
``GradedReluVec``, ``Delta``, ``Dense`` / ``DelayDense``), as :func:`.ssm.map_diag_ssm` builds for a
DiagSSM fed by the input, runs here: the whole run in one compiled loop, the state laid out
(unit row, sample) with the batch innermost, so a link's weight is read once per step for the
whole batch (the dense links of one source, :data:`DENSE_MIN`, e.g. Lava's W⁺ and W⁻ of a signed
link: their matrices stacked, one matmul per step, each link's rows floored with its own exponent;
binary W⁺/W⁻ pairs as one matrix W⁺ + K·W⁻, :func:`_packable`, halving the float32 product;
a signed link's W⁺/W⁻ pair of payloads the same way in float64 on every step whose max|s| keeps
all partial sums within 2^53, K chosen per step (:func:`_pair64`; else both products; the rule of
both, K, the bound and the unpacking, is :func:`pack_k`'s);
a sparse one, e.g. the recurrence's 2×2 blocks: walked per source row that carries a value in some
sample). The tables are built once per program (:func:`tables`); the matmuls write into rows
allocated once per run. The arithmetic is :mod:`.graded`'s, step for step:

* every unit reads the sum ``a`` of its links' buffers sent at the start of the step (column 0),
  then steps: sigma ``σ ← σ + a``, sends σ; graded ``a·[|a| > vth]``; relu ``a·[a > vth]``; delta
  ``d = a − act + residue``, ``s = d·[|d| ≥ vth]``, ``residue ← d − s``, ``act ← a``;
* then every link receives its source's output of this step (the input's payload of step t, binary
  messages as ``s ≠ 0``): ``acc = W·s`` over the link's non-zero weights (Lava's weights,
  :func:`.emulator.lava_weights`), shifted by its exponent (``<< e``, or ``>> −e``: arithmetic, toward
  −∞), into the column ``delay`` of its ring of ``delay + 1`` columns (what a source sends at step t
  arrives at t + 1 + delay); a link of delay 0 adds its floored sum straight into the next step's
  unit inputs (no ring: the same sum, integers add exactly in any order).

Every value is an integer below 2^53 (8-bit weights; the mapping keeps payloads within 24 bits and
link sums within Lava's int32), so the loop holds them all exactly in float64 (the numpy emulator's
matmul sums in float64 too): a sum is exact in any order, ``·2^e`` is exact and ``⌊acc·2^e⌋`` for
e < 0 is the arithmetic shift ``acc >> −e``; the float64 loops vectorise over the batch (AVX2 has no
packed int64 multiply or float→int64 conversion). The result equals the numpy path's bit for bit
(the tests compare both, and Lava). Used by
:meth:`.emulator.LoihiEmulator.run` when numba is installed and the program has no LIF groups,
synapses or learning.
"""
from __future__ import annotations

import numpy as np

from ..program_cache import derived, fields_of

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; keep the numpy path usable without it
    njit = None

#: a link whose non-zero weights fill more than this fraction of its matrix is one matmul per step
#: (BLAS, exact: integer products and sums below 2^53; in float32 for binary messages when every
#: row's Σ|w| ≤ 2^24, so every partial sum is an integer float32 holds); sparser ones are walked per
#: live source row
DENSE_MIN = 0.25

#: float32 / float64 hold every integer of magnitude up to these: :func:`pack_k` keeps its sums below them
LIMIT_F32 = 2.0 ** 24
LIMIT_F64 = 2.0 ** 53

#: unit kinds as the loop's codes
KIND_CODES = {"sigma": 0, "graded": 1, "relu": 2, "delta": 3}

if njit is not None:

    @njit(cache=True)
    def pack_k(sum_p, sum_n, m, limit, centred):
        """K that packs a W⁺/W⁻ pair (W⁺ ≥ 0, W⁻ ≤ 0, one shape) as one matrix W⁺ + K·W⁻, or 0 when the
        pair must take two products. The payloads s: |s| ≤ m; ``sum_p``, ``sum_n`` the largest column
        sums of W⁺ and |W⁻|, so A⁺ = sum_p·m bounds |W⁺·s| and A⁻ = sum_n·m bounds |W⁻·s|.

        * ``centred`` False (s ≥ 0: binary messages, m = 1): 0 ≤ W⁺·s ≤ A⁺, K the power of two (≥ 2)
          above A⁺; unpacking W⁻·s = ⌊q/K⌋, W⁺·s = q − K·⌊q/K⌋;
        * ``centred`` True (signed s): |W⁺·s| ≤ A⁺, K the power of two (≥ 2) above 2·A⁺; unpacking
          W⁻·s = ⌊(q + K/2)/K⌋, W⁺·s = q − K·W⁻·s.

        Exact when every partial sum of q = W⁺·s + K·W⁻·s, in any order, and q + K/2 (centred) are
        integers of magnitude below ``limit``, all of which the product's float type holds
        (:data:`LIMIT_F32` = 2^24, :data:`LIMIT_F64` = 2^53): K is returned when
        A⁺ + K·A⁻ (+ K/2 centred) < limit, else 0 (the bound's own float64 sum is exact below 2^53
        and rounds to at least 2^53 above it, so the comparison is exact). K a power of two: ·K, /K
        and the floors are exact."""
        kk = 2.0
        while kk <= (2.0 if centred else 1.0) * sum_p * m:
            kk *= 2.0
        if sum_p * m + kk * sum_n * m + (0.5 * kk if centred else 0.0) >= limit:
            return 0.0
        return kk

    @njit(cache=True)
    def _loop(T, B, x_all, n_in, kind, vth, l_src, l_nsrc, l_dst, l_ndst, l_scale, l_bin, l_delay, l_buf,
              l_ptr, csr_ptr, csr_idx, csr_val, n_buf, rec_idx, n_rec, l_grp, g_src, g_ns, g_nd, g_f32, g_bin,
              g_off, g_mem_ptr, g_mem, g_row, g_pk, g_sum, dense_all, dense32, need_bin):
        nu = kind.shape[0]
        n_link = l_src.shape[0]
        vals = np.zeros((n_in + nu, B))                  # this step's payloads: inputs, then units
        bvals = np.zeros((n_in + nu, B))                 # the same as binary messages (s ≠ 0 → 1)
        bvals32 = np.zeros((n_in + nu, B), np.float32)
        a_in = np.zeros((nu, B))                         # this step's unit inputs
        a_nx = np.zeros((nu, B))                         # the next step's, from the links of delay 0
        sig = np.zeros((nu, B))                          # sigma's σ; delta's act
        res = np.zeros((nu, B))                          # delta's residue
        buf = np.zeros((n_buf, B))                       # rings of the links of delay > 0; sparse links' sums
        rec = np.empty((T, B, n_rec))                    # the recorded payloads (integers, exact in float64)
        ng_max = 0
        for g in range(g_nd.shape[0]):
            ng_max = max(ng_max, g_nd[g])
        prod64 = np.zeros((ng_max, B))                   # a source's stacked link sums of this step
        prod32 = np.zeros((ng_max, B), np.float32)
        packed = np.zeros_like(dense_all)                # W⁺ + K·W⁻ of the signed pairs (_pair64), per K
        k_of = np.zeros(g_src.shape[0])                  # the K `packed` holds, per group (0: none yet)
        zero = 0.0
        for t in range(T):
            a_in, a_nx = a_nx, a_in                      # delay 0: received last step, sent now
            a_nx[:, :] = 0.0
            for k in range(n_link):                      # links of delay > 0 send column 0 of their ring
                if l_delay[k] == 0:
                    continue
                d0, nd = l_dst[k], l_ndst[k]
                col = l_buf[k] + (t % (l_delay[k] + 1)) * nd
                for r in range(nd):
                    for b in range(B):
                        a_in[d0 + r, b] += buf[col + r, b]
            for j in range(nu):                          # units step
                kd, th = kind[j], vth[j]
                v = vals[n_in + j]
                if kd == 0:
                    for b in range(B):
                        sig[j, b] += a_in[j, b]
                        v[b] = sig[j, b]
                elif kd == 1:
                    for b in range(B):
                        x = a_in[j, b]
                        v[b] = x if abs(x) > th else zero
                elif kd == 2:
                    for b in range(B):
                        x = a_in[j, b]
                        v[b] = x if x > th else zero
                else:
                    for b in range(B):
                        x = a_in[j, b]
                        dd = x - sig[j, b] + res[j, b]
                        sv = dd if abs(dd) >= th else zero
                        res[j, b] = dd - sv
                        sig[j, b] = x
                        v[b] = sv
                if rec_idx[j] >= 0:
                    ri = rec_idx[j]
                    for b in range(B):
                        rec[t, b, ri] = v[b]
            for i in range(n_in):                        # the inputs' payloads of this step
                for b in range(B):
                    vals[i, b] = x_all[t, b, i] if t < x_all.shape[0] else zero
            for i in range(n_in + nu):
                if need_bin[i]:
                    for b in range(B):
                        bvals[i, b] = 1.0 if vals[i, b] != 0 else zero
                        bvals32[i, b] = bvals[i, b]
            for g in range(g_src.shape[0]):              # dense links: one matmul per source, links stacked
                s0, ns, ng = g_src[g], g_ns[g], g_nd[g]
                prod = prod64[:ng]                       # the product into preallocated rows: no allocation
                if g_f32[g]:                             # binary messages, row sums below 2^24: float32
                    wd32 = dense32[g_off[g]: g_off[g] + ng * ns].reshape((ng, ns))
                    p32 = prod32[:ng]
                    np.dot(wd32, bvals32[s0: s0 + ns], p32)
                    for r in range(ng):                  # exact: integers below 2^24
                        for b in range(B):
                            prod[r, b] = p32[r, b]
                else:
                    src = bvals if g_bin[g] else vals
                    wd = dense_all[g_off[g]: g_off[g] + ng * ns].reshape((ng, ns))
                    kk = 0.0
                    if g_sum[g, 0] > 0:                  # a signed pair: packed when this step's bound allows
                        m = 0.0
                        for i in range(s0, s0 + ns):
                            for b in range(B):
                                m = max(m, abs(src[i, b]))
                        kk = pack_k(g_sum[g, 0], g_sum[g, 1], m, LIMIT_F64, True)
                    if kk > 0:
                        h = ng // 2
                        wp = packed[g_off[g]: g_off[g] + h * ns].reshape((h, ns))
                        if k_of[g] != kk:
                            k_of[g] = kk
                            for r in range(h):
                                for i in range(ns):
                                    wp[r, i] = wd[r, i] + kk * wd[h + r, i]
                        np.dot(wp, src[s0: s0 + ns], prod[:h])
                        for r in range(h):               # q = P + K·N, |P| < K/2: N = ⌊(q + K/2)/K⌋, P = q − K·N
                            for b in range(B):
                                q = prod[r, b]
                                nn = np.floor((q + 0.5 * kk) / kk)
                                prod[r, b] = q - kk * nn
                                prod[h + r, b] = nn
                    else:
                        np.dot(wd, src[s0: s0 + ns], prod)
                for m in range(g_mem_ptr[g], g_mem_ptr[g + 1]):
                    k, r0, pk = g_mem[m], g_row[m], g_pk[m]
                    d0, nd, sc, dl = l_dst[k], l_ndst[k], l_scale[k], l_delay[k]
                    # this link's value from the rows q: plain q; a packed pair's (q = W⁺·s + K·W⁻·s)
                    # W⁺·s = q − K·⌊q/K⌋ (pk = K) or W⁻·s = ⌊q/K⌋ (pk = −K); all exact (K a power of two)
                    ca, cb, kinv = 1.0, 0.0, 0.0
                    if pk > 0:
                        cb, kinv = -pk, 1.0 / pk
                    elif pk < 0:
                        ca, cb, kinv = 0.0, 1.0, -1.0 / pk
                    if dl == 0:                          # floored straight into the next step's inputs
                        for r in range(nd):
                            row, pr = a_nx[d0 + r], prod[r0 + r]
                            for b in range(B):
                                q = pr[b]
                                row[b] += np.floor((ca * q + cb * np.floor(q * kinv)) * sc)
                    else:                                # into the ring: sent at t + 1 + delay
                        col0 = l_buf[k] + (t % (dl + 1)) * nd
                        for r in range(nd):
                            row, pr = buf[col0 + r], prod[r0 + r]
                            for b in range(B):
                                q = pr[b]
                                row[b] = np.floor((ca * q + cb * np.floor(q * kinv)) * sc)
            for k in range(n_link):                      # sparse links receive
                if l_grp[k] >= 0:
                    continue
                s0, nd, sc, dl = l_src[k], l_ndst[k], l_scale[k], l_delay[k]
                src = bvals if l_bin[k] else vals
                col0 = l_buf[k] + (t % (dl + 1)) * nd    # sent this step: cleared, becomes column `delay`
                for r in range(nd):
                    for b in range(B):
                        buf[col0 + r, b] = zero
                p0 = l_ptr[k]
                for j in range(l_nsrc[k]):               # W·s per source row, sources without a value skipped
                    i = s0 + j
                    live = False
                    for b in range(B):
                        if src[i, b] != 0:
                            live = True
                            break
                    if not live:
                        continue
                    si = src[i]
                    for q in range(csr_ptr[p0 + j], csr_ptr[p0 + j + 1]):
                        w = csr_val[q]
                        row = buf[col0 + csr_idx[q]]
                        for b in range(B):
                            row[b] += w * si[b]
                d0 = l_dst[k]
                for r in range(nd):                      # the exponent: ·2^e, floored (= the shift)
                    row = buf[col0 + r]
                    if dl == 0:                          # delay 0: straight into the next step's inputs
                        nx = a_nx[d0 + r]
                        for b in range(B):
                            nx[b] += np.floor(row[b] * sc)
                    else:
                        for b in range(B):
                            row[b] = np.floor(row[b] * sc)
        return rec


def _signed_pair(members):
    """``((link⁺, W⁺), (link⁻, W⁻))`` when ``members`` are two links of one shape, one with weights ≥ 0
    and one ≤ 0 (Lava's W⁺ and W⁻ of a signed link, in either order); else None."""
    if len(members) != 2 or members[0][1].shape != members[1][1].shape:
        return None
    (la, wa), (lb, wb) = members
    if (wa <= 0).all() and (wb >= 0).all():
        (la, wa), (lb, wb) = (lb, wb), (la, wa)
    if not ((wa >= 0).all() and (wb <= 0).all()):
        return None
    return (la, wa), (lb, wb)


def _col_sums(pair):
    """The largest column sums of W⁺ and |W⁻| of a :func:`_signed_pair`."""
    (_, wa), (_, wb) = pair
    return float(wa.sum(0).max(initial=0)), float(np.abs(wb).sum(0).max(initial=0))


def _packable(members):
    """``((link⁺, W⁺), (link⁻, W⁻), K)`` when two float32 links of binary messages (s ∈ {0, 1}) are a
    :func:`_signed_pair` that fits one matrix W⁺ + K·W⁻ for good: K = :func:`pack_k` at m = 1, not
    centred, within :data:`LIMIT_F32`; else None."""
    pair = _signed_pair(members)
    if pair is None:
        return None
    kk = pack_k(*_col_sums(pair), 1.0, LIMIT_F32, False)
    return None if kk == 0 else (*pair, kk)


def _pair64(members):
    """``((link⁺, W⁺), (link⁻, W⁻), (ΣW⁺, Σ|W⁻|))`` when a source's dense float64 links are a
    :func:`_signed_pair` (the column sums their largest, ΣW⁺ at least 1); else None. The loop packs them
    on every step whose payloads allow: K = :func:`pack_k` at m = max|s| over the source rows and the
    batch, centred, within :data:`LIMIT_F64`; otherwise the step takes the stacked product of both."""
    pair = _signed_pair(members)
    if pair is None:
        return None
    sp, sn = _col_sums(pair)
    return (*pair, (max(sp, 1.0), sn))


def available() -> bool:
    return njit is not None


def applies(emu) -> bool:
    """Whether the loop runs ``emu``'s program: graded units, no LIF groups, synapses or learning."""
    p = emu.p
    return bool(p.units) and not p.groups and not p.synapses and not emu.learn


def table_inputs(program) -> tuple:
    """What the loop's tables derive from: the numerics (the weight width), every unit's, link's and
    input port's fields and :data:`DENSE_MIN` (compared as :func:`~..program_cache.derived` does)."""
    return (program.numerics, DENSE_MIN, fields_of(*program.inputs, *program.units, *program.links))


def tables(emu, widths: tuple) -> dict:
    """The loop's per-program arrays (unit codes, link rows, CSR blocks, stacked dense matrices) for
    inputs of ``widths`` (values per port, in ``p.inputs`` order), built once per program
    (:func:`~..program_cache.derived`: a weight replaced, a field or the numerics changed rebuild them)."""
    return derived(emu.p, "loihi2.fast_graded.tables", (table_inputs(emu.p), tuple(widths)),
                   lambda: _build(emu, widths))


def _build(emu, widths) -> dict:
    p = emu.p
    off, n_in = {}, 0
    for port, w in zip(p.inputs, widths):
        off[port.name] = n_in
        n_in += int(w)
    uoff, nu = {}, 0
    for u in p.units:
        uoff[u.name] = nu
        nu += u.n
    kind = np.concatenate([np.full(u.n, KIND_CODES[u.kind], np.int64) for u in p.units])
    vth = np.concatenate([np.full(u.n, float(u.vth)) for u in p.units])
    cols = {k: [] for k in ("src", "nsrc", "dst", "ndst", "scale", "bin", "delay", "buf", "ptr", "grp")}
    ptrs, idxs, vals = [], [], []
    groups = {}                                          # (source row, n_src, binary, float32) → [(link, wt)]
    n_buf = n_ptr = n_nz = 0
    for k, wt in emu.links:                              # wt: Lava's weights (n_src, n_dst) as float64
        rows, cs = np.nonzero(wt)                        # by source row: its targets
        ns, nd = wt.shape
        s0 = off[k.src] if k.src in off else n_in + uoff[k.src]
        binary = k.num_message_bits == 0
        cols["grp"].append(-1)
        if rows.size > DENSE_MIN * wt.size:              # dense: stacked with its source's others, no row tables
            f32 = binary and np.abs(wt).sum(0).max(initial=0) <= 2 ** 24   # sums of ≤ 2^24 integers
            key = (s0, ns, binary, bool(f32))
            cols["grp"][-1] = list(groups).index(key) if key in groups else len(groups)
            groups.setdefault(key, []).append((len(cols["src"]), wt))
            rows, cs = rows[:0], cs[:0]
        cols["src"].append(s0)
        cols["nsrc"].append(ns)
        cols["dst"].append(uoff[k.dst])
        cols["ndst"].append(nd)
        cols["scale"].append(2.0 ** int(k.weight_exp))
        cols["bin"].append(binary)
        cols["delay"].append(int(k.delay))
        cols["buf"].append(n_buf)
        cols["ptr"].append(n_ptr)
        ptrs.append(np.searchsorted(rows, np.arange(ns + 1)).astype(np.int64) + n_nz)
        idxs.append(cs.astype(np.int64))
        vals.append(wt[rows, cs].astype(np.float64))
        n_buf += (int(k.delay) + 1) * nd
        n_ptr += ns + 1
        n_nz += rows.size
    # a source's dense links as one matrix [W_1ᵀ; W_2ᵀ; …] (e.g. Lava's W⁺ and W⁻ of one signed link):
    # one matmul per step, each link's rows of the product floored with its own exponent
    g = {k: [] for k in ("src", "ns", "nd", "f32", "bin", "off", "mem_ptr", "mem", "row", "pk", "sum")}
    dense, dense32, n_dense, n_dense32 = [], [], 0, 0
    g["mem_ptr"].append(0)
    for (s0, ns, binary, f32), members in groups.items():
        blocks, rows_of = [], []                         # rows_of: (link, first row, packing code)
        pair = None if f32 else _pair64(members)
        g["sum"].append((0.0, 0.0) if pair is None else pair[2])
        if pair is not None:
            members = list(pair[:2])                     # W⁺ first, W⁻ second
        i, r0 = 0, 0
        while i < len(members):
            li, wt = members[i]
            pair = _packable(members[i: i + 2]) if f32 else None
            if pair is None:
                blocks.append(wt.T)
                rows_of.append((li, r0, 0.0))
                r0 += wt.shape[1]
                i += 1
                continue
            (lp, wp), (ln, wn), kk = pair
            blocks.append(wp.T + kk * wn.T)
            rows_of += [(lp, r0, kk), (ln, r0, -kk)]
            r0 += wp.shape[1]
            i += 2
        stack = np.concatenate(blocks, axis=0)           # (Σ n_dst, n_src)
        g["src"].append(s0)
        g["ns"].append(ns)
        g["nd"].append(stack.shape[0])
        g["f32"].append(f32)
        g["bin"].append(binary)
        g["off"].append(n_dense32 if f32 else n_dense)
        (dense32 if f32 else dense).append(np.ascontiguousarray(stack).reshape(-1))
        if f32:
            n_dense32 += stack.size
        else:
            n_dense += stack.size
        for li, r0, kk in rows_of:
            g["mem"].append(li)
            g["row"].append(r0)
            g["pk"].append(kk)
        g["mem_ptr"].append(len(g["mem"]))
    need_bin = np.zeros(n_in + nu, np.bool_)             # rows some binary link reads
    for s0, ns, binary in zip(cols["src"], cols["nsrc"], cols["bin"]):
        if binary:
            need_bin[s0: s0 + ns] = True
    a = lambda key, t=np.int64: np.asarray(cols[key], t)  # noqa: E731
    ga = lambda key, t=np.int64: np.asarray(g[key], t)  # noqa: E731
    cat = lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t)  # noqa: E731
    args = (n_in, kind, vth, a("src"), a("nsrc"), a("dst"), a("ndst"), a("scale", np.float64), a("bin", np.bool_),
            a("delay"), a("buf"), a("ptr"), cat(ptrs, np.int64), cat(idxs, np.int64), cat(vals, np.float64),
            max(n_buf, 1))
    gargs = (a("grp"), ga("src"), ga("ns"), ga("nd"), ga("f32", np.bool_), ga("bin", np.bool_), ga("off"),
             ga("mem_ptr"), ga("mem"), ga("row"), ga("pk", np.float64),
             np.asarray(g["sum"], np.float64).reshape(-1, 2), cat(dense, np.float64),
             cat(dense32, np.float32), need_bin)
    return {"off": off, "n_in": n_in, "uoff": uoff, "nu": nu, "args": args, "gargs": gargs}


def run(emu, inputs: dict, steps: int, record=None) -> dict:
    """Run ``emu`` (a LoihiEmulator whose program :func:`applies`) in the compiled loop; the result
    layout of ``emu.run``: ``{unit: {"s", "v"}}`` (the payloads, (steps, B, n) float64 holding integers, so
    the device divides them by the scale in place) for the units
    in ``record`` (default: all)."""
    p = emu.p
    B = next(iter(inputs.values())).shape[1] if inputs else 1
    xs = []
    for port in p.inputs:
        x = np.asarray(inputs[port.name])
        xs.append(x.reshape(x.shape[0], B, -1))
    tb = tables(emu, tuple(x.shape[2] for x in xs))
    off, n_in, uoff, nu = tb["off"], tb["n_in"], tb["uoff"], tb["nu"]
    Tin = max((x.shape[0] for x in xs), default=0)
    if len(xs) == 1 and off[p.inputs[0].name] == 0 and xs[0].shape[2] == n_in:
        x_all = np.ascontiguousarray(xs[0], np.float64)   # (step, sample, input): one port, used as it is
    else:
        x_all = np.zeros((Tin, B, max(n_in, 1)))
        for port, x in zip(p.inputs, xs):
            k = port.name
            x_all[: x.shape[0], :, off[k]: off[k] + x.shape[2]] = x
    keep = [u for u in p.units if record is None or u.name in set(record)]
    rec_idx = np.full(nu, -1, np.int64)
    roff, n_rec = {}, 0
    for u in keep:
        rec_idx[uoff[u.name]: uoff[u.name] + u.n] = np.arange(n_rec, n_rec + u.n)
        roff[u.name] = n_rec
        n_rec += u.n
    rec = _loop(int(steps), int(B), x_all, *tb["args"], rec_idx, n_rec, *tb["gargs"])
    out = {}
    for u in keep:
        s = rec[:, :, roff[u.name]: roff[u.name] + u.n]
        out[u.name] = {"s": s, "v": s}
    return out
