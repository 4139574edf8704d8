"""LayerNorm on SpiNNaker 2 (backends/spinnaker2/ssm_norm.py) and an nmc.nn DiagSSMStack through it.

Bound (kernel vs float64 ``layer_norm``), u = 2⁻²⁴ the float32 unit roundoff, H channels, per row
κ = max_i|u_i| / sqrt(var + eps) (≥ 1/2 for any row with var ≫ eps) and n_h = (u_h − mean)·r:

* the sum's error ≤ (H − 1)·u·H·max|u|, so mean's ≤ (H + 1)·u·max|u|; a deviation e_h = u_h − mean
  errs by ≤ (H + 1)·u·max|u| + u·|e_h| ≤ (H + 3)·u·max|u|;
* var's relative error ≤ 2·(H + 3)·u·κ·(max|e|/σ) + (H + 2)·u ≤ 4(H + 4)·u·κ², r's ≤ half that + 2u;
* so |Δn_h| ≤ (H + 3)·u·κ + |n_h|·(2(H + 4)·u·κ² + 2u) ≤ 4(H + 4)·u·κ²·(1 + |n_h|), and
  |Δy_h| ≤ |γ_h|·4(H + 4)·u·κ²·(1 + |n_h|) + 2u·(|y_h| + |β_h|) (the two last roundings).

Bound (emulator vs reference, the DiagSSMStack with ReLU outputs): the reference runs the quantised SSMs'
dequantized float meaning (the kernels' exact parameters) and float weights, so only float32 rounding
differs — per SSM T·(P + H + 4)·u·S (test_ssm_kernels.py), through the LayerNorms (gain ≤ max|γ|/σ)
and Linears; for this stack (T = 20, P = 4, H = 8, gains O(1)) that is far below 1e-4·max|y|, the
tolerance used, while a misaligned residual term (one step off) changes y by O(max|y|).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nmc
from nmc.annotations import SSMQuant
from nmc.nodes_ssm import LayerNorm
from nmc.passes.quantize_ssm import dequantized_node
from nmc.reference import ReferenceSimulator

from backends.spinnaker2 import ssm_norm as N
from backends.spinnaker2.ckernels import compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C compiler")
U = 2.0 ** -24


def _rows(H, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(12, H)) * rng.uniform(0.01, 30, size=(12, 1)) + rng.normal(size=(12, 1)) * 3
    u[0] = 0.0                                   # all zero: var = 0, r = 1/sqrt(eps)
    u[1] = 2.5                                   # constant row
    u[2, ::2] = 0.0                              # sparse events
    return u.astype(np.float32)


class _Pop:   # the fields run_files reads from an ssm_kernel population
    def __init__(self, name, kernel, size):
        self.name, self.kernel, self.size, self.pe = name, kernel, size, None


@pytest.mark.parametrize("H", [8, 13])
def test_norm_kernel_c_bit_exact_and_within_bound(H):
    from backends.spinnaker2.ckernels_ssm import run_files

    rng = np.random.default_rng(H)
    node = LayerNorm(weight=rng.uniform(0.2, 2.0, H), bias=rng.normal(size=H) * 0.3, eps=1e-5)
    p = N.params(node)
    u = _rows(H)
    emu = N.norm_step(p, u)
    files = N.param_files("blocks.0.norm", p, [(0, None)])
    c = run_files(files, _Pop("blocks.0.norm", {k: v for k, v in p.items()}, H), u)
    assert np.array_equal(emu.view(np.uint32), c.view(np.uint32))
    ref = torch.nn.functional.layer_norm(torch.as_tensor(u, dtype=torch.float64), (H,),
                                         torch.as_tensor(node.weight), torch.as_tensor(node.bias), node.eps).numpy()
    u64 = u.astype(np.float64)
    sd = np.sqrt(u64.var(1, keepdims=True) + node.eps)
    kappa = np.abs(u64).max(1, keepdims=True) / sd
    n = (u64 - u64.mean(1, keepdims=True)) / sd
    bound = np.abs(node.weight) * 4 * (H + 4) * U * kappa ** 2 * (1 + np.abs(n)) + 2 * U * (np.abs(ref) + np.abs(node.bias))
    assert np.all(np.abs(emu - ref) <= bound)
    assert np.allclose(emu[0], node.bias.astype(np.float32)) and np.abs(emu[3:]).max() > 1


def _stack(tmp_path):
    from nmc import nn as nnn

    torch.manual_seed(0)
    m = nnn.DiagSSMStack(5, 8, 3, n_layers=2, state_size=4, output="relu")
    with torch.no_grad():
        for mod in [blk.norm for blk in m.blocks] + [m.norm]:
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.uniform_(-0.2, 0.2)
    nmc.save(m, tmp_path / "m.pt", input_shape=(5,))
    return nmc.compile(tmp_path / "m.pt", target="spinnaker2", fidelity_check=False, output=tmp_path / "m.nmc")


def test_diag_stack_runs_on_spinnaker2(tmp_path):
    """The residual stream's sources line up (delays d_s = L − L_s − 1), the emulator is within the float32
    bound of the reference of the quantised SSMs, every kernel population's generated C reproduces the
    emulator bit for bit from its recorded inputs, the bundle round-trips, and streaming equals one run."""
    from backends.spinnaker2.ckernels_ssm import run_files
    from backends.spinnaker2.emulator import S2Emulator
    from backends.spinnaker2.ssm_lower import input_stage

    b = _stack(tmp_path)
    prog = b.program
    pops = {p.name: p for p in prog.populations}
    assert pops["blocks.1.norm"].sources == ("input", "blocks.0.ssm")
    assert list(pops["norm"].kernel["delay"]) == [pops["norm"].latency - 1 - pops[s].latency
                                                  for s in pops["norm"].sources] == [4, 2, 0]
    assert len(set(pops["norm"].pe)) == 1 and (tmp_path / "m.nmc" / "program" / "kernels" / "nmc_ssm_norm.h").exists()
    x = np.random.default_rng(0).poisson(0.5, size=(20, 2, 5)).astype(float)
    y = b.run({"input": x})["output"]
    g = b.graph.copy()
    for k in list(g.nodes):
        if g.ann(k, SSMQuant) is not None:
            g.nodes[k] = dequantized_node(g.nodes[k], g.ann(k, SSMQuant))
    want = ReferenceSimulator(g).run({"input": x})["output"]
    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max() and np.abs(want).max() > 0.1
    # chip-time recording: every kernel population's C from its inputs as the PE receives them
    kern = [p for p in prog.populations if p.model == "ssm_kernel"]
    rec = S2Emulator(prog, align=False).run({"input": x}, record=[p.name for p in kern])
    total = rec[f"{kern[0].name}.out"].shape[0]
    chip = {"input": np.concatenate([x, np.zeros((total - 20, *x.shape[1:]))]).astype(np.float32)}
    chip.update({p.name: rec[f"{p.name}.out"].astype(np.float32) for p in kern})
    files = prog.files()
    for p in kern:
        L = p.latency
        srcs, dl = (p.sources, p.kernel["delay"]) if p.sources else ((p.source,), [0])
        for bi in range(2):
            xs = np.stack([np.concatenate([chip[s][t - 1 - d, bi] for s, d in zip(srcs, dl)]) for t in range(L, total)])
            u = np.stack([input_stage(p.kernel, xs[i:i + 1])[0] for i in range(len(xs))])
            c = run_files(files, p, u)
            assert np.array_equal(c.view(np.uint32), chip[p.name][L:, bi].view(np.uint32)), p.name
    b2 = nmc.load(tmp_path / "m.nmc")
    assert b2.program.pop("norm").sources == pops["norm"].sources
    assert np.array_equal(b2.run({"input": x})["output"], y)
    with nmc.open(b2, window=3) as s:
        got = s.run_dense({"input": x[:, 1]})["output"]
    # session payloads travel as float32 (runtime/session.py); the host readout's float64 values rounded once
    assert np.array_equal(got[:20].astype(np.float32), y[:, 1].astype(np.float32))
