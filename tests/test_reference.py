"""Reference simulator semantics, node by node, against plain numpy loops written
here from the equations (independent of nmc.dynamics and torch).

Tolerance: both sides are float64; results agree to 1e-12 (rtol) — only the
summation order of matrix products differs. Spike trains must match exactly.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest

from nets import (conv_pool, currents, egru_node, ff_lif, normalized, recurrent_cubalif, single_node_graph,
                  spikes)
from nmc.annotations import Reset
from nmc.ir import Graph
from nmc.reference import ReferenceSimulator

TOL = dict(rtol=1e-12, atol=1e-12)
DT = 1e-3


def run1(node, x, *, in_shape=None, dt=DT, integrator="euler", reset="zero", name="n"):
    """Simulate Input → node → Output; return (output, recorded dict of node)."""
    g = single_node_graph(node, name)
    if in_shape is not None:
        g.nodes["input"] = nir.Input(input_type={"input": np.array(in_shape)})
        g.nodes["output"] = nir.Output(output_type={"output": None})
    G = normalized(g, dt=dt, integrator=integrator, reset=reset)
    res = ReferenceSimulator(G).run({"input": x}, record=[name])
    return res["output"], {k.split(".", 1)[1]: v for k, v in res.items() if k.startswith(name + ".")}


# ------------------------------------------------------------- numpy oracles
def np_leak(v, x, tau, r, v_leak, dt, integrator):
    if integrator == "euler":
        return v + dt / tau * (v_leak - v + r * x)
    a = np.exp(-dt / tau)
    return v_leak + (v - v_leak) * a + r * x * (1 - a)


def np_fire(v, thr, v_reset, reset):
    s = (v > thr).astype(float)
    if reset == "zero":
        v = np.where(s > 0, v_reset, v)
    else:
        v = v - s * thr
    return s, v


def np_neuron(kind, p, xs, dt, integrator, reset):
    """Loop over time for one neuron population; returns (out, v, spikes)."""
    n = xs.shape[1:]
    v, i = np.zeros(n), np.zeros(n)
    outs, vs, ss = [], [], []
    for x in xs:
        if kind in ("I", "IF"):
            v = v + dt * p["r"] * x
        elif kind in ("LI", "LIF"):
            v = np_leak(v, x, p["tau"], p["r"], p["v_leak"], dt, integrator)
        else:  # Cuba*
            if integrator == "euler":
                i = i + dt / p["tau_syn"] * (-i + p["w_in"] * x)
            else:
                a = np.exp(-dt / p["tau_syn"])
                i = i * a + p["w_in"] * x * (1 - a)
            v = np_leak(v, i, p["tau_mem"], p["r"], p["v_leak"], dt, integrator)
        if kind in ("IF", "LIF", "CubaLIF"):
            s, v = np_fire(v, p["v_threshold"], p["v_reset"], reset)
            outs.append(s)
            ss.append(s)
        else:
            outs.append(v.copy())
        vs.append(v.copy())
    return np.array(outs), np.array(vs), (np.array(ss) if ss else None)


def np_conv2d(x, w, b, stride, pad, dil, groups):
    C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    xp = np.zeros((C, H + 2 * pad[0], W + 2 * pad[1]))
    xp[:, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    OH = (H + 2 * pad[0] - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * pad[1] - dil[1] * (KW - 1) - 1) // stride[1] + 1
    out = np.zeros((O, OH, OW))
    og = O // groups
    for o in range(O):
        g = o // og
        for yy in range(OH):
            for xx in range(OW):
                acc = b[o]
                for c in range(Cg):
                    for ky in range(KH):
                        for kx in range(KW):
                            acc += w[o, c, ky, kx] * xp[g * Cg + c, yy * stride[0] + ky * dil[0],
                                                        xx * stride[1] + kx * dil[1]]
                out[o, yy, xx] = acc
    return out


def np_pool(x, k, s, pad, avg):
    C, H, W = x.shape
    xp = np.zeros((C, H + 2 * pad[0], W + 2 * pad[1]))
    xp[:, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    OH = (H + 2 * pad[0] - k[0]) // s[0] + 1
    OW = (W + 2 * pad[1] - k[1]) // s[1] + 1
    out = np.zeros((C, OH, OW))
    for c in range(C):
        for yy in range(OH):
            for xx in range(OW):
                win = xp[c, yy * s[0]:yy * s[0] + k[0], xx * s[1]:xx * s[1] + k[1]]
                out[c, yy, xx] = win.sum() / (k[0] * k[1] if avg else 1)
    return out


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_egru(xs, w_x, w_h, b_x, b_h, thr):
    """EGRU from the equations in nmc.nodes.EGRU, written out per gate."""
    h = thr.shape[0]
    Wz, Wr, Wg = w_x[:h], w_x[h:2 * h], w_x[2 * h:]
    Uz, Ur, Ug = w_h[:h], w_h[h:2 * h], w_h[2 * h:]
    bz, br, bg = b_x[:h], b_x[h:2 * h], b_x[2 * h:]
    cz, cr, cg = b_h[:h], b_h[h:2 * h], b_h[2 * h:]
    c, y = np.zeros(h), np.zeros(h)
    ys, cs, os_ = [], [], []
    for x in xs:
        z = _sig(Wz @ x + bz + Uz @ y + cz)
        r = _sig(Wr @ x + br + Ur @ y + cr)
        g = np.tanh(Wg @ x + bg + r * (Ug @ y + cg))
        chat = z * c + (1 - z) * g
        o = (chat > thr).astype(float)
        y = o * chat
        c = chat - o * thr
        ys.append(y)
        cs.append(c)
        os_.append(o)
    return np.array(ys), np.array(cs), np.array(os_)


# ------------------------------------------------------------------- neurons
def _params(n, rng, kind):
    u = lambda: rng.uniform(0.5, 1.5, n)  # noqa: E731
    p = {"r": u() * 40, "v_threshold": u(), "v_reset": rng.uniform(-0.3, 0.2, n), "tau": u() * 1e-2,
         "v_leak": rng.uniform(-0.2, 0.2, n), "tau_syn": u() * 3e-3, "tau_mem": u() * 1e-2, "w_in": u() * 2}
    fields = {"I": ("r",), "IF": ("r", "v_threshold", "v_reset"), "LI": ("tau", "r", "v_leak"),
              "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
              "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
              "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}[kind]
    if kind in ("I", "IF"):
        p["r"] = p["r"] * 8  # v += dt·r·x: ~0.1 per step for x ≈ 0.3
    return {k: p[k] for k in fields}


_KINDS = [(k, "zero") for k in ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")] + \
    [(k, "subtract") for k in ("IF", "LIF", "CubaLIF")]


@pytest.mark.parametrize("integrator", ["euler", "exact"])
@pytest.mark.parametrize("kind,reset", _KINDS)
def test_neuron_matches_numpy(kind, reset, integrator):
    rng = np.random.default_rng([len(kind), ord(kind[-1]), len(reset), len(integrator)])
    n = 6
    p = _params(n, rng, kind)
    xs = currents(n, T=60, scale=0.6, seed=3) + 0.3
    node = getattr(nir, kind)(**p)
    out, rec = run1(node, xs, integrator=integrator, reset=reset)
    want_out, want_v, want_s = np_neuron(kind, p, xs, DT, integrator if kind not in ("I", "IF") else "euler", reset)
    np.testing.assert_allclose(out, want_out, **TOL)
    np.testing.assert_allclose(rec["v"], want_v, **TOL)
    np.testing.assert_allclose(rec["out"], want_out, **TOL)
    if want_s is not None:
        np.testing.assert_array_equal(rec["spikes"], want_s)
        assert 0 < want_s.mean() < 1, "test input must make the neurons spike sometimes"
    else:
        assert "spikes" not in rec


def test_reset_modes_differ_and_subtract_keeps_residual():
    """v crosses the threshold by a known amount: zero reset forgets it, subtract keeps it."""
    node = nir.IF(r=np.array([1.0 / DT]), v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    xs = np.array([[1.5], [0.0], [0.0]])
    _, rz = run1(node, xs, reset="zero")
    _, rs = run1(node, xs, reset="subtract")
    np.testing.assert_allclose(rz["v"][:, 0], [0.0, 0.0, 0.0], **TOL)
    np.testing.assert_allclose(rs["v"][:, 0], [0.5, 0.5, 0.5], **TOL)
    np.testing.assert_array_equal(rz["spikes"][:, 0], [1, 0, 0])


def test_threshold_is_strict():
    """H(0) = 0: a membrane exactly at threshold does not fire."""
    node = nir.IF(r=np.array([1.0 / DT]), v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    _, rec = run1(node, np.array([[1.0], [1e-9]]))
    np.testing.assert_array_equal(rec["spikes"][:, 0], [0, 1])


def test_reset_annotation_overrides_graph_default():
    node = nir.IF(r=np.full(2, 1.0 / DT), v_threshold=np.ones(2), v_reset=np.zeros(2))
    G = normalized(single_node_graph(node, "n"), reset="zero")
    G.annotations["n"]["reset"] = Reset("subtract")
    res = ReferenceSimulator(G).run({"input": np.array([[1.25, 1.25]])}, record=["n"])
    np.testing.assert_allclose(res["n.v"], [[0.25, 0.25]], **TOL)


def test_exact_and_euler_differ_as_expected():
    """For a constant input the exact integrator reaches v∞ − (v∞ − 0)·e^{−t/τ} exactly."""
    tau, r, x = 5e-3, 2.0, 0.7
    node = nir.LI(tau=np.array([tau]), r=np.array([r]), v_leak=np.array([0.0]))
    xs = np.full((20, 1), x)
    out_ex, _ = run1(node, xs, integrator="exact")
    t = DT * np.arange(1, 21)
    np.testing.assert_allclose(out_ex[:, 0], r * x * (1 - np.exp(-t / tau)), rtol=1e-12)
    out_eu, _ = run1(node, xs, integrator="euler")
    np.testing.assert_allclose(out_eu[:, 0], r * x * (1 - (1 - DT / tau) ** np.arange(1, 21)), rtol=1e-12)


# --------------------------------------------------------------- stateless
def test_affine_linear_scale_threshold():
    rng = np.random.default_rng(0)
    W, b, s, th = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=4), rng.normal(size=4)
    xs = currents(4, T=5, seed=1)
    np.testing.assert_allclose(run1(nir.Affine(weight=W, bias=b), xs)[0], xs @ W.T + b, **TOL)
    np.testing.assert_allclose(run1(nir.Linear(weight=W), xs)[0], xs @ W.T, **TOL)
    np.testing.assert_allclose(run1(nir.Scale(scale=s), xs)[0], xs * s, **TOL)
    out, rec = run1(nir.Threshold(threshold=th), xs)
    np.testing.assert_array_equal(out, (xs > th).astype(float))
    np.testing.assert_array_equal(rec["spikes"], out)


@pytest.mark.parametrize("stride,pad,dil,groups,k", [(1, 1, 1, 1, (3, 3)), ((2, 1), (0, 1), 1, 2, (3, 3)),
                                                     (1, 2, 2, 1, (3, 3)), (1, (1, 0), 1, 1, (3, 2))])
def test_conv2d(stride, pad, dil, groups, k):
    """Includes grouped and non-square kernels (NIR 1.0.8 mis-types both; normalize corrects)."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 4 // groups, *k)), rng.normal(size=4)
    node = nir.Conv2d(input_shape=(7, 6), weight=w, stride=stride, padding=pad, dilation=dil, groups=groups, bias=b)
    xs = spikes((4, 7, 6), T=3, seed=2)
    out, _ = run1(node, xs, in_shape=(4, 7, 6))
    pr = lambda v: (v, v) if np.ndim(v) == 0 else tuple(v)  # noqa: E731
    want = np.array([np_conv2d(x, w, b, pr(stride), pr(pad), pr(dil), groups) for x in xs])
    np.testing.assert_allclose(out, want, **TOL)


