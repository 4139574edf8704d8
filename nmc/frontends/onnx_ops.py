"""ONNX → nmc graph, per operator: the table of supported operators
(:data:`OPERATORS`, which README.md shows), the check that lists every node
that cannot be converted (:func:`check_supported`), and one converter method
per operator (:class:`OpConverters`, mixed into
:class:`.onnx_graph._Converter`, which walks the ONNX graph and holds the graph
being built). The conversion rules are in :mod:`nmc.frontends.onnx`.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc import semantics
from nmc.errors import UnsupportedNodeError

from .onnx_eval import Op as _Op
from .onnx_eval import clip_bounds, reduce_axes

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


class OpConverters:
    """The ``op_<OpType>`` methods of :class:`.onnx_graph._Converter`, one per entry of
    :data:`OPERATORS` (the walk calls only those), and the helpers they share. Each
    reads its inputs' representations from ``self.rep`` and writes its output's."""

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
        """The weight node ``name`` (Affine, Conv2d) with weight ``w`` and bias ``b``: its type's
        ``with_weights`` hook (:mod:`nmc.semantics`)."""
        node = self.g.nodes[name]
        self.g.nodes[name] = semantics.of(node, name=name).hook("with_weights")(node, w, b)

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
