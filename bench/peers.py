"""The same networks in the peers' simulators: snnTorch and Norse (CPU torch),
built from the workload's NIR parameters (same weights, same per-neuron τ).

Each builder returns ``run(x) -> (T, B, n_out) numpy`` for time-major input
``x`` of shape (T, B, *in_shape). Semantics mapped onto nmc's normalised
(forward-Euler, reset-to-zero) dynamics with dt = 1 ms:

* LIF (r = τ/dt): v ← (1 − dt/τ)·v + x → snnTorch ``Leaky(beta=1 − dt/τ)``;
  Norse ``LIFBoxCell`` computes v ← v + dt/τ·(−v + i), so its input weights
  are scaled by τ/dt per neuron;
* CubaLIF (w_in = τs/dt, r = τm/dt): i ← (1 − dt/τs)·i + x, v ← (1 − dt/τm)·v + i →
  snnTorch ``Synaptic(alpha, beta)``; Norse ``LIFCell`` with input scaled by τm/dt;
* IF (r = 1/dt): v ← v + x → snnTorch ``Leaky(beta=1)``; Norse ``IAFCell``;
* CubaLI readout: snnTorch ``Synaptic`` with reset "none" and an unreachable
  threshold, input scaled by dt²/(τs·τm); Norse ``LICell``.

Agreement is measured, not assumed: :func:`agreement` of each peer's output
with the float reference is reported beside its speed (snnTorch's Synaptic
zeroes the membrane one step after a spike, so the recurrent CubaLIF net
agrees only approximately there).
"""
from __future__ import annotations

import numpy as np
import torch

DT = 1e-3


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _lin(w, b=None):
    w = np.asarray(w)
    m = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        if b is not None:
            m.bias.copy_(_t(b))
    return m


def _conv(node):
    w = np.asarray(node.weight)
    m = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=node.stride, padding=node.padding)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        m.bias.copy_(_t(node.bias))
    return m


def snntorch_net(wl):
    """snnTorch version of workload ``wl`` (mlp | cuba | conv); None when none exists (EGRU)."""
    import snntorch as snn

    g = wl.graph.nodes
    if wl.kind == "mlp":
        fc1, fc2 = _lin(g["fc1"].weight, g["fc1"].bias), _lin(g["fc2"].weight, g["fc2"].bias)
        l1 = snn.Leaky(beta=_t(1 - DT / g["lif1"].tau), reset_mechanism="zero")
        l2 = snn.Leaky(beta=_t(1 - DT / g["lif2"].tau), reset_mechanism="zero")

        def step(x, st):
            m1, m2 = st
            s1, m1 = l1(fc1(x), m1)
            s2, m2 = l2(fc2(s1), m2)
            return s2, (m1, m2)

        init = lambda B: (l1.init_leaky(), l2.init_leaky())  # noqa: E731
    elif wl.kind == "cuba":
        n = g["lif1"]
        fc_in, rec, fc_out = _lin(g["fc_in"].weight, g["fc_in"].bias), _lin(g["rec"].weight), None
        li = g["li"]
        scale = (DT / li.tau_syn) * (DT / li.tau_mem)
        fc_out = _lin(np.asarray(g["fc_out"].weight) * scale[:, None], np.asarray(g["fc_out"].bias) * scale)
        l1 = snn.Synaptic(alpha=_t(1 - DT / n.tau_syn), beta=_t(1 - DT / n.tau_mem), reset_mechanism="zero")
        l2 = snn.Synaptic(alpha=_t(1 - DT / li.tau_syn), beta=_t(1 - DT / li.tau_mem), reset_mechanism="none",
                          threshold=1e9)

        def step(x, st):
            s_prev, i1, m1, i2, m2 = st
            s1, i1, m1 = l1(fc_in(x) + rec(s_prev), i1, m1)
            _, i2, m2 = l2(fc_out(s1), i2, m2)
            return m2, (s1, i1, m1, i2, m2)

        init = lambda B: (torch.zeros(B, fc_in.out_features), *l1.init_synaptic(), *l2.init_synaptic())  # noqa: E731
    elif wl.kind == "conv":
        conv, fc = _conv(g["conv"]), _lin(g["fc"].weight, g["fc"].bias)
        l1 = snn.Leaky(beta=1.0, reset_mechanism="zero")
        l2 = snn.Leaky(beta=_t(1 - DT / g["lif"].tau), reset_mechanism="zero")

        def step(x, st):
            m1, m2 = st
            s1, m1 = l1(conv(x), m1)
            p = torch.nn.functional.avg_pool2d(s1, 2) * 4.0   # SumPool2d(2)
            s2, m2 = l2(fc(p.flatten(1)), m2)
            return s2, (m1, m2)

        init = lambda B: (l1.init_leaky(), l2.init_leaky())  # noqa: E731
    else:
        return None
    return _runner(step, init)


