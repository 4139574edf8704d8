"""``nmc.LayerNorm`` on SpiNNaker 2: the per-PE kernel arithmetic, its numpy emulation and its generated C.

One PE normalises all H channels of a step (the mean and variance gather every channel, so a
LayerNorm is never split over PEs). IEEE float32, every operation rounded as written, left to
right, no fused multiply-add (``-ffp-contract=off``); ``/`` and ``sqrtf`` are the correctly
rounded IEEE operations (the Cortex-M4F's VDIV.F32 and VSQRT.F32, the host's divss/sqrtss), so
the emulation is the C bit for bit. Per step, u (H) the input stage's values::

    s = +0;  for h = 0 … H−1:  s = s + u[h]
    mean = s / H                                   (H as float32, exact for H < 2²⁴)
    v = +0;  for h:  e = u[h] − mean;  v = v + e·e
    var = v / H
    r = 1 / sqrtf(var + eps)                       (eps, γ, β: the node's values rounded to float32)
    for h:  y[h] = ((u[h] − mean)·r)·γ[h] + β[h]

The float error against the reference (float64, ``torch.nn.functional.layer_norm``): the sums
carry ≤ H·2⁻²⁴ relative error each, so |Δy[h]| ≤ (2H + 12)·2⁻²⁴·(|u[h] − mean|·r + 1)·|γ[h]| + 2⁻²⁴·|β[h]|
plus the input stage's rounding (tests/backends/spinnaker2/test_ssm_norm.py).

The input stage (:mod:`.ssm_lower`): the LayerNorm of an ``nmc.nn`` SSM stack normalises the
residual stream, a sum over several sources (the input projection and each block's output
Linear) that reach the PE at different chip latencies. The PE keeps a delay line per source and
takes source s's values of step t − 1 − d_s, d_s = L − L_s − 1 (L the LayerNorm's latency);
the composed matrices of all sources stack into one ``w_in`` (rows in source order) and::

    u = +0;  for each source in order, for each of its units i with a value x_i ≠ 0, increasing i:
             u = u + x_i·w_in[row of (s, i)];     u = u + b_in
"""
from __future__ import annotations

import numpy as np

from .egru import _floats

F32 = np.float32


def params(node) -> dict:
    """float32 kernel parameters of an ``nmc.LayerNorm`` (its float64 values rounded to nearest)."""
    return {"gamma": np.asarray(node.weight, F32), "beta": np.asarray(node.bias, F32),
            "eps": np.asarray(node.eps, F32).reshape(1)}


def norm_step(p: dict, u: np.ndarray) -> np.ndarray:
    """One step of the LayerNorm kernel for a batch u (B, H) float32 (module docstring's order)."""
    u = np.asarray(u, F32)
    B, H = u.shape
    h_f = F32(H)
    s = np.zeros(B, F32)
    for h in range(H):
        s = (s + u[:, h]).astype(F32)
    mean = (s / h_f).astype(F32)
    v = np.zeros(B, F32)
    for h in range(H):
        e = (u[:, h] - mean).astype(F32)
        v = (v + (e * e).astype(F32)).astype(F32)
    var = (v / h_f).astype(F32)
    r = (F32(1) / np.sqrt((var + p["eps"][0]).astype(F32))).astype(F32)
    y = ((u - mean[:, None]).astype(F32) * r[:, None]).astype(F32)
    y = (y * p["gamma"][None]).astype(F32)
    return (y + p["beta"][None]).astype(F32)


HEADER = r"""/* nmc generated: LayerNorm PE kernel runtime (see backends/spinnaker2/ssm_norm.py for the arithmetic) */
#ifndef NMC_SSM_NORM_H
#define NMC_SSM_NORM_H
#include <math.h>

typedef struct {
    int n;                                   /* channels H (all on this PE) */
    float eps;
    const float *gamma, *beta;               /* (n) */
} nmc_ssm_norm;

/* u: the step's input stage values (n floats); out: n floats */
static inline void nmc_ssm_norm_step(const nmc_ssm_norm *s, const float *u, float *out) {
    const float hf = (float)s->n;
    float sum = 0.0f;
    for (int h = 0; h < s->n; h++) sum = sum + u[h];
    const float mean = sum / hf;
    float v = 0.0f;
    for (int h = 0; h < s->n; h++) { const float e = u[h] - mean; v = v + e * e; }
    const float var = v / hf;
    const float r = 1.0f / sqrtf(var + s->eps);
    for (int h = 0; h < s->n; h++) {
        float y = (u[h] - mean) * r;
        y = y * s->gamma[h];
        out[h] = y + s->beta[h];
    }
}
#endif
"""


def param_files(name: str, p: dict, pe_units: list, tags: list[str] | None = None) -> dict[str, bytes]:
    """C sources of a LayerNorm kernel from its :func:`params`: ``kernels/nmc_ssm_norm.h`` and
    ``kernels/<tag>.c`` defining ``<tag>`` (an ``nmc_ssm_norm``); one PE holds all channels."""
    from .egru import kernel_tags
    from .ssm import _tag

    n = int(p["gamma"].shape[0])
    pe_units = [(pe, u if u is not None else slice(0, n)) for pe, u in pe_units]
    if len(pe_units) != 1 or (pe_units[0][1].start, pe_units[0][1].stop) != (0, n):
        raise ValueError(f"LayerNorm '{name}' must be on one PE (all {n} channels), got runs {pe_units}")
    tag = (tags or kernel_tags(_tag(name), pe_units))[0]
    src = [f"/* nmc generated: LayerNorm '{name}' channels 0..{n - 1} on PE {pe_units[0][0]}; "
           "arithmetic in backends/spinnaker2/ssm_norm.py */", '#include "nmc_ssm_norm.h"',
           f"static const float GAMMA[{n}] = {{{_floats(p['gamma'])}}};",
           f"static const float BETA[{n}] = {{{_floats(p['beta'])}}};",
           f"nmc_ssm_norm {tag} = {{{n}, {_floats(p['eps'])}, GAMMA, BETA}};"]
    return {"kernels/nmc_ssm_norm.h": HEADER.encode(), f"kernels/{tag}.c": ("\n".join(src) + "\n").encode()}


def run_floats(p: dict, units: slice) -> int:
    """Floats on the PE: the kernel file (:func:`param_files`: γ, β, eps; stateless) and, given a
    population's kernel arrays (``delay``, ``src_size``), the delay lines of its sources (d_s·n_s
    floats each; the input stage's ``w_in``, ``b_in`` are counted with every SSM run's,
    :meth:`.target.SpiNNaker2Target.ssm_run_bytes`)."""
    lines = int(np.dot(np.asarray(p["delay"], np.int64), np.asarray(p["src_size"], np.int64))) if "delay" in p else 0
    return 2 * (units.stop - units.start) + 1 + lines
