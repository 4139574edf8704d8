"""Pure-NIR export of a real-diagonal SSM (nmc.nir_ssm via Graph.to_nir): write → NIR's own
reader → nmc compile → the same outputs; a typed refusal naming the node where NIR cannot say it.

Error bound: the exported LI recomputes the decay as exp(−dt/τ) with τ = −dt/ln Λ̄ and the
input gain (1 − a)·R with R = γ/(1 − Λ̄): each a few float64 ulps off Λ̄ and γ, so
over T steps of |Λ̄| < 1 the output moves by ≤ T·|C|·|B|·|u|·1e-15 per mode·channel
(< 1e-10 here); the D path is exact.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

import nmc
from nmc import nn as nnn
from nmc.errors import UnsupportedNodeError
from nmc.frontends.torch import from_module
from nmc.nodes import DiagSSM, LayerNorm
from nmc.reference import ReferenceSimulator
from test_ssm_nodes import _graph, diag_node, stoch_node

BOUND = 1e-10
DT = 1e-3


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_real_diag_ssm_round_trips_through_pure_nir(tmp_path, method):
    g = _graph(diag_node(P=5, H=3, complex=False, method=method), 3)
    nir.write(tmp_path / "ssm.nir", g.to_nir())
    back = nir.read(tmp_path / "ssm.nir")                       # NIR's own reader: only NIR primitives
    assert {type(n).__name__ for n in back.nodes.values()} == {"Input", "Output", "Linear", "LI", "Scale"}
    b = nmc.compile(tmp_path / "ssm.nir", target="reference", dt=DT, integrator="exact")
    u = np.random.default_rng(3).normal(size=(30, 2, 3))
    want = ReferenceSimulator(g).run({"input": u})["output"]
    got = b.run({"input": u})["output"]
    assert np.max(np.abs(got - want)) < BOUND
    assert np.max(np.abs(want)) > 0.1


def test_torch_model_with_a_real_ssm_exports(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nnn.DiagSSM(4, 6, complex=False, output="none"), nn.Linear(4, 2)).eval()
    g = from_module(m)
    nir.write(tmp_path / "m.nir", g.to_nir())
    b = nmc.compile(tmp_path / "m.nir", target="reference", dt=g.meta["dt"], integrator="exact")
    x = torch.randn(20, 1, 3)
    with torch.no_grad():
        want = m(x).double().numpy()
    assert np.max(np.abs(b.run({"input": x.double().numpy()})["output"] - want)) < 64 * 20 * 2.0 ** -24 * 10


@pytest.mark.parametrize("node,why", [
    (diag_node(complex=True), "complex eigenvalues"),
    (diag_node(complex=False, output="gelu"), "gelu output stage"),
    (diag_node(complex=False, output="delta", theta=0.1), "delta output stage"),
    (diag_node(complex=False, time="event"), "per-event Δt"),
    (DiagSSM(lam=[-1.0], step=[3.0], b=[[1.0]], c=[[1.0]], d=[0.0], method="bilinear"), "Λ̄ ≤ 0"),
    (stoch_node(), "Bernoulli"),
    (LayerNorm(weight=np.ones(3), bias=np.zeros(3)), "layer normalisation"),
])
def test_refusals_name_the_node(node, why):
    H = int(node.input_type["input"][0])
    with pytest.raises(UnsupportedNodeError, match=why) as e:
        _graph(node, H).to_nir()
    assert e.value.node == "ssm" and "cannot export" in str(e.value)
