"""SSM nodes on SpiNNaker 2 through lowering (backends/spinnaker2/ssm_lower.py, the registry's spinnaker2
``lower`` hook): ``nmc compile --target spinnaker2`` of saved nmc.nn DiagSSM and StochasticSpikingSSM models,
the emulator bit for bit the kernel emulation and the generated C (backends/spinnaker2/ssm.py), within a derived
bound of the float reference, streaming through ``nmc.open`` equal to one run.

Bounds (emulator vs reference, DiagSSM none/relu outputs, T steps, P modes, H channels):

* vs the reference of the *quantised* node (its dequantized float meaning): float32 rounding only,
  |Δy| ≤ T·(P + H + 4)·2⁻²⁴·S, S = P·max|C̄|·max|x| + max|D|·max|u| (test_ssm_kernels.py's derivation);
* vs the *float* node: add the quantisation. Λ̄'s parts are rounded to 2⁻¹⁵ (|δΛ̄| ≤ √2·2⁻¹⁶), B̄'s, C̄'s
  and D's to 2^−f (|δ| ≤ √2·2^−f−1 per complex entry), so the state error obeys
  per mode e_{k,p} ≤ |Λ̄_q,p|·e_{k−1,p} + |δΛ̄|·max|x_p| + |δB̄|·max_k Σ_i|u_{k,i}|, so after T steps
  e_p ≤ min(T, 1/(1 − |Λ̄_q,p|))·(|δΛ̄|·max|x_p| + |δB̄|·max_k Σ_i|u_{k,i}|),
  and |Δy_h| ≤ Σ_p ((|C̄_hp| + |δC̄|)·e_p + |δC̄|·max|x_p|) + |δD|·max|u|, plus the float32 term above;
  max|x_p| from the float trajectory (x_k = Λ̄x_{k−1} + B̄u_k, float64).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nmc.annotations import SSMQuant
from nmc.driver import api
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc import serialize
from nmc.passes.quantize_ssm import dequantized_node, discrete, row_scale
from nmc.reference import ReferenceSimulator
from test_ssm_nodes import _graph, diag_node, stoch_node

from backends.spinnaker2 import ssm as S
from backends.spinnaker2.ckernels import compiler

T = 40


def _compile(tmp_path, node, H, name="m", **kw):
    g = _graph(node, H)
    serialize.write(tmp_path / f"{name}.nir", g if isinstance(g, Graph) else Graph.from_nir(g))
    api.compile(str(tmp_path / f"{name}.nir"), target="spinnaker2", output=str(tmp_path / f"{name}.nmc"), **kw)
    return api.load(tmp_path / f"{name}.nmc")


def _u(H, seed=4, T=T):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(T, H)) * (rng.random((T, H)) < 0.6)).astype(np.float32).astype(np.float64)


def _float_bound(node, q, u):
    """The module docstring's bound of |y_emulator − y_float| (none/relu outputs), per mode."""
    lam_bar, bbar, cbar = discrete(node)
    P, H = node.modes, node.channels
    x, xmax = np.zeros(P, complex), np.zeros(P)
    for t in range(len(u)):
        x = lam_bar * x + bbar @ u[t]
        xmax = np.maximum(xmax, np.abs(x))
    umax, usum = float(np.abs(u).max()), float(np.abs(u).sum(1).max())
    r2 = np.sqrt(2.0)
    lam_q = np.abs(np.asarray(q.lam_int, float) @ np.array([1, 1j]) * 2.0 ** -15)
    db = r2 * row_scale(q.b_frac, q.b_frac) / 2        # per mode (row of B̄)
    e = np.minimum(len(u), 1 / (1 - lam_q)) * (r2 * 2.0 ** -16 * xmax + db * usum)
    dc = r2 * float(np.max(row_scale(q.c_frac, q.c_frac))) / 2
    quant = ((np.abs(cbar) + dc) @ e + dc * xmax.sum() + 2.0 ** (-q.d_frac - 1) * umax).max()
    f32 = len(u) * (P + H + 4) * 2.0 ** -24 * (P * (float(np.abs(cbar).max()) + dc) * float((xmax + e).max())
                                               + (float(np.abs(node.d).max()) + 1) * umax)
    return quant + f32, f32


