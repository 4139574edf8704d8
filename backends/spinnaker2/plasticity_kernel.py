"""The generated C learning kernel of a plastic projection (``program/kernels/nmc_learn.h`` and one
``kernels/<projection>_learn_pe<k>.c`` per PE of the post population), and :class:`CLearner`, which
builds it with the host C compiler (the flags of :mod:`.ckernels`: ``-ffp-contract=off
-fno-fast-math``, so every float operation rounds as written) and steps it through ctypes.

The arithmetic, the update order and the generators are :mod:`.plasticity`'s, operation for
operation; each PE holds its rows ``[first_row, first_row + n_rows)`` of the projection (dense over
the ``n_in`` inputs, the mask byte marking the rewired synapses), its own copy of the pre traces,
and the float words the host writes: ``reward`` and ``err[n_rows]``. ``nmc_learn_step(pe, pre,
post)`` runs one update after the neuron update of the tick (``pre``: the ``n_in`` event counts
that arrived, ``post``: the PE's neurons' spikes) and rewrites the PE's int8 synapse rows ``q``.
"""
from __future__ import annotations

import copy
import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nmc.errors import DeviceError

from .plasticity import (EXP_COEF, LN2_HI, LN2_LO, LOG2E, NORMAL_TERMS, STREAM_NOISE, STREAM_REWIRE, Consts,
                         PELearner, learner)

F32 = np.float32
RULE_CODE = {"stdp": 0, "spore": 1}
TF_CODE = {"none": 0, "reward": 1, "error": 2}


def _f(v) -> str:
    return float(F32(v)).hex() + "f"


HEADER = r"""/* nmc generated: SpiNNaker 2 PE learning kernel (arithmetic: backends/spinnaker2/plasticity.py). */
#ifndef NMC_LEARN_H
#define NMC_LEARN_H
#include <stdint.h>
#include <math.h>

typedef struct {
    int n_in, n_rows, n_out, first_row;
    int rule, tf, fan_in, rewire_every, decay_on, qmax;
    uint64_t seed;
    float dx, dy, de, ap, am, lr, keep, wlo, whi, cb, prune, wnew, mu, iv, bdt, sn, cr, th0, thlo, thhi, thnew;
    const float *k;                      /* n_rows: integer units per float unit */
    const float *w_init, *th_init;       /* n_rows*n_in: the state at step 0 */
    const uint8_t *mask_init; const int8_t *q_init;
    float *w, *th, *e, *x, *ex, *y, *err; /* shadow weights, theta, eligibility (n_rows*n_in or n_in), traces */
    uint8_t *mask; int8_t *q;            /* rewiring mask, the synapse rows' int8 weights */
    uint32_t *gone, *free_;              /* rewiring scratch, n_in each */
    float reward, rb;
    uint64_t t; uint32_t rewired;
} nmc_learn_pe;

static inline uint32_t nmc_u32(uint64_t seed, uint64_t stream, uint64_t c) {
    uint64_t z = (seed * 256u + stream) * 0xD1B54A32D192ED03ull + c * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (uint32_t)(z >> 32);
}

static inline float nmc_normal(uint64_t seed, uint64_t base) {
    int64_t s = 0;
    for (int k = 0; k < NMC_NORMAL_TERMS; k++) s += (int64_t)(nmc_u32(seed, NMC_STREAM_NOISE, base + (uint64_t)k) >> 8);
    return (float)(s - 6LL * 16777216LL) * 0x1p-24f;
}

static inline float nmc_exp32(float z) {
    if (z < -87.0f) z = -87.0f;
    if (z > 88.0f) z = 88.0f;
    float n = rintf(z * NMC_LOG2E);
    float r = (z - n * NMC_LN2_HI) - n * NMC_LN2_LO;
    float p = NMC_EXP_C0;
    p = NMC_EXP_C1 + r * p; p = NMC_EXP_C2 + r * p; p = NMC_EXP_C3 + r * p;
    p = NMC_EXP_C4 + r * p; p = NMC_EXP_C5 + r * p; p = NMC_EXP_C6 + r * p;
    return ldexpf(p, (int)n);
}

void nmc_learn_reset(nmc_learn_pe *p);
void nmc_learn_step(nmc_learn_pe *p, const float *pre, const float *post);
#endif
"""