def norse_net(wl):
    """Norse version of workload ``wl``; None when none exists (EGRU)."""
    import norse.torch as nt

    g = wl.graph.nodes
    if wl.kind == "mlp":
        t1, t2 = np.asarray(g["lif1"].tau), np.asarray(g["lif2"].tau)
        fc1 = _lin(np.asarray(g["fc1"].weight) * (t1 / DT)[:, None], np.asarray(g["fc1"].bias) * t1 / DT)
        fc2 = _lin(np.asarray(g["fc2"].weight) * (t2 / DT)[:, None], np.asarray(g["fc2"].bias) * t2 / DT)
        c1 = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=_t(1 / t1)))
        c2 = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=_t(1 / t2)))

        def step(x, st):
            a, b = st
            s1, a = c1(fc1(x), a)
            s2, b = c2(fc2(s1), b)
            return s2, (a, b)
    elif wl.kind == "cuba":
        n, li = g["lif1"], g["li"]
        # Norse LIF: v += dt/τm·(−v + i); i jumps by the input → input scaled by τm/dt (r), no w_in scaling
        tm = np.asarray(n.tau_mem)
        fc_in = _lin(np.asarray(g["fc_in"].weight) * (tm / DT)[:, None], np.asarray(g["fc_in"].bias) * tm / DT)
        rec = _lin(np.asarray(g["rec"].weight) * (tm / DT)[:, None])
        c1 = nt.LIFCell(nt.LIFParameters(tau_syn_inv=_t(1 / n.tau_syn), tau_mem_inv=_t(1 / tm)))
        fc_out = _lin(np.asarray(g["fc_out"].weight) * (DT / li.tau_syn)[:, None],
                      np.asarray(g["fc_out"].bias) * DT / li.tau_syn)
        c2 = nt.LICell(nt.LIParameters(tau_syn_inv=_t(1 / li.tau_syn), tau_mem_inv=_t(1 / li.tau_mem)))

        def step(x, st):
            s_prev, a, b = st
            s1, a = c1(fc_in(x) + rec(s_prev), a)
            v, b = c2(fc_out(s1), b)
            return v, (s1, a, b)

        def init(B):
            return (torch.zeros(B, fc_in.out_features), None, None)
    elif wl.kind == "conv":
        tl = np.asarray(g["lif"].tau)
        conv = _conv(g["conv"])
        fc = _lin(np.asarray(g["fc"].weight) * (tl / DT)[:, None], np.asarray(g["fc"].bias) * tl / DT)
        c1 = nt.IAFCell()
        c2 = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=_t(1 / tl)))

        def step(x, st):
            a, b = st
            s1, a = c1(conv(x), a)
            p = torch.nn.functional.avg_pool2d(s1, 2) * 4.0
            s2, b = c2(fc(p.flatten(1)), b)
            return s2, (a, b)
    else:
        return None
    if wl.kind != "cuba":
        init = lambda B: (None, None)  # noqa: E731
    return _runner(step, init)


def _runner(step, init):
    def run(x: np.ndarray) -> np.ndarray:
        xt = _t(x)
        st = init(xt.shape[1])
        outs = []
        with torch.no_grad():
            for t in range(xt.shape[0]):
                o, st = step(xt[t], st)
                outs.append(o)
        return torch.stack(outs).numpy()
    return run


def agreement(out: np.ndarray, ref: np.ndarray) -> float:
    """How closely an output matches the float reference's, in [0, 1] (1 = same).

    Spiking outputs (both 0/1): 1 − Σ|c − c_ref| / Σ(c + c_ref) over per-neuron
    spike counts (per sample); graded outputs: Pearson correlation of the traces
    (clipped at 0)."""
    out, ref = np.asarray(out, float), np.asarray(ref, float).reshape(np.shape(out))
    binary = np.isin(out, (0, 1)).all() and np.isin(ref, (0, 1)).all()
    if binary:
        c, cr = out.sum(0), ref.sum(0)
        tot = (c + cr).sum()
        return 1.0 if tot == 0 else float(1 - np.abs(c - cr).sum() / tot)
    if out.std() == 0 or ref.std() == 0:
        return float(np.allclose(out, ref))
    return max(0.0, float(np.corrcoef(out.ravel(), ref.ravel())[0, 1]))
