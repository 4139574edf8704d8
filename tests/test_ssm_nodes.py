"""The SSM IR nodes (nmc.nodes_ssm): registry entries, reference steps against nmc.ssm_math,
the counter-based spike generator, per-event Δt runs and the binning error, files.

Error bound: the reference runs float64 with the same expressions as
``nmc.ssm_math.simulate`` (numpy float64); the only difference is the order of
a few sums (torch vs numpy matmul), each output a sum of ≤ T·P terms of
magnitude ≤ max|C|·max|B|·max|u|·Σ|γ| ≈ 10 here, so |Δy| ≤ T·P·10·2⁻⁵² < 1e-11.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest

from nets import normalized
from nmc import semantics, serialize
from nmc import ssm_math as M
from nmc.errors import NmcError, OptionError, ShapeError, UnsupportedNodeError
from nmc.nodes import DiagSSM, LayerNorm, StochasticSSMNeuron, is_extension
from nmc.nodes_ssm import hash_u32, hash_uniform, mix32, noise
from nmc.reference import ReferenceSimulator
from nmc.reference_ssm import bin_events, binning_error, intervals, run_events, with_time

BOUND = 1e-11


def _graph(node, H):
    return normalized(nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([H])}), "ssm": node,
                                          "output": nir.Output({"output": np.array([H])})},
                                   edges=[("input", "ssm"), ("ssm", "output")], type_check=False))


def diag_node(P=6, H=3, *, complex=True, seed=0, **kw):
    rng = np.random.default_rng(seed)
    lam = M.s4d_lin(P) if complex else M.s4d_real(P)
    j = 1j if complex else 0
    return DiagSSM(lam=lam, step=np.exp(rng.uniform(np.log(0.01), np.log(0.5), P)),
                   b=rng.normal(size=(P, H)) + j * rng.normal(size=(P, H)),
                   c=rng.normal(size=(H, P)) + j * rng.normal(size=(H, P)), d=rng.normal(size=H), **kw)


def stoch_node(H=5, N=4, seed=3, **kw):
    rng = np.random.default_rng(1)
    return StochasticSSMNeuron(lam=np.tile(M.s4d_real(N), (H, 1)), step=rng.uniform(0.1, 0.8, H),
                               b=np.ones((H, N)), c=rng.normal(size=(H, N)), d=np.ones(H), seed=seed, **kw)


def test_registry_entries_complete():
    for cls in (DiagSSM, StochasticSSMNeuron, LayerNorm):
        e = semantics.lookup(cls)
        assert e is not None and semantics.missing(e) == [], cls
        assert is_extension(cls.__new__(cls))
    assert semantics.lookup(DiagSSM).kind is semantics.Kind.NEURON and not semantics.lookup(DiagSSM).spiking
    assert semantics.lookup(StochasticSSMNeuron).spiking


@pytest.mark.parametrize("complex,method", [(True, "zoh"), (True, "bilinear"), (False, "zoh"), (False, "bilinear")])
def test_diag_reference_equals_ssm_math(complex, method):
    node = diag_node(complex=complex, method=method)
    u = np.random.default_rng(5).normal(size=(25, 2, 3))
    y = ReferenceSimulator(_graph(node, 3)).run({"input": u})["output"]
    want, _ = M.simulate(u, node.lam, node.b, node.c, node.d, node.step, method)
    assert np.max(np.abs(y - want)) < BOUND


@pytest.mark.parametrize("output", ["gelu", "relu", "delta"])
def test_diag_output_stages(output):
    from scipy.special import erf

    node = diag_node(output=output, theta=0.3)
    u = np.random.default_rng(6).normal(size=(30, 3))
    g = _graph(node, 3)
    r = ReferenceSimulator(g).run({"input": u}, record=["ssm"])
    y, _ = M.simulate(u, node.lam, node.b, node.c, node.d, node.step)
    if output == "gelu":
        want = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    elif output == "relu":
        want = np.maximum(y, 0)
    else:
        held, want, fired = np.zeros(3), [], []
        for t in range(len(y)):
            f = np.abs(y[t] - held) > 0.3
            held = np.where(f, y[t], held)
            want.append(held)
            fired.append(f)
        want = np.array(want)
        assert np.array_equal(r["ssm.spikes"], np.array(fired, dtype=float))
        assert 0 < r["ssm.spikes"].mean() < 1
    assert np.max(np.abs(r["output"] - want)) < BOUND


def _py_mix32(x):
    """lowbias32 written out on Python ints (an independent statement of the generator)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_generator_is_the_written_down_one():
    for seed, k, j in [(0, 0, 0), (1, 2, 3), (2 ** 32 - 1, 12345, 999), (7, 2 ** 32 - 1, 2 ** 31)]:
        r = _py_mix32((_py_mix32((_py_mix32(seed) + k) & 0xFFFFFFFF) + j) & 0xFFFFFFFF)
        assert int(hash_u32(seed, np.uint32(k), np.uint32(j))) == r
        assert float(hash_uniform(seed, np.uint32(k), np.uint32(j))) == (r >> 8) / 2 ** 24
    assert int(mix32(1)) == _py_mix32(1) != 1
    xi = noise(0, 2000, 1, 50)
    assert xi.shape == (2000, 1, 50) and 0 <= xi.min() and xi.max() < 1
    assert abs(xi.mean() - 0.5) < 5 * np.sqrt(1 / 12 / xi.size)     # 5σ of a uniform mean