@pytest.mark.parametrize("complex_,output", [(True, "none"), (False, "relu"), (True, "gelu"), (True, "delta")])
def test_diag_emulator_is_the_kernel_and_within_bound(tmp_path, complex_, output):
    H = 4
    node = diag_node(P=6, H=H, complex=complex_, output=output, theta=0.2, seed=2)
    b = _compile(tmp_path, node, H)
    q = b.graph.ann("ssm", SSMQuant)
    assert q is not None and (tmp_path / "m.nmc" / "program" / "kernels" / "ssm_pe0.c").exists()
    u = _u(H)
    y = b.run({"input": u})["output"]
    emu = S.run(b.graph.nodes["ssm"], q, u[:, None].astype(np.float32))["out"][:, 0]
    assert np.array_equal(y.astype(np.float32).view(np.uint32), emu.view(np.uint32))   # bit for bit the kernel
    if compiler() is not None:
        from backends.spinnaker2.ckernels_ssm import SSMKernel

        k = SSMKernel("ssm", b.graph.nodes["ssm"], q)
        try:
            c = np.stack([k.step(u[t])[0] for t in range(T)])
        finally:
            k.close()
        assert np.array_equal(c.view(np.uint32), emu.view(np.uint32))
    if output in ("none", "relu"):
        bound, f32 = _float_bound(node, q, u)
        ref_q = ReferenceSimulator(_graph(dequantized_node(node, q), H)).run({"input": u})["output"]
        assert np.abs(y - ref_q).max() <= f32
        ref = ReferenceSimulator(_graph(node, H)).run({"input": u})["output"]
        assert np.abs(y - ref).max() <= bound
        assert bound < np.abs(ref).max()        # a worst-case bound, yet smaller than the signal


def test_generated_c_of_a_node_split_over_pes_is_the_same_kernel(tmp_path):
    """partition{max_neurons_per_core=2}: the DiagSSM's 4 channels on 2 PEs, one kernel file per PE (each steps the
    whole state, computes its channels): compiled with the host compiler, the files' outputs joined are the
    emulator's bit for bit; the emulator's output does not depend on the split."""
    if compiler() is None:
        pytest.skip("no host C compiler")
    from backends.spinnaker2.ckernels_ssm import run_files

    H = 4
    node = diag_node(P=5, H=H, complex=True, output="gelu", seed=1)
    one = _compile(tmp_path, node, H, "one")
    two = _compile(tmp_path, node, H, "two", passes="normalize,quantize{bits=8},partition{max_neurons_per_core=2},"
                                                  "place,route")
    pop = two.program.pop("ssm")
    assert len(np.unique(pop.pe)) == 2
    u = _u(H)
    y = two.run({"input": u})["output"]
    assert np.array_equal(y, one.run({"input": u})["output"])
    files = two.program.files()
    c = run_files(files, pop, u.astype(np.float32))
    assert np.array_equal(c.view(np.uint32), y.astype(np.float32).view(np.uint32))


def test_stochastic_emulator_is_the_kernel_and_draws_the_reference_xi(tmp_path):
    H = 6
    node = stoch_node(H=H, N=3, seed=9)
    b = _compile(tmp_path, node, H)
    q = b.graph.ann("ssm", SSMQuant)
    u = np.random.default_rng(5).normal(size=(T, H))
    s = b.run({"input": u})["output"]
    emu = S.run(b.graph.nodes["ssm"], q, u[:, None].astype(np.float32))
    assert np.array_equal(s, emu["out"][:, 0]) and 0.05 < s.mean() < 0.95
    ref = ReferenceSimulator(_graph(dequantized_node(node, q), H)).run({"input": u}, record=["ssm"])
    from nmc.nodes_ssm import noise

    near = np.abs(noise(node.seed, T, 1, H)[:, 0] - ref["ssm.p"]) < 1e-3   # σ table error 4e-4 < 1e-3
    assert np.array_equal(ref["output"][~near], s[~near]) and (~near).mean() > 0.9