def test_conv1d():
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(3, 2, 3)), rng.normal(size=3)
    node = nir.Conv1d(input_shape=9, weight=w, stride=2, padding=1, dilation=1, groups=1, bias=b)
    xs = currents((2, 9), T=3, seed=3)
    out, _ = run1(node, xs)
    want = np.array([np_conv2d(x[:, None, :], w[:, :, None, :], b, (1, 2), (0, 1), (1, 1), 1)[:, 0] for x in xs])
    np.testing.assert_allclose(out, want, **TOL)


@pytest.mark.parametrize("cls,avg", [(nir.SumPool2d, False), (nir.AvgPool2d, True)])
def test_pools(cls, avg):
    node = cls(kernel_size=np.array([2, 3]), stride=np.array([2, 1]), padding=np.array([1, 1]))
    xs = currents((2, 5, 6), T=3, seed=4)
    out, _ = run1(node, xs, in_shape=(2, 5, 6))
    want = np.array([np_pool(x, (2, 3), (2, 1), (1, 1), avg) for x in xs])
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, **TOL)


def test_flatten():
    xs = currents((2, 3, 4), T=3, seed=5)
    out, _ = run1(nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=0), xs)
    np.testing.assert_array_equal(out, xs.reshape(3, 24))
    out, _ = run1(nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1), xs)
    np.testing.assert_array_equal(out, xs.reshape(3, 2, 12))


