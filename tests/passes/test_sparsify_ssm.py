"""sparsify on the SSM nodes: magnitude pruning of B and C (and their fixed-point B̄, C̄), the
activity statistics (effective synaptic operations: B on the input, C on the state), and
activity-based unit pruning of stochastic spiking SSM neurons."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nets import normalized
from nmc import nn as nnn
from nmc.annotations import Sparsity, SSMQuant
from nmc.frontends.torch import from_module
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.reference import ReferenceSimulator
from test_ssm_nodes import _graph, diag_node


def _run(g, pipeline, data=None):
    ctx = PassContext(options={}, data=data)
    out = PassManager(parse_pipeline(pipeline)).run(g, ctx)
    return out, ctx.reports


def test_magnitude_pruning_and_effective_synops_of_a_diag_ssm():
    node = diag_node(P=6, H=3)
    g = _graph(node, 3)
    x = (np.random.default_rng(0).random((40, 2, 3)) < 0.3).astype(float)   # binary input events
    out, rep = _run(g, "quantize{bits=8},sparsify{density=0.5,scope=layer}", {"input": x})
    s = out.nodes["ssm"]
    assert np.count_nonzero(s.b) == 9 and np.count_nonzero(s.c) == 9            # ⌈0.5·18⌉ each
    sp = out.ann("ssm", Sparsity)
    assert sp.mask.shape == (6, 6) and np.array_equal(sp.mask, np.concatenate([s.b != 0, (s.c != 0).T], 1))
    q = out.ann("ssm", SSMQuant)
    assert np.all(q.b_int[s.b == 0] == 0) and np.all(q.c_int[s.c == 0] == 0)
    # B reaches each non-zero input event through its kept column entries; C reads all 6 states every step
    want = float(((x.reshape(-1, 3) != 0) * (s.b != 0).sum(0)).sum()) + 80 * np.count_nonzero(s.c)
    assert rep["sparsify"]["effective_synops"]["ssm"] == want
    assert rep["sparsify"]["dense_synops"]["ssm"] == 80 * (18 + 18)
    assert "a DiagSSM's channels" not in str(rep["sparsify"]["units_kept_reason"])  # no unit pruning asked


def test_diag_ssm_keeps_its_units_with_the_reason():
    torch.manual_seed(0)
    g = normalized(from_module(nn.Sequential(nn.Linear(3, 4), nnn.DiagSSM(4, 5), nn.Linear(4, 2)).eval()))
    _, rep = _run(g, "sparsify{prune_units=0.5}")
    assert "DiagSSM's channels" in rep["sparsify"]["units_kept_reason"]["1"]


def test_stochastic_neurons_prune_their_least_active_units():
    torch.manual_seed(1)
    g = normalized(from_module(nn.Sequential(nn.Linear(4, 8), nnn.StochasticSpikingSSM(8, 3), nn.Linear(8, 2)).eval()))
    x = np.random.default_rng(2).normal(size=(30, 2, 4))
    before = ReferenceSimulator(g).run({"input": x}, record=["1"])
    out, rep = _run(g, "quantize{bits=10},sparsify{prune_units=0.25}", {"input": x})
    r = rep["sparsify"]["units_removed"]["1"]
    assert r["removed"] == 2 and r["kept"] == 6
    node = out.nodes["1"]
    assert node.lam.shape == (6, 3) and out.nodes["0"].weight.shape == (6, 4) and out.nodes["2"].weight.shape == (2, 6)
    assert out.ann("1", SSMQuant).lam_int.shape == (6, 3, 2)
    rate = (before["1.spikes"] != 0).mean((0, 1))
    kept = np.sort(np.argsort(rate, kind="stable")[2:])
    after = ReferenceSimulator(out).run({"input": x}, record=["1"])
    # the kept neurons compute the same probabilities (their ξ are renumbered: other draws, same law)
    assert np.max(np.abs(after["1.p"] - before["1.p"][..., kept])) < 1e-12