SOURCE = r"""/* nmc generated: SpiNNaker 2 PE learning kernel, update order of backends/spinnaker2/plasticity.py. */
#include "nmc_learn.h"

void nmc_learn_reset(nmc_learn_pe *p) {
    int n = p->n_rows * p->n_in;
    for (int a = 0; a < n; a++) {
        p->w[a] = p->w_init[a]; p->th[a] = p->th_init[a]; p->mask[a] = p->mask_init[a]; p->q[a] = p->q_init[a];
        p->e[a] = 0.0f;
    }
    for (int i = 0; i < p->n_in; i++) { p->x[i] = 0.0f; p->ex[i] = 0.0f; }
    for (int r = 0; r < p->n_rows; r++) { p->y[r] = 0.0f; p->err[r] = 0.0f; }
    p->reward = 0.0f; p->rb = 0.0f; p->t = 0; p->rewired = 0;
}

static void rewire(nmc_learn_pe *p) {
    for (int r = 0; r < p->n_rows; r++) {
        uint64_t j = (uint64_t)(p->first_row + r);
        float *w = p->w + (long)r * p->n_in, *th = p->th + (long)r * p->n_in, *e = p->e + (long)r * p->n_in;
        uint8_t *m = p->mask + (long)r * p->n_in;
        int ng = 0, nf = 0;
        for (int i = 0; i < p->n_in; i++) {
            int dead = p->rule == 1 ? !(th[i] > 0.0f) : (fabsf(w[i]) < p->prune);
            if (m[i] && dead) p->gone[ng++] = (uint32_t)i;
            if (!m[i]) p->free_[nf++] = (uint32_t)i;
        }
        if (ng == 0) continue;
        int k = ng < nf ? ng : nf;
        uint64_t base = (p->t * (uint64_t)p->n_out + j) * (uint64_t)p->n_in;
        for (int a = 0; a < k; a++) {
            uint64_t u = nmc_u32(p->seed, NMC_STREAM_REWIRE, base + (uint64_t)a);
            int b = a + (int)((u * (uint64_t)(nf - a)) >> 32);
            uint32_t tmp = p->free_[a]; p->free_[a] = p->free_[b]; p->free_[b] = tmp;
        }
        for (int a = 0; a < k; a++) {
            uint32_t g = p->gone[a];
            m[g] = 0; w[g] = 0.0f; e[g] = 0.0f;
            if (p->rule == 1) th[g] = 0.0f;
        }
        for (int a = 0; a < ng; a++) {   /* the new labels, then the gone ones kept for want of a free label */
            uint32_t g = a < k ? p->free_[a] : p->gone[a];
            m[g] = 1; w[g] = p->wnew; e[g] = 0.0f;
            if (p->rule == 1) th[g] = p->thnew;
        }
        p->rewired += (uint32_t)ng;
    }
}

void nmc_learn_step(nmc_learn_pe *p, const float *pre, const float *post) {
    int n_in = p->n_in;
    for (int i = 0; i < n_in; i++) p->x[i] = p->x[i] * p->dx;
    for (int r = 0; r < p->n_rows; r++) p->y[r] = p->y[r] * p->dy;
    float M = 0.0f;
    if (p->tf == 1) { M = p->reward - p->rb; p->rb = p->rb + p->cb * M; }
    if (p->rule == 0 && p->tf == 2)
        for (int i = 0; i < n_in; i++) p->ex[i] = p->ex[i] * p->de + pre[i];
    for (int r = 0; r < p->n_rows; r++) {
        uint64_t j = (uint64_t)(p->first_row + r);
        float aps = p->ap * post[r], amy = p->am * p->y[r];
        float lrM = p->lr * M, lrE = p->lr * p->err[r], crM = p->cr * M;
        float *w = p->w + (long)r * n_in, *th = p->th + (long)r * n_in, *e = p->e + (long)r * n_in;
        const uint8_t *m = p->mask + (long)r * n_in;
        for (int i = 0; i < n_in; i++) {
            float pair = aps * p->x[i] - amy * pre[i];
            if (p->rule == 1) {
                float g = 0.0f;
                if (p->tf == 1) { e[i] = e[i] * p->de + w[i] * pair; g = crM * e[i]; }
                uint64_t c = ((p->t * (uint64_t)p->n_out + j) * (uint64_t)n_in + (uint64_t)i) * NMC_NORMAL_TERMS;
                float xi = nmc_normal(p->seed, c);
                float t = th[i] + (p->bdt * ((p->mu - th[i]) * p->iv + g) + p->sn * xi);
                if (t < p->thlo) t = p->thlo;
                if (t > p->thhi) t = p->thhi;
                th[i] = t;
                float v = t > 0.0f ? nmc_exp32(t - p->th0) : 0.0f;
                w[i] = (p->fan_in && !m[i]) ? 0.0f : v;
            } else {
                float v = w[i];
                if (p->tf == 0) v = v + pair;
                else if (p->tf == 1) { e[i] = e[i] * p->de + pair; v = v + lrM * e[i]; }
                else v = v + lrE * p->ex[i];
                if (p->decay_on) v = v * p->keep;
                if (v < p->wlo) v = p->wlo;
                if (v > p->whi) v = p->whi;
                w[i] = (p->fan_in && !m[i]) ? 0.0f : v;
            }
        }
    }
    for (int i = 0; i < n_in; i++) p->x[i] = p->x[i] + pre[i];
    for (int r = 0; r < p->n_rows; r++) p->y[r] = p->y[r] + post[r];
    p->t = p->t + 1;
    if (p->fan_in && p->t % (uint64_t)p->rewire_every == 0) rewire(p);
    for (int r = 0; r < p->n_rows; r++)
        for (int i = 0; i < n_in; i++) {
            float v = rintf(p->k[r] * p->w[(long)r * n_in + i]);
            if (v < (float)-p->qmax) v = (float)-p->qmax;
            if (v > (float)p->qmax) v = (float)p->qmax;
            p->q[(long)r * n_in + i] = (int8_t)v;
        }
}
"""


