"""SSM nodes on SpiNNaker 2: the per-PE kernel arithmetic, its numpy emulation and its generated C.

One PE runs one quantised SSM node (``SSMQuant`` from the quantize pass,
:mod:`nmc.passes.quantize_ssm`) in IEEE float32, every operation rounded as
written, no fused multiply-add (``-ffp-contract=off``). The fixed-point
parameters enter as floats that hold them exactly (an int of ≤ 16 bits times
a power of two): Λ̄ = lam_int·2⁻¹⁵, B̄ = b_int·2^−b_frac, C̄ = c_int·2^−c_frac (one power per row),
D = d_int·2^−d_frac (real and imaginary parts; a real SSM has zero imaginary
parts, which add exact zeros). Per step and sample (``nmc.DiagSSM``, P modes, H channels)::

    acc_re[p] = acc_im[p] = +0
    for each input event (i, u_i), increasing i:   acc_re[p] = acc_re[p] + B̄re[p,i]·u_i;  acc_im[p] likewise
    for p:  x_re' = (Λ̄re·x_re − Λ̄im·x_im) + acc_re;   x_im' = (Λ̄im·x_re + Λ̄re·x_im) + acc_im
    for h:  y = +0;  for p = 0 … P−1: y = y + C̄re[h,p]·x_re[p];  y = y − C̄im[h,p]·x_im[p]
            y = y + D[h]·u_h
    out:    none: y;  relu: y > 0 ? y : 0;
            gelu (tanh form, the EGRU kernels' tanh table): t = y·y; t = t·y; t = 0.044715·t; t = y + t;
                  t = 0.7978846·t;  out = (0.5·y)·(1 + tanh(t))
            delta: fire = |y − ŷ| > θ;  ŷ = fire ? y : ŷ;  out = ŷ (events y − ŷ_old where fire)

``nmc.StochasticSSMNeuron`` (H neurons × N states), per neuron h::

    for n:  x_re' = (Λ̄re·x_re − Λ̄im·x_im) + B̄re[h,n]·u_h;   x_im' = (Λ̄im·x_re + Λ̄re·x_im) + B̄im[h,n]·u_h
    y = +0;  for n: y = y + C̄re·x_re;  y = y − C̄im·x_im;   y = y + D[h]·u_h
    p = σ(y) (0.5·tanh(0.5·y) + 0.5 with the table);   s = (float)(r >> 8) < p·2²⁴
    r = mix32(mix32(mix32(seed) + k) + j)  — the node's generator (:mod:`nmc.nodes_ssm`), k the
    PE's step counter since reset, j = the neuron's index (batch element 0 on a chip)

:func:`diag_step` / :func:`stochastic_step` are the emulation (vectorised over
the batch, the same operation order), checked bit for bit against the compiled
C (tests/backends/test_spinnaker2_ssm.py). The float error against the
reference is the quantisation's (the fidelity report) plus the table's 4e-4 in
tanh/σ. A node's units may be spread over PEs in runs (:func:`param_files`): every
PE of a DiagSSM steps the whole state (the same arithmetic, so the same x) and computes
its channels' outputs; a stochastic run steps its own neurons (u[j0 + h], r's j = j0 + h).
A run of n units holds 6P + 2PH + n·(2P + 3) floats (DiagSSM) or 8·n·N + n (stochastic)
(:func:`run_floats`; a whole node on one PE: :func:`kernel_floats`); the partition packs
them with this count (:class:`.target.SpiNNaker2Target`).
"""
from __future__ import annotations

import numpy as np

from nmc.nodes_ssm import DiagSSM, StochasticSSMNeuron, hash_u32

from .egru import HEADER as EGRU_HEADER
from .egru import LUT, _floats, sigmoid_f32, tanh_f32

F32 = np.float32
GELU_A, GELU_K = F32(0.044715), F32(0.7978846)


def params(node, q) -> dict:
    """float32 kernel parameters from the node and its ``SSMQuant`` (exact: ints times powers of two)."""
    from nmc.passes.quantize_ssm import row_scale

    def f(ints, frac):   # frac: one per array, or one per row of B̄, C̄
        return (np.asarray(ints, np.float64) * row_scale(frac, ints)).astype(F32)

    lam, b, c = f(q.lam_int, q.lam_frac), f(q.b_int, q.b_frac), f(q.c_int, q.c_frac)
    p = {"lr": lam[..., 0], "li": lam[..., 1], "br": b[..., 0], "bi": b[..., 1], "cr": c[..., 0], "ci": c[..., 1],
         "d": f(q.d_int, q.d_frac)}
    if isinstance(node, DiagSSM):
        p["theta"] = np.asarray(node.theta, F32)
        p["output"] = node.output
    else:
        p["seed"] = int(node.seed)
    return p


