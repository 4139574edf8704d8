"""A compiled (numba) run loop for :class:`~.emulator.LoihiEmulator`.

Exactly the arithmetic of :mod:`.emulator` (same order, same integer ops, the
widths of the program's ``numerics``),
with the whole network flattened into one neuron vector and the per-step
loop compiled, so batch-1 runs are not dominated by Python overhead. The
state is laid out (neuron, sample), the batch innermost: each step reads a
neuron's parameters and a synapse's weight once for the whole batch, and the
neuron update is branch-free over the batch (a neuron without decays, IF or
sum-pool, skips the two products: the same values). The synapses with one
source, target and message kind and ``weight_exp ≥ 0`` (a mixed-sign
projection's two halves) run as one block (:func:`merged_blocks`, exact). Synapse
blocks at most :data:`CSR_DENSITY` dense (expanded convolutions, pooling,
pruned layers) are accumulated event-driven, walking only the rows of sources
active in some sample, as the chip does; denser blocks go through one matmul,
except in steps where the rows of their active sources hold at most
:data:`CSR_DENSITY` of their entries (sparse activity), which walk them too. Both are exact
(integer products and sums below 2^53), so the order does not matter. Used
automatically when numba is installed; the tests check it bit-exactly against
the numpy implementation and against Lava. The per-program arrays (neuron
parameters, Lava-truncated weights as matmul matrices or CSR tables) are built
once per program (:func:`tables`, through :func:`~..program_cache.derived`: the
program's arrays are read-only and a replaced weight, a changed parameter or a
program lowered for other numerics rebuilds them), with no per-run hashing.
"""
from __future__ import annotations

import numpy as np

from ..program_cache import derived, fields_of
from .emulator import lava_weights_f64

try:
    from numba import njit
    from numba.typed import List
except ImportError:  # pragma: no cover - numba is a dependency; keep the numpy path usable without it
    njit = None

#: synapse blocks at most this dense are accumulated per active source (CSR) instead of by matmul;
#: a denser block is walked in a step whose active sources' rows hold at most this fraction of it
CSR_DENSITY = 0.25
#: denser blocks keep row tables (for those steps) besides their matrix up to this many nonzeros
CSR_BOTH_MAX = 1 << 22
#: a walked block whose accumulator (targets × batch float64) has at least this many entries, in a step
#: where its active sources hold more than half its entries, is walked target by target (its column
#: tables, built for walked blocks of at least 64 targets): the sums stay in one row instead of
#: read-modify-writes all over an accumulator bigger than the caches
PULL_MIN = 1 << 15

