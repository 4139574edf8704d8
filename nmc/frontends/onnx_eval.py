"""The ANN side of the ONNX frontend: read an ONNX file into a flat op list and
evaluate it with torch (float64) on a batch.

The evaluation is what conversion calibrates against (every activation is
recorded) and what the accuracy table compares with. It also decides which
tensors are *constants* (initializers, ``Constant`` nodes, ``Shape`` of an
activation and anything computed from constants only, such as the
``Shape → Gather → Unsqueeze → Concat → Reshape`` chain TorchScript emits for
``x.view(x.size(0), -1)`` or a ``Transpose`` of a weight): those are folded,
never converted to graph nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nmc.errors import InputFileError, ShapeError, UnsupportedNodeError


@dataclass
class Op:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict


#: most elements one initializer, one input sample or the synthetic calibration batch may hold (2**24:
#: 128 MiB as float64), checked on declared sizes before anything is allocated
MAX_ELEMENTS = 2 ** 24


class node_errors:
    """Turn errors torch/numpy raise on a malformed model into ShapeError naming the ONNX node
    being processed (``cur[-1]``); nmc's own typed errors pass through."""

    def __init__(self, cur: list):
        self.cur = cur

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if et is not None and issubclass(et, (RuntimeError, ValueError, IndexError, KeyError, TypeError,
                                              ZeroDivisionError)):
            node = self.cur[-1].name if self.cur else None
            raise ShapeError(f"ONNX node cannot be converted ({et.__name__}: {str(e)[:160]})", node=node,
                             hint="check the model's shapes and attributes with onnx.checker.check_model "
                                  "(full_check=True)") from None
        return False


def _check_initializers(g, path: Path) -> None:
    """Before any initializer is turned into an array: its declared dims are whole and
    within the memory bound, and it is real-valued (a complex weight would lose its
    imaginary part in the float conversion)."""
    from onnx import TensorProto, helper

    from nmc.limits import check_shape_alloc

    for i in g.initializer:
        if i.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
            raise UnsupportedNodeError(f"initializer '{i.name}' is complex-valued; nmc's targets compute with real "
                                       "numbers", path=path, hint="export real-valued weights")
        dims = tuple(int(d) for d in i.dims)
        if any(d < 0 for d in dims):
            raise ShapeError(f"initializer '{i.name}' declares negative dimensions {dims}", path=path)
        try:
            item = helper.tensor_dtype_to_np_dtype(i.data_type).itemsize
        except Exception:  # an unknown data type: onnx's own reader refuses it below
            item = 8
        check_shape_alloc(dims, max(item, 8), f"initializer '{i.name}' of shape {dims}", path=path)
        n = int(np.prod(dims, dtype=object)) if dims else 1
        if n > MAX_ELEMENTS:
            raise InputFileError(f"initializer '{i.name}' declares {n} elements", path=path, limit=MAX_ELEMENTS,
                                 actual=n, hint="the file is corrupt or not a model nmc can hold")


def read(path: Path):
    """(ops, initializers, input name, input dims, output name) of an ONNX file; a malformed
    model is an InputFileError, never a raw onnx/numpy exception."""
    try:
        return _read(path)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:  # onnx/numpy on malformed protos
        raise InputFileError(f"malformed ONNX model ({type(e).__name__}: {str(e)[:120]})", path=path,
                             hint="check it with onnx.checker.check_model, or re-export it") from None


def _read(path: Path):
    import onnx
    from onnx import numpy_helper

    try:
        # onnx (>= 1.16) reads external tensor data only from regular files inside the model's
        # folder: an absolute location, one with "..", or a symbolic link is a ValidationError
        model = onnx.load(str(path))
    except onnx.checker.ValidationError as e:
        raise InputFileError(f"ONNX model refused: {str(e)[:240]}", path=path,
                             hint="keep external tensor data (.data files) as regular files in the model's "
                                  "folder, or re-export the model with its weights inside") from None
    except Exception as e:  # protobuf DecodeError and friends
        raise InputFileError(f"not a readable ONNX model ({type(e).__name__})", path=path,
                             hint="re-export the model with torch.onnx.export") from None
    g = model.graph
    _check_initializers(g, path)

    def arr(t):
        a = numpy_helper.to_array(t)
        return a.astype(np.float64) if a.dtype.kind == "f" else a

    inits = {i.name: arr(i) for i in g.initializer}
    ops = []
    for i, n in enumerate(g.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and "value" in attrs:
            inits[n.output[0]] = arr(attrs["value"])
            continue
        ops.append(Op(n.name or f"{n.op_type}_{i}", n.op_type, list(n.input), list(n.output), attrs))
    graph_inputs = [v for v in g.input if v.name not in inits]
    if len(graph_inputs) != 1:
        raise UnsupportedNodeError(f"the ONNX graph has {len(graph_inputs)} inputs; nmc converts single-input models",
                                   path=path)
    gi = graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in gi.type.tensor_type.shape.dim]
    if len(g.output) != 1:
        raise UnsupportedNodeError(f"the ONNX graph has {len(g.output)} outputs; nmc converts single-output models",
                                   path=path)
    return ops, inits, gi.name, dims, g.output[0].name


