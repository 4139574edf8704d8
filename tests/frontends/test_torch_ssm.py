"""nmc.save / nmc compile of the nmc.nn state-space layers (DiagSSM, SSMBlock, DiagSSMStack,
StochasticSpikingSSM) through the torch frontend to the nmc.nodes_ssm nodes.

Error bound (reference float64 vs the torch float32 step path): the graph holds the
layer's float32 parameters exactly (converted to float64), so the difference is
float32 rounding in torch: per step ≤ a few ulps of each term, accumulated over
T steps through |Λ̄| < 1 and a LayerNorm/Linear chain of gain ≲ 10, i.e.
|Δy| ≤ 64·T·2⁻²⁴·max(1, max|y|) (≈ 8e-5 for T = 20). The threshold outputs
(delta, LIF, Bernoulli) flip only where a float32 value is within that bound of
its threshold; each such test checks its run has no such tie.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import nmc
from nmc import nn as nnn
from nmc.cli import main
from nmc.errors import UnsupportedNodeError
from nmc.frontends.torch import from_module
from nmc.nodes import DiagSSM, LayerNorm, StochasticSSMNeuron
from nmc.nodes_ssm import noise

T = 20


def _tol(y):
    return 64 * T * 2.0 ** -24 * max(1.0, float(np.max(np.abs(y))))


def _step_path(m, x, **kw):
    outs, st = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, st = m.step(x[t], st, **{k: v[t] for k, v in kw.items()})
            outs.append(o)
    return torch.stack(outs).double().numpy()


@pytest.mark.parametrize("output,complex", [("gelu", True), ("delta", True), ("lif", False), ("relu", False)])
def test_stack_saves_and_compiles_equal_to_the_step_path(tmp_path, output, complex):
    torch.manual_seed(0)
    kw = {"lif": {"beta": 0.9, "v_threshold": 0.5}} if output == "lif" else {}
    m = nnn.DiagSSMStack(4, 8, 3, n_layers=2, state_size=6, complex=complex, output=output, theta=0.05,
                         dt_min=0.01, dt_max=0.5, **kw).eval()
    nmc.save(m, tmp_path / "m.pt")
    b = nmc.compile(tmp_path / "m.pt", target="reference")
    types = [type(n) for n in b.graph.nodes.values()]
    assert types.count(DiagSSM) == 2 and types.count(LayerNorm) == 3
    assert all(n.complex == complex for n in b.graph.nodes.values() if isinstance(n, DiagSSM))
    x = torch.randn(T, 2, 4)
    want = _step_path(m, x)
    got = b.run({"input": x.double().numpy()})["output"]
    assert np.max(np.abs(got - want)) < _tol(want)
    back = nnn.load(tmp_path / "m.pt")            # the rebuildable module: the same layer
    assert np.array_equal(_step_path(back, x), want)


def test_block_residual_is_summed_edges(tmp_path):
    torch.manual_seed(1)
    m = nnn.SSMBlock(5, 4, complex=False, method="bilinear").eval()
    g = from_module(m)
    assert sorted(g.preds("output")) == ["input", "mix"] and g.preds("ssm") == ["norm"]
    nmc.save(m, tmp_path / "b.pt")
    x = torch.randn(T, 1, 5)
    want = _step_path(m, x)
    got = nmc.compile(tmp_path / "b.pt", target="reference").run({"input": x.double().numpy()})["output"]
    assert np.max(np.abs(got - want)) < _tol(want)


def test_diag_in_sequential_and_lif_output():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(3, 4), nnn.DiagSSM(4, 6, output="lif", lif={"v_threshold": 0.2}), nn.Linear(4, 2))
    g = from_module(m)
    assert isinstance(g.nodes["1"], DiagSSM) and g.nodes["1"].output == "none"
    assert g.succs("1") == ["1.lif"] and g.succs("1.lif") == ["2"]


def test_stochastic_layer_same_spikes_as_torch_with_the_nodes_noise(tmp_path):
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(4, 6), nnn.StochasticSpikingSSM(6, 3, seed=11), nn.Linear(6, 2)).eval()
    nmc.save(m, tmp_path / "s.pt")
    b = nmc.compile(tmp_path / "s.pt", target="reference")
    node = b.graph.nodes["1"]
    assert isinstance(node, StochasticSSMNeuron) and node.seed == 11
    x = torch.randn(T, 2, 4)
    xi = torch.as_tensor(noise(11, T, 2, 6), dtype=torch.float32)
    with torch.no_grad():
        h = m[0](x)
        y, _ = m[1].pre_activation(h)
    # no Bernoulli tie: every ξ is farther from σ(y) than the float bound
    assert float((xi - torch.sigmoid(y)).abs().min()) > _tol(y.numpy())
    want_spikes = _step_path(m[1], h, noise=xi)
    r = b.run({"input": x.double().numpy()}, record=["1"])
    assert np.array_equal(r["1.spikes"], want_spikes)
    assert 0 < want_spikes.mean() < 1
    assert nnn.load(tmp_path / "s.pt")[1].seed == 11


def test_refusals_name_the_layer():
    with pytest.raises(UnsupportedNodeError, match="SSMBlock inside another module") as e:
        from_module(nn.Sequential(nn.Linear(3, 4), nnn.SSMBlock(4, 2)))
    assert e.value.node == "1"
    with pytest.raises(UnsupportedNodeError, match="LayerNorm over 2 dimensions") as e:
        from_module(nn.Sequential(nn.LayerNorm((2, 2))), input_shape=(2, 2))
    assert e.value.node == "0"


def test_cli_compile_run_inspect(tmp_path):
    torch.manual_seed(4)
    m = nnn.DiagSSMStack(3, 4, 2, n_layers=1, state_size=4).eval()
    nmc.save(m, tmp_path / "m.pt")
    np.savez(tmp_path / "in.npz", input=np.random.default_rng(0).normal(size=(8, 3)))
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.pt"), "--target", "reference", "-o",
                                  str(tmp_path / "m.nmc")])
    assert r.exit_code == 0, r.output
    assert "warning: integrator not given" not in r.output and "warning: reset not given" not in r.output
    r = CliRunner().invoke(main, ["run", str(tmp_path / "m.nmc"), "-i", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "o.npz")])
    assert r.exit_code == 0, r.output
    want = _step_path(m, torch.as_tensor(np.load(tmp_path / "in.npz")["input"], dtype=torch.float32)[:, None])[:, 0]
    assert np.max(np.abs(np.load(tmp_path / "o.npz")["output"] - want)) < _tol(want)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.nmc")])
    assert r.exit_code == 0 and "nmc.DiagSSM" in r.output and "nmc.LayerNorm" in r.output