if njit is not None:

    @njit(cache=True, inline="always")
    def _shift_in(aj, cj, e, B):
        # a target's next-step input gains its exact integer sum shifted by the weight exponent
        # (acc << e, or acc >> -e toward -inf, Lava's rule); the float64 accumulator is cleared
        if e >= 0:
            for b in range(B):
                aj[b] += np.int64(cj[b]) << e
                cj[b] = 0.0
        else:
            for b in range(B):
                aj[b] += np.int64(cj[b]) >> (-e)
                cj[b] = 0.0

    @njit(cache=True)
    def _lif_tail(du, dv, a, bias, vth, sub, act_shift, v_max, two_v):
        """One neuron's step after its decays, :mod:`.emulator`'s integer rule: ``du``, ``dv`` the
        decayed current and voltage (trunc0(u·ku / 2^decay_bits), the same of v; 0 and v without
        decays), ``a`` the input sum. u' = du + (a << act_shift) wrapped into (−v_max, v_max] (± 2·v_max,
        once each way); v' = dv + u' + bias saturated to [1 − v_max, v_max − 1]; spike s = v' > vth;
        reset on a spike v' ← (v' − vth) & sub (sub all ones: subtract; 0: to zero). Returns
        (u', v', s). Scalars in and out, a plain njit function (the loops store the values)."""
        uu = du + (a << act_shift)
        uu = uu - two_v if uu > v_max else uu
        uu = uu + two_v if uu <= -v_max else uu
        vv = min(max(dv + uu + bias, 1 - v_max), v_max - 1)
        s = vv > vth
        vv = ((vv - vth) & sub) if s else vv
        return uu, vv, s

    @njit(cache=True)
    def _loop(T, B, x_all, n_in, ku, kv, bias, vth, subtract, v0, u0,
              syn_src, syn_len, syn_dst, syn_dlen, syn_exp, syn_bin, Ws,
              syn_csr, csr_ptr, csr_idx, csr_val, csc_ptr, csc_idx, csc_val, rec_idx, n_rec, decay_shift,
              act_shift, v_max, csr_density, pull_min):
        # every state array is (neuron, sample): the batch is the inner, contiguous axis, so a
        # neuron's parameters and a synapse's weight are read once per step for the whole batch, and
        # the neuron update is branch-free over the batch (selects, no data-dependent jumps: vectorised)
        ng = ku.shape[0]
        n_syn = syn_src.shape[0]
        u = np.empty((ng, B), np.int64)
        v = np.empty((ng, B), np.int64)
        for j in range(ng):
            for b in range(B):
                v[j, b] = v0[j]
                u[j, b] = u0[j]
        rec_s = np.zeros((T, B, n_rec), np.bool_)                # only the recorded neurons (rec_idx ≥ 0)
        rec_v = np.zeros((T, B, n_rec), np.int64)
        rec_u = np.zeros((T, B, n_rec), np.int64)
        rec_j = np.flatnonzero(rec_idx >= 0)
        # a_in[j]: the sum of the buffers the synapses into neuron j send this step (filled while they
        # received, the step before); the neuron update reads it and clears it for the next step
        a_in = np.zeros((ng, B), np.int64)
        out = np.zeros((n_in + ng, B))
        dmax = 1
        for k in range(n_syn):
            dmax = max(dmax, syn_dlen[k])
        acc_buf = np.zeros((dmax, B))                    # one synapse's W · x (exact integers in float64)
        row = np.zeros(B)                                  # one target's W · x (the target-major walk)
        act = np.zeros(max(n_in + ng, 1), np.bool_)
        xbin = np.zeros((max(n_in, 1), B))                 # binarised input payloads
        mask = (np.int64(1) << decay_shift) - 1             # trunc0(x) = (x + (x < 0 ? mask : 0)) >> shift
        two_v = 2 * v_max
        for t in range(T):
            for j in range(ng):
                kuj, kvj, bj, vthj = ku[j], kv[j], bias[j], vth[j]
                sub = np.int64(-1) if subtract[j] else np.int64(0)   # reset v ← v − vth (all ones) or v ← 0
                uj, vj, aj, oj = u[j], v[j], a_in[j], out[n_in + j]
                if kuj == 0 and kvj == mask + 1:            # no decays (IF, sum-pool): the same values, no products
                    for b in range(B):
                        uu, vv, s = _lif_tail(0, vj[b], aj[b], bj, vthj, sub, act_shift, v_max, two_v)
                        uj[b] = uu
                        vj[b] = vv
                        aj[b] = 0
                        oj[b] = 1.0 if s else 0.0
                    continue
                for b in range(B):
                    pu = uj[b] * kuj
                    pv = vj[b] * kvj
                    uu, vv, s = _lif_tail((pu + ((pu >> 63) & mask)) >> decay_shift,
                                          (pv + ((pv >> 63) & mask)) >> decay_shift,
                                          aj[b], bj, vthj, sub, act_shift, v_max, two_v)
                    uj[b] = uu
                    vj[b] = vv
                    aj[b] = 0
                    oj[b] = 1.0 if s else 0.0
            for i in range(rec_j.shape[0]):
                j = rec_j[i]
                r = rec_idx[j]
                for b in range(B):
                    rec_s[t, b, r] = out[n_in + j, b] != 0.0
                    rec_v[t, b, r] = v[j, b]
                    rec_u[t, b, r] = u[j, b]
            if t < x_all.shape[0]:
                for b in range(B):
                    for j in range(n_in):
                        out[j, b] = x_all[t, b, j]
            elif t == x_all.shape[0]:
                out[:n_in, :] = 0.0
            for k in range(n_syn):                           # the synapses receive this step's source output
                s0, n_src, d0, dl = syn_src[k], syn_len[k], syn_dst[k], syn_dlen[k]
                x, o = out, s0                               # rows o.. of x: neuron outputs are already 0/1
                if syn_bin[k] and s0 < n_in:                 # an input's payloads: binarised
                    x, o = xbin, 0
                    for j in range(n_src):
                        for b in range(B):
                            xbin[j, b] = 1.0 if out[s0 + j, b] != 0 else 0.0
                ptr, idx, val = csr_ptr[k], csr_idx[k], csr_val[k]
                walk = syn_csr[k]
                nnz_act = 0
                if walk:                                     # the sources active in some sample
                    for j in range(n_src):
                        act[j] = False
                        for b in range(B):
                            if x[o + j, b] != 0.0:
                                act[j] = True
                                break
                        if act[j]:
                            nnz_act += ptr[j + 1] - ptr[j]
                    # a block that has its matrix too is walked only while its active rows hold at
                    # most csr_density of its entries (the static rule when every source is active)
                    walk = Ws[k].size == 0 or nnz_act <= csr_density * n_src * dl
                # most rows active and an accumulator bigger than the caches: walk target by target instead
                # (its sum kept in one row, added to a_in at once; inactive sources add exact zeros)
                if walk and dl * B >= pull_min and 2 * nnz_act > ptr[n_src] and csc_ptr[k].size == dl + 1:
                    cp, ci, cv = csc_ptr[k], csc_idx[k], csc_val[k]
                    e = syn_exp[k]
                    for d in range(dl):
                        for q in range(cp[d], cp[d + 1]):
                            w = cv[q]
                            xj = x[o + ci[q]]
                            for b in range(B):
                                row[b] += xj[b] * w
                        _shift_in(a_in[d0 + d], row, e, B)
                    continue
                if walk:                                     # event-driven: rows of active sources only
                    acc = acc_buf
                    for j in range(n_src):
                        if not act[j]:
                            continue
                        xj = x[o + j]
                        for q in range(ptr[j], ptr[j + 1]):
                            w = val[q]
                            ad = acc[idx[q]]
                            for b in range(B):              # x = 0 adds ±0: the integer sum is unchanged
                                ad[b] += xj[b] * w
                else:
                    acc = Ws[k] @ x[o:o + n_src]
                e = syn_exp[k]                               # buf = acc << e, or acc >> −e (toward −∞)
                for j in range(dl):
                    _shift_in(a_in[d0 + j], acc[j], e, B)
        return rec_s, rec_v, rec_u


