"""A real-diagonal DiagSSM with a LIF output on BrainScaleS-2 (backends/brainscales2/ssm.py): with one decay
and D = 0 it is the LIF layer's synaptic current, so the pair is rewritten into Linear → CubaLIF — exactly:
the rewritten graph's float reference gives the same spikes and the same membrane (up to float64 rounding of
the two association orders, C·(B̄·u) vs (C·B̄)·u: ≤ 1e-12 relative here) — and it compiles for brainscales2
and runs on its emulator; D ≠ 0 and a second decay are refused with the reason."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nmc
from nmc import nn as nnn
from nmc.errors import UnsupportedNodeError
from nmc.reference import ReferenceSimulator

from backends.brainscales2.ssm import as_synaptic_currents, why_not


def _model(tmp_path, *, d_zero=True, one_decay=True):
    torch.manual_seed(0)
    ssm = nnn.DiagSSM(6, 4, complex=False, output="lif", dt_min=0.02, dt_max=0.02)
    with torch.no_grad():
        if one_decay:
            ssm.lam_log_neg_re.fill_(0.0)           # Λ = −1 for every mode; one Δ: one decay Λ̄
        if d_zero:
            ssm.d.zero_()
        ssm.c_re.mul_(8.0)                          # enough drive to fire
    nmc.save(nn.Sequential(nn.Linear(4, 6), ssm).eval(), tmp_path / "m.pt")
    return tmp_path / "m.pt"


def _spikes(T=200, seed=0):
    return (np.random.default_rng(seed).random((T, 4)) < 0.3).astype(float)


def test_rewrite_is_exact_in_the_reference(tmp_path):
    g = nmc.compile(_model(tmp_path), target="reference", fidelity_check=False).graph
    assert why_not(g, "1") is None
    g2, done = as_synaptic_currents(g, g.meta["dt"], g.meta["integrator"])
    assert done["1"]["lif"] == "1.lif" and done["1"]["modes"] == 4
    assert type(g2.nodes["1"]).__name__ == "Linear" and type(g2.nodes["1.lif"]).__name__ == "CubaLIF"
    x = _spikes()
    a = ReferenceSimulator(g).run({"input": x}, record=["1.lif"])
    b = ReferenceSimulator(g2).run({"input": x}, record=["1.lif"])
    assert np.array_equal(a["1.lif.spikes"], b["1.lif.spikes"]) and a["1.lif.spikes"].sum() > 50
    assert np.abs(a["1.lif.v"] - b["1.lif.v"]).max() <= 1e-12 * max(1.0, np.abs(a["1.lif.v"]).max())


def test_compiles_and_runs_on_brainscales2(tmp_path):
    """The analog emulator's rates follow the reference's (6-bit weights, continuous-time circuits, the
    current-based layer's half-step hold after a spike: a rate deviation, not a bound; measured here the
    counts are 0.70–0.81 of the reference's and order the neurons alike)."""
    path = _model(tmp_path)
    x = _spikes()
    ref = nmc.compile(path, target="reference", fidelity_check=False).run({"input": x})["output"]
    b = nmc.compile(path, target="brainscales2", fidelity_check=False)
    y = b.run({"input": x})["output"]
    c_ref, c = ref.sum(0), y.sum(0)
    assert np.array_equal(c_ref == 0, c == 0) and c.sum() > 0
    assert np.corrcoef(c_ref, c)[0, 1] > 0.9 and 0.5 < c.sum() / c_ref.sum() < 1.5


@pytest.mark.parametrize("kw,why", [({"d_zero": False}, "D·u term"), ({"one_decay": False}, "different time constants")])
def test_outside_the_mapping_refused_with_the_reason(tmp_path, kw, why):
    with pytest.raises(UnsupportedNodeError, match=why) as e:
        nmc.compile(_model(tmp_path, **kw), target="brainscales2", fidelity_check=False)
    assert e.value.node == "1"
