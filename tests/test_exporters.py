"""Networks exported by the frameworks' own NIR exporters, read by nmc, and run
against the framework's own simulation of the same network (docs/exporters.md
has the table of conventions these tests pin down).

Each test builds a small model in the framework, runs it there step by step,
exports it with the framework's ``to_nir``, writes the NIR file, compiles it with
``nmc.compile`` (the options a user reads from docs/exporters.md) and runs the
compiled graph on the reference simulator in float32 (the frameworks' dtype).

Tolerances: output spike trains **identical**; the first layer's membrane within
the float32 bound of :func:`float_bounds.membrane_bound` (steps × magnitude × eps;
derivation in tests/float_bounds.py) — both sides compute the same update with
the same float32 parameters, summing in another order.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

import nmc
from float_bounds import EPS32, assert_within, fan_in, input_magnitude, membrane_bound
from nmc.reference import ReferenceSimulator


def _nmc_run(graph: nir.NIRGraph, tmp_path, x: np.ndarray, record: str, write: bool = True, **opts):
    """Compile ``graph`` through a NIR file (``write``) or as the in-memory object."""
    model = graph
    if write:
        model = tmp_path / "model.nir"
        nir.write(model, graph)
    b = nmc.compile(model, target="reference", fidelity_check=False, **opts)
    r = ReferenceSimulator(b.graph, dtype=torch.float32).run({b.graph.inputs[0]: x}, record=[record])
    return b, r


# ------------------------------------------------------------------ snnTorch
def test_snntorch_export(tmp_path):
    """snnTorch 1.0.0 writes LIF with τ = dt/(1 − β), r = τ/dt for dt = 1e-4 and v_reset = 0:
    read with nmc's defaults (dt 1e-4, Euler), v ← β·v + x, reset to zero in the same step."""
    snn = pytest.importorskip("snntorch")
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    kw = dict(init_hidden=True, reset_mechanism="zero", reset_delay=False)
    net = nn.Sequential(nn.Linear(6, 16), snn.Leaky(beta=torch.full((16,), 0.9), threshold=torch.ones(16), **kw),
                        nn.Linear(16, 4), snn.Leaky(beta=torch.full((4,), 0.8), threshold=torch.ones(4), **kw))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[2].weight.abs_().mul_(2.0)
    x = (torch.rand(60, 3, 6) < 0.3).float()
    utils.reset(net)
    ys, mems = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = net[1](net[0](x[t]))
            mems.append(net[1].mem.clone())
            ys.append(net[3](net[2](h)))
    ys, mem = torch.stack(ys).numpy(), torch.stack(mems).numpy()
    g = export_to_nir(net, torch.zeros(6))           # scalar β or a batch in the sample fails snnTorch's own type check
    b, r = _nmc_run(g, tmp_path, x.numpy(), "1")
    assert b.graph.meta["dt"] == 1e-4
    assert ys.sum() > 10 and r["1.spikes"].sum() > 50
    assert np.array_equal(r["output"], ys)
    assert_within(r["1.v"], mem, membrane_bound(input_magnitude(net[0], x.numpy()), fan_in(net[0]), mem))