def available() -> bool:
    return njit is not None


def table_inputs(program) -> tuple:
    """What the loop's tables derive from: the numerics (the spec's widths), every neuron group's and
    synapse's fields and :data:`CSR_DENSITY` / :data:`CSR_BOTH_MAX` (compared as
    :func:`~..program_cache.derived` does: arrays by identity, frozen read-only; values by value)."""
    return (program.numerics, CSR_DENSITY, CSR_BOTH_MAX, fields_of(*program.groups, *program.synapses))


def tables(emu, integral: bool) -> dict:
    """The loop's per-program arrays (neuron parameters, synapse blocks as matmul matrices or CSR),
    built once per program (:func:`~..program_cache.derived`, keyed by :func:`table_inputs`: a weight
    replaced, a parameter or the numerics changed rebuild them; the program's arrays are read-only, so
    no write in place can leave them stale). ``integral``: the inputs are integers (CSR blocks allowed)."""
    return derived(emu.p, f"loihi2.fast.tables.{bool(integral)}", table_inputs(emu.p), lambda: _build(emu, integral))


def merged_blocks(syn) -> list[tuple]:
    """``(src, dst, weight_exp, binary, W (in, out) float64)`` per block the loop runs: the synapses
    with the same source, target and message kind and ``weight_exp ≥ 0`` (a mixed-sign projection's
    excitatory and inhibitory halves) as one block, ``W = Σ_k W_k · 2^(e_k)`` with exponent 0 — exact,
    since ``(W_k·x) << e_k`` summed over k is ``(Σ_k W_k·2^(e_k))·x`` for integers (all below 2^53, as
    the loop's sums); each synapse with ``weight_exp < 0`` (its own rounding toward −∞) stays alone."""
    out, at, own = [], {}, set()   # own: blocks whose W is an array made here (added to in place)
    for s, wt in syn:
        e, binary = int(s.weight_exp), s.num_message_bits == 0
        if e < 0:
            out.append((s.src, s.dst, e, binary, wt))
            continue
        key = (s.src, s.dst, binary)
        if key in at:
            i = at[key]
            prev = out[i][4]
            if i in own:                      # one array per block: no fresh W-sized temporaries
                if e:
                    prev += wt * float(2 ** e)
                else:
                    prev += wt
                continue
            if e:
                acc = wt * float(2 ** e)
                acc += prev                   # = prev + W·2^e (addition commutes, bit for bit)
            else:
                acc = prev + wt
            own.add(i)
            out[i] = (*out[i][:4], acc)
        else:
            w = wt * float(2 ** e) if e else wt
            if e:
                own.add(len(out))
            at[key] = len(out)
            out.append((s.src, s.dst, 0, binary, w))
    return out