def _save(path, kind):
    import torch

    import nmc
    from nmc import nn as nnn

    torch.manual_seed(0)
    layer = nnn.DiagSSM(4, 6, output="gelu", dt_min=0.02, dt_max=0.3) if kind == "diag" else \
        nnn.StochasticSpikingSSM(4, 3, seed=7)
    nmc.save(torch.nn.Sequential(torch.nn.Linear(3, 4), layer).eval(), path, input_shape=(3,))
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "nmc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("kind", ["diag", "stochastic"])
def test_cli_compile_saved_nn_model_and_stream(tmp_path, kind):
    """nmc compile --target spinnaker2 of a saved nmc.nn model (Linear with bias → SSM, default pipeline);
    nmc run equals the API's run; the input stage u = x·M + b (float32) then the kernel is what the emulator
    runs (ssm_lower.input_stage + ssm.run, bit for bit); nmc.open window by window equals one run."""
    pt = _save(tmp_path / "m.pt", kind)
    r = cli("compile", pt, "--target", "spinnaker2", "-o", tmp_path / "m.nmc")
    assert r.returncode == 0, r.stderr[-2000:]
    b = api.load(tmp_path / "m.nmc")
    x = np.random.default_rng(1).normal(size=(30, 3))
    y = b.run({"input": x})["output"]
    (name, pop), = [(p.name, p) for p in b.program.populations if p.model == "ssm_kernel"]
    from backends.spinnaker2.ssm_lower import input_stage

    u = np.stack([input_stage(pop.kernel, x[t:t + 1]) for t in range(30)])
    want = S.run(b.graph.nodes[name], b.graph.ann(name, SSMQuant), u)["out"][:, 0]
    assert np.array_equal(y.astype(np.float32), want) and np.abs(y).max() > 0
    np.savez(tmp_path / "in.npz", input=x)
    r = cli("run", tmp_path / "m.nmc", "--input", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as f:
        assert np.array_equal(f["output"], y)
    with api.open_session(b, window=4) as s:
        got = s.run_dense({"input": x})["output"]
    assert np.array_equal(got[:30], y)


def test_refusals_name_the_node(tmp_path):
    H = 3
    with pytest.raises(UnsupportedNodeError, match="quantize") as e:
        _compile(tmp_path, diag_node(P=3, H=H), H, passes="normalize,partition,place,route")
    assert e.value.node == "ssm"


def test_layer_norm_compiles_and_a_delayed_input_is_refused(tmp_path):
    """A LayerNorm lowers to its PE kernel (backends/spinnaker2/ssm_norm.py, tests in test_ssm_norm.py); one fed
    through a Delay (a synaptic delay line the kernel's input stage does not take) is refused naming it."""
    import nir

    from nmc.nodes_ssm import LayerNorm

    def graph(delay):
        nodes = {"input": nir.Input({"input": np.array([3])}), "ln": LayerNorm(np.ones(3), np.zeros(3)),
                 "ssm": diag_node(P=3, H=3), "output": nir.Output({"output": np.array([3])})}
        edges = [("ln", "ssm"), ("ssm", "output")]
        if delay:
            nodes["d"] = nir.Delay(np.full(3, 2e-3))
            edges += [("input", "d"), ("d", "ln")]
        else:
            edges += [("input", "ln")]
        return Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))

    serialize.write(tmp_path / "ln.nir", graph(False))
    r = cli("compile", tmp_path / "ln.nir", "--target", "spinnaker2", "-o", tmp_path / "ln.nmc")
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.model for p in api.load(tmp_path / "ln.nmc").program.populations if p.name == "ln"] == ["ssm_kernel"]
    serialize.write(tmp_path / "lnd.nir", graph(True))
    r = cli("compile", tmp_path / "lnd.nir", "--target", "spinnaker2", "-o", tmp_path / "lnd.nmc")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "'ln'" in last and "LayerNorm" in last and "delayed" in last


@pytest.mark.parametrize("kind", ["diag", "stochastic"])
def test_partition_byte_model_is_the_kernels_bytes(tmp_path, kind):
    """The partition packs SSM units with the target's byte model (synapse_bytes per unit, state_bytes,
    run_overhead_bytes per run): for every run it equals ssm_run_bytes, the kernel file's floats and the input
    stage (the count lowering checks against core.synapse_memory_bytes)."""
    H = 4
    node = diag_node(P=5, H=H) if kind == "diag" else stoch_node(H=H, N=3)
    b = _compile(tmp_path, node, H)
    pop = b.program.pop("ssm")
    from backends.spinnaker2.ssm import run_floats
    from backends.spinnaker2.ssm_lower import kernel_params
    from backends.spinnaker2.target import target_model

    from nmc.hw import HardwareSpec

    tm = target_model(HardwareSpec.load("spinnaker2"))
    n_src = pop.kernel["w_in"].shape[0]
    for n in (1, 3, H):
        model = (tm.run_overhead_bytes(node, n_src) + n * tm.state_bytes(node)
                 + float(tm.synapse_bytes(np.ones(n), 8, False, n_src, node=node).sum()))
        assert model == tm.ssm_run_bytes(pop.kernel, slice(0, n))
        assert tm.ssm_run_bytes(pop.kernel, slice(0, n)) > 4 * run_floats(kernel_params(pop.kernel), slice(0, n))
