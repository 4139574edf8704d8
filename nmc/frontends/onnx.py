"""ONNX frontend: a trained ANN converted to a rate-coded spiking network.

The supported operators are the keys of :data:`OPERATORS` (README.md lists the
same table; a test keeps them equal). Every unsupported node is listed in one
:class:`~nmc.errors.UnsupportedNodeError`. Constants (initializers,
``Constant``, ``Shape`` and the shape arithmetic computed from them, a
``Transpose`` of a weight) are folded before conversion
(:mod:`nmc.frontends.onnx_eval`).

Conversion (Rueckauer et al.'s data-based threshold balancing, phrased with
thresholds instead of weight normalisation):

* each ReLU becomes an ``IF`` node (reset by subtraction, R = 1/dt so
  ``v += x`` per step) with threshold λ_l = the ``percentile`` of that
  ReLU's activations on calibration data. Its spike rate r (spikes per step)
  approximates a_l / λ_l, so the ANN tensor ≈ λ_l · r;
* every ANN tensor is represented as a sum ``Σ factor · (graph node output)``
  (one term per branch). A weight layer reading a sum gets one weight node per
  term (weights × factor, the bias on the first one) whose outputs are summed
  again where they meet, so linear layers distribute over residual sums and
  concatenations;
* ``Clip(0, c)`` works like a ReLU (an IF neuron saturates at one spike per
  step, so λ ≤ c reproduces the clip when λ = c);
* ``Concat`` along channels/features: NIR has no concatenation, so each
  concatenated term becomes an index-mapping node into the joined tensor (a
  0/1 ``Conv2d`` 1×1 for images, a 0/1 ``Linear`` for vectors, carrying the
  term's factor) and the mapped terms are summed. Every target lowers these
  exactly (they compose into the next weight matrix);
* ``GlobalAveragePool`` (and ``ReduceMean`` over the spatial axes, which is how
  ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` export) becomes an
  ``AvgPool2d`` over the whole image;
* grouped and depthwise ``Conv`` (``group > 1``) stay grouped ``Conv2d`` nodes
  (NIR's ``groups``); targets expand them into block-sparse synapses, so per-core
  synapse counts and bytes hold only the connections the groups make;
* ``Mul``/``Div`` by a constant fold into the preceding weight node(s) (a scalar
  into any term's factor; per-channel constants into weights or a ``Scale``);
* a ``Softmax``/``LogSoftmax`` whose output is the model output is dropped (a
  monotone map of the readout: the argmax is unchanged) with a note in the
  report; anywhere else it is refused;
* ``MaxPool`` is refused by default (a max over spike trains has no exact
  rate-coded equivalent: replace it with AveragePool and retrain). With
  ``maxpool="spiking"`` it becomes a tree of IF neurons using
  ``max(a, b) = b + relu(a − b)`` (:mod:`nmc.frontends.onnx_maxpool`): only IF
  neurons and linear nodes, so every target expresses it, approximately;
* the last layer (no ReLU) feeds an ``I`` integrator (R = 1/dt), whose
  membrane accumulates the logits; the class is argmax of the final membrane;
* inputs are encoded per the ``encoding`` option: ``current`` (the analog
  value every step), ``poisson`` (Bernoulli spikes with p = value, values in
  [0, 1]) or ``regular`` (deterministic spike trains at rate = value);
  :func:`encode` produces the input array for a run.

The converted graph is an ordinary nmc graph (Affine, Linear, Conv2d,
AvgPool2d, Flatten, Scale, IF, I nodes), so every pass and backend applies.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from nmc.annotations import Reset
from nmc.errors import OptionError, ShapeError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.limits import check_dims, check_shape_alloc

from .onnx_eval import Op as _Op  # noqa: F401  (re-exported for callers of the old names)
from .onnx_eval import MAX_ELEMENTS, clip_bounds, constant_tensors, forward, node_errors, read, reduce_axes

_read = read
_ann_forward = forward

#: Every ONNX operator the frontend converts, with its conditions (README.md shows this table).
OPERATORS: dict[str, str] = {
    "Gemm": "fully connected layer (transA = 0)",
    "MatMul": "by a constant weight (+ Add of a constant bias)",
    "Conv": "2-d; any stride, symmetric padding, dilation; grouped and depthwise (group > 1)",
    "BatchNormalization": "folded into the preceding Conv/Gemm",
    "Relu": "→ IF neurons (threshold balanced on calibration data)",
    "Clip": "with min = 0 (ReLU6 and friends) → IF neurons",
    "Add": "of a constant (bias, folded) or of two tensors (residual)",
    "Mul": "by a constant (folded into weights, factors or a Scale)",
    "Div": "by a constant (folded like Mul)",
    "AveragePool": "unpadded",
    "GlobalAveragePool": "→ AvgPool2d over the whole image",
    "ReduceMean": "over the spatial axes (how AdaptiveAvgPool2d(1) and mean((2, 3)) export)",
    "MaxPool": "refused unless maxpool=spiking (an IF max tree, approximate)",
    "Concat": "along channels/features (index-mapping nodes)",
    "Flatten": "axis = 1",
    "Reshape": "to (N, -1) or dropping size-1 axes",
    "Squeeze": "like Reshape",
    "Unsqueeze": "of constants (shape arithmetic) or like Reshape",
    "Transpose": "of a constant, or of an activation right before a Flatten/Reshape to (N, -1)",
    "Softmax": "at the output only: dropped (argmax unchanged), noted in the report",
    "LogSoftmax": "at the output only: dropped (argmax unchanged), noted in the report",
    "Identity": "inference no-op",
    "Dropout": "inference no-op",
    "Shape": "folded (shape arithmetic)",
    "Gather": "of constants only (shape arithmetic)",
    "Cast": "of constants only (shape arithmetic)",
}
SUPPORTED = set(OPERATORS)
REFUSED = {"MaxPool": "a max over spike trains has no exact rate-coded equivalent; use AveragePool and retrain, "
                      "or convert with maxpool=spiking (an approximate IF max tree)"}
CONSTANT_ONLY = {"Gather", "Cast"}
RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")
ENCODINGS = ("current", "poisson", "regular")
MAXPOOL_MODES = ("refuse", "spiking")


def check_supported(ops: list[_Op], path=None, *, const: set | None = None, out_name: str | None = None,
                    maxpool: str = "refuse") -> None:
    """Raise one UnsupportedNodeError listing every node that cannot be converted, with the reason."""
    const = const or set()
    bad = []
    for o in ops:
        if o.op not in SUPPORTED or (o.op == "MaxPool" and maxpool != "spiking"):
            bad.append(f"{o.name} ({o.op}{': ' + REFUSED[o.op] if o.op in REFUSED else ''})")
        elif o.op in CONSTANT_ONLY and o.outputs[0] not in const:
            bad.append(f"{o.name} ({o.op} of an activation: only shape arithmetic on constants is supported)")
        elif o.op in ("Softmax", "LogSoftmax") and out_name is not None and o.outputs[0] != out_name:
            bad.append(f"{o.name} ({o.op} inside the network: it has no rate-coded equivalent; only a softmax "
                       "producing the model output is dropped, since it does not change the argmax)")
    if bad:
        raise UnsupportedNodeError(f"{len(bad)} unsupported ONNX node(s): " + "; ".join(bad), path=path,
                                   hint="supported: " + ", ".join(sorted(SUPPORTED)))


def _conv2d(weight, bias, input_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1) -> nir.Conv2d:
    """A NIR Conv2d with correct types: NIR 1.0.8's constructor takes the input channels
    from weight.shape[1], which is C_in / groups for a grouped convolution."""
    node = nir.Conv2d(input_shape=tuple(int(v) for v in input_hw), weight=np.asarray(weight, float),
                      stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation), groups=int(groups),
                      bias=np.asarray(bias, float))
    node.input_type = {"input": np.array([node.weight.shape[1] * int(groups), *node.input_shape])}
    return node


def _merge(terms: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Sum the factors of repeated nodes (a node reached twice gets one edge)."""
    out: dict[str, float] = {}
    for n, f in terms:
        out[n] = out.get(n, 0.0) + f
    return list(out.items())


