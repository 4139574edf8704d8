"""BrainScaleS-2 refuses the SSM nodes with the reason per node (backends/brainscales2/rules.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nmc
from nmc import nn as nnn
from nmc.errors import UnsupportedNodeError


@pytest.mark.parametrize("layer,why", [
    (nnn.DiagSSM(6, 4, complex=True, output="lif"), "complex modes rotate"),
    (nnn.DiagSSM(6, 4, complex=False, output="relu"), "routes spikes .addresses., not values"),
    (nnn.DiagSSM(6, 4, complex=False, output="lif"), "4 real modes decay with 4 different time constants"),
    (nnn.StochasticSpikingSSM(6, 3), "Bernoulli spike"),
])
def test_ssm_nodes_refused_naming_node_and_reason(tmp_path, layer, why):
    torch.manual_seed(0)
    nmc.save(nn.Sequential(nn.Linear(4, 6), layer, nn.Linear(6, 2)).eval(), tmp_path / "m.pt")
    with pytest.raises(UnsupportedNodeError, match=why) as e:
        nmc.compile(tmp_path / "m.pt", target="brainscales2")
    assert e.value.node == "1" and "--target spinnaker2" in e.value.hint


def test_layernorm_reason_listed_with_the_others(tmp_path):
    torch.manual_seed(0)
    nmc.save(nnn.DiagSSMStack(3, 4, 2, n_layers=1, state_size=2).eval(), tmp_path / "s.pt")
    with pytest.raises(UnsupportedNodeError, match="LayerNorm normalises across channels") as e:
        nmc.compile(tmp_path / "s.pt", target="brainscales2")
    assert "'blocks.0.ssm': its 2 complex modes rotate" in str(e.value)
