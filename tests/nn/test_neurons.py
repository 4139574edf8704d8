"""nmc.nn neuron layers: forward == the reference target bit-for-bit (float64),
step-wise state, surrogate gradients, config round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nmc
from nmc import nn as nnn


def _spikes(shape, p=0.4, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).double() * scale


def _compiled_run(net, x):
    """Run ``net`` on the reference *target* (the compiled bundle), batch-first layout (T, B, ...)."""
    b = nmc.compile(net, target="reference", input_shape=tuple(x.shape[2:]))
    return b.run({"input": x.numpy()})["output"]


@pytest.mark.parametrize("layer", [
    lambda: nnn.LIF(9, beta=0.8, reset="subtract"),
    lambda: nnn.LIF(9, tau=3e-3, integrator="exact", reset="zero", v_reset=-0.2, v_leak=0.1),
    lambda: nnn.CubaLIF(9, alpha=0.7, beta=0.9),
    lambda: nnn.CubaLIF(9, tau_mem=4e-3, tau_syn=2e-3, integrator="exact", reset="zero"),
    lambda: nnn.IF(9, v_threshold=0.7),
    lambda: nnn.RLIF(9, beta=0.85),
])
def test_each_layer_equals_compiled_reference_target(layer):
    torch.manual_seed(0)
    lay = layer()
    readout = nnn.LI(4, beta=0.9, integrator=lay.integrator)  # one integrator per graph
    net = nn.Sequential(nn.Linear(5, 9), lay, nn.Linear(9, 4), readout).double()
    with torch.no_grad():
        net[0].weight.mul_(3)
        if isinstance(lay, nnn.RLIF):
            lay.recurrent.weight.normal_(0, 0.6)
    x = _spikes((40, 3, 5))
    y = nnn.run(net, x).detach().numpy()
    out = _compiled_run(net, x)
    assert np.array_equal(out, y)
    # the hidden layer did spike, so the check covers the threshold and reset paths
    nnn.reset(net)
    hidden = torch.stack([net[1](net[0](x[t])) for t in range(40)])
    assert hidden.sum() > 10


def test_mixed_integrators_are_converted_to_one_and_warned():
    """The graph has one integrator; a layer trained with the other gets the time
    constant with the same per-step decay (equal up to rounding) and a warning."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 9), nnn.LIF(9, tau=3e-3, integrator="exact", reset="zero"),
                        nn.Linear(9, 4), nnn.LI(4, tau=4e-3, integrator="exact"),
                        ).double()
    net.append(nn.Linear(4, 3).double())
    net.append(nnn.CubaLIF(3, alpha=0.6, beta=0.8).double())  # euler: the minority
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(4)
    g = nmc.frontends.torch.from_module(net)
    assert g.meta["integrator"] == "exact"
    assert [w["node"] for w in g.meta["warnings"]] == ["5"]
    x = _spikes((40, 3, 5))
    y = nnn.run(net, x).detach().numpy()
    b = nmc.compile(net, target="reference")
    out = b.run({"input": x.numpy()}, record=["3"])
    assert np.array_equal(out["3.v"], nnn.run(net[:4], x).detach().numpy())  # the exact layers: bit-exact
    assert y.sum() > 5 and np.array_equal(out["output"], y)  # the converted layer: same spikes here


@settings(max_examples=15, deadline=None)
@given(beta=st.floats(0.05, 0.98), thr=st.floats(0.2, 2.0), gain=st.floats(0.5, 6.0), seed=st.integers(0, 10_000),
       reset=st.sampled_from(["zero", "subtract"]))
def test_lif_property_bit_exact(beta, thr, gain, seed, reset):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nnn.LIF(6, beta=beta, v_threshold=thr, reset=reset)).double()
    with torch.no_grad():
        net[0].weight.mul_(gain)
    x = _spikes((25, 2, 4), seed=seed)
    assert np.array_equal(_compiled_run(net, x), nnn.run(net, x).detach().numpy())


def test_state_is_kept_between_calls_and_cleared_by_reset():
    lif = nnn.LIF(3, beta=0.5, v_threshold=10.0).double()
    x = torch.ones(2, 3, dtype=torch.float64)
    lif(x)
    assert torch.allclose(lif.state["v"], torch.ones(2, 3, dtype=torch.float64))
    lif(x)
    assert torch.allclose(lif.state["v"], torch.full((2, 3), 1.5, dtype=torch.float64))  # v = βv + x
    lif.reset_state()
    lif(x)
    assert torch.allclose(lif.state["v"], torch.ones(2, 3, dtype=torch.float64))
    # a new batch size starts from zero state
    lif(torch.ones(5, 3, dtype=torch.float64))
    assert lif.state["v"].shape == (5, 3)


@pytest.mark.parametrize("kind", ["fast_sigmoid", "triangle"])
def test_surrogate_gradients(kind):
    v = torch.tensor([-1.0, -0.1, 0.0, 0.05, 1.0], requires_grad=True)
    s = nnn.surrogate(kind, slope=5.0)(v)
    assert torch.equal(s, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))  # Heaviside, H(0) = 0
    s.sum().backward()
    a = v.detach().abs()
    want = 1 / (1 + 5 * a) ** 2 if kind == "fast_sigmoid" else torch.clamp(1 - 5 * a, min=0)
    assert torch.allclose(v.grad, want)
    with pytest.raises(ValueError):
        nnn.surrogate("atan")


def test_training_changes_weights_through_time():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nnn.LIF(8, beta=0.9, surrogate="triangle", slope=2.0), nn.Linear(8, 2),
                        nnn.LI(2, beta=0.9))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x = _spikes((20, 16, 4)).float()
    target = torch.zeros(16, 2)
    target[:, 0] = 1.0
    losses = []
    for _ in range(25):
        out = nnn.run(net, x)[-1]
        loss = ((out - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_parameter_validation():
    with pytest.raises(ValueError):
        nnn.LIF(3, tau=1e-3, beta=0.9)
    with pytest.raises(ValueError):
        nnn.LIF(3, beta=1.0)
    with pytest.raises(ValueError):
        nnn.LIF(3, reset="none")
    with pytest.raises(ValueError):
        nnn.CubaLIF(3, integrator="rk4")


def test_save_and_rebuild_from_another_process(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 7), nnn.CubaLIF(7, alpha=0.5, beta=0.8), nn.Linear(7, 3), nnn.LIF(3, beta=0.9))
    nmc.save(net, tmp_path / "m.pt")
    x = _spikes((12, 2, 5)).float()
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys, numpy as np, torch, nmc.nn as nnn; m = nnn.load(sys.argv[1]); "
            "y = nnn.run(m, torch.from_numpy(np.load(sys.argv[2]))); np.save(sys.argv[3], y.detach().numpy())")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "y.npy"), nnn.run(net, x).detach().numpy())
