"""EGRU cells on SpiNNaker 2: generated per-PE C kernels and their emulation.

No stock py-spinnaker2 neuron model computes an EGRU, so each PE holding EGRU
units gets generated C: static weight arrays (int8 with one float32 scale per
gate row, packed by input column — CSC: ``ptr`` (n_in + 1, uint32), ``row``
(uint16, gate-major row of this PE) and ``val`` (int8) per non-zero, so an
event costs one MAC per kept weight in its column; the CSR of the output rows
transposed, which is what an event-driven PE walks), the cell state, and an event-driven
``step()`` that consumes the incoming (index, payload) events of the previous
step and emits (index, payload) events — graded events, the payload being the
unit's value y (32-bit packet payloads on SpiNNaker 2). Ternary kernels
(``quantize{scheme=ternary}``, or ``--option egru_weights=ternary``) store
their weights as packed 2-bit codes instead, densely by column, no indices
(:mod:`.egru_packed`: codes and packing order); the arithmetic below is the same.

Arithmetic (IEEE float32, every operation rounded as written, no fused
multiply-add: ``-ffp-contract=off``), per PE and step:

    acc_x[r] = Σ_events (float)wx[r, i] · x_i        events in increasing index order (only the kept
                                                     weights of column i: a pruned weight would add ±0,
                                                     which leaves a sum that starts at +0 bit-for-bit equal)
    acc_h[r] = Σ_events (float)wh[r, j] · y_j        (all units' events of the previous step)
    gx = acc_x·sx + bx;  gh = acc_h·sh + bh           (per gate row r = gate·H + unit)
    z = σ(gx_z + gh_z);  r = σ(gx_r + gh_r);  g = tanh(gx_g + r·gh_g)
    ĉ = z·c + (1 − z)·g;  o = ĉ > ϑ;  y = o ? ĉ : 0;  c = o ? ĉ − ϑ : ĉ

tanh is a 257-entry table over [−8, 8] (step 1/16, entries tanh rounded to
float32) with linear interpolation — ``u = (x + 8)·16; k = (int)u;
f = u − k; T[k] + f·(T[k+1] − T[k])``, saturating outside — and
σ(x) = 0.5·tanh(0.5·x) + 0.5; max error 4e-4 against the exact functions, and
exactly reproducible in numpy and C. :func:`step_f32` is the emulator's
implementation of the same arithmetic, used by the emulator and checked
bit-exactly against the compiled C in the tests.
"""
from __future__ import annotations

import numpy as np

from . import egru_packed as packed
from .target import SpiNNaker2Target

F32 = np.float32
LUT_X0, LUT_STEP_INV, LUT_N = 8.0, 16.0, 257
LUT = np.tanh(np.arange(LUT_N, dtype=np.float64) / LUT_STEP_INV - LUT_X0).astype(F32)


def tanh_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F32)
    u = (x + F32(LUT_X0)) * F32(LUT_STEP_INV)
    uc = np.clip(u, F32(0), F32(LUT_N - 1))
    k = np.minimum(uc.astype(np.int32), LUT_N - 2)
    f = (uc - k.astype(F32)).astype(F32)
    y = LUT[k] + f * (LUT[k + 1] - LUT[k])
    y = np.where(u <= F32(0), LUT[0], np.where(u >= F32(LUT_N - 1), LUT[LUT_N - 1], y))
    return y.astype(F32)


def sigmoid_f32(x: np.ndarray) -> np.ndarray:
    return (F32(0.5) * tanh_f32(F32(0.5) * np.asarray(x, F32)) + F32(0.5)).astype(F32)


def quantize_rows(w: np.ndarray, qmax: int = 127, weights: str = "int8") -> tuple[np.ndarray, np.ndarray]:
    """int8 weights with one float32 scale per row (ties away from zero); ``weights="float32"``:
    the weights rounded to float32 with scale 1; ``weights="ternary"``: t ∈ {−1, 0, 1} (int8) and
    s = mean |w| of the row (float32), the absmean rule of :func:`nmc.passes.quantize.ternary_rows`."""
    if weights == "float32":
        w32 = np.asarray(w, float).astype(F32)
        return w32, np.ones(w32.shape[0], F32)
    from nmc.passes.quantize import quantize_weights, ternary_rows

    if weights == "ternary":
        t, s = ternary_rows(np.asarray(w, float))
        return t, s.astype(F32)

    w_int, scale = quantize_weights(np.asarray(w, float), bits=8, per_channel=True, qmax=qmax)
    return w_int.astype(np.int8), np.asarray(scale, float).reshape(-1).astype(F32)


