"""SpiNNaker 2 SSM PE kernels (backends/spinnaker2/ssm.py): the generated C, compiled with the
host compiler, bit-exact with the numpy emulation; the emulation against the float reference
of the quantised node.

Bound (emulation vs reference of the dequantized node, none/relu/delta outputs): the kernel
holds the quantised parameters exactly and computes in float32, so the difference is float32
rounding: per step ≤ (P + H + 4) roundings of terms ≤ max|term|, carried through |Λ̄| < 1, so
|Δy| ≤ T·(P + H + 4)·2⁻²⁴·S with S = max|C̄|·max|x| + max|D|·max|u| (computed below).
gelu adds the tanh form and the table: |Δ| ≤ 4e-4·|y| + 2e-3 (tanh-form GELU vs erf GELU ≤ 1e-3).
"""
from __future__ import annotations

import numpy as np
import pytest

from nmc.passes.quantize_ssm import dequantized_node, quantize_node, row_scale
from nmc.reference import ReferenceSimulator
from test_ssm_nodes import _graph, diag_node, stoch_node

from backends.spinnaker2 import ssm as S
from backends.spinnaker2.ckernels import compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C compiler")
T = 40


def _c_run(node, q, u):
    from backends.spinnaker2.ckernels_ssm import SSMKernel

    k = SSMKernel("blocks.0.ssm", node, q)
    try:
        outs = [k.step(u[t]) for t in range(len(u))]
    finally:
        k.close()
    return np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs])


@pytest.mark.parametrize("complex,output", [(True, "none"), (True, "gelu"), (False, "relu"), (True, "delta")])
def test_diag_kernel_bit_exact_and_close_to_the_reference(complex, output):
    node = diag_node(P=6, H=4, complex=complex, output=output, theta=0.2, seed=2)
    q = quantize_node("ssm", node, 8)
    rng = np.random.default_rng(4)
    u = (rng.normal(size=(T, 4)) * (rng.random((T, 4)) < 0.6)).astype(np.float32)   # sparse input events
    emu = S.run(node, q, u[:, None])
    out_c, fired_c = _c_run(node, q, u)
    assert np.array_equal(emu["out"][:, 0].view(np.uint32), out_c.view(np.uint32))
    if output == "delta":
        assert np.array_equal(emu["spikes"][:, 0].astype(bool), fired_c) and 0 < fired_c.mean() < 1
    ref = ReferenceSimulator(_graph(dequantized_node(node, q), 4)).run({"input": u.astype(np.float64)}, record=["ssm"])
    if output == "delta":   # compare where both fired the same: the held values then agree to the float bound
        same = np.all(ref["ssm.spikes"] == emu["spikes"][:, 0], axis=1)
        assert same.mean() > 0.9
        diff = np.abs(ref["output"] - emu["out"][:, 0])[same]
    else:
        diff = np.abs(ref["output"] - emu["out"][:, 0])
    x_max = 50.0 * float(np.abs(q.b_int * row_scale(q.b_frac, q.b_int)).max()) * float(np.abs(u).max())
    scale = float(np.abs(q.c_int * row_scale(q.c_frac, q.c_int)).max()) * x_max * 6 + float(np.abs(node.d).max() * np.abs(u).max())
    bound = T * (6 + 4 + 4) * 2.0 ** -24 * scale
    if output == "gelu":
        bound += 4e-4 * float(np.abs(ref["output"]).max()) + 2e-3
    assert diff.max() < bound


@pytest.mark.parametrize("complex", [False, True])
def test_stochastic_kernel_bit_exact_and_its_generator(complex):
    from nmc import ssm_math as M

    node = stoch_node(H=6, N=3) if not complex else \
        type(stoch_node())(lam=np.tile(M.s4d_lin(3), (6, 1)), step=np.full(6, 0.3), b=np.ones((6, 3)) + 0.5j,
                           c=np.random.default_rng(0).normal(size=(6, 3)) + 0.2j, d=np.ones(6), seed=9)
    q = quantize_node("ssm", node, 10)
    u = np.random.default_rng(5).normal(size=(T, 6)).astype(np.float32)
    emu = S.run(node, q, u[:, None])
    s_c, p_c = _c_run(node, q, u)
    assert np.array_equal(emu["out"][:, 0], s_c) and np.array_equal(emu["p"][:, 0].view(np.uint32), p_c.view(np.uint32))
    assert 0.05 < s_c.mean() < 0.95
    # the same ξ as the reference: spikes differ only where ξ is within the σ table's error of p
    ref = ReferenceSimulator(_graph(dequantized_node(node, q), 6)).run({"input": u.astype(np.float64)}, record=["ssm"])
    from nmc.nodes_ssm import noise

    xi = noise(node.seed, T, 1, 6)[:, 0]
    near = np.abs(xi - ref["ssm.p"]) < 1e-3
    assert np.array_equal(ref["output"][~near], s_c[~near])


def test_kernel_floats_and_files():
    node = diag_node(P=5, H=3)
    files = S.kernel_files("a.b", node, quantize_node("a.b", node, 8))
    assert set(files) == {"kernels/nmc_ssm.h", "kernels/nmc_tanh_lut.c", "kernels/a_b.c"}
    assert b"nmc_ssm_diag a_b = {3, 5, 3, 0," in files["kernels/a_b.c"]
    assert S.kernel_floats(node) == 5 * (4 * 3 + 6) + 3 * 3