def _build(emu, integral: bool) -> dict:
    goff, ng = {}, 0
    for name, g in emu.groups.items():
        goff[name] = ng
        ng += g.g.n
    cat = lambda f: np.concatenate([np.broadcast_to(f(g), (g.g.n,)).astype(np.int64) for g in emu.groups.values()])  # noqa: E731
    t = {"goff": goff, "ng": ng, "ku": cat(lambda g: g.ku), "kv": cat(lambda g: g.kv),
         "bias": cat(lambda g: g.bias), "vth": cat(lambda g: np.int64(g.vth)),
         "subtract": np.concatenate([np.full(g.g.n, g.subtract) for g in emu.groups.values()]),
         "v0": cat(lambda g: np.asarray(g.g.v_init, np.int64).reshape(-1) if np.ndim(g.g.v_init) else np.int64(g.g.v_init)),
         "u0": cat(lambda g: np.asarray(g.g.u_init, np.int64).reshape(-1) if np.ndim(g.g.u_init) else np.int64(g.g.u_init))}
    srcs, syn_len, syn_dst, syn_dlen, syn_exp, syn_bin = [], [], [], [], [], []
    Ws, csr_ptr, csr_idx, csr_val, syn_csr = List(), List(), List(), List(), []
    csc_ptr, csc_idx, csc_val = List(), List(), List()
    # sparse blocks (e.g. expanded convolutions) are walked per active source; exact like the matmul
    # because every product and partial sum is an integer below 2^53 (integer weights and payloads)
    # Lava's weights (post, pre) as row-major float64 (the lowering's are column-major: made row-major
    # in the cast), seen as (in, out) without a copy: a dense block's matmul matrix is the array itself
    # (no transposing copy of a 10⁸-synapse matrix after the cast); emu.syn is not built
    bits = emu.num.weight_bits
    syn = [(s, lava_weights_f64(s.weights, bits, order="C").T) for s in emu.p.synapses]
    for src, dst, e, binary, wt in merged_blocks(syn):
        srcs.append(src)
        syn_len.append(wt.shape[0])
        syn_dst.append(goff[dst])
        syn_dlen.append(wt.shape[1])
        syn_exp.append(e)
        syn_bin.append(binary)
        nnz = np.count_nonzero(wt)
        sparse = integral and wt.size > 0 and nnz <= CSR_DENSITY * wt.size
        # a denser block keeps its row tables too (walked in steps with few active sources) up to CSR_BOTH_MAX
        use = sparse or (integral and 0 < nnz <= CSR_BOTH_MAX)
        # the matmul's (post, pre) @ (pre, sample); a block that is always walked needs no matrix
        Ws.append(np.zeros((0, 0)) if sparse else np.ascontiguousarray(wt.T, dtype=np.float64))
        syn_csr.append(use)
        rows, cols = np.nonzero(wt) if use else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        csr_ptr.append(np.searchsorted(rows, np.arange(wt.shape[0] + 1)).astype(np.int64) if use
                       else np.zeros(1, np.int64))
        csr_idx.append(cols.astype(np.int64))
        csr_val.append(np.ascontiguousarray(wt[rows, cols], dtype=np.float64))
        # the same entries target by target, for blocks whose accumulator outgrows the caches (PULL_MIN)
        pull = use and wt.shape[1] >= 64
        order = np.argsort(cols, kind="stable") if pull else np.zeros(0, np.int64)
        csc_ptr.append(np.searchsorted(cols[order], np.arange(wt.shape[1] + 1)).astype(np.int64) if pull
                       else np.zeros(0, np.int64))
        csc_idx.append(rows[order].astype(np.int64))
        csc_val.append(np.ascontiguousarray(wt[rows[order], cols[order]], dtype=np.float64))
    a = lambda v, t: np.asarray(v, dtype=t)  # noqa: E731
    t.update(srcs=srcs, syn_len=a(syn_len, np.int64), syn_dst=a(syn_dst, np.int64), syn_dlen=a(syn_dlen, np.int64),
             syn_exp=a(syn_exp, np.int64), syn_bin=a(syn_bin, np.bool_), Ws=Ws, syn_csr=a(syn_csr, np.bool_),
             csr_ptr=csr_ptr, csr_idx=csr_idx, csr_val=csr_val, csc_ptr=csc_ptr, csc_idx=csc_idx, csc_val=csc_val)
    return t


