"""``nmc inspect`` and ``nmc profile`` on SSM models: inspect shows each SSM node's state and multiply-adds
per tick (the node types' registry ``describe`` hooks, nmc/nodes_ssm.py); profile on spinnaker2 counts the
PE kernels' own multiply-adds (the ``internal_macs`` hook, backends/spinnaker2/ssm_lower.py) on top of the
input stage's, per the formula written there."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import nmc
from nmc import nn as nnn
from nmc import semantics, serialize
from nmc.ir import Graph
from nmc.nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron
from test_ssm_nodes import _graph, diag_node


def cli(*args):
    return subprocess.run([sys.executable, "-m", "nmc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_inspect_shows_ssm_state_and_macs(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), nnn.DiagSSM(8, 4),
                            torch.nn.Linear(8, 6), nnn.StochasticSpikingSSM(6, 3, seed=2))
    nmc.save(m, tmp_path / "m.pt", input_shape=(5,))
    r = cli("inspect", tmp_path / "m.pt", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["node"]: x for x in json.loads(r.stdout)["nodes"]}
    by_type = {x["type"]: x for x in rows.values()}
    d = by_type["nmc.DiagSSM"]["details"]
    # complex P = 4, H = 8: B̄·u 2PH + Λ̄x 4P + Re(C̄x) 2HP + D·u H
    assert d["state"].startswith("4 complex modes (8 reals)") and d["macs_per_step"] == 2 * 32 + 16 + 2 * 32 + 8
    s = by_type["nmc.StochasticSSMNeuron"]["details"]
    assert s["state"].startswith("6 neurons × 3 real states") and s["macs_per_step"] == 6 * (3 * 3 + 1)
    assert by_type["nmc.LayerNorm"]["details"]["macs_per_step"] == 32
    assert "details" not in by_type["Affine"]
    r = cli("inspect", tmp_path / "m.pt")
    assert r.returncode == 0 and "macs_per_step" in r.stdout


def test_describe_hooks_registered():
    for cls in (DiagSSM, StochasticSSMNeuron, LayerNorm):
        assert semantics.lookup(cls).hook("describe") is not None


def test_profile_counts_the_kernel_macs_on_spinnaker2(tmp_path, monkeypatch):
    """An all-ones input reaches every channel every step, so the kernel adds, per step, sample and channel,
    2P (B̄ column) + 4P/H (Λ̄ ⊙ x) + 2P (C̄ row) + 1 (D) multiply-adds to what the input stage counts."""
    from nmc.runtime import energy

    P, H, T, B = 5, 4, 12, 2
    g = _graph(diag_node(P=P, H=H, output="relu"), H)
    serialize.write(tmp_path / "m.nir", g if isinstance(g, Graph) else Graph.from_nir(g))
    b = nmc.compile(tmp_path / "m.nir", target="spinnaker2", output=tmp_path / "m.nmc", fidelity_check=False)
    x = {"input": np.ones((T, B, H))}
    rep, _ = energy.profile(b, x)
    entry = semantics.lookup(DiagSSM)
    monkeypatch.delitem(entry.hooks, ("spinnaker2", "internal_macs"))
    base, _ = energy.profile(b, x)
    extra = T * B * H * (2 * P + 4 * P / H + 2 * P + 1)
    assert rep["counts"]["macs"] - base["counts"]["macs"] == pytest.approx(extra)
    assert rep["dynamic_j"] > base["dynamic_j"]
