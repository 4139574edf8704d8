"""ONNX frontend: a trained ANN converted to a rate-coded spiking network.

Supported operators: Gemm, MatMul (+ Add of a constant bias), Conv, Relu,
Clip(min=0) (ReLU6 and friends), AveragePool, Flatten, Reshape (to (N, -1)),
Add of two tensors (residual), BatchNormalization (folded into the preceding
Conv/Gemm), Identity and Dropout (inference no-ops). MaxPool is refused: a
max over spike trains has no exact rate-coded equivalent (replace it with
AveragePool and retrain). Every unsupported node is listed in one
:class:`~nmc.errors.UnsupportedNodeError`.

Conversion (Rueckauer et al.'s data-based threshold balancing, phrased with
thresholds instead of weight normalisation):

* each ReLU becomes an ``IF`` node (reset by subtraction, R = 1/dt so
  ``v += x`` per step) with threshold λ_l = the ``percentile`` of that
  ReLU's activations on calibration data. Its spike rate r (spikes per step)
  approximates a_l / λ_l, so the ANN tensor ≈ λ_l · r;
* a weight layer reading a spiking tensor of scale λ gets its weights
  multiplied by λ (biases unchanged: they are injected every step);
* ``Clip(0, c)`` works the same way (an IF neuron saturates at one spike per
  step, so λ ≤ c reproduces the clip when λ = c);
* the last layer (no ReLU) feeds an ``I`` integrator (R = 1/dt), whose
  membrane accumulates the logits; the class is argmax of the final membrane;
* inputs are encoded per the ``encoding`` option: ``current`` (the analog
  value every step), ``poisson`` (Bernoulli spikes with p = value, values in
  [0, 1]) or ``regular`` (deterministic spike trains at rate = value);
  :func:`encode` produces the input array for a run.

The converted graph is an ordinary nmc graph (Affine, Conv2d, AvgPool2d,
Flatten, Scale, IF, I nodes), so every pass and backend applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F

from nmc.annotations import Reset
from nmc.errors import InputFileError, OptionError, ShapeError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.limits import check_dims, check_shape_alloc

SUPPORTED = {"Gemm", "MatMul", "Add", "Conv", "Relu", "Clip", "AveragePool", "Flatten", "Reshape",
             "BatchNormalization", "Identity", "Dropout"}
REFUSED = {"MaxPool": "a max over spike trains has no exact rate-coded equivalent; use AveragePool and retrain"}
ENCODINGS = ("current", "poisson", "regular")
#: most elements one initializer, one input sample or the synthetic calibration batch may hold (2**24:
#: 128 MiB as float64), checked on declared sizes before anything is allocated
MAX_ELEMENTS = 2 ** 24


@dataclass
class _Op:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict


def _check_initializers(g, path: Path) -> None:
    """Before any initializer is turned into an array: its declared dims are whole and
    within the memory bound, and it is real-valued (a complex weight would lose its
    imaginary part in the float conversion)."""
    from onnx import TensorProto, helper

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


def _read(path: Path):
    try:
        return _read_model(path)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:  # onnx/numpy on malformed protos
        raise InputFileError(f"malformed ONNX model ({type(e).__name__}: {str(e)[:120]})", path=path,
                             hint="check it with onnx.checker.check_model, or re-export it") from None


def _read_model(path: Path):
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise InputFileError(f"not a readable ONNX model ({type(e).__name__})", path=path,
                             hint="re-export the model with torch.onnx.export") from None
    for i in model.graph.initializer:   # declared sizes first: nothing is allocated for a bogus shape
        n = int(np.prod([max(int(d), 0) for d in i.dims], dtype=object))
        if n > MAX_ELEMENTS:
            raise InputFileError(f"initializer '{i.name}' declares {n} elements", path=path, limit=MAX_ELEMENTS,
                                 actual=n, hint="the file is corrupt or not a model nmc can hold")
    g = model.graph
    _check_initializers(g, path)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) if numpy_helper.to_array(i).dtype.kind == "f"
             else numpy_helper.to_array(i) for i in g.initializer}
    ops = []
    for i, n in enumerate(g.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and "value" in attrs:
            inits[n.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        ops.append(_Op(n.name or f"{n.op_type}_{i}", n.op_type, list(n.input), list(n.output), attrs))
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


def check_supported(ops: list[_Op], path=None) -> None:
    bad = [f"{o.name} ({o.op}{': ' + REFUSED[o.op] if o.op in REFUSED else ''})" for o in ops if o.op not in SUPPORTED]
    if bad:
        raise UnsupportedNodeError(f"{len(bad)} unsupported ONNX node(s): " + "; ".join(bad), path=path,
                                   hint="supported: " + ", ".join(sorted(SUPPORTED)))


# ------------------------------------------------------------------ ANN eval
def _ann_forward(ops, inits, in_name, x: torch.Tensor, record: bool = False):
    """Evaluate the ANN with torch (float64). Returns (output, {relu output name: activations}).
    A node the model's own shapes or attributes make impossible raises ShapeError naming it."""
    cur: list[_Op] = []
    with _node_errors(cur):
        return _forward(ops, inits, in_name, x, record, cur)