class _Converter:
    """One conversion: the graph being built and, per ANN tensor, its representation."""

    def __init__(self, ops, inits, in_name, in_shape, out_name, env, lam, dt, percentile, maxpool, const):
        self.ops, self.inits, self.env, self.lam, self.dt = ops, inits, env, lam, dt
        self.percentile, self.maxpool, self.const, self.out_name = percentile, maxpool, const, out_name
        self.g = Graph(meta={"dt": dt, "integrator": "euler", "reset": "subtract"})
        self.g.add_node("input", nir.Input(input_type={"input": np.array(in_shape)}))
        # tensor → [(graph node, factor)]: the ANN tensor ≈ Σ factor · node output (spiking nodes: factor = λ)
        self.rep: dict[str, list[tuple[str, float]]] = {in_name: [("input", 1.0)]}
        self.shapes: dict[str, tuple] = {in_name: tuple(in_shape)}
        self.fresh: dict[str, list[str]] = {}  # tensor → the weight nodes whose sum it is (BN/bias/Mul folding)
        self.flat_view: set[str] = set()       # transposed tensors held as flat vectors (only a flatten may follow)
        self.notes: list[dict] = []
        self.depth: dict[str, int] = {"input": 0}            # neuron → neuron layers from the input
        self.relays: dict[tuple[str, int], str] = {}         # (neuron, layers) → its relay chain's last node
        self._used: set[str] = set()

    # ---------------------------------------------------------------- helpers
    def uniq(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c in "_" else "_" for c in base).strip("_") or "n"
        name, i = base, 1
        while name in self.g.nodes or name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def add(self, base: str, node, src: str | None = None) -> str:
        name = self.uniq(base)
        self.g.add_node(name, node)
        if src is not None:
            self.g.add_edge(src, name)
        return name

    def root(self, node: str) -> tuple[str, str | None]:
        """(the neuron or Input a term's chain of linear nodes starts from, the chain's first node)."""
        first = None
        while not isinstance(self.g.nodes[node], (nir.IF, nir.I, nir.Input)):
            first, node = node, self.g.preds(node)[0]
        return node, first

    def align(self, terms) -> tuple[list[tuple[str, float]], int]:
        """Pad shallower terms with relay IF neurons so that every term arrives through the
        same number of neuron layers (chips deliver one neuron layer per step; Loihi 2 refuses
        misaligned paths). A relay (threshold 1, reset by subtraction) repeats 0/1 spikes
        exactly, one layer later. Returns (terms, depth)."""
        roots = [self.root(src) for src, _ in terms]
        depth = max((self.depth.get(r, 0) for r, _ in roots), default=0)
        out = []
        for (src, fac), (r, first) in zip(terms, roots):
            k = depth - self.depth.get(r, 0)
            if k > 0:
                key = (r, k)
                if key not in self.relays:
                    last = r
                    shape = self.g.shape_out(r)
                    for j in range(k):
                        nxt = self.if_node(f"{r}_relay{j + 1}", shape, 1.0)
                        self.depth[nxt] = self.depth.get(r, 0) + j + 1
                        sc = self.add(f"{nxt}_in", nir.Scale(scale=np.ones(shape)), last)
                        self.g.add_edge(sc, nxt)
                        last = nxt
                    self.relays[key] = last
                last = self.relays[key]
                if first is None:
                    src = last
                elif (src, k) in self.relays:
                    src = self.relays[(src, k)]
                else:  # a copy of the term's linear chain reads the relay (the original may have other readers)
                    chain = [src]
                    while chain[-1] != first:
                        chain.append(self.g.preds(chain[-1])[0])
                    prev = last
                    for n in reversed(chain):
                        prev = self.add(f"{n}_d{k}", copy.deepcopy(self.g.nodes[n]), prev)
                    self.relays[(src, k)] = prev
                    src = prev
            out.append((src, fac))
        return out, depth

    def feed(self, dst: str, terms, shape) -> None:
        """Edges from every term into ``dst`` (a neuron): through a Scale where the factor is not 1
        or the source is itself a spiking/pass-through node. Paths are aligned first (:meth:`align`)."""
        terms, depth = self.align(_merge(terms))
        self.depth[dst] = depth + 1
        for src, fac in _merge(terms):
            if isinstance(self.g.nodes[src], (nir.IF, nir.Input, nir.AvgPool2d, nir.Flatten)) or fac != 1.0:
                sc = self.add(f"{dst}_skip", nir.Scale(scale=np.full(shape, fac)), src)
                self.g.add_edge(sc, dst)
            else:
                self.g.add_edge(src, dst)

    def per_term(self, o: _Op, x: str, make) -> list[str]:
        """One node per term of tensor x: ``make(factor, first)``; returns their names."""
        return [self.add(o.name if i == 0 else f"{o.name}_{src}", make(fac, i == 0), src)
                for i, (src, fac) in enumerate(self.rep[x])]

    def fresh_nodes(self, x: str) -> list[str] | None:
        names = self.fresh.get(x)
        return names if names and not any(self.g.succs(n) for n in names) else None

    def if_node(self, base: str, shape, lam: float) -> str:
        name = self.add(base, nir.IF(r=np.full(shape, 1.0 / self.dt), v_threshold=np.full(shape, lam),
                                     v_reset=np.zeros(shape)))
        self.g.annotate(name, Reset("subtract"))
        return name

    def note(self, message: str, node: str) -> None:
        self.notes.append({"node": node, "message": message})

    # ------------------------------------------------------------------ run
    def run(self) -> Graph:
        for o in self.ops:
            if o.outputs[0] in self.const:
                continue
            acts = [i for i in o.inputs if i and i not in self.const]
            if any(i in self.flat_view for i in acts) and o.op not in RESHAPES + ("Identity", "Dropout"):
                raise UnsupportedNodeError("a Transpose of an activation is supported only right before a "
                                           "Flatten/Reshape to (N, -1)", node=o.name)
            out_shape = tuple(self.env[o.outputs[0]].shape[1:])
            if o.op not in OPERATORS:  # allow-list: an op_type string from the file selects a method only from it
                raise UnsupportedNodeError(f"unsupported ONNX op {o.op}", node=o.name,
                                           hint="supported: " + ", ".join(sorted(OPERATORS)))
            getattr(self, "op_" + o.op)(o, out_shape)
            self.shapes.setdefault(o.outputs[0], out_shape)
        self.readout()
        self.g.verify()
        return self.g

    def passthrough(self, o: _Op, x: str) -> None:
        y = o.outputs[0]
        self.rep[y], self.shapes[y] = self.rep[x], self.shapes[x]
        for d in (self.fresh,):
            if x in d:
                d[y] = d[x]
        if x in self.flat_view:
            self.flat_view.add(y)

    # -------------------------------------------------------------- weights
    def op_Gemm(self, o: _Op, out_shape) -> None:
        if o.attrs.get("transA", 0):
            raise UnsupportedNodeError("Gemm with transA=1 is not supported", node=o.name)
        if o.inputs[1] not in self.const:
            raise UnsupportedNodeError("Gemm of two activations is not supported (the weight must be a constant)",
                                       node=o.name)
        W = np.asarray(self.env_const(o.inputs[1]), float)
        W = (W if o.attrs.get("transB", 0) else W.T) * o.attrs.get("alpha", 1.0)  # → (out, in)
        b = (np.asarray(self.env_const(o.inputs[2]), float) * o.attrs.get("beta", 1.0)
             if len(o.inputs) > 2 and o.inputs[2] else np.zeros(W.shape[0]))
        self.affine(o, W, b)

    def op_MatMul(self, o: _Op, out_shape) -> None:
        if o.inputs[1] not in self.const or o.inputs[0] in self.const:
            raise UnsupportedNodeError("MatMul of two activations is not supported", node=o.name)
        W = np.asarray(self.env_const(o.inputs[1]), float)
        if W.ndim != 2 or len(self.shapes[o.inputs[0]]) != 1:
            raise UnsupportedNodeError(f"MatMul of a {len(self.shapes[o.inputs[0]]) + 1}-d activation by a "
                                       f"{W.ndim}-d weight is not supported (only (N, in) @ (in, out))", node=o.name)
        self.affine(o, W.T, np.zeros(W.shape[1]))

    def affine(self, o: _Op, W, b) -> None:
        b = np.broadcast_to(b, (W.shape[0],)).copy()
        names = self.per_term(o, o.inputs[0], lambda fac, first: nir.Affine(
            weight=W * fac, bias=b if first else np.zeros_like(b)))
        self.rep[o.outputs[0]] = [(n, 1.0) for n in names]
        self.fresh[o.outputs[0]] = names

    def op_Conv(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        if o.inputs[1] not in self.const:
            raise UnsupportedNodeError("Conv with a weight computed from the input is not supported", node=o.name)
        W = np.asarray(self.env_const(o.inputs[1]), float)
        if W.ndim != 4:
            raise UnsupportedNodeError(f"{W.ndim - 2}-d Conv is not supported (only 2-d)", node=o.name)
        b = (np.asarray(self.env_const(o.inputs[2]), float) if len(o.inputs) > 2 and o.inputs[2]
             else np.zeros(W.shape[0]))
        pads = o.attrs.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise UnsupportedNodeError(f"asymmetric Conv padding {pads} is not supported", node=o.name)
        if o.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise UnsupportedNodeError(f"Conv auto_pad={o.attrs['auto_pad']!r} is not supported",
                                       node=o.name, hint="export with explicit padding")
        kw = dict(stride=tuple(o.attrs.get("strides", [1, 1])), padding=(pads[0], pads[1]),
                  dilation=tuple(o.attrs.get("dilations", [1, 1])), groups=int(o.attrs.get("group", 1)))
        hw = self.shapes[x][-2:]
        names = self.per_term(o, x, lambda fac, first: _conv2d(W * fac, b if first else np.zeros_like(b), hw, **kw))
        self.rep[o.outputs[0]] = [(n, 1.0) for n in names]
        self.fresh[o.outputs[0]] = names

    def env_const(self, name: str) -> np.ndarray:
        if name in self.inits:
            return np.asarray(self.inits[name])
        return self.env[name].numpy()

    def _rebuild(self, name: str, w, b) -> None:
        node = self.g.nodes[name]
        if isinstance(node, nir.Affine):
            self.g.nodes[name] = nir.Affine(weight=w, bias=b)
        else:
            self.g.nodes[name] = _conv2d(w, b, node.input_shape, node.stride, node.padding, node.dilation,
                                         node.groups)

    def op_BatchNormalization(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        names = self.fresh_nodes(x)
        if names is None:
            raise UnsupportedNodeError("BatchNormalization must directly follow a Conv or Gemm to be folded",
                                       node=o.name)
        s, bb, m, v = (np.asarray(self.env_const(n), float) for n in o.inputs[1:5])
        k = s / np.sqrt(v + o.attrs.get("epsilon", 1e-5))
        self.scale_fresh(names, k, bb - m * k)
        self.passthrough(o, x)

    def scale_fresh(self, names, k, shift=None) -> None:
        """Multiply the weight nodes' outputs per channel by k (and add shift once)."""
        for i, name in enumerate(names):
            node = self.g.nodes[name]
            w, b = np.asarray(node.weight, float), np.asarray(node.bias, float)
            kk = np.broadcast_to(k, (w.shape[0],))
            nb = b * kk + (shift if i == 0 and shift is not None else 0.0)
            self._rebuild(name, w * kk.reshape((-1,) + (1,) * (w.ndim - 1)), nb)

    # ---------------------------------------------------------- elementwise
    def op_Add(self, o: _Op, out_shape) -> None:
        a, b = o.inputs[0], o.inputs[1]
        if a in self.const and b in self.const:  # pragma: no cover - folded before
            return
        if a in self.const or b in self.const:
            x, c = (b, a) if a in self.const else (a, b)
            names = self.fresh_nodes(x)
            ch = self.per_channel(o, self.env_const(c), self.shapes[x])
            if names is None or ch is None:
                raise UnsupportedNodeError("Add of a constant must directly follow a MatMul/Gemm/Conv (a bias)",
                                           node=o.name)
            self.scale_fresh(names, np.ones_like(ch), ch)
            self.passthrough(o, x)
            return
        self.rep[o.outputs[0]] = _merge(self.rep[a] + self.rep[b])
        if self.shapes[a] != self.shapes[b]:
            raise UnsupportedNodeError(f"Add of tensors of shapes {self.shapes[a]} and {self.shapes[b]} "
                                       "(broadcasting) is not supported", node=o.name)

    @staticmethod
    def per_channel(o, c, shape) -> np.ndarray | None:
        """A constant broadcast over a (C, ...) tensor as one value per channel, else None."""
        full = np.broadcast_to(np.asarray(c, float), (1, *shape))[0]
        ch = full.reshape(full.shape[0], -1)
        return ch[:, 0].copy() if np.all(ch == ch[:, :1]) else None

    def op_Mul(self, o: _Op, out_shape) -> None:
        a, b = o.inputs[0], o.inputs[1]
        if (a in self.const) == (b in self.const):
            raise UnsupportedNodeError("Mul of two activations is not supported (only by a constant)", node=o.name)
        x, c = (b, a) if a in self.const else (a, b)
        self.multiply(o, x, np.asarray(self.env_const(c), float))

    def op_Div(self, o: _Op, out_shape) -> None:
        x, c = o.inputs[0], o.inputs[1]
        if c not in self.const or x in self.const:
            raise UnsupportedNodeError("Div is supported only as an activation divided by a constant", node=o.name)
        c = np.asarray(self.env_const(c), float)
        if np.any(c == 0):
            raise UnsupportedNodeError("Div by a constant that contains 0", node=o.name,
                                       hint="fix the model: the ANN itself produces inf here")
        self.multiply(o, x, 1.0 / c)

    def multiply(self, o: _Op, x: str, c: np.ndarray) -> None:
        shape = self.shapes[x]
        y = o.outputs[0]
        if np.broadcast_shapes(c.shape, (1, *shape)) != (1, *shape):
            raise UnsupportedNodeError(f"Mul/Div by a constant of shape {c.shape} changes the shape {shape}",
                                       node=o.name)
        names, ch = self.fresh_nodes(x), self.per_channel(o, c, shape)
        if names is not None and ch is not None:  # fold into the weight nodes
            self.scale_fresh(names, ch)
            self.passthrough(o, x)
        elif c.size == 1:  # a scalar: into every term's factor
            self.rep[y] = [(n, f * float(c.reshape(-1)[0])) for n, f in self.rep[x]]
        else:
            full = np.broadcast_to(c, (1, *shape))[0]
            self.rep[y] = [(self.add(f"{o.name}_scale", nir.Scale(scale=full * fac), src), 1.0)
                           for src, fac in self.rep[x]]

    def op_Relu(self, o: _Op, out_shape) -> None:
        lam_l = self.lam[o.outputs[0]]
        if o.op == "Clip":
            lam_l = min(lam_l, clip_bounds(o, self.inits)[1])
        name = self.if_node(o.name + "_if", out_shape, lam_l)
        self.feed(name, self.rep[o.inputs[0]], out_shape)
        self.rep[o.outputs[0]] = [(name, lam_l)]

    op_Clip = op_Relu

    # --------------------------------------------------------------- pooling
    def op_AveragePool(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        k = tuple(o.attrs["kernel_shape"])
        if any(o.attrs.get("pads", [0, 0, 0, 0])):
            raise UnsupportedNodeError("padded AveragePool is not supported", node=o.name)
        self.avgpool(o, x, k, tuple(o.attrs.get("strides", k)), out_shape)

    def avgpool(self, o: _Op, x, k, stride, out_shape) -> None:
        def make(_fac, _first):
            node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(stride), padding=np.array([0, 0]))
            node.input_type = {"input": np.array(self.shapes[x])}
            node.output_type = {"output": np.array(out_shape)}
            return node
        names = self.per_term(o, x, make)
        self.rep[o.outputs[0]] = [(n, fac) for n, (_, fac) in zip(names, self.rep[x])]

    def op_GlobalAveragePool(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        if len(self.shapes[x]) != 3:
            raise UnsupportedNodeError(f"GlobalAveragePool of a {len(self.shapes[x])}-d tensor (only (C, H, W))",
                                       node=o.name)
        C, H, W = self.shapes[x]
        self.avgpool(o, x, (H, W), (H, W), (C, 1, 1))
        self.shapes[o.outputs[0]] = (C, 1, 1)
        if out_shape != (C, 1, 1):  # ReduceMean with keepdims=0
            y = o.outputs[0]
            pooled = _Op(o.name, "Flatten", [y], [y], {})
            self.op_Flatten(pooled, out_shape)
            self.shapes[y] = out_shape

    def op_ReduceMean(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        if reduce_axes(o, self.inits | {k: self.env[k] for k in o.inputs[1:] if k in self.env},
                       len(self.shapes[x]) + 1) != (2, 3) or len(self.shapes[x]) != 3:
            raise UnsupportedNodeError("ReduceMean is supported only over the spatial axes (2, 3) of an (N, C, H, W) "
                                       "tensor (global average pooling)", node=o.name)
        self.op_GlobalAveragePool(o, out_shape)

    def op_MaxPool(self, o: _Op, out_shape) -> None:
        from .onnx_maxpool import spiking_maxpool

        spiking_maxpool(self, o, out_shape)

    # ------------------------------------------------------------- reshapes
    def op_Flatten(self, o: _Op, out_shape) -> None:
        x, y = o.inputs[0], o.outputs[0]
        if o.op == "Flatten" and o.attrs.get("axis", 1) != 1:
            raise UnsupportedNodeError("Flatten with axis != 1 is not supported", node=o.name)
        src_shape = self.shapes[x]
        if x in self.flat_view or out_shape == src_shape:
            if len(out_shape) != 1 and out_shape != src_shape:
                raise UnsupportedNodeError("a transposed activation can only be flattened", node=o.name)
            self.passthrough(o, x)
            self.shapes[y] = out_shape
            if len(out_shape) == 1:
                self.flat_view.discard(y)  # flattened: nodes and tensor agree again
            return
        if len(out_shape) != 1:
            raise UnsupportedNodeError(f"{o.op} from {src_shape} to {out_shape} is not supported (only flattening "
                                       "to (N, -1) or dropping size-1 axes)", node=o.name)
        if len(src_shape) == 1:
            self.passthrough(o, x)
            return
        names = self.per_term(o, x, lambda _f, _first: nir.Flatten(input_type={"input": np.array(src_shape)},
                                                                   start_dim=0, end_dim=-1))
        self.rep[y] = [(n, fac) for n, (_, fac) in zip(names, self.rep[x])]
        self.shapes[y] = out_shape

    op_Reshape = op_Squeeze = op_Unsqueeze = op_Flatten

    def op_Transpose(self, o: _Op, out_shape) -> None:
        x = o.inputs[0]
        src_shape = self.shapes[x]
        perm = list(o.attrs.get("perm", list(reversed(range(len(src_shape) + 1)))))
        if perm[0] != 0:
            raise UnsupportedNodeError(f"Transpose with perm={perm} moves the batch axis", node=o.name)
        p = [q - 1 for q in perm[1:]]
        if p == sorted(p):
            self.passthrough(o, x)
            return
        n = int(np.prod(src_shape))
        idx = np.arange(n).reshape(src_shape).transpose(p).reshape(-1)
        P = np.zeros((n, n))
        P[np.arange(n), idx] = 1.0
        out = []
        for src, fac in self.rep[x]:
            flat = self.add(f"{o.name}_flat", nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0,
                                                          end_dim=-1), src)
            out.append((self.add(o.name, nir.Linear(weight=P * fac), flat), 1.0))
        self.rep[o.outputs[0]] = out
        self.flat_view.add(o.outputs[0])

    def op_Concat(self, o: _Op, out_shape) -> None:
        ins = [i for i in o.inputs if i]
        if any(i in self.const for i in ins):
            raise UnsupportedNodeError("Concat of an activation with a constant is not supported", node=o.name)
        axis = int(o.attrs["axis"]) % (len(out_shape) + 1)
        if axis != 1:
            raise UnsupportedNodeError(f"Concat along axis {o.attrs['axis']} is not supported (only channels/features, "
                                       "axis 1)", node=o.name)
        total, off, terms = out_shape[0], 0, []
        for t in ins:
            shp = self.shapes[t]
            c = shp[0]
            for src, fac in self.rep[t]:
                if len(shp) == 1:
                    w = np.zeros((total, c))
                    w[off + np.arange(c), np.arange(c)] = fac
                    node = nir.Linear(weight=w)
                elif len(shp) == 3:
                    w = np.zeros((total, c, 1, 1))
                    w[off + np.arange(c), np.arange(c), 0, 0] = fac
                    node = _conv2d(w, np.zeros(total), shp[1:])
                else:
                    raise UnsupportedNodeError(f"Concat of {len(shp)}-d tensors is not supported (only (N, C) and "
                                               "(N, C, H, W))", node=o.name)
                terms.append((self.add(f"{o.name}_{t}", node, src), 1.0))
            off += c
        self.rep[o.outputs[0]] = terms

    # ------------------------------------------------------------ no-ops
    def op_Identity(self, o: _Op, out_shape) -> None:
        self.passthrough(o, o.inputs[0])

    op_Dropout = op_Cast = op_Identity

    def op_Softmax(self, o: _Op, out_shape) -> None:
        self.passthrough(o, o.inputs[0])
        self.note(f"output {o.op} dropped: it is monotone, so the argmax of the readout is unchanged "
                  "(the readout holds the logits)", o.name)

    op_LogSoftmax = op_Softmax

    # -------------------------------------------------------------- readout
    def readout(self) -> None:
        oshape = self.shapes[self.out_name]
        if self.out_name in self.flat_view:
            oshape = (int(np.prod(oshape)),)
        self.g.add_node("readout", nir.I(r=np.full(oshape, 1.0 / self.dt)))
        self.feed("readout", self.rep[self.out_name], oshape)
        self.g.add_node("output", nir.Output(output_type={"output": np.array(oshape)}))
        self.g.add_edge("readout", "output")


# ---------------------------------------------------------------- conversion
def convert(path: str | Path, *, data: dict | None = None, timesteps: int = 32, percentile: float = 99.9,
            encoding: str = "current", dt: float = 1e-3, seed: int = 0, maxpool: str = "refuse") -> tuple[Graph, dict]:
    """Convert an ONNX ANN to a spiking :class:`Graph`; returns (graph, report).

    ``maxpool``: ``refuse`` (default) or ``spiking`` (an approximate IF max tree, see the module docstring)."""
    with node_errors([]):
        return _convert(path, data, timesteps, percentile, encoding, dt, seed, maxpool)


def _convert(path, data, timesteps, percentile, encoding, dt, seed, maxpool) -> tuple[Graph, dict]:
    path = Path(path)
    if encoding not in ENCODINGS:
        raise OptionError(f"unknown input encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}")
    if maxpool not in MAXPOOL_MODES:
        raise OptionError(f"unknown maxpool mode {maxpool!r}", hint=f"use one of {', '.join(MAXPOOL_MODES)}")
    if not (0 < percentile <= 100):
        raise OptionError(f"percentile must be in (0, 100], got {percentile}")
    ops, inits, in_name, dims, out_name = read(path)
    const = constant_tensors(ops, inits)
    check_supported(ops, path, const=const, out_name=out_name, maxpool=maxpool)
    in_shape = tuple(int(d) for d in dims[1:] if d is not None) if dims else ()
    if len(in_shape) != len(dims) - 1:
        raise ShapeError(f"input '{in_name}' has unknown dimensions {dims}", path=path,
                         hint="export with a fixed input shape (batch may be dynamic)")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise OptionError(f"timesteps must be a whole number >= 1, got {timesteps!r}", hint="e.g. --timesteps 32")
    check_dims(in_shape, f"input '{in_name}' shape {in_shape}", path=path,
               hint="export with a fixed, positive input shape")
    # the calibration batch (at most 256 samples) encoded over every timestep is the largest array made here
    n_cal = 256 if data is None else max((len(v) for v in data.values() if np.ndim(v) > 0), default=1)
    check_shape_alloc((timesteps, max(n_cal, 1), *in_shape), 8, f"input '{in_name}' of shape {in_shape} over "
                      f"{timesteps} timesteps for {n_cal} calibration samples", path=path)
    n_in = int(np.prod(in_shape, dtype=object)) if in_shape else 1
    if n_in > MAX_ELEMENTS or n_in == 0:
        raise ShapeError(f"input '{in_name}' has {n_in} elements per sample", path=path, node="input",
                         limit=f"1..{MAX_ELEMENTS}", actual=n_in, hint="export with the model's real input shape")
    x_cal, labels, synthetic = _calibration(data, in_name, in_shape, seed)
    with torch.no_grad():
        env, acts = forward(ops, inits, in_name, torch.as_tensor(x_cal, dtype=torch.float64), record=True)
    lam = {k: max(float(np.percentile(v.numpy(), percentile)), 1e-9) for k, v in acts.items()}
    cv = _Converter(ops, inits, in_name, in_shape, out_name, env, lam, dt, percentile, maxpool, const)
    with torch.no_grad():
        g = cv.run()
    g.meta.update({"encoding": encoding, "timesteps": int(timesteps)})
    report = {"thresholds": {k: round(v, 6) for k, v in cv.lam.items()}, "percentile": percentile,
              "encoding": encoding, "timesteps": int(timesteps), "calibration": "synthetic" if synthetic else "data",
              "calibration_samples": int(len(x_cal)), "maxpool": maxpool, "notes": cv.notes}
    if labels is not None:
        ann_pred = env[out_name].numpy().argmax(1)
        report["accuracy"] = accuracy_table(g, x_cal, labels, ann_pred, timesteps, encoding, seed)
    return g, report


def _calibration(data, in_name, in_shape, seed):
    if data is None:   # 256 samples, fewer for inputs so large that 256 would exceed MAX_ELEMENTS in all
        rng = np.random.default_rng(seed)
        n = max(1, min(256, MAX_ELEMENTS // max(1, int(np.prod(in_shape, dtype=object)))))
        return rng.random((n, *in_shape)), None, True
    arr = data.get("input", data.get(in_name))
    if arr is None:
        arr = next((v for k, v in data.items() if k != "labels"), None)
    if arr is None:
        raise ShapeError("calibration data has no input array", hint="store the inputs under 'input' in the .npz")
    arr = np.asarray(arr, dtype=np.float64)
    if tuple(arr.shape[1:]) != in_shape:
        raise ShapeError(f"calibration inputs have shape {arr.shape}, expected (N, {', '.join(map(str, in_shape))})",
                         node="input")
    labels = data.get("labels")
    return arr, (np.asarray(labels).astype(int) if labels is not None else None), False


def encode(x: np.ndarray, timesteps: int, encoding: str = "current", seed: int = 0) -> np.ndarray:
    """Input array for a run: x of shape (B, *shape) with values in [0, 1] for
    spike encodings → (T, B, *shape)."""
    x = np.asarray(x, dtype=np.float64)
    if encoding == "current":
        return np.broadcast_to(x, (timesteps, *x.shape)).copy()
    if np.any(x < 0) or np.any(x > 1):
        raise ShapeError(f"{encoding} spike encoding needs input values in [0, 1]", node="input",
                         hint="scale the inputs or use encoding=current")
    if encoding == "poisson":
        return (np.random.default_rng(seed).random((timesteps, *x.shape)) < x).astype(np.float64)
    if encoding == "regular":
        t = np.arange(1, timesteps + 1).reshape(-1, *([1] * x.ndim))
        return (np.floor(t * x) - np.floor((t - 1) * x)).astype(np.float64)
    raise OptionError(f"unknown input encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}")


def accuracy_table(g: Graph, x, labels, ann_pred, timesteps: int, encoding: str, seed: int) -> dict:
    """ANN accuracy vs converted-SNN accuracy on the reference simulator at several timestep counts."""
    from nmc.reference import ReferenceSimulator

    sim = ReferenceSimulator(g)
    ts = sorted({t for t in (8, 16, 32, 64, 128, 256) if t <= timesteps} | {int(timesteps)})
    inp = encode(x, max(ts), encoding, seed)
    out = sim.run({"input": inp}, batched=True, record=["readout"])["readout.v"]
    res = {"ann": float(np.mean(ann_pred == labels)), "snn": {}}
    for t in ts:
        res["snn"][str(t)] = float(np.mean(out[t - 1].argmax(-1) == labels))
    res["agreement_with_ann_at_T"] = float(np.mean(out[timesteps - 1].argmax(-1) == ann_pred))
    return res


def load_file(path: Path, *, data: dict | None = None, options: dict | None = None, **_: Any) -> tuple[Graph, dict]:
    o = options or {}
    return convert(path, data=data, timesteps=int(o.get("timesteps", 32)), percentile=float(o.get("percentile", 99.9)),
                   encoding=str(o.get("encoding", "current")), dt=float(o.get("dt") or 1e-3), seed=int(o.get("seed", 0)),
                   maxpool=str(o.get("maxpool") or "refuse"))