def test_stochastic_reference_spikes():
    node = stoch_node()
    u = np.random.default_rng(7).normal(size=(40, 2, 5))
    r = ReferenceSimulator(_graph(node, 5)).run({"input": u}, record=["ssm"])
    lam_bar, gamma = M.discretize(node.lam, node.step[:, None], "zoh")
    x, want = np.zeros((2, 5, 4)), []
    xi = noise(node.seed, 40, 2, 5)
    for t in range(40):
        x = lam_bar * x + gamma * M.project_diag(u[t], node.b)
        y = M.readout_diag(x, node.c, node.d, u[t])
        want.append((xi[t] < 1 / (1 + np.exp(-y))).astype(float))
    assert np.array_equal(r["output"], np.array(want))
    assert 0.1 < r["output"].mean() < 0.9
    # another seed draws other spikes
    other = ReferenceSimulator(_graph(stoch_node(seed=4), 5)).run({"input": u})["output"]
    assert not np.array_equal(other, r["output"])


def test_event_mode_equals_per_event_discretisation():
    node = diag_node(time="event")
    g = _graph(node, 3)
    dt = 1e-3
    rng = np.random.default_rng(8)
    ev = rng.normal(size=(15, 1, 3))
    t = np.cumsum(rng.uniform(0.2, 3.0, 15)) * dt
    y = run_events(g, {"input": ev}, t)["output"]
    want, _ = M.simulate(ev, node.lam, node.b, node.c, node.d, node.step, tau=intervals(t, dt)[:, None])
    assert np.max(np.abs(y - want)) < BOUND
    # unit intervals: the tick run's numbers
    tick = ReferenceSimulator(g).run({"input": ev})["output"]
    y1 = run_events(g, {"input": ev}, np.arange(1, 16) * dt)["output"]
    assert np.max(np.abs(y1 - tick)) < BOUND


def test_event_run_refuses_tick_mode_and_stateful_nodes():
    with pytest.raises(OptionError, match="tick mode") as e:
        run_events(_graph(diag_node(), 3), {"input": np.zeros((2, 1, 3))}, [1e-3, 2e-3])
    assert e.value.node == "ssm"
    lif = nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    with pytest.raises(OptionError, match="state per step") as e:
        run_events(_graph(lif, 3), {"input": np.zeros((2, 1, 3))}, [1e-3, 2e-3])
    with pytest.raises(ShapeError, match="decrease"):
        intervals([2e-3, 1e-3], 1e-3)


def test_binning_error():
    g_ev = _graph(diag_node(time="event"), 3)
    g_tick = with_time(g_ev, "tick")
    assert g_tick.nodes["ssm"].time == "tick" and g_ev.nodes["ssm"].time == "event"
    rng = np.random.default_rng(9)
    ev = rng.normal(size=(20, 3))
    on_ticks = binning_error(g_ev, g_tick, ev, np.arange(1, 21) * 1e-3)     # one event at the end of each tick
    assert on_ticks["max_abs"] < BOUND and on_ticks["compared"] == 20
    t = np.sort(rng.uniform(0, 20e-3, 20))
    off = binning_error(g_ev, g_tick, ev, t)
    assert off["rms"] > 1e-3 and off["rel_rms"] > 0
    binned, idx = bin_events(ev, t, 1e-3)
    assert np.allclose(binned.sum(0), ev.sum(0)) and off["compared"] == len(np.unique(idx))
    assert np.isclose(off["max_abs"], np.max(np.abs(off["binned"] - off["per_event"])))


def test_files_round_trip(tmp_path):
    for node, H in ((diag_node(output="delta", theta=0.2), 3), (stoch_node(), 5), (diag_node(complex=False), 3)):
        g = _graph(node, H)
        serialize.write(tmp_path / "m.nir", g)
        back = serialize.read(tmp_path / "m.nir")
        n2 = back.nodes["ssm"]
        assert type(n2) is type(node) and n2.lam.dtype == node.lam.dtype
        u = np.random.default_rng(1).normal(size=(10, H))
        a = ReferenceSimulator(g).run({"input": u})["output"]
        b = ReferenceSimulator(normalized(back)).run({"input": u})["output"]
        assert np.array_equal(a, b)


def test_layernorm_reference():
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=4), rng.normal(size=4)
    g = _graph(LayerNorm(weight=w, bias=b, eps=1e-5), 4)
    x = rng.normal(size=(6, 4))
    y = ReferenceSimulator(g).run({"input": x})["output"]
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    assert np.max(np.abs(y - want)) < BOUND


def test_bad_fields_are_typed_errors():
    n = diag_node()
    with pytest.raises(ShapeError, match="'b' has shape"):
        DiagSSM(lam=n.lam, step=n.step, b=n.b[:, :2], c=n.c, d=n.d)
    with pytest.raises(ShapeError, match="Re Λ < 0"):
        DiagSSM(lam=-n.lam, step=n.step, b=n.b, c=n.c, d=n.d)
    with pytest.raises(UnsupportedNodeError, match="output 'os.system'"):
        DiagSSM(lam=n.lam, step=n.step, b=n.b, c=n.c, d=n.d, output="os.system")
    with pytest.raises(ShapeError, match="θ > 0"):
        DiagSSM(lam=n.lam, step=n.step, b=n.b, c=n.c, d=n.d, output="delta", theta=0.0)
    with pytest.raises(ShapeError, match="seed"):
        stoch_node(seed=-1)
    with pytest.raises(NmcError):
        stoch_node(method="euler")