def constant_tensors(ops: list[Op], inits: dict) -> set[str]:
    """Names of tensors known without the input: initializers, ``Shape`` outputs and
    outputs of ops whose inputs are all constant."""
    const = set(inits)
    for o in ops:
        if o.op == "Shape" or all(i in const for i in o.inputs if i):
            const.update(o.outputs)
    return const


def clip_bounds(o: Op, inits) -> tuple[float, float]:
    lo = o.attrs.get("min", None)
    hi = o.attrs.get("max", None)
    if len(o.inputs) > 1 and o.inputs[1]:
        lo = float(np.asarray(inits[o.inputs[1]]))
    if len(o.inputs) > 2 and o.inputs[2]:
        hi = float(np.asarray(inits[o.inputs[2]]))
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    if lo != 0.0:
        raise UnsupportedNodeError(f"Clip with min={lo} is not a ReLU-like activation (min must be 0)", node=o.name)
    return lo, hi


def reduce_axes(o: Op, inits, ndim: int) -> tuple[int, ...]:
    """ReduceMean's axes (attribute before opset 18, second input from 18 on), normalised to ≥ 0."""
    axes = o.attrs.get("axes")
    if axes is None and len(o.inputs) > 1 and o.inputs[1]:
        axes = np.asarray(inits[o.inputs[1]]).reshape(-1).tolist()
    if axes is None:
        axes = list(range(ndim))
    return tuple(sorted(int(a) % ndim for a in axes))


def _reshape(x: torch.Tensor, shape, allowzero: bool) -> torch.Tensor:
    s = [int(v) for v in np.asarray(shape).reshape(-1)]
    for i, d in enumerate(s):
        if d == 0 and not allowzero:
            s[i] = x.shape[i]
    if s and s[0] > 0 and s[0] != x.shape[0]:
        s[0] = x.shape[0]  # a batch size baked into the export: the batch axis stays the batch axis
    return x.reshape(s)


def _conv(o: Op, x, w, b):
    a = o.attrs
    pads = list(a.get("pads", [0] * (2 * (w.dim() - 2))))
    nd = w.dim() - 2
    if any(pads[i] != pads[i + nd] for i in range(nd)):
        x = F.pad(x, tuple(v for i in reversed(range(nd)) for v in (pads[i], pads[i + nd])))
        pads = [0] * (2 * nd)
    fn = F.conv2d if nd == 2 else F.conv1d
    return fn(x, w, b, stride=tuple(a.get("strides", [1] * nd)), padding=tuple(pads[:nd]),
              dilation=tuple(a.get("dilations", [1] * nd)), groups=int(a.get("group", 1)))


def forward(ops: list[Op], inits: dict, in_name: str, x: torch.Tensor, record: bool = False):
    """Evaluate the ANN with torch (float64). Returns (env: every tensor, {activation output: values}).
    A node the model's own shapes or attributes make impossible raises ShapeError naming it."""
    cur: list[Op] = []
    with node_errors(cur):
        return _forward(ops, inits, in_name, x, record, cur)