# --------------------------------------------------------------------- Norse
def test_norse_export_tau_bug_is_named_and_repaired(tmp_path):
    """Norse 1.1.0 writes LIF τ = dt_export/τ_inv = dt_export·τ (1e-5 s for its 10 ms default,
    dt_export = 1 ms), r = 1, v_reset = 0. Read at dt = 1e-3 as written, nmc refuses with the
    exporter bug named; with --tau-scale 1000 it matches Norse's own run."""
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(1)
    net = norse.SequentialState(nn.Linear(6, 16), norse.LIFBoxCell(), nn.Linear(16, 4), norse.LIFBoxCell())
    with torch.no_grad():
        net[0].weight.mul_(20)
        net[2].weight.abs_().mul_(20)
    x = (torch.rand(80, 3, 6) < 0.4).float() * 2
    ys, mems, st = [], [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, st = net(x[t], st)
            ys.append(o)
            mems.append(st[1].v.clone())
    ys, mem = torch.stack(ys).numpy(), torch.stack(mems).numpy()
    g = norse.to_nir(net, torch.zeros(1, 6))  # (nir.write cannot store its 0-d parameters: compiled in memory)
    assert float(np.asarray(g.nodes["1"].tau).reshape(-1)[0]) == pytest.approx(1e-5)  # the bug this test pins
    with pytest.raises(nmc.errors.NmcError, match="Norse .*--tau-scale 1000"):
        _nmc_run(g, tmp_path, x.numpy(), "1", write=False, dt=1e-3)
    b, r = _nmc_run(g, tmp_path, x.numpy(), "1", write=False, dt=1e-3, tau_scale=1000)
    assert ys.sum() > 10 and r["1.spikes"].sum() > 50
    assert np.array_equal(r["output"], ys)
    assert_within(r["1.v"], mem, membrane_bound(input_magnitude(net[0], x.numpy()), fan_in(net[0]), mem))


# -------------------------------------------------------------------- sinabs
def test_sinabs_export_discrete_time(tmp_path):
    """sinabs 3.1.3 writes IAF as IF with r = 1 and v_reset = 0 in discrete time (one unit of
    input per step) and does not export its reset (MembraneSubtract): compile with --dt 1
    --reset subtract. At the default dt the fidelity check names the dead layer and --dt 1."""
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleSpike

    torch.manual_seed(2)
    B = 3
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),
                        sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, reset_fn=MembraneSubtract()),
                        sl.SumPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5, bias=False),
                        sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, reset_fn=MembraneSubtract()))
    with torch.no_grad():
        net[0].weight.mul_(1.5)
        net[4].weight.abs_().mul_(0.5)
    x = (torch.rand(40, B, 1, 8, 8) < 0.3).float()
    ys, mems = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):          # one step per call: the layers keep their state
            ys.append(net(x[t]))
            mems.append(net[1].v_mem.clone().reshape(B, 4, 8, 8))
    ys, mem = torch.stack(ys).numpy(), torch.stack(mems).numpy()
    g = sinabs.to_nir(net, torch.zeros(B, 1, 8, 8))  # (its Conv2d has input_shape None: nir.write cannot store it)
    b, r = _nmc_run(g, tmp_path, x.numpy(), "1", write=False, dt=1.0, reset="subtract")
    assert ys.sum() > 10 and r["1.spikes"].sum() > 50
    assert np.array_equal(r["output"], ys)
    assert_within(r["1.v"], mem, membrane_bound(input_magnitude(net[0], x.numpy()), fan_in(net[0]), mem))
    warns = nmc.compile(g, target="reference", reset="subtract").report("compile")["warnings"]
    assert any(w["source"] == "fidelity" and w["node"] == "1" and "--dt 1" in w["message"] for w in warns)


# ------------------------------------------------------------------ Rockpool
def test_rockpool_export_singleton_output_type(tmp_path):
    """Rockpool 3.1.0 declares the output type (1, 1, 1) for a (1,) LIF (and an input type
    with a batch dimension): nmc reads both (before: refused, "insert a Flatten")."""
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch, to_nir

    torch.manual_seed(3)
    net = Sequential(LinearTorch((3, 1)), LIFTorch((1,), dt=1e-3))
    g = to_nir(net)
    assert tuple(g.nodes["output"].output_type["output"]) == (1, 1, 1)
    p = tmp_path / "rp.nir"
    nir.write(p, g)
    b = nmc.compile(p, target="reference", dt=1e-3, fidelity_check=False)
    assert b.graph.shape_in("output") == (1,) and b.graph.shape_out("input") == (3,)
    assert any(w["node"] == "output" and "size 1" in w["message"] for w in b.report("compile")["warnings"])