class _node_errors:
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


def _forward(ops, inits, in_name, x: torch.Tensor, record: bool, cur: list):
    env: dict[str, torch.Tensor] = {in_name: x}
    acts = {}

    def val(n):
        if n in env:
            return env[n]
        if n in inits:
            return torch.as_tensor(np.asarray(inits[n], dtype=np.float64))
        raise ShapeError(f"tensor '{n}' is used before it is produced")

    for o in ops:
        cur.append(o)
        a = o.attrs
        if o.op == "Gemm":
            A, B = val(o.inputs[0]), val(o.inputs[1])
            if a.get("transA", 0):
                A = A.T
            if a.get("transB", 0):
                B = B.T
            y = a.get("alpha", 1.0) * (A @ B)
            if len(o.inputs) > 2 and o.inputs[2]:
                y = y + a.get("beta", 1.0) * val(o.inputs[2])
        elif o.op == "MatMul":
            y = val(o.inputs[0]) @ val(o.inputs[1])
        elif o.op == "Add":
            y = val(o.inputs[0]) + val(o.inputs[1])
        elif o.op == "Conv":
            w = val(o.inputs[1])
            b = val(o.inputs[2]) if len(o.inputs) > 2 and o.inputs[2] else None
            pads = a.get("pads", [0, 0, 0, 0])
            x_ = val(o.inputs[0])
            if pads[0] != pads[2] or pads[1] != pads[3]:
                x_ = F.pad(x_, (pads[1], pads[3], pads[0], pads[2]))
                pads = [0, 0, 0, 0]
            y = F.conv2d(x_, w, b, stride=tuple(a.get("strides", [1, 1])), padding=(pads[0], pads[1]),
                         dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))
        elif o.op == "Relu":
            y = torch.relu(val(o.inputs[0]))
        elif o.op == "Clip":
            lo, hi = _clip_bounds(o, inits)
            y = torch.clamp(val(o.inputs[0]), lo, hi)
        elif o.op == "AveragePool":
            k = tuple(a["kernel_shape"])
            pads = a.get("pads", [0, 0, 0, 0])
            y = F.avg_pool2d(val(o.inputs[0]), k, tuple(a.get("strides", k)), (pads[0], pads[1]),
                             count_include_pad=bool(a.get("count_include_pad", 0)))
        elif o.op == "Flatten":
            x_ = val(o.inputs[0])
            y = x_.reshape(*x_.shape[:a.get("axis", 1)], -1)
        elif o.op == "Reshape":
            x_ = val(o.inputs[0])
            y = x_.reshape(x_.shape[0], -1)
        elif o.op == "BatchNormalization":
            s, b, m, v = (val(n) for n in o.inputs[1:5])
            eps = a.get("epsilon", 1e-5)
            x_ = val(o.inputs[0])
            shp = (1, -1) + (1,) * (x_.dim() - 2)
            y = (x_ - m.reshape(shp)) / torch.sqrt(v.reshape(shp) + eps) * s.reshape(shp) + b.reshape(shp)
        elif o.op in ("Identity", "Dropout"):
            y = val(o.inputs[0])
        else:  # pragma: no cover - check_supported ran first
            raise UnsupportedNodeError(f"unsupported ONNX op {o.op}", node=o.name)
        env[o.outputs[0]] = y
        if record and o.op in ("Relu", "Clip"):
            acts[o.outputs[0]] = y
    return env, acts


