"""Exporter conventions read by ``normalize`` (:mod:`nmc.passes.conventions`):
singleton dimensions in Input/Output types, implausible time constants, and
the time-constant error of the chip targets (it names the node and the fix)."""
from __future__ import annotations

import nir
import numpy as np
import pytest

import nmc
from nmc.errors import NmcError
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline


def _lif_graph(tau, out_shape=(1,), n=1, r=None):
    tau = np.full(n, tau)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Linear(weight=np.full((n, 3), 0.5)),
        "lif": nir.LIF(tau=tau, r=np.ones(n) if r is None else np.full(n, r), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array(out_shape)}),
    }, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)


def _normalize(g, **opts):
    ctx = PassContext(options=opts)
    return PassManager(parse_pipeline("normalize")).run(Graph.from_nir(g), ctx), ctx


def test_rockpool_singleton_output_type_is_reconciled():
    """Rockpool declares the output of a (1,) LIF as (1, 1, 1); before, verify refused it
    ("insert a Flatten"). Now it reads as (1,) with a warning naming the node."""
    g, ctx = _normalize(_lif_graph(0.02, out_shape=(1, 1, 1)), dt=1e-3)
    assert g.shape_in("output") == (1,)
    assert any(w["node"] == "output" and "size 1" in w["message"] for w in ctx.warnings.items)


def test_different_sizes_are_still_refused():
    with pytest.raises(NmcError, match="Flatten"):
        _normalize(_lif_graph(0.02, out_shape=(1, 2)), dt=1e-3)


def test_norse_tau_bug_is_named_and_refused_under_euler():
    """Norse 1.1.0's to_nir writes dt_export·τ: 1e-5 s for a 10 ms neuron. At dt = 1e-4
    the Euler update overshoots (dt/τ = 10): refused, naming the node and the bug."""
    with pytest.raises(NmcError) as e:
        _normalize(_lif_graph(1e-5), dt=1e-4)
    msg = e.value.one_line()
    assert "node 'lif'" in msg and "Norse" in msg and "--tau-scale 1000" in msg and "0.01 s" in msg


def test_tau_scale_repairs_the_norse_export():
    g, ctx = _normalize(_lif_graph(1e-5), dt=1e-4, tau_scale=1000)
    assert np.allclose(g.nodes["lif"].tau, 1e-2)
    assert not [w for w in ctx.warnings.items if "τ" in w["message"]]


def test_tau_below_dt_with_exact_integrator_is_warned():
    _, ctx = _normalize(_lif_graph(5e-5), dt=1e-4, integrator="exact")
    w = [w for w in ctx.warnings.items if w["node"] == "lif"]
    assert w and "below dt" in w[0]["message"] and "Norse" in w[0]["message"]


@pytest.mark.parametrize("bad", [0, -1, "x"])
def test_tau_scale_must_be_positive(bad):
    with pytest.raises(NmcError, match="tau-scale"):
        _normalize(_lif_graph(1e-2), dt=1e-4, tau_scale=bad)


@pytest.mark.parametrize("target", ["spinnaker2", "loihi2", "brainscales2"])
def test_dt_equal_to_tau_error_names_the_node_and_says_why(target):
    """dt = τ: the chip's per-step decay would be 0. The error names the layer (brainscales2
    named node '' before), says why and what to do."""
    with pytest.raises(NmcError) as e:
        nmc.compile(_lif_graph(1e-3, n=4, r=1.0, out_shape=(4,)), target=target, dt=1e-3)
    msg = e.value.one_line()
    assert "node 'lif'" in msg and "τ = 0.001 s" in msg and "overshoot" in msg and "fix:" in msg and "--dt" in msg
