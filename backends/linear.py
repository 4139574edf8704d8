"""Shared lowering helper: compose chains of linear nodes between neuron layers.

Sources are graph ``Input`` nodes and neuron nodes; every chain of linear
nodes between a source and a consumer (Affine, Linear, Scale, Conv1d/2d,
SumPool2d/AvgPool2d, Flatten; several branches summed) is composed into one
dense float matrix per (source, consumer) pair plus a bias vector, by pushing
an identity batch through the nodes. So "two weight layers in a row" fuse, a
conv followed by pooling becomes one (sparse) matrix, and a neuron → neuron
edge becomes an identity matrix. Used by every digital backend.
"""
from __future__ import annotations

import nir
import numpy as np
import torch

from nmc import semantics
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import is_dense
from nmc.semantics import Kind, shapes
from nmc import reference_steps as _reference_steps  # noqa: F401  (registers the linear_map hooks)

#: The node types the composition folds (registry kinds weight / linear / index), and the
#: neuron types it stops at: snapshots of the registry when this module is imported (NIR's
#: primitives; :func:`compose` asks the registry, so a type registered later takes part).
LINEAR = semantics.classes(Kind.WEIGHT, Kind.LINEAR, Kind.INDEX)
NEURONS = tuple(c for c in semantics.classes(Kind.NEURON) if c.__module__.startswith("nir"))


def _is_linear(node) -> bool:
    e = semantics.lookup(node)
    return e is not None and e.is_linear


def apply_linear(node, x: torch.Tensor, out_shape) -> torch.Tensor:
    """Node's linear map without bias on a batch x (k, *in_shape): its registry entry's
    ``linear_map`` hook (:mod:`nmc.reference_steps`), float64 weights."""
    return semantics.of(node).hook("linear_map")(node, x, out_shape)


#: largest dense (source × node) block the composition may build, in bytes (float64): beyond it a
#: layer is refused with a design-rule error instead of failing to allocate (or swapping) mid-lowering
MAX_DENSE_BYTES = 4 * 2 ** 30


def _check_expansion(name: str, target: str, n_src: int, shp_in, shp_out) -> None:
    need = 8 * n_src * (int(np.prod(shp_in)) + int(np.prod(shp_out)))
    if need > MAX_DENSE_BYTES:
        from nmc.errors import DesignRuleError, Violation

        raise DesignRuleError([Violation(
            "dense-expansion", name, f"{MAX_DENSE_BYTES / 2 ** 30:.0f} GiB", f"{need / 2 ** 30:.1f} GiB",
            "make the layer smaller (fewer channels, a smaller image) or split the network: lowering composes "
            "the linear nodes between two neuron layers into one dense (source × target) block",
            detail=f"composing {n_src} sources through it")], target=target)


def node_bias(node, out_shape) -> np.ndarray:
    b = getattr(node, "bias", None)   # a map without a bias field (Linear, pooling, Scale): none
    if b is None:
        return np.zeros(out_shape)
    b = np.asarray(b, float)
    if semantics.of(node).shape is shapes.conv:  # one bias per channel
        return np.broadcast_to(b.reshape(-1, *([1] * (len(out_shape) - 1))), out_shape).copy()
    return np.broadcast_to(b, out_shape).copy()


def _is_io(node) -> bool:
    """The graph's boundary (Input, Output: the registry's ``Kind.IO``)."""
    return semantics.kind_of(node) is Kind.IO


class Eye:
    """A lazy k×k identity: a source's own output before any linear node."""

    def __init__(self, k: int):
        self.k = k
        self.shape = (k, k)

    def dense(self) -> np.ndarray:
        return np.eye(self.k)


def _dense(m):
    return m.dense() if isinstance(m, Eye) else m