def run(emu, inputs: dict, steps: int, record=None) -> dict:
    """Run ``emu`` (a LoihiEmulator) with the compiled loop; same result layout as ``emu.run``.
    ``record``: names of the groups to return (default: all); the others are simulated but
    not written out per step (the records of every neuron dominate large batched runs)."""
    B = next(iter(inputs.values())).shape[1] if inputs else 1
    names_in = list(inputs)
    off, n_in = {}, 0
    xs = []
    for k in names_in:
        x = np.asarray(inputs[k])
        x = x.reshape(x.shape[0], B, -1)
        off[k] = n_in
        n_in += x.shape[2]
        xs.append(x)
    integral = all(x.dtype.kind in "biu" or bool(np.all(x == np.trunc(x))) for x in xs)
    # (T, sample, input), the inputs' own layout: one integer input passes without a copy
    if len(xs) == 1 and xs[0].dtype == np.int64:
        x_all = np.ascontiguousarray(xs[0])
    else:
        Tin = max((x.shape[0] for x in xs), default=0)
        x_all = np.zeros((Tin, B, n_in))
        for k, x in zip(names_in, xs):
            x_all[: x.shape[0], :, off[k]: off[k] + x.shape[2]] = x
    t = tables(emu, integral)
    goff, ng = t["goff"], t["ng"]
    syn_src = np.array([off[k] if k in off else n_in + goff[k] for k in t["srcs"]], np.int64)
    keep = list(emu.groups) if record is None else [k for k in emu.groups if k in set(record)]
    rec_idx = np.full(ng, -1, np.int64)
    roff, n_rec = {}, 0
    for name in keep:
        n = emu.groups[name].g.n
        rec_idx[goff[name]: goff[name] + n] = np.arange(n_rec, n_rec + n)
        roff[name] = n_rec
        n_rec += n
    rs, rv, ru = _loop(int(steps), int(B), x_all, n_in, t["ku"], t["kv"], t["bias"], t["vth"], t["subtract"],
                       t["v0"], t["u0"], syn_src, t["syn_len"], t["syn_dst"], t["syn_dlen"], t["syn_exp"],
                       t["syn_bin"], t["Ws"], t["syn_csr"], t["csr_ptr"], t["csr_idx"], t["csr_val"], t["csc_ptr"], t["csc_idx"], t["csc_val"], rec_idx, n_rec,
                       np.int64(emu.num.decay_bits), np.int64(emu.num.activation_shift), np.int64(emu.num.v_max),
                       float(CSR_DENSITY), int(PULL_MIN))
    rec = {}
    for name in keep:
        sl = slice(roff[name], roff[name] + emu.groups[name].g.n)
        rec[name] = {"s": rs[:, :, sl], "v": rv[:, :, sl], "u": ru[:, :, sl]}
    return rec