def test_delay_per_channel():
    d = np.array([0.0, 1e-3, 3e-3, 2.4e-3])  # steps: 0, 1, 3, 2 (rounded)
    xs = currents(4, T=8, seed=6)
    out, _ = run1(nir.Delay(delay=d), xs)
    want = np.zeros_like(xs)
    for c, k in enumerate([0, 1, 3, 2]):
        want[k:, c] = xs[:len(xs) - k, c]
    np.testing.assert_array_equal(out, want)


# ------------------------------------------------------------------- graph
def test_several_incoming_edges_are_summed():
    rng = np.random.default_rng(7)
    s1, s2, W = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(3, 3))
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "a": nir.Scale(scale=s1),
             "b": nir.Scale(scale=s2), "c": nir.Linear(weight=W), "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "a"), ("input", "b"), ("input", "c"), ("a", "output"), ("b", "output"), ("c", "output")]
    G = normalized(nir.NIRGraph(nodes=nodes, edges=edges))
    xs = currents(3, T=4, seed=8)
    out = ReferenceSimulator(G).run({"input": xs})["output"]
    np.testing.assert_allclose(out, xs * s1 + xs * s2 + xs @ W.T, **TOL)


def test_two_inputs_summed():
    nodes = {"a": nir.Input(input_type={"input": np.array([2])}), "b": nir.Input(input_type={"input": np.array([2])}),
             "li": nir.I(r=np.full(2, 1.0 / DT)), "output": nir.Output(output_type={"output": np.array([2])})}
    G = normalized(nir.NIRGraph(nodes=nodes, edges=[("a", "li"), ("b", "li"), ("li", "output")]))
    xa, xb = currents(2, T=5, seed=1), currents(2, T=5, seed=2)
    out = ReferenceSimulator(G).run({"a": xa, "b": xb})["output"]
    np.testing.assert_allclose(out, np.cumsum(xa + xb, axis=0), **TOL)