def _forward(ops: list[Op], inits: dict, in_name: str, x: torch.Tensor, record: bool, cur: list):
    env: dict[str, torch.Tensor] = {in_name: x}
    acts = {}

    def val(n):
        if n in env:
            return env[n]
        if n in inits:
            a = np.asarray(inits[n])
            return torch.as_tensor(a.astype(np.float64) if a.dtype.kind == "f" else a.copy())
        raise ShapeError(f"tensor '{n}' is used before it is produced")

    for o in ops:
        cur.append(o)
        a = o.attrs
        ins = [val(i) if i else None for i in o.inputs]
        if o.op == "Gemm":
            A, B = ins[0], ins[1]
            A = A.T if a.get("transA", 0) else A
            B = B.T if a.get("transB", 0) else B
            y = a.get("alpha", 1.0) * (A @ B)
            if len(ins) > 2 and ins[2] is not None:
                y = y + a.get("beta", 1.0) * ins[2]
        elif o.op == "MatMul":
            y = ins[0] @ ins[1]
        elif o.op in ("Add", "Sub", "Mul", "Div"):
            fn = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[o.op]
            if ins[0].dtype.is_floating_point or ins[1].dtype.is_floating_point:
                y = fn(ins[0].double(), ins[1].double())
            else:
                y = ins[0] // ins[1] if o.op == "Div" else fn(ins[0], ins[1])
        elif o.op == "Conv":
            y = _conv(o, ins[0], ins[1], ins[2] if len(ins) > 2 else None)
        elif o.op == "Relu":
            y = torch.relu(ins[0])
        elif o.op == "Clip":
            lo, hi = clip_bounds(o, inits)
            y = torch.clamp(ins[0], lo, hi)
        elif o.op in ("AveragePool", "MaxPool"):
            k = tuple(a["kernel_shape"])
            pads = a.get("pads", [0, 0, 0, 0])
            if o.op == "MaxPool":
                y = F.max_pool2d(ins[0], k, tuple(a.get("strides", k)), (pads[0], pads[1]))
            else:
                y = F.avg_pool2d(ins[0], k, tuple(a.get("strides", k)), (pads[0], pads[1]),
                                 count_include_pad=bool(a.get("count_include_pad", 0)))
        elif o.op == "GlobalAveragePool":
            y = ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)
        elif o.op == "ReduceMean":
            axes = reduce_axes(o, inits, ins[0].dim())
            y = ins[0] if not axes and a.get("noop_with_empty_axes", 0) else \
                ins[0].mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))
        elif o.op == "Flatten":
            y = ins[0].reshape(*ins[0].shape[:a.get("axis", 1)], -1)
        elif o.op == "Reshape":
            y = _reshape(ins[0], ins[1].numpy(), bool(a.get("allowzero", 0)))
        elif o.op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = ins[1].reshape(-1).tolist()
            y = ins[0]
            if o.op == "Squeeze":
                axes = [i for i, d in enumerate(y.shape) if d == 1] if axes is None else axes
                for ax in sorted((int(v) % y.dim() for v in axes), reverse=True):
                    y = y.squeeze(ax)
            else:
                nd = y.dim() + len(axes)
                for ax in sorted(int(v) % nd for v in axes):
                    y = y.unsqueeze(ax)
        elif o.op == "Transpose":
            perm = a.get("perm", list(reversed(range(ins[0].dim()))))
            y = ins[0].permute(*perm)
        elif o.op == "Concat":
            y = torch.cat([t if t.dim() else t.reshape(1) for t in ins], dim=int(a["axis"]))
        elif o.op == "Shape":
            y = torch.tensor(ins[0].shape, dtype=torch.int64)
        elif o.op == "Gather":
            y = torch.as_tensor(np.take(ins[0].numpy(), ins[1].numpy(), axis=int(a.get("axis", 0))))
        elif o.op == "Cast":
            y = ins[0]
        elif o.op == "BatchNormalization":
            s, b, m, v = ins[1:5]
            shp = (1, -1) + (1,) * (ins[0].dim() - 2)
            y = (ins[0] - m.reshape(shp)) / torch.sqrt(v.reshape(shp) + a.get("epsilon", 1e-5)) * s.reshape(shp) \
                + b.reshape(shp)
        elif o.op in ("Softmax", "LogSoftmax"):
            fn = torch.softmax if o.op == "Softmax" else torch.log_softmax
            y = fn(ins[0], dim=int(a.get("axis", -1)))
        elif o.op in ("Identity", "Dropout"):
            y = ins[0]
        else:  # pragma: no cover - check_supported ran first
            raise UnsupportedNodeError(f"unsupported ONNX op {o.op}", node=o.name)
        env[o.outputs[0]] = y
        if record and o.op in ("Relu", "Clip"):
            acts[o.outputs[0]] = y
    return env, acts
