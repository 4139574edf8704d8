"""Small reusable NIR networks and inputs for tests (import as ``from tests.nets import ...``
or, inside tests/, ``from nets import ...``).

Every builder returns a plain ``nir.NIRGraph`` as an exporter (snnTorch, Norse,
``nir.write``) would produce it: pools without shapes, neuron parameters as
arrays. :func:`normalized` wraps one in an nmc :class:`~nmc.ir.Graph` and runs
the ``normalize`` pass with explicit dt/integrator/reset, which is what every
simulator and backend expects. Builders are deterministic in ``seed``.

Builders:

* :func:`ff_lif` — Input → Affine → LIF → Affine → LIF → Output.
* :func:`recurrent_cubalif` — Input → Affine → CubaLIF ⟲ Linear, → Affine → CubaLI → Output.
* :func:`conv_pool` — Input(C,H,W) → Conv2d → IF → SumPool2d → Flatten → Affine → LIF → Output.
* :func:`egru_net` — Input → nmc.EGRU → Affine → LI → Output (extension node).
* :func:`node_zoo` — one instance of each of NIR 1.0.8's 18 primitive node types plus a
  nested NIRGraph, keyed by type name; :func:`single_node_graph` wraps one in Input/Output.

Inputs: :func:`spikes` (Bernoulli 0/1), :func:`currents` (Gaussian values),
both time-major ``(T[, B], *shape)`` float arrays.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.ir import Graph
from nmc.nodes import EGRU

__all__ = ["ff_lif", "recurrent_cubalif", "conv_pool", "egru_net", "egru_node", "node_zoo",
           "single_node_graph", "spikes", "currents", "normalized"]


def _rng(seed):
    return np.random.default_rng(seed)


def _lif(n, rng, dt, tau=(5e-3, 2e-2), thr=1.0):
    tau = rng.uniform(*tau, n)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(n),
                   v_threshold=np.full(n, thr), v_reset=np.zeros(n))


def ff_lif(n_in: int = 8, n_hid: int = 16, n_out: int = 4, seed: int = 0, w_scale: float = 2.0,
           dt: float = 1e-3) -> nir.NIRGraph:
    """Feed-forward two-layer LIF net. Neuron parameters follow snnTorch's export
    convention for timestep ``dt`` (r = τ/dt, so with the Euler integrator
    v ← β·v + x, β = 1 − dt/τ); weights are scaled so random spike inputs
    (p≈0.3) make both layers fire."""
    rng = _rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc1": nir.Affine(weight=rng.normal(0, w_scale / np.sqrt(n_in), (n_hid, n_in)), bias=rng.normal(0, 0.1, n_hid)),
        "lif1": _lif(n_hid, rng, dt),
        "fc2": nir.Affine(weight=rng.normal(0, w_scale / np.sqrt(n_hid), (n_out, n_hid)), bias=np.zeros(n_out)),
        "lif2": _lif(n_out, rng, dt),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def recurrent_cubalif(n_in: int = 6, n_hid: int = 12, n_out: int = 3, seed: int = 0,
                      w_scale: float = 1.5, dt: float = 1e-3) -> nir.NIRGraph:
    """Recurrent current-based LIF layer (back edge lif1 → rec → lif1) and a CubaLI readout.
    snnTorch Synaptic convention for ``dt``: w_in = τ_syn/dt, r = τ_mem/dt."""
    rng = _rng(seed)
    ts, tm = rng.uniform(2e-3, 5e-3, n_hid), rng.uniform(5e-3, 2e-2, n_hid)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc_in": nir.Affine(weight=rng.normal(0, w_scale / np.sqrt(n_in), (n_hid, n_in)), bias=np.zeros(n_hid)),
        "lif1": nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / dt, v_leak=np.zeros(n_hid), v_threshold=np.ones(n_hid),
                            v_reset=np.zeros(n_hid), w_in=ts / dt),
        "rec": nir.Linear(weight=rng.normal(0, 0.5 / np.sqrt(n_hid), (n_hid, n_hid))),
        "fc_out": nir.Affine(weight=rng.normal(0, 1.0 / np.sqrt(n_hid), (n_out, n_hid)), bias=np.zeros(n_out)),
        "li": nir.CubaLI(tau_syn=np.full(n_out, 4e-3), tau_mem=np.full(n_out, 1e-2), r=np.ones(n_out),
                         v_leak=np.zeros(n_out), w_in=np.ones(n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "fc_out"),
             ("fc_out", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def conv_pool(c_in: int = 2, hw: int = 8, c_out: int = 4, n_out: int = 5, seed: int = 0,
              dt: float = 1e-3) -> nir.NIRGraph:
    """Conv2d(3x3, pad 1) → IF → SumPool2d(2) → Flatten → Affine → LIF. The pool has no
    shape (as snnTorch exports it); :func:`normalized` infers it."""
    rng = _rng(seed)
    h2 = hw // 2
    flat = c_out * h2 * h2
    nodes = {
        "input": nir.Input(input_type={"input": np.array([c_in, hw, hw])}),
        "conv": nir.Conv2d(input_shape=(hw, hw), weight=rng.normal(0, 1.0, (c_out, c_in, 3, 3)), stride=1,
                           padding=1, dilation=1, groups=1, bias=rng.normal(0, 0.1, c_out)),
        "if1": nir.IF(r=np.full((c_out, hw, hw), 1.0 / dt), v_threshold=np.ones((c_out, hw, hw)),
                      v_reset=np.zeros((c_out, hw, hw))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([c_out, h2, h2])}, start_dim=0),
        "fc": nir.Affine(weight=rng.normal(0, 3.0 / np.sqrt(flat), (n_out, flat)), bias=np.zeros(n_out)),
        "lif": _lif(n_out, rng, dt),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "fc"),
             ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def egru_node(n_in: int = 5, hidden: int = 7, seed: int = 0, thr: float = 0.1) -> EGRU:
    rng = _rng(seed)
    h = hidden
    return EGRU(w_x=rng.normal(0, 1.0, (3 * h, n_in)), w_h=rng.normal(0, 0.5, (3 * h, h)),
                b_x=rng.normal(0, 0.1, 3 * h), b_h=rng.normal(0, 0.1, 3 * h), thr=np.full(h, thr))


def egru_net(n_in: int = 5, hidden: int = 7, n_out: int = 3, seed: int = 0) -> nir.NIRGraph:
    """Input → EGRU → Affine → LI → Output."""
    rng = _rng(seed + 1)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "egru": egru_node(n_in, hidden, seed),
        "fc": nir.Affine(weight=rng.normal(0, 1.0, (n_out, hidden)), bias=np.zeros(n_out)),
        "li": nir.LI(tau=np.full(n_out, 1e-2), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "egru"), ("egru", "fc"), ("fc", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def node_zoo(seed: int = 0) -> dict[str, nir.NIRNode]:
    """One of each NIR 1.0.8 node type (plus a nested ``NIRGraph``), keyed by type name,
    with distinct random parameters so a lost or swapped field is detected."""
    rng = _rng(seed)
    n = 4
    u = lambda *s: rng.uniform(0.5, 1.5, s)  # noqa: E731
    return {
        "Input": nir.Input(input_type={"input": np.array([n])}),
        "Output": nir.Output(output_type={"output": np.array([n])}),
        "Affine": nir.Affine(weight=rng.normal(size=(3, n)), bias=rng.normal(size=3)),
        "Linear": nir.Linear(weight=rng.normal(size=(3, n))),
        "Scale": nir.Scale(scale=u(n)),
        "Conv1d": nir.Conv1d(input_shape=10, weight=rng.normal(size=(3, 2, 3)), stride=2, padding=1, dilation=1,
                             groups=1, bias=rng.normal(size=3)),
        "Conv2d": nir.Conv2d(input_shape=(6, 5), weight=rng.normal(size=(4, 2, 3, 3)), stride=(1, 2),
                             padding=(1, 0), dilation=1, groups=2, bias=rng.normal(size=4)),
        "SumPool2d": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 1]), padding=np.array([0, 1])),
        "AvgPool2d": nir.AvgPool2d(kernel_size=np.array([3, 2]), stride=np.array([1, 2]), padding=np.array([1, 0])),
        "Flatten": nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=0, end_dim=-1),
        "Delay": nir.Delay(delay=rng.uniform(0, 3e-3, n)),
        "Threshold": nir.Threshold(threshold=u(n)),
        "I": nir.I(r=u(n)),
        "IF": nir.IF(r=u(n), v_threshold=u(n), v_reset=rng.normal(size=n)),
        "LI": nir.LI(tau=u(n) * 1e-2, r=u(n), v_leak=rng.normal(size=n)),
        "LIF": nir.LIF(tau=u(n) * 1e-2, r=u(n), v_leak=rng.normal(size=n), v_threshold=u(n),
                       v_reset=rng.normal(size=n)),
        "CubaLI": nir.CubaLI(tau_syn=u(n) * 1e-3, tau_mem=u(n) * 1e-2, r=u(n), v_leak=rng.normal(size=n), w_in=u(n)),
        "CubaLIF": nir.CubaLIF(tau_syn=u(n) * 1e-3, tau_mem=u(n) * 1e-2, r=u(n), v_leak=rng.normal(size=n),
                               v_threshold=u(n), v_reset=rng.normal(size=n), w_in=u(n)),
        "NIRGraph": nir.NIRGraph(nodes={"i": nir.Input(input_type={"input": np.array([n])}),
                                        "w": nir.Linear(weight=rng.normal(size=(n, n))),
                                        "o": nir.Output(output_type={"output": np.array([n])})},
                                 edges=[("i", "w"), ("w", "o")]),
    }


def single_node_graph(node: nir.NIRNode, name: str = "node") -> nir.NIRGraph:
    """Input → node → Output, with Input/Output typed from the node where it knows its shapes."""
    it = next(iter(node.input_type.values())) if getattr(node, "input_type", None) else None
    ot = next(iter(node.output_type.values())) if getattr(node, "output_type", None) else None
    nodes = {"input": nir.Input(input_type={"input": np.asarray(it) if it is not None else np.array([4])}),
             name: node,
             "output": nir.Output(output_type={"output": np.asarray(ot) if ot is not None else np.array([4])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", name), (name, "output")], type_check=False)


def spikes(shape, T: int = 20, p: float = 0.3, seed: int = 0, batch: int | None = None) -> np.ndarray:
    """Bernoulli(p) 0/1 spikes, float64, shape (T, *shape) or (T, batch, *shape)."""
    full = (T, *(() if batch is None else (batch,)), *tuple(np.atleast_1d(shape)))
    return (_rng(seed).random(full) < p).astype(np.float64)


def currents(shape, T: int = 20, scale: float = 1.0, seed: int = 0, batch: int | None = None) -> np.ndarray:
    """Gaussian N(0, scale²) values, shape (T, *shape) or (T, batch, *shape)."""
    full = (T, *(() if batch is None else (batch,)), *tuple(np.atleast_1d(shape)))
    return _rng(seed).normal(0.0, scale, full)


def normalized(model, dt: float = 1e-3, integrator: str = "euler", reset: str = "zero") -> Graph:
    """nir.NIRGraph or Graph → Graph after the ``normalize`` pass (verified)."""
    from nmc.passes import PassContext, PassManager, parse_pipeline

    g = model if isinstance(model, Graph) else Graph.from_nir(model)
    ctx = PassContext(options={"dt": dt, "integrator": integrator, "reset": reset})
    return PassManager(parse_pipeline("normalize")).run(g.copy(), ctx)


def strong_bias_cubalif(n_in: int = 12, n_hid: int = 40, n_cls: int = 4, seed: int = 0, dt: float = 1e-4,
                        bias_scale: float = 0.3, samples: int = 96, T: int = 100, alpha=(0.8, 0.95)):
    """Issue #15's row: a recurrent CubaLIF layer in snnTorch's Synaptic convention at dt = 1e-4
    (α, β per neuron, w_in = τ_syn/dt, r = τ_mem/dt) with a strong Affine bias (N(0, bias_scale):
    up to ~10 thresholds per step at steady state), and a CubaLI readout fitted by ridge regression
    on the reference's hidden spike counts (a closed-form "trained" readout, so classes have
    margins). ``alpha``: range of the synaptic decays (0.4 puts τ_syn below 0.2 ms). Inputs: ``n_cls`` prototype rate patterns (0.05 / 0.4). Returns (graph, x, labels)
    with x (T, samples, n_in) Bernoulli spikes; :func:`perturb` flips some of them."""
    rng = _rng(seed)
    alpha, beta = rng.uniform(*alpha, n_hid), rng.uniform(0.85, 0.97, n_hid)
    ts, tm = dt / (1 - alpha), dt / (1 - beta)
    protos = np.where(rng.random((n_cls, n_in)) < 0.4, 0.4, 0.05)
    labels = np.arange(samples) % n_cls
    x = (rng.random((T, samples, n_in)) < protos[labels][None]).astype(np.float64)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc_in": nir.Affine(weight=rng.normal(0, 1.0 / np.sqrt(n_in), (n_hid, n_in)),
                            bias=rng.normal(0.0, bias_scale, n_hid)),
        "lif1": nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / dt, v_leak=np.zeros(n_hid), v_threshold=np.ones(n_hid),
                            v_reset=np.zeros(n_hid), w_in=ts / dt),
        "rec": nir.Linear(weight=rng.normal(0, 0.3 / np.sqrt(n_hid), (n_hid, n_hid))),
        "fc_out": nir.Affine(weight=np.zeros((n_cls, n_hid)), bias=np.zeros(n_cls)),
        "li": nir.CubaLI(tau_syn=np.full(n_cls, 5e-4), tau_mem=np.full(n_cls, 1e-3), r=np.full(n_cls, 10.0),
                         v_leak=np.zeros(n_cls), w_in=np.full(n_cls, 5.0)),
        "output": nir.Output(output_type={"output": np.array([n_cls])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "fc_out"),
             ("fc_out", "li"), ("li", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges)
    from nmc.reference import ReferenceSimulator

    rec = ReferenceSimulator(normalized(g, dt=dt)).run({"input": x}, record=["lif1"], batched=True)
    rate = rec["lif1.spikes"].mean(0)                                    # (samples, n_hid)
    Y = np.eye(n_cls)[labels] - 1.0 / n_cls
    A = np.hstack([rate - rate.mean(0), np.ones((samples, 1))])
    W = np.linalg.solve(A.T @ A + 1e-2 * np.eye(n_hid + 1), A.T @ Y)     # ridge readout
    nodes["fc_out"] = nir.Affine(weight=W[:-1].T * 0.2, bias=(W[-1] - rate.mean(0) @ W[:-1]) * 0.2)
    return nir.NIRGraph(nodes=nodes, edges=edges), x, labels


def perturb(x: np.ndarray, p: float = 0.05, seed: int = 1) -> np.ndarray:
    """Flip a fraction ``p`` of the 0/1 entries of a spike array (perturbed inputs)."""
    flip = _rng(seed).random(x.shape) < p
    return np.where(flip, 1.0 - x, x)