def header() -> str:
    defs = [f"#define NMC_LOG2E {_f(LOG2E)}", f"#define NMC_LN2_HI {_f(LN2_HI)}", f"#define NMC_LN2_LO {_f(LN2_LO)}",
            *[f"#define NMC_EXP_C{n} {_f(c)}" for n, c in enumerate(EXP_COEF)],
            f"#define NMC_NORMAL_TERMS {NORMAL_TERMS}", f"#define NMC_STREAM_NOISE {STREAM_NOISE}u",
            f"#define NMC_STREAM_REWIRE {STREAM_REWIRE}u"]
    return HEADER.replace("#include <math.h>\n", "#include <math.h>\n" + "\n".join(defs) + "\n", 1)


def tags(node: str, pe_rows: list) -> list[str]:
    """C symbol per (PE, row range): ``<projection>_learn_pe<pe>`` (+ ``_r<first row>`` when one PE holds
    several ranges), the projection's name with every character but letters and digits as ``_``."""
    pes = [pe for pe, _ in pe_rows]
    node = "".join(c if c.isalnum() else "_" for c in node)   # a C identifier
    return [f"{node}_learn_pe{pe}" if pes.count(pe) == 1 else f"{node}_learn_pe{pe}_r{r.start}" for pe, r in pe_rows]


def _floats(a) -> str:
    return ", ".join(float(v).hex() + "f" for v in np.asarray(a, F32).reshape(-1))


def _ints(a) -> str:
    return ", ".join(str(int(v)) for v in np.asarray(a).reshape(-1))


def kernel_files(q, pe_rows: list) -> dict[str, bytes]:
    """``kernels/nmc_learn.h``, ``kernels/nmc_learn.c`` and one file per PE (its constants, the
    state at step 0 and the state arrays) of plastic projection ``q``."""
    lr = learner(q)
    return _files(lr, pe_rows)


def _files(lr: PELearner, pe_rows: list) -> dict[str, bytes]:
    r, c = lr.rule, lr.c
    n_out, n_in = lr.w.shape
    th = lr.theta if r.rule == "spore" else np.zeros_like(lr.w)
    mask = lr.mask if lr.mask is not None else np.ones(lr.w.shape, bool)
    files = {"kernels/nmc_learn.h": header().encode(), "kernels/nmc_learn.c": SOURCE.encode()}
    cs = ", ".join(_f(getattr(c, f)) for f in Consts.__dataclass_fields__)
    for (pe, rows), tag in zip(pe_rows, tags(lr.name, pe_rows)):
        n = rows.stop - rows.start
        syn = n * n_in
        src = [f"/* nmc generated: learning rule '{r.rule}' (third factor {r.third_factor}) of projection "
               f"'{lr.name}', rows {rows.start}..{rows.stop - 1} on PE {pe}. */",
               '#include "nmc_learn.h"',
               f"static const float K[{n}] = {{{_floats(lr.k[rows])}}};",
               f"static const float W_INIT[{syn}] = {{{_floats(lr.w[rows])}}};",
               f"static const float TH_INIT[{syn}] = {{{_floats(th[rows])}}};",
               f"static const uint8_t MASK_INIT[{syn}] = {{{_ints(mask[rows])}}};",
               f"static const int8_t Q_INIT[{syn}] = {{{_ints(lr.q[rows])}}};",
               f"static float W[{syn}], TH[{syn}], E[{syn}], X[{n_in}], EX[{n_in}], Y[{n}], ERR[{n}];",
               f"static uint8_t MASK[{syn}];", f"static int8_t Q[{syn}];",
               f"static uint32_t GONE[{n_in}], FREE_[{n_in}];",
               f"nmc_learn_pe {tag} = {{{n_in}, {n}, {n_out}, {rows.start}, {RULE_CODE[r.rule]}, "
               f"{TF_CODE[r.third_factor]}, {int(r.fan_in)}, {int(r.rewire_every)}, {int(r.decay > 0)}, {lr.qmax}, "
               f"{int(r.seed) % 2 ** 64}ull, {cs}, K, W_INIT, TH_INIT, MASK_INIT, Q_INIT, W, TH, E, X, EX, Y, ERR, "
               f"MASK, Q, GONE, FREE_, 0.0f, 0.0f, 0, 0}};", ""]
        files[f"kernels/{tag}.c"] = "\n".join(src).encode()
    return files