def test_rockpool_export_dynamics(tmp_path):
    """Rockpool 3.1.0's LIFTorch runs i ← β·(i + x), v ← α·v + i, spike when v ≥ θ, v ← v − θ
    (α = e^(−dt/τ_mem), β = e^(−dt/τ_syn)), and its to_nir writes it as a CubaLIF with
    r = τ_mem·α/dt and w_in = 1, which NIR reads as another neuron. ``--exporter rockpool`` reads
    dt back from r (dt = τ·W(1/r)) and writes Rockpool's update as NIR parameters under the
    exact integrator (w_in = β/(1 − β), r = 1/(1 − α), subtract reset): spikes identical to
    Rockpool's own evolution, membrane within the float32 bound below. Without the option the
    same file runs as another network (the spikes differ)."""
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch, to_nir

    torch.manual_seed(3)
    tau_m, tau_s = 0.02, 0.005
    one = dict(dt=1e-3, max_spikes_per_dt=1)         # one spike per step: nmc neurons emit at most one
    net = Sequential(LinearTorch((6, 16)), LIFTorch((16,), tau_mem=torch.full((16,), tau_m),
                                                    tau_syn=torch.full((16,), tau_s), **one),
                     LinearTorch((16, 4)), LIFTorch((4,), tau_mem=torch.full((4,), 0.01),
                                                    tau_syn=torch.full((4,), 0.01), **one))
    with torch.no_grad():
        net[0].weight.mul_(0.3)
        net[2].weight.abs_().mul_(0.05)
    x = (torch.rand(3, 80, 6) < 0.3).float()          # Rockpool's layout: (batch, time, channels)
    with torch.no_grad():
        out, _, rec = net(x, record=True)
    ys = out.numpy().transpose(1, 0, 2)
    mem = rec["1_LIFTorch"]["vmem"].numpy().transpose(1, 0, 2)
    isyn = rec["1_LIFTorch"]["isyn"].numpy().transpose(1, 0, 2, 3)[..., 0]
    xs = x.numpy().transpose(1, 0, 2)
    b, r = _nmc_run(to_nir(net), tmp_path, xs, "1_LIFTorch", exporter="rockpool")   # through a NIR file
    assert b.graph.meta == {**b.graph.meta, "dt": 1e-3, "integrator": "exact", "reset": "subtract"}
    assert 0.1 < ys.mean() < 0.6 and r["1_LIFTorch.spikes"].mean() > 0.1
    assert np.array_equal(r["output"], ys)
    # float32 bound: tests/float_bounds.py's sum of local bounds (input sum of K = 6 terms, 6 roundings),
    # plus the cancellation in nmc's coefficients: r·(1 − α) and w_in·(1 − β) equal 1 and β only to
    # u·α/(1 − α) and u·β/(1 − β) relative (1 − α rounded in float32), applied to |i| and A every step
    W = np.abs(net[0].weight.detach().numpy().astype(np.float64))           # (in, out)
    A = np.abs(xs).astype(np.float64) @ W
    a, bb = np.exp(-1e-3 / tau_m), np.exp(-1e-3 / tau_s)
    extra = np.cumsum(EPS32 * (a / (1 - a) + bb / (1 - bb)) * (np.abs(isyn) + A), axis=0)
    assert_within(r["1_LIFTorch.v"], mem, membrane_bound(A, 6, mem, isyn) + extra)
    # the file read as NIR defines it (no --exporter) is another network
    b2, r2 = _nmc_run(to_nir(net), tmp_path, xs, "1_LIFTorch", dt=1e-3, integrator="exact", reset="subtract")
    assert not np.array_equal(r2["output"], ys)
    with pytest.raises(nmc.errors.OptionError, match="--exporter must be one of"):
        nmc.compile(to_nir(net), target="reference", exporter="keras", fidelity_check=False)


def test_norse_export_none_node_is_named():
    """Norse 1.1.0's to_nir leaves None for nn.Flatten (and pooling): nmc names the node and the
    fix in one typed error (before: TypeError "vars() argument must have __dict__ attribute")."""
    norse = pytest.importorskip("norse.torch")
    net = norse.SequentialState(nn.Conv2d(1, 2, 3, stride=2, padding=1), norse.LIFBoxCell(), nn.Flatten(),
                                nn.Linear(32, 4), norse.LIFBoxCell())
    g = norse.to_nir(net, torch.zeros(1, 1, 8, 8))
    assert g.nodes["2"] is None
    with pytest.raises(nmc.errors.GraphError, match="not a NIR node.*Norse") as e:
        nmc.compile(g, target="reference", exporter="norse", fidelity_check=False)
    assert e.value.node == "2"