def test_recurrence_has_one_step_delay():
    """lif input at t = W_in·x_t + W_rec·s_{t−1} (s_{−1} = 0), hand-written loop."""
    g = recurrent_cubalif(seed=3)
    G = normalized(g)
    order, back = G.schedule()
    assert back == {("rec", "lif1")}
    xs = spikes(6, T=40, seed=4)
    res = ReferenceSimulator(G).run({"input": xs}, record=["lif1", "li"])
    n = g.nodes
    p1 = {k: np.asarray(getattr(n["lif1"], k), float) for k in ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}
    p2 = {k: np.asarray(getattr(n["li"], k), float) for k in ("tau_syn", "tau_mem", "r", "v_leak", "w_in")}
    Win, b_in, Wr = n["fc_in"].weight, n["fc_in"].bias, n["rec"].weight
    Wo, bo = n["fc_out"].weight, n["fc_out"].bias
    i1 = v1 = np.zeros(12)
    i2 = v2 = np.zeros(3)
    s_prev = np.zeros(12)
    S, O = [], []
    for x in xs:
        inp = Win @ x + b_in + Wr @ s_prev
        i1 = i1 + DT / p1["tau_syn"] * (-i1 + p1["w_in"] * inp)
        v1 = v1 + DT / p1["tau_mem"] * (p1["v_leak"] - v1 + p1["r"] * i1)
        s = (v1 > p1["v_threshold"]).astype(float)
        v1 = np.where(s > 0, p1["v_reset"], v1)
        y = Wo @ s + bo
        i2 = i2 + DT / p2["tau_syn"] * (-i2 + p2["w_in"] * y)
        v2 = v2 + DT / p2["tau_mem"] * (p2["v_leak"] - v2 + p2["r"] * i2)
        S.append(s)
        O.append(v2)
        s_prev = s
    S = np.array(S)
    assert 0 < S.mean() < 0.9
    np.testing.assert_array_equal(res["lif1.spikes"], S)
    np.testing.assert_allclose(res["output"], np.array(O), rtol=1e-10, atol=1e-12)