def accumulate(w_int: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Σ over events, in increasing index order, of (float)w[:, i]·v (float32, sequential)."""
    acc = np.zeros(w_int.shape[0], F32)
    order = np.argsort(idx, kind="stable")
    for i, v in zip(np.asarray(idx)[order], np.asarray(val, F32)[order]):
        acc = acc + w_int[:, int(i)].astype(F32) * v
    return acc


def step_batch(p: dict, c: np.ndarray, x: np.ndarray, y_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`step_f32` for a batch (B, ·) of samples and all units, vectorised
    over samples and gate rows; the loop runs over the input indices that carry
    an event in any sample, in increasing order. A sample without an event at
    index i adds (float)w·0 = ±0 to its accumulator, which leaves it bit-for-bit
    unchanged (the accumulator starts at +0 and round-to-nearest never makes a
    sum −0 from +0), so every sample gets exactly the per-event C arithmetic."""
    H = p["thr"].shape[0]

    def acc(w_int, v):
        a = np.zeros((v.shape[0], w_int.shape[0]), F32)
        for i in np.flatnonzero(np.any(v != 0, axis=0)):
            a = a + w_int[:, i].astype(F32)[None, :] * v[:, i:i + 1]
        return a

    gx = acc(p["wx"], np.asarray(x, F32)) * p["sx"] + p["bx"]
    gh = acc(p["wh"], np.asarray(y_prev, F32)) * p["sh"] + p["bh"]
    z = sigmoid_f32(gx[:, :H] + gh[:, :H])
    r = sigmoid_f32(gx[:, H:2 * H] + gh[:, H:2 * H])
    g = tanh_f32(gx[:, 2 * H:] + r * gh[:, 2 * H:])
    thr = p["thr"]
    c_hat = (z * c + (F32(1) - z) * g).astype(F32)
    o = c_hat > thr
    return np.where(o, c_hat, F32(0)).astype(F32), np.where(o, c_hat - thr, c_hat).astype(F32)


def step_f32(p: dict, c: np.ndarray, x_idx, x_val, y_idx, y_val, units: slice) -> tuple[np.ndarray, np.ndarray]:
    """One step of the units ``units`` of an EGRU population (one sample).

    ``p``: wx (3H, in) int8, sx (3H,), wh (3H, H) int8, sh (3H,), bx, bh (3H,), thr (H,), float32.
    Returns (y for these units, new c for these units).
    """
    H = p["thr"].shape[0]
    rows = np.concatenate([np.arange(units.start, units.stop) + g * H for g in range(3)])
    ax = accumulate(p["wx"][rows], x_idx, x_val)
    ah = accumulate(p["wh"][rows], y_idx, y_val)
    gx = ax * p["sx"][rows] + p["bx"][rows]
    gh = ah * p["sh"][rows] + p["bh"][rows]
    n = units.stop - units.start
    z = sigmoid_f32(gx[:n] + gh[:n])
    r = sigmoid_f32(gx[n:2 * n] + gh[n:2 * n])
    g = tanh_f32(gx[2 * n:] + r * gh[2 * n:])
    thr = p["thr"][units]
    c_hat = (z * c + (F32(1) - z) * g).astype(F32)
    o = c_hat > thr
    y = np.where(o, c_hat, F32(0)).astype(F32)
    c_new = np.where(o, c_hat - thr, c_hat).astype(F32)
    return y, c_new


# ------------------------------------------------------------------ C code
def _floats(a) -> str:
    return ", ".join(float(v).hex() + "f" if np.isfinite(v) else "0.0f" for v in np.asarray(a, F32).reshape(-1))


def _ints(a) -> str:
    return ", ".join(str(int(v)) for v in np.asarray(a).reshape(-1))


HEADER = r"""/* nmc generated: EGRU PE kernel runtime (see backends/spinnaker2/egru.py for the arithmetic). */
#ifndef NMC_EGRU_H
#define NMC_EGRU_H
#include <stdint.h>

#define NMC_LUT_N 257
extern const float NMC_TANH_LUT[NMC_LUT_N];

static inline float nmc_tanh(float x) {
    float u = (x + 8.0f) * 16.0f;
    if (u <= 0.0f) return NMC_TANH_LUT[0];
    if (u >= (float)(NMC_LUT_N - 1)) return NMC_TANH_LUT[NMC_LUT_N - 1];
    int k = (int)u;
    if (k > NMC_LUT_N - 2) k = NMC_LUT_N - 2;
    float f = u - (float)k;
    return NMC_TANH_LUT[k] + f * (NMC_TANH_LUT[k + 1] - NMC_TANH_LUT[k]);
}

static inline float nmc_sigmoid(float x) { return 0.5f * nmc_tanh(0.5f * x) + 0.5f; }

typedef struct {
    int n_in, n_units, h_total, first_unit;
    /* CSC of the (3*n_units, n_in) input weights (rows gate-major): column i's kept weights
       are val[ptr[i] .. ptr[i+1]) at rows row[...]; the same for the (3*n_units, h_total) recurrent ones */
    /* w_fmt 0: val int8_t (scale per row in sx/sh); 1: float (float32 weights, scales 1);
       2: packed 2-bit ternary codes by column, ptr/row unused (nmc_egru_acc_t2) */
    int w_fmt;
    const uint32_t *wx_ptr; const uint16_t *wx_row; const void *wx_val; const float *sx;
    const uint32_t *wh_ptr; const uint16_t *wh_row; const void *wh_val; const float *sh;
    const float *bx, *bh, *thr;
    float *c;                             /* n_units */
    float *acc_x, *acc_h;                 /* scratch, 3*n_units each */
} nmc_egru_pe;

/* packed ternary (w_fmt 2): column i's R codes are the bytes w[i*stride ..), stride = (R + 3) / 4, row r
   in bits 2(r%4), 2(r%4)+1 of byte r/4; code 1 -> +1 (acc += v), 3 -> -1 (acc -= v), 0 -> 0 (skipped) */
static inline void nmc_egru_acc_t2(float *acc, const uint8_t *w, int R, const uint32_t *ei, const float *ev, int ne) {
    const int stride = (R + 3) / 4;
    for (int e = 0; e < ne; e++) {
        const float v = ev[e];
        const uint8_t *col = w + (uint32_t)stride * ei[e];
        for (int r = 0; r < R; r++) {
            const int code = (col[r >> 2] >> ((r & 3) * 2)) & 3;
            if (code == 1) acc[r] = acc[r] + v;
            else if (code == 3) acc[r] = acc[r] - v;
        }
    }
}

/* acc[row] += w·v over the kept weights of each event's column, events in the given order */
static inline void nmc_egru_acc(float *acc, const uint32_t *ptr, const uint16_t *row, const void *val, int w_float,
                                const uint32_t *ei, const float *ev, int ne) {
    for (int e = 0; e < ne; e++) {
        const float v = ev[e];
        if (w_float) {
            const float *w = (const float *)val;
            for (uint32_t k = ptr[ei[e]]; k < ptr[ei[e] + 1]; k++) acc[row[k]] = acc[row[k]] + w[k] * v;
        } else {
            const int8_t *w = (const int8_t *)val;
            for (uint32_t k = ptr[ei[e]]; k < ptr[ei[e] + 1]; k++) acc[row[k]] = acc[row[k]] + (float)w[k] * v;
        }
    }
}

/* One step: input events (index into n_in, payload) and the previous step's
   events of all units of the layer; writes this PE's events (global unit index,
   payload) and returns their number. Events must come in increasing index order. */
static inline int nmc_egru_step(nmc_egru_pe *p, const uint32_t *xi, const float *xv, int nx,
                                const uint32_t *yi, const float *yv, int ny, uint32_t *oi, float *ov) {
    const int R = 3 * p->n_units, n = p->n_units;
    for (int r = 0; r < R; r++) { p->acc_x[r] = 0.0f; p->acc_h[r] = 0.0f; }
    if (p->w_fmt == 2) {
        nmc_egru_acc_t2(p->acc_x, (const uint8_t *)p->wx_val, R, xi, xv, nx);
        nmc_egru_acc_t2(p->acc_h, (const uint8_t *)p->wh_val, R, yi, yv, ny);
    } else {
        nmc_egru_acc(p->acc_x, p->wx_ptr, p->wx_row, p->wx_val, p->w_fmt, xi, xv, nx);
        nmc_egru_acc(p->acc_h, p->wh_ptr, p->wh_row, p->wh_val, p->w_fmt, yi, yv, ny);
    }
    int no = 0;
    for (int u = 0; u < n; u++) {
        float gxz = p->acc_x[u] * p->sx[u] + p->bx[u], ghz = p->acc_h[u] * p->sh[u] + p->bh[u];
        float gxr = p->acc_x[n + u] * p->sx[n + u] + p->bx[n + u], ghr = p->acc_h[n + u] * p->sh[n + u] + p->bh[n + u];
        float gxg = p->acc_x[2 * n + u] * p->sx[2 * n + u] + p->bx[2 * n + u];
        float ghg = p->acc_h[2 * n + u] * p->sh[2 * n + u] + p->bh[2 * n + u];
        float z = nmc_sigmoid(gxz + ghz);
        float r = nmc_sigmoid(gxr + ghr);
        float g = nmc_tanh(gxg + r * ghg);
        float c_hat = z * p->c[u] + (1.0f - z) * g;
        if (c_hat > p->thr[u]) {
            oi[no] = (uint32_t)(p->first_unit + u); ov[no] = c_hat; no++;
            p->c[u] = c_hat - p->thr[u];
        } else {
            p->c[u] = c_hat;
        }
    }
    return no;
}
#endif
"""


def csc(w_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ptr uint32 (n_in + 1,), row uint16, val) of a (rows, n_in) weight block, rows ascending per column."""
    w = np.asarray(w_rows)
    if w.shape[0] > 65535:
        raise ValueError("a PE kernel holds at most 65535 gate rows (uint16 row indices)")
    cols, rows = np.nonzero(w.T)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=w.shape[1]))]).astype(np.uint32)
    return ptr, rows.astype(np.uint16), w[rows, cols]


def _pe_rows(H: int, units: slice) -> np.ndarray:
    return np.concatenate([np.arange(units.start, units.stop) + g * H for g in range(3)])


def kernel_tags(node: str, pe_units: list[tuple[int, slice]]) -> list[str]:
    """C symbol / file stem per (PE, unit range): ``<node>_pe<pe>``, plus the first unit
    when one PE holds several ranges of the population."""
    pes = [pe for pe, _ in pe_units]
    return [f"{node}_pe{pe}" if pes.count(pe) == 1 else f"{node}_pe{pe}_u{u.start}" for pe, u in pe_units]


def kernel_files(node: str, p: dict, pe_units: list[tuple[int, slice]]) -> dict[str, bytes]:
    """C sources: the shared header, the LUT, and one file per PE with its static arrays."""
    H = p["thr"].shape[0]
    n_in = p["wx"].shape[1]
    files = {"kernels/nmc_egru.h": HEADER.encode(),
             "kernels/nmc_tanh_lut.c": ("#include \"nmc_egru.h\"\nconst float NMC_TANH_LUT[NMC_LUT_N] = {"
                                        + _floats(LUT) + "};\n").encode()}
    for (pe, units), tag in zip(pe_units, kernel_tags(node, pe_units)):
        rows = _pe_rows(H, units)
        n = units.stop - units.start

        def arr(ctype, name, a, fmt):  # C has no zero-length arrays: an empty one holds one unused 0
            return f"static const {ctype} {name}[{max(1, a.size)}] = {{{fmt(a) if a.size else '0'}}};"

        if packed.is_packed(p):
            wf = 2
            wx_arrays = [arr("uint8_t", "WX_VAL", packed.pack(p["wx"][rows]), _ints)]
            wh_arrays = [arr("uint8_t", "WH_VAL", packed.pack(p["wh"][rows]), _ints)]
            head = (f"{np.count_nonzero(p['wx'][rows])} + {np.count_nonzero(p['wh'][rows])} non-zero ternary weights "
                    f"(packed 2-bit codes by column, {packed.stride(3 * n)} bytes per column)")
            ptrs = ("0", "0", "0", "0")
        else:
            xp, xr, xv = csc(p["wx"][rows])
            hp, hr, hv = csc(p["wh"][rows])
            wf = int(np.asarray(p["wx"]).dtype == np.float32)
            wt, wfmt = ("float", _floats) if wf else ("int8_t", _ints)
            wx_arrays = [arr("uint32_t", "WX_PTR", xp, _ints), arr("uint16_t", "WX_ROW", xr, _ints),
                         arr(wt, "WX_VAL", xv, wfmt)]
            wh_arrays = [arr("uint32_t", "WH_PTR", hp, _ints), arr("uint16_t", "WH_ROW", hr, _ints),
                         arr(wt, "WH_VAL", hv, wfmt)]
            head = f"{xv.size} + {hv.size} kept weights (CSC)"
            ptrs = ("WX_PTR", "WX_ROW", "WH_PTR", "WH_ROW")

        src = [f"/* nmc generated: EGRU '{node}' units {units.start}..{units.stop - 1} on PE {pe}; {head}. */",
               '#include "nmc_egru.h"',
               *wx_arrays,
               f"static const float SX[{3 * n}] = {{{_floats(p['sx'][rows])}}};",
               *wh_arrays,
               f"static const float SH[{3 * n}] = {{{_floats(p['sh'][rows])}}};",
               f"static const float BX[{3 * n}] = {{{_floats(p['bx'][rows])}}};",
               f"static const float BH[{3 * n}] = {{{_floats(p['bh'][rows])}}};",
               f"static const float THR[{n}] = {{{_floats(p['thr'][units])}}};",
               f"static float C[{n}];", f"static float ACC_X[{3 * n}], ACC_H[{3 * n}];",
               f"nmc_egru_pe {tag} = {{{n_in}, {n}, {H}, {units.start}, {wf}, {ptrs[0]}, {ptrs[1]}, WX_VAL, SX, "
               f"{ptrs[2]}, {ptrs[3]}, WH_VAL, SH, BX, BH, THR, C, ACC_X, ACC_H}};",
               ""]
        files[f"kernels/{tag}.c"] = "\n".join(src).encode()
    return files


#: SRAM of one PE's kernel: the target model's byte model (:mod:`.target`), which counts the arrays above
data_bytes = SpiNNaker2Target.kernel_bytes