def _struct() -> type:
    fp, u8p, i8p, u32p = (ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint8),
                          ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_uint32))
    fields = [(n, ctypes.c_int) for n in ("n_in", "n_rows", "n_out", "first_row", "rule", "tf", "fan_in",
                                          "rewire_every", "decay_on", "qmax")]
    fields += [("seed", ctypes.c_uint64)] + [(n, ctypes.c_float) for n in Consts.__dataclass_fields__]
    fields += [("k", fp), ("w_init", fp), ("th_init", fp), ("mask_init", u8p), ("q_init", i8p)]
    fields += [(n, fp) for n in ("w", "th", "e", "x", "ex", "y", "err")]
    fields += [("mask", u8p), ("q", i8p), ("gone", u32p), ("free_", u32p), ("reward", ctypes.c_float),
               ("rb", ctypes.c_float), ("t", ctypes.c_uint64), ("rewired", ctypes.c_uint32)]
    return type("nmc_learn_pe", (ctypes.Structure,), {"_fields_": fields})


class CLearner:
    """The generated kernels of one plastic projection, built on the host and stepped for one
    sample (the chip runs one): ``step(pre, post)``, ``modulate(value)``; ``w``/``q``/``theta``/
    ``mask`` gather the PEs' rows."""

    def __init__(self, lr: PELearner, pe_rows: list):
        from .ckernels import FLAGS, compiler

        cc = compiler()
        if cc is None:
            raise DeviceError("no host C compiler (cc/gcc) to build the learning kernels", hint="install gcc")
        lr = copy.deepcopy(lr)   # the kernels start from the learner's step-0 state
        lr.reset(1)
        self.lr, self.rows = lr, [r for _, r in pe_rows]
        self._dir = tempfile.TemporaryDirectory(prefix="nmc-learn-")
        d = Path(self._dir.name)
        (d / "kernels").mkdir()
        for k, v in _files(lr, pe_rows).items():
            (d / k).write_bytes(v)
        lib = d / "libnmc_learn.so"
        res = subprocess.run([cc, *FLAGS, "-o", str(lib), *sorted(map(str, (d / "kernels").glob("*.c"))), "-lm"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise DeviceError(f"the generated learning kernels did not compile: {res.stderr.strip()[:400]}")
        self.lib = ctypes.CDLL(str(lib))
        S = _struct()
        self.pes = [S.in_dll(self.lib, t) for t in tags(lr.name, pe_rows)]
        self.lib.nmc_learn_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.nmc_learn_reset.argtypes = [ctypes.c_void_p]
        for p in self.pes:
            self.lib.nmc_learn_reset(ctypes.byref(p))

    def modulate(self, value) -> None:
        """The reward word, or the error per post neuron, written to every PE."""
        v = np.broadcast_to(np.asarray(value, F32), (self.lr.w.shape[0],))
        for p, rows in zip(self.pes, self.rows):
            p.reward = float(v[0])
            for a, j in enumerate(range(rows.start, rows.stop)):
                p.err[a] = float(v[j])

    def step(self, pre: np.ndarray, post: np.ndarray) -> None:
        pre = np.ascontiguousarray(pre, F32).reshape(-1)
        post = np.ascontiguousarray(post, F32).reshape(-1)
        for p, rows in zip(self.pes, self.rows):
            sub = np.ascontiguousarray(post[rows])
            self.lib.nmc_learn_step(ctypes.byref(p), pre.ctypes.data, sub.ctypes.data)

    def _gather(self, name: str, dtype) -> np.ndarray:
        n_in = self.lr.w.shape[1]
        return np.concatenate([np.ctypeslib.as_array(getattr(p, name), ((r.stop - r.start) * n_in,)).astype(dtype)
                               .reshape(-1, n_in) for p, r in zip(self.pes, self.rows)])

    @property
    def w(self) -> np.ndarray:
        return self._gather("w", F32)

    @property
    def theta(self) -> np.ndarray:
        return self._gather("th", F32)

    @property
    def q(self) -> np.ndarray:
        return self._gather("q", np.int32)

    @property
    def mask(self) -> np.ndarray:
        return self._gather("mask", bool)

    def close(self) -> None:
        self._dir.cleanup()