def _clip_bounds(o: _Op, inits) -> tuple[float, float]:
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


# ---------------------------------------------------------------- conversion
def convert(path: str | Path, *, data: dict | None = None, timesteps: int = 32, percentile: float = 99.9,
            encoding: str = "current", dt: float = 1e-3, seed: int = 0) -> tuple[Graph, dict]:
    """Convert an ONNX ANN to a spiking :class:`Graph`; returns (graph, report)."""
    cur: list[_Op] = []
    with _node_errors(cur):
        return _convert(path, data, timesteps, percentile, encoding, dt, seed, cur)


def _convert(path, data, timesteps, percentile, encoding, dt, seed, cur: list) -> tuple[Graph, dict]:
    path = Path(path)
    if encoding not in ENCODINGS:
        raise OptionError(f"unknown input encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}")
    if not (0 < percentile <= 100):
        raise OptionError(f"percentile must be in (0, 100], got {percentile}")
    ops, inits, in_name, dims, out_name = _read(path)
    check_supported(ops, path)
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
        env, acts = _ann_forward(ops, inits, in_name, torch.as_tensor(x_cal, dtype=torch.float64), record=True)
    lam = {k: max(float(np.percentile(v.numpy(), percentile)), 1e-9) for k, v in acts.items()}

    g = Graph(meta={"dt": dt, "integrator": "euler", "reset": "subtract",
                    "encoding": encoding, "timesteps": int(timesteps)})
    g.add_node("input", nir.Input(input_type={"input": np.array(in_shape)}))
    # tensor name -> list of (graph node, factor): the ANN tensor ≈ Σ factor · node output.
    # For spiking nodes the output is spikes per step and factor is λ.
    rep: dict[str, list[tuple[str, float]]] = {in_name: [("input", 1.0)]}
    shapes = {in_name: in_shape}
    pending_bn_target: dict[str, str] = {}  # tensor -> weight node that produced it (for BN folding)
    used = set()

    def uniq(base: str) -> str:
        base = "".join(c if c.isalnum() or c in "_" else "_" for c in base).strip("_") or "n"
        name, i = base, 1
        while name in g.nodes or name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        return name

    def single_source(tensor: str, o: _Op) -> tuple[str, float]:
        srcs = rep[tensor]
        if len(srcs) != 1:
            raise UnsupportedNodeError("a weight layer reading a sum of several branches is not supported "
                                       "(put a ReLU after the Add)", node=o.name)
        return srcs[0]

    for o in ops:
        cur.append(o)
        x0 = o.inputs[0]
        if o.op in ("Identity", "Dropout"):
            rep[o.outputs[0]], shapes[o.outputs[0]] = rep[x0], shapes[x0]
            if x0 in pending_bn_target:
                pending_bn_target[o.outputs[0]] = pending_bn_target[x0]
            continue
        out_shape = tuple(env[o.outputs[0]].shape[1:])
        if o.op in ("Gemm", "MatMul"):
            src, lam_in = single_source(x0, o)
            if o.op == "Gemm":
                W = np.asarray(inits[o.inputs[1]], dtype=np.float64)
                W = W if o.attrs.get("transB", 0) else W.T  # → (out, in)
                if o.attrs.get("transA", 0):
                    raise UnsupportedNodeError("Gemm with transA=1 is not supported", node=o.name)
                W = W * o.attrs.get("alpha", 1.0)
                b = (np.asarray(inits[o.inputs[2]], dtype=np.float64) * o.attrs.get("beta", 1.0)
                     if len(o.inputs) > 2 and o.inputs[2] else np.zeros(W.shape[0]))
            else:
                if o.inputs[1] not in inits:
                    raise UnsupportedNodeError("MatMul of two activations is not supported", node=o.name)
                W = np.asarray(inits[o.inputs[1]], dtype=np.float64).T
                b = np.zeros(W.shape[0])
            name = uniq(o.name or o.op)
            g.add_node(name, nir.Affine(weight=W * lam_in, bias=np.broadcast_to(b, (W.shape[0],)).copy()))
            g.add_edge(src, name)
            rep[o.outputs[0]] = [(name, 1.0)]
            pending_bn_target[o.outputs[0]] = name
        elif o.op == "Conv":
            src, lam_in = single_source(x0, o)
            W = np.asarray(inits[o.inputs[1]], dtype=np.float64)
            b = (np.asarray(inits[o.inputs[2]], dtype=np.float64) if len(o.inputs) > 2 and o.inputs[2]
                 else np.zeros(W.shape[0]))
            pads = o.attrs.get("pads", [0, 0, 0, 0])
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise UnsupportedNodeError(f"asymmetric Conv padding {pads} is not supported", node=o.name)
            name = uniq(o.name or "conv")
            g.add_node(name, nir.Conv2d(input_shape=tuple(shapes[x0][-2:]), weight=W * lam_in,
                                        stride=tuple(o.attrs.get("strides", [1, 1])), padding=(pads[0], pads[1]),
                                        dilation=tuple(o.attrs.get("dilations", [1, 1])),
                                        groups=int(o.attrs.get("group", 1)), bias=b))
            g.add_edge(src, name)
            rep[o.outputs[0]] = [(name, 1.0)]
            pending_bn_target[o.outputs[0]] = name
        elif o.op == "BatchNormalization":
            tgt = pending_bn_target.get(x0)
            if tgt is None or len(g.succs(tgt)) > 0:
                raise UnsupportedNodeError("BatchNormalization must directly follow a Conv or Gemm to be folded",
                                           node=o.name)
            s, bb, m, v = (np.asarray(inits[n], dtype=np.float64) for n in o.inputs[1:5])
            k = s / np.sqrt(v + o.attrs.get("epsilon", 1e-5))
            node = g.nodes[tgt]
            wshape = (-1,) + (1,) * (node.weight.ndim - 1)
            new_w, new_b = node.weight * k.reshape(wshape), (node.bias - m) * k + bb
            if isinstance(node, nir.Affine):
                g.nodes[tgt] = nir.Affine(weight=new_w, bias=new_b)
            else:
                g.nodes[tgt] = nir.Conv2d(input_shape=node.input_shape, weight=new_w, stride=node.stride,
                                          padding=node.padding, dilation=node.dilation, groups=node.groups,
                                          bias=new_b)
            rep[o.outputs[0]] = rep[x0]
            pending_bn_target[o.outputs[0]] = tgt
        elif o.op == "Add":
            if o.inputs[1] in inits:  # MatMul + bias
                srcs = rep[x0]
                if len(srcs) != 1 or not isinstance(g.nodes[srcs[0][0]], nir.Affine) or g.succs(srcs[0][0]):
                    raise UnsupportedNodeError("Add of a constant must directly follow a MatMul/Gemm", node=o.name)
                n = g.nodes[srcs[0][0]]
                g.nodes[srcs[0][0]] = nir.Affine(weight=n.weight, bias=n.bias + np.asarray(inits[o.inputs[1]]).reshape(-1))
                rep[o.outputs[0]] = srcs
                pending_bn_target[o.outputs[0]] = srcs[0][0]
            else:
                rep[o.outputs[0]] = rep[x0] + rep[o.inputs[1]]
        elif o.op in ("Relu", "Clip"):
            if o.op == "Clip":
                _clip_bounds(o, inits)
            lam_l = lam[o.outputs[0]]
            if o.op == "Clip":
                lam_l = min(lam_l, _clip_bounds(o, inits)[1])
            name = uniq((o.name or "relu") + "_if")
            n_shape = out_shape
            g.add_node(name, nir.IF(r=np.full(n_shape, 1.0 / dt), v_threshold=np.full(n_shape, lam_l),
                                    v_reset=np.zeros(n_shape)))
            g.annotate(name, Reset("subtract"))
            for src, fac in rep[x0]:
                if isinstance(g.nodes[src], (nir.IF, nir.Input, nir.AvgPool2d, nir.Flatten)) or fac != 1.0:
                    sc = uniq(f"{name}_skip")
                    g.add_node(sc, nir.Scale(scale=np.full(shapes[x0], fac)))
                    g.add_edge(src, sc)
                    g.add_edge(sc, name)
                else:
                    g.add_edge(src, name)
            rep[o.outputs[0]] = [(name, lam_l)]
        elif o.op == "AveragePool":
            src, fac = single_source(x0, o)
            k = tuple(o.attrs["kernel_shape"])
            pads = o.attrs.get("pads", [0, 0, 0, 0])
            if any(pads):
                raise UnsupportedNodeError("padded AveragePool is not supported", node=o.name)
            name = uniq(o.name or "avgpool")
            node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(o.attrs.get("strides", k)),
                                 padding=np.array([0, 0]))
            node.input_type = {"input": np.array(shapes[x0])}
            node.output_type = {"output": np.array(out_shape)}
            g.add_node(name, node)
            g.add_edge(src, name)
            rep[o.outputs[0]] = [(name, fac)]
        elif o.op in ("Flatten", "Reshape"):
            src, fac = single_source(x0, o)
            if o.op == "Flatten" and o.attrs.get("axis", 1) != 1:
                raise UnsupportedNodeError("Flatten with axis != 1 is not supported", node=o.name)
            if len(out_shape) != 1:
                raise UnsupportedNodeError(f"Reshape to {out_shape} is not supported (only flattening)", node=o.name)
            if len(shapes[x0]) == 1:
                rep[o.outputs[0]] = rep[x0]
            else:
                name = uniq(o.name or "flatten")
                g.add_node(name, nir.Flatten(input_type={"input": np.array(shapes[x0])}, start_dim=0, end_dim=-1))
                g.add_edge(src, name)
                rep[o.outputs[0]] = [(name, fac)]
        shapes[o.outputs[0]] = out_shape

    # readout: integrate the logits
    final = rep[out_name]
    oshape = shapes[out_name]
    g.add_node("readout", nir.I(r=np.full(oshape, 1.0 / dt)))
    for src, fac in final:
        if isinstance(g.nodes[src], (nir.IF, nir.Input)) or fac != 1.0:
            sc = uniq("readout_scale")
            g.add_node(sc, nir.Scale(scale=np.full(oshape, fac)))
            g.add_edge(src, sc)
            g.add_edge(sc, "readout")
        else:
            g.add_edge(src, "readout")
    g.add_node("output", nir.Output(output_type={"output": np.array(oshape)}))
    g.add_edge("readout", "output")
    g.verify()
    report = {"thresholds": {k: round(v, 6) for k, v in lam.items()}, "percentile": percentile,
              "encoding": encoding, "timesteps": int(timesteps), "calibration": "synthetic" if synthetic else "data",
              "calibration_samples": int(len(x_cal))}
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
                   encoding=str(o.get("encoding", "current")), dt=float(o.get("dt") or 1e-3), seed=int(o.get("seed", 0)))