def compose(g: Graph, order, back, target: str = "this", neurons=NEURONS, also=()):
    """For every non-source node: ({source: [matrix (n_src, n_in), via_back_edge]}, bias (n_in,)).
    Neuron nodes are always composed; ``also`` names further nodes to compose
    (e.g. Output nodes fed by a linear readout that runs on the host).

    Computed on demand through predecessors (a linear node reached over a back
    edge is composed before its consumer); recursion stops at sources.
    """
    lin: dict[str, tuple[dict, np.ndarray]] = {}
    active: set[str] = set()

    def visit(name):
        if name in lin:
            return lin[name]
        node = g.nodes[name]
        if not (_is_linear(node) or isinstance(node, tuple(neurons)) or _is_io(node)):
            raise UnsupportedNodeError(f"the {target} target cannot lower {type(node).__name__} nodes", node=name,
                                       hint="supported: Affine, Linear, Scale, Conv1d/2d, Sum/AvgPool2d, Flatten, "
                                            + ", ".join(t.__name__ for t in neurons))
        if name in active:
            raise UnsupportedNodeError("a cycle through linear nodes only (no neuron on it) cannot be lowered",
                                       node=name, hint="put a neuron layer on every recurrent loop")
        active.add(name)
        n_in = int(np.prod(g.shape_in(name)))
        terms: dict[str, list] = {}
        bias = np.zeros(n_in)
        for p in g.preds(name):
            is_back = (p, name) in back
            pn = g.nodes[p]
            if isinstance(pn, tuple(neurons)) or _is_io(pn):   # a source: an Input or a neuron layer
                k = int(np.prod(g.shape_out(p)))
                parts, pb = {p: [Eye(k), False]}, np.zeros(k)
            else:
                parts, pb = visit(p)
            for s, (m, b) in parts.items():
                if s in terms:
                    terms[s][0] = _dense(terms[s][0]) + _dense(m)
                    terms[s][1] = terms[s][1] or b or is_back
                else:
                    terms[s] = [m if isinstance(m, Eye) else m.copy(), b or is_back]
            bias = bias + pb
        if _is_linear(node):
            shp_in, shp_out = g.shape_in(name), g.shape_out(name)
            with torch.no_grad():
                newt = {}
                for s, (m, b) in terms.items():
                    if isinstance(m, Eye) and is_dense(node):  # dense weight
                        # W applied to the identity: Wᵀ as a C-ordered float64 copy, converted in one pass
                        newt[s] = [np.array(node.weight, dtype=float, order="F").T, b]
                        continue
                    if isinstance(m, Eye) and semantics.kind_of(node) is Kind.INDEX:
                        newt[s] = [m, b]
                        continue
                    _check_expansion(name, target, m.shape[0], shp_in, shp_out)
                    x = torch.as_tensor(_dense(m)).reshape(m.shape[0], *shp_in)
                    newt[s] = [apply_linear(node, x, shp_out).reshape(m.shape[0], -1).numpy(), b]
                xb = torch.as_tensor(bias).reshape(1, *shp_in)
                bias = apply_linear(node, xb, shp_out).reshape(-1).numpy() + node_bias(node, shp_out).reshape(-1)
            terms = newt
        active.discard(name)
        if isinstance(node, tuple(neurons)):  # consumers get dense matrices
            terms = {s: [_dense(m), b] for s, (m, b) in terms.items()}
        lin[name] = (terms, bias)
        return lin[name]

    for name in order:  # every node must be one the target can lower, reachable or not
        node = g.nodes[name]
        if not (_is_linear(node) or isinstance(node, tuple(neurons)) or _is_io(node)):
            raise UnsupportedNodeError(f"the {target} target cannot lower {type(node).__name__} nodes", node=name,
                                       hint="supported: Affine, Linear, Scale, Conv1d/2d, Sum/AvgPool2d, Flatten, "
                                            + ", ".join(t.__name__ for t in neurons))
    for name in order:
        if isinstance(g.nodes[name], tuple(neurons)):
            visit(name)
    for name in also:
        visit(name)
    return lin


def param_vec(node, key: str, n: int) -> np.ndarray:
    """A neuron parameter as one float value per neuron."""
    return np.broadcast_to(np.asarray(getattr(node, key), float).reshape(-1), (n,))


def step_rate(tau, dt: float, integrator: str, node: str) -> np.ndarray:
    """Fraction of the way to equilibrium covered in one step: dt/τ (Euler) or
    1 − e^{−dt/τ} (exact); the per-step decay factor is 1 minus it."""
    a = dt / np.asarray(tau, float) if integrator == "euler" else 1.0 - np.exp(-dt / np.asarray(tau, float))
    if np.any(a >= 1):
        from nmc.passes.conventions import tau_hint

        t = float(np.min(tau))
        raise UnsupportedNodeError(
            f"dt = {dt:g} s is not smaller than the time constant τ = {t:g} s: the per-step decay 1 − dt/τ "
            f"would be ≤ 0 (the update overshoots the equilibrium), which the chip's decay register cannot hold",
            node=node, limit="dt/τ < 1", actual=round(float(np.max(a)), 6), hint=tau_hint(t, dt))
    return a
