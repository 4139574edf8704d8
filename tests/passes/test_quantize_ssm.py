"""Fixed-point quantisation of the SSM nodes (passes/quantize_ssm.py through the quantize pass).

Bounds: Λ̄'s parts round to Q1.15, so each part is off by ≤ 2⁻¹⁶ (half an LSB); B̄, C̄, D
with a power-of-two scale 2^−f chosen so max|·|·2^f ≤ 2^(bits−1) − 1 < max|·|·2^(f+1) are
off by ≤ 2^−(f+1) ≤ max|·|/(2^(bits−1) − 1) per part. The dequantized node reproduces
Λ̄_q, B̄_q through log/exp in float64: ≤ 1e-12 relative.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nets import normalized
from nmc import nn as nnn
from nmc import serialize
from nmc.annotations import SSMQuant
from nmc.errors import OptionError, PassError
from nmc.frontends.torch import from_module
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.passes.quantize_ssm import LAM_FRAC, dequantized_node, discrete, row_scale
from test_ssm_nodes import _graph, diag_node, stoch_node


def _quantize(g, bits=8):
    ctx = PassContext(options={})
    q = PassManager(parse_pipeline(f"quantize{{bits={bits}}}")).run(g, ctx)
    return q, ctx.reports["quantize"]


def _stack():
    torch.manual_seed(0)
    return normalized(from_module(nnn.DiagSSMStack(4, 8, 3, n_layers=2, state_size=6).eval()))


@pytest.mark.parametrize("complex", [True, False])
def test_fixed_point_formats_and_their_float_meaning(complex):
    node = diag_node(complex=complex)
    g, rep = _quantize(_graph(node, 3), bits=8)
    q = g.ann("ssm", SSMQuant)
    lam_bar, bbar, cbar = discrete(node)
    parts = np.stack([lam_bar.real, np.imag(lam_bar)], -1)
    assert q.lam_frac == LAM_FRAC and np.max(np.abs(q.lam_int * 2.0 ** -15 - parts)) <= 2.0 ** -16
    assert np.max(np.abs(q.lam_int)) <= 2 ** 15 - 1
    for arr, ints, frac in ((bbar, q.b_int, q.b_frac), (cbar, q.c_int, q.c_frac)):
        rows = np.abs(ints).reshape(len(ints), -1).max(1)
        assert rows.max() <= 127 and rows.min() > 63     # each row's power-of-two scale fills the range
        p = np.stack([np.real(arr), np.imag(arr)], -1)
        assert np.all(np.abs(ints * row_scale(frac, ints) - p) <= row_scale(frac, ints) / 2)
    deq = dequantized_node(node, q)
    lb, bb, cb = discrete(deq)
    want = q.lam_int[..., 0] * 2.0 ** -15 + (1j * q.lam_int[..., 1] * 2.0 ** -15 if complex else 0)
    assert np.max(np.abs(lb - want)) < 1e-12
    assert np.max(np.abs(np.real(bb) - q.b_int[..., 0] * row_scale(q.b_frac, bb))) < 1e-12
    assert rep["ssm"]["ssm"]["lam_bar"]["max_abs_error"] <= 2.0 ** -15.5
    assert rep["neurons"]["ssm"]["integer_domain"] is False


def test_more_bits_less_error_end_to_end():
    g = _stack()
    errs = {}
    for bits in (4, 12):
        _, rep = _quantize(g.copy(), bits)
        errs[bits] = rep["end_to_end"]["output"]["max_abs_diff"]
        assert set(rep["ssm"]) == {"blocks.0.ssm", "blocks.1.ssm"}
    assert 0 < errs[12] < errs[4] / 10


def test_stochastic_neuron_quantised_spikes_agree():
    g, rep = _quantize(_graph(stoch_node(), 5), bits=10)
    assert g.ann("ssm", SSMQuant) is not None
    assert rep["neurons"]["ssm"]["agreement"] > 0.95       # the same ξ: only near-ties flip


def test_event_mode_refused_and_annotation_round_trips(tmp_path):
    with pytest.raises((OptionError, PassError), match="per-event") as e:
        _quantize(_graph(diag_node(time="event"), 3))
    assert e.value.node == "ssm"
    g, _ = _quantize(_graph(diag_node(), 3))
    serialize.write(tmp_path / "q.nir", g)
    back = serialize.read(tmp_path / "q.nir").ann("ssm", SSMQuant)
    assert np.array_equal(back.lam_int, g.ann("ssm", SSMQuant).lam_int) and np.array_equal(back.b_frac, g.ann("ssm", SSMQuant).b_frac)