def init_state(node, batch: int) -> dict:
    shp = (batch, node.modes) if isinstance(node, DiagSSM) else (batch, *node.lam.shape)
    st = {"xr": np.zeros(shp, F32), "xi": np.zeros(shp, F32)}
    if isinstance(node, DiagSSM):
        st["held"] = np.zeros((batch, node.channels), F32)
    else:
        st["k"] = 0
    return st


def _rotate(p, xr, xi, ar, ai):
    """x' = Λ̄·x + a on real and imaginary parts, in the docstring's order."""
    nr = (p["lr"] * xr - p["li"] * xi) + ar
    ni = (p["li"] * xr + p["lr"] * xi) + ai
    return nr.astype(F32), ni.astype(F32)


def diag_step(p: dict, st: dict, u: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """One step of a DiagSSM kernel for a batch u (B, H) float32; returns (out, state, fired)."""
    u = np.asarray(u, F32)
    B = u.shape[0]
    P = p["lr"].shape[0]
    ar = np.zeros((B, P), F32)
    ai = np.zeros((B, P), F32)
    for i in np.flatnonzero(np.any(u != 0, axis=0)):      # a sample without event i adds ±0: unchanged
        v = u[:, i:i + 1]
        ar = (ar + p["br"][:, i][None] * v).astype(F32)
        ai = (ai + p["bi"][:, i][None] * v).astype(F32)
    xr, xi = _rotate(p, st["xr"], st["xi"], ar, ai)
    y = np.zeros((B, p["cr"].shape[0]), F32)
    for m in range(P):
        y = (y + p["cr"][:, m][None] * xr[:, m:m + 1]).astype(F32)
        y = (y - p["ci"][:, m][None] * xi[:, m:m + 1]).astype(F32)
    y = (y + p["d"][None] * u).astype(F32)
    held, fired = st["held"], np.zeros(y.shape, bool)
    if p["output"] == "relu":
        out = np.where(y > 0, y, F32(0)).astype(F32)
    elif p["output"] == "gelu":
        t = (y * y).astype(F32)
        t = (t * y).astype(F32)
        t = (GELU_A * t).astype(F32)
        t = (y + t).astype(F32)
        t = (GELU_K * t).astype(F32)
        out = ((F32(0.5) * y) * (F32(1) + tanh_f32(t))).astype(F32)
    elif p["output"] == "delta":
        fired = np.abs((y - held).astype(F32)) > p["theta"][None]
        held = np.where(fired, y, held).astype(F32)
        out = held
    else:
        out = y
    return out, {"xr": xr, "xi": xi, "held": held}, fired


def stochastic_step(p: dict, st: dict, u: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """One step of a StochasticSSMNeuron kernel for a batch u (B, H); returns (spikes, state, p).
    Batch element b draws with j = b·H + h (element 0 is what a chip runs)."""
    u = np.asarray(u, F32)
    B, H = u.shape
    ub = u[:, :, None]
    xr, xi = _rotate(p, st["xr"], st["xi"], (p["br"][None] * ub).astype(F32), (p["bi"][None] * ub).astype(F32))
    y = np.zeros((B, H), F32)
    for n in range(p["cr"].shape[1]):
        y = (y + p["cr"][None, :, n] * xr[:, :, n]).astype(F32)
        y = (y - p["ci"][None, :, n] * xi[:, :, n]).astype(F32)
    y = (y + p["d"][None] * u).astype(F32)
    prob = sigmoid_f32(y)
    j = (np.arange(B, dtype=np.uint64)[:, None] * H + np.arange(H, dtype=np.uint64)[None]) % 2 ** 32
    r24 = (hash_u32(p["seed"], np.uint32(st["k"] % 2 ** 32), j.astype(np.uint32)) >> np.uint32(8)).astype(F32)
    s = (r24 < (prob * F32(16777216.0)).astype(F32)).astype(F32)
    return s, {"xr": xr, "xi": xi, "k": st["k"] + 1}, prob


def run(node, q, u: np.ndarray) -> dict:
    """Emulate a quantised SSM node over u (T, B, H): {"out", "spikes" (fired / spikes), "p" (stochastic)}."""
    p = params(node, q)
    u = np.asarray(u, F32)
    st = init_state(node, u.shape[1])
    step = diag_step if isinstance(node, DiagSSM) else stochastic_step
    outs, aux = [], []
    for t in range(u.shape[0]):
        o, st, a = step(p, st, u[t])
        outs.append(o)
        aux.append(a)
    res = {"out": np.stack(outs)}
    res["spikes" if isinstance(node, DiagSSM) else "p"] = np.stack(aux).astype(F32)
    return res


# ------------------------------------------------------------------ C code
HEADER = EGRU_HEADER.split("typedef struct")[0].replace("NMC_EGRU_H", "NMC_SSM_H").replace(
    "EGRU PE kernel runtime (see backends/spinnaker2/egru.py", "SSM PE kernel runtime (see backends/spinnaker2/ssm.py") + r"""
#define NMC_GELU_A @GELU_A@
#define NMC_GELU_K @GELU_K@

typedef struct {
    int n_in, n_modes, n_out, output;     /* output: 0 none, 1 relu, 2 gelu, 3 delta */
    int h0;                               /* first output channel of this PE's run (D·u uses u[h0 + h]) */
    const float *lr, *li, *br, *bi, *cr, *ci, *d, *theta;   /* br/bi (P, n_in), cr/ci (n_out, P) row-major */
    float *xr, *xi, *held, *ar, *ai;
} nmc_ssm_diag;

/* u: the step's input (n_in floats; zeros carry no event); out: n_out floats; fired: n_out flags */
static inline void nmc_ssm_diag_step(nmc_ssm_diag *s, const float *u, float *out, uint8_t *fired) {
    const int P = s->n_modes, H = s->n_in;
    for (int p = 0; p < P; p++) { s->ar[p] = 0.0f; s->ai[p] = 0.0f; }
    for (int i = 0; i < H; i++) {
        const float v = u[i];
        if (v == 0.0f) continue;
        for (int p = 0; p < P; p++) {
            s->ar[p] = s->ar[p] + s->br[p * H + i] * v;
            s->ai[p] = s->ai[p] + s->bi[p * H + i] * v;
        }
    }
    for (int p = 0; p < P; p++) {
        const float xr = s->xr[p], xi = s->xi[p];
        s->xr[p] = (s->lr[p] * xr - s->li[p] * xi) + s->ar[p];
        s->xi[p] = (s->li[p] * xr + s->lr[p] * xi) + s->ai[p];
    }
    for (int h = 0; h < s->n_out; h++) {
        float y = 0.0f;
        for (int p = 0; p < P; p++) {
            y = y + s->cr[h * P + p] * s->xr[p];
            y = y - s->ci[h * P + p] * s->xi[p];
        }
        y = y + s->d[h] * u[s->h0 + h];
        fired[h] = 0;
        if (s->output == 1) {
            out[h] = y > 0.0f ? y : 0.0f;
        } else if (s->output == 2) {
            float t = y * y; t = t * y; t = NMC_GELU_A * t; t = y + t; t = NMC_GELU_K * t;
            out[h] = (0.5f * y) * (1.0f + nmc_tanh(t));
        } else if (s->output == 3) {
            float e = y - s->held[h];
            if (e < 0.0f) e = -e;
            if (e > s->theta[h]) { s->held[h] = y; fired[h] = 1; }
            out[h] = s->held[h];
        } else {
            out[h] = y;
        }
    }
}

typedef struct {
    int n, n_states;
    uint32_t seed, k, j0;                           /* j0: first neuron of this PE's run (u[j0 + h], r's j) */
    const float *lr, *li, *br, *bi, *cr, *ci, *d;   /* (n, n_states) row-major; d (n) */
    float *xr, *xi;
} nmc_ssm_stoch;

static inline uint32_t nmc_mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16; return x;
}

/* spikes: n floats (0/1); prob: n floats (σ(y)) */
static inline void nmc_ssm_stoch_step(nmc_ssm_stoch *s, const float *u, float *spikes, float *prob) {
    const int N = s->n_states;
    const uint32_t base = nmc_mix32(nmc_mix32(s->seed) + s->k);
    for (int h = 0; h < s->n; h++) {
        float y = 0.0f;
        for (int m = 0; m < N; m++) {
            const int q = h * N + m;
            const float xr = s->xr[q], xi = s->xi[q];
            s->xr[q] = (s->lr[q] * xr - s->li[q] * xi) + s->br[q] * u[s->j0 + h];
            s->xi[q] = (s->li[q] * xr + s->lr[q] * xi) + s->bi[q] * u[s->j0 + h];
        }
        for (int m = 0; m < N; m++) {
            y = y + s->cr[h * N + m] * s->xr[h * N + m];
            y = y - s->ci[h * N + m] * s->xi[h * N + m];
        }
        y = y + s->d[h] * u[s->j0 + h];
        const float p = nmc_sigmoid(y);
        const uint32_t r = nmc_mix32(base + s->j0 + (uint32_t)h) >> 8;
        prob[h] = p;
        spikes[h] = (float)r < p * 16777216.0f ? 1.0f : 0.0f;
    }
    s->k = s->k + 1u;
}
#endif
"""

HEADER = HEADER.replace("@GELU_A@", float(GELU_A).hex() + "f").replace("@GELU_K@", float(GELU_K).hex() + "f")
OUTPUT_CODES = {"none": 0, "relu": 1, "gelu": 2, "delta": 3}


def kernel_files(name: str, node, q) -> dict[str, bytes]:
    """C sources of one node's kernel on one PE: ``kernels/nmc_ssm.h``, the tanh table, ``kernels/<tag>.c``
    defining ``<tag>`` (an ``nmc_ssm_diag`` or ``nmc_ssm_stoch``; tag: the name with non-alphanumerics as _)."""
    return param_files(name, params(node, q), [(0, None)], tags=[_tag(name)])


def _tag(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def param_files(name: str, p: dict, pe_units: list, tags: list[str] | None = None) -> dict[str, bytes]:
    """C sources of a kernel from its :func:`params`, one file per (PE, run of units) of ``pe_units``
    (``units`` None: all): a DiagSSM run holds the whole state (Λ̄, B̄, x: every PE of the node steps it,
    the same arithmetic) and the C̄ rows, D, θ of its output channels; a stochastic run its neurons.
    ``tags``: the C symbols (default ``<name>_pe<pe>``, :func:`.egru.kernel_tags`)."""
    from .egru import kernel_tags

    if "gamma" in p:   # an nmc.LayerNorm kernel (.ssm_norm)
        from .ssm_norm import param_files as norm_files

        return norm_files(name, p, pe_units, tags)
    diag = "theta" in p

    def arr(cname, a):
        a = np.asarray(a, F32).reshape(-1)
        return f"static const float {cname}[{max(1, a.size)}] = {{{_floats(a) if a.size else '0'}}};"

    files = {"kernels/nmc_ssm.h": HEADER.encode(),
             "kernels/nmc_tanh_lut.c": ("#include \"nmc_ssm.h\"\nconst float NMC_TANH_LUT[NMC_LUT_N] = {"
                                        + _floats(LUT) + "};\n").encode()}
    n_all = p["d"].shape[0]
    pe_units = [(pe, u if u is not None else slice(0, n_all)) for pe, u in pe_units]
    tags = tags or kernel_tags(_tag(name), pe_units)
    for (pe, u), tag in zip(pe_units, tags):
        n = u.stop - u.start
        src = [f"/* nmc generated: SSM '{name}' {'DiagSSM' if diag else 'StochasticSSMNeuron'} units "
               f"{u.start}..{u.stop - 1} on PE {pe}; arithmetic in backends/spinnaker2/ssm.py */", '#include "nmc_ssm.h"']
        if diag:
            P, H = p["br"].shape
            src += [arr(k.upper(), p[k]) for k in ("lr", "li", "br", "bi")]
            src += [arr(k.upper(), p[k][u]) for k in ("cr", "ci", "d", "theta")]
            src += [f"static float XR[{P}], XI[{P}], AR[{P}], AI[{P}], HELD[{n}];",
                    f"nmc_ssm_diag {tag} = {{{H}, {P}, {n}, {OUTPUT_CODES[p['output']]}, {u.start}, LR, LI, BR, BI, "
                    f"CR, CI, D, THETA, XR, XI, HELD, AR, AI}};"]
        else:
            N = p["lr"].shape[1]
            src += [arr(k.upper(), p[k][u]) for k in ("lr", "li", "br", "bi", "cr", "ci", "d")]
            src += [f"static float XR[{n * N}], XI[{n * N}];",
                    f"nmc_ssm_stoch {tag} = {{{n}, {N}, {int(p['seed'])}u, 0u, {u.start}u, LR, LI, BR, BI, CR, CI, "
                    f"D, XR, XI}};"]
        files[f"kernels/{tag}.c"] = ("\n".join(src) + "\n").encode()
    return files


def run_floats(p: dict, units: slice) -> int:
    """Floats of one run's kernel file (:func:`param_files`): parameters and state, for the PE's SRAM."""
    n = units.stop - units.start
    if "gamma" in p:   # an nmc.LayerNorm kernel (.ssm_norm)
        from .ssm_norm import run_floats as norm_floats

        return norm_floats(p, units)
    if "theta" in p:
        P, H = p["br"].shape
        return 6 * P + 2 * P * H + n * (2 * P + 3)
    return 8 * n * p["lr"].shape[1] + n


def kernel_floats(node) -> int:
    """Floats of one node's kernel on one PE (parameters and state), for the PE's SRAM budget
    (:func:`run_floats` of all its units)."""
    if isinstance(node, DiagSSM):
        P, H = node.modes, node.channels
        return 6 * P + 4 * P * H + 3 * H
    H, N = node.lam.shape
    return 8 * H * N + H


__all__ = ["DiagSSM", "StochasticSSMNeuron", "params", "init_state", "diag_step", "stochastic_step", "run",
           "kernel_files", "param_files", "kernel_floats", "run_floats"]