def test_self_loop_back_edge():
    """A node feeding itself sees its own previous output: I with r=1/dt and loop gain via Scale."""
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}), "s": nir.Scale(scale=np.array([0.5])),
             "output": nir.Output(output_type={"output": np.array([1])})}
    G = normalized(nir.NIRGraph(nodes=nodes, edges=[("input", "s"), ("s", "s"), ("s", "output")], type_check=False))
    xs = np.array([[1.0], [0.0], [0.0], [2.0]])
    out = ReferenceSimulator(G).run({"input": xs})["output"][:, 0]
    want, prev = [], 0.0
    for x in xs[:, 0]:
        prev = 0.5 * (x + prev)
        want.append(prev)
    np.testing.assert_allclose(out, want, **TOL)


def test_batched_equals_per_sample():
    """Batched runs equal per-sample runs: spikes exactly, values to 1e-12 (BLAS may
    sum a batched matrix product in a different order: 1-ulp differences seen)."""
    for g, shape in ((ff_lif(), (8,)), (recurrent_cubalif(), (6,)), (conv_pool(), (2, 8, 8))):
        G = normalized(g)
        xb = spikes(shape, T=15, batch=3, seed=9)
        sim = ReferenceSimulator(G)
        rec = [n for n in G.nodes if n not in ("input", "output")]
        rb = sim.run({"input": xb}, record=rec)
        for b in range(3):
            rs = sim.run({"input": xb[:, b]}, record=rec)
            assert set(rs) == set(rb)
            for k in rs:
                if k.endswith(".spikes"):
                    np.testing.assert_array_equal(rb[k][:, b], rs[k], err_msg=k)
                else:
                    np.testing.assert_allclose(rb[k][:, b], rs[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_recording_names_and_shapes():
    G = normalized(ff_lif())
    res = ReferenceSimulator(G).run({"input": spikes(8, T=7)}, record=["lif1", "fc1"])
    assert set(res) == {"output", "lif1.out", "lif1.v", "lif1.spikes", "fc1.out"}
    assert res["lif1.v"].shape == (7, 16) and res["fc1.out"].shape == (7, 16)
    np.testing.assert_array_equal(res["lif1.out"], res["lif1.spikes"])


def test_steps_longer_than_input_pads_with_silence():
    G = normalized(ff_lif())
    xs = spikes(8, T=5)
    long = ReferenceSimulator(G).run({"input": xs}, steps=9, record=["fc1"])
    pad = ReferenceSimulator(G).run({"input": np.concatenate([xs, np.zeros((4, 8))])}, record=["fc1"])
    for k in pad:
        np.testing.assert_array_equal(long[k], pad[k])


def test_egru_matches_numpy():
    node = egru_node(n_in=5, hidden=7, seed=2, thr=0.1)
    xs = currents(5, T=40, scale=1.0, seed=3)
    out, rec = run1(node, xs)
    y, c, o = np_egru(xs, node.w_x, node.w_h, node.b_x, node.b_h, node.thr)
    assert 0 < o.mean() < 1
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rec["v"], c, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rec["spikes"], o)


def test_egru_evnn_layout_identity():
    """EvNN's kernel (in, 3H) is W_x.T: x·kernel equals W_x·x gate by gate."""
    node = egru_node(n_in=4, hidden=3, seed=5)
    x = np.random.default_rng(0).normal(size=4)
    kernel = node.w_x.T
    np.testing.assert_allclose(x @ kernel, node.w_x @ x, **TOL)


def test_conv_net_matches_numpy_pipeline():
    g = conv_pool(seed=2)
    G = normalized(g)
    xs = spikes((2, 8, 8), T=6, seed=5)
    res = ReferenceSimulator(G).run({"input": xs}, record=["if1", "pool"])
    n = g.nodes
    v = np.zeros((4, 8, 8))
    for t, x in enumerate(xs):
        c = np_conv2d(x, n["conv"].weight, n["conv"].bias, (1, 1), (1, 1), (1, 1), 1)
        v = v + DT * n["if1"].r * c
        s = (v > 1.0).astype(float)
        v = np.where(s > 0, 0.0, v)
        np.testing.assert_array_equal(res["if1.spikes"][t], s)
        np.testing.assert_allclose(res["pool.out"][t], np_pool(s, (2, 2), (2, 2), (0, 0), False), **TOL)


def test_float32_option_close_to_float64():
    import torch

    G = normalized(ff_lif())
    xs = spikes(8, T=20)
    a = ReferenceSimulator(G).run({"input": xs}, record=["lif1"])
    b = ReferenceSimulator(G, dtype=torch.float32).run({"input": xs}, record=["lif1"])
    np.testing.assert_allclose(a["lif1.v"], b["lif1.v"], atol=1e-4)


def test_unrecordable_node_named():
    from nmc.errors import OptionError

    G = normalized(ff_lif())
    with pytest.raises(OptionError) as e:
        ReferenceSimulator(G).run({"input": spikes(8, T=3)}, record=["nope"])
    assert e.value.node == "nope"


def test_graph_is_not_mutated_by_simulation():
    G = normalized(ff_lif())
    before = G.dump()
    ReferenceSimulator(G).run({"input": spikes(8, T=3)})
    assert G.dump() == before
    assert isinstance(G, Graph)


def test_parameters_freed_without_cycle_collection():
    """A simulator's parameter tensors are freed when the simulator is dropped, not at the next
    cycle collection: a step holds its SimNode weakly (a dense 10⁸-synapse layer's float64
    weights are 800 MB, and the quantize pass builds three simulators)."""
    import gc
    import weakref

    g = normalized(ff_lif(), dt=DT, integrator="euler", reset="zero")
    sim = ReferenceSimulator(g)
    refs = [weakref.ref(t) for nd in sim.nodes.values() for t in nd.impl.p.values() if t is not None]
    assert refs
    gc.disable()
    try:
        del sim
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
