"""Shape rules of the node types (the ``shape`` field of a registry entry).

``normalize`` applies them in schedule order: ``rule(g, name, src)`` gives node
``name`` its input/output types (and one value per element for its per-element
parameters) from the shape ``src`` its first input edge delivers. Moved here
from ``passes/normalize.py`` so each node type's rule sits with its entry.
"""
from __future__ import annotations

import nir
import numpy as np
from nir.ir.utils import calculate_conv_output

from nmc.errors import ShapeError

from .registry import Kind, lookup


def _np(v):
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return v


def fixed(g, name: str, src) -> None:
    """The node's own fields (weights, declared types) fix its shape: nothing to infer."""


def broadcast_elementwise(name: str, node, field: str, hint) -> None:
    """Threshold/Scale/Delay: a scalar parameter ``field`` applies to every element of the
    shape ``hint`` (what the input edge delivers)."""
    a = np.asarray(_np(getattr(node, field)), dtype=np.float64)
    if a.size > 1:
        shape = a.shape
    elif hint is not None and len(hint):
        shape = tuple(int(x) for x in hint)
    else:
        shape = a.shape if a.ndim else (1,)
    try:
        a = np.broadcast_to(a, shape).copy()
    except ValueError:
        raise ShapeError(f"parameter '{field}' of shape {a.shape} does not broadcast to {shape}", node=name) from None
    setattr(node, field, a)
    node.input_type = {"input": np.array(shape)}
    node.output_type = {"output": np.array(shape)}


def broadcast_neuron(name: str, node, fields, hint=None) -> None:
    """Give every neuron parameter (``fields``) one value per neuron. The population's shape is
    that of its first parameter with more than one value, else ``hint`` (the
    shape its input edge delivers: all-scalar parameters mean "same for all"),
    else the node's declared output type, else (1,)."""
    shape = None
    for k in fields:
        v = getattr(node, k, None)
        if v is not None and np.size(v) > 1:
            shape = np.shape(v)
            break
    if shape is None and hint is not None and len(hint):
        shape = tuple(int(x) for x in hint)
    if shape is None:
        shape = tuple(int(x) for x in np.asarray(node.output_type["output"]).reshape(-1)) if node.output_type.get("output") is not None else (1,)
        if len(shape) == 0:
            shape = (1,)
    for k in fields:
        if not hasattr(node, k):
            continue
        v = getattr(node, k)
        if v is None and k == "v_reset":
            v = 0.0
        if v is None:
            continue
        a = np.asarray(_np(v), dtype=np.float64)
        try:
            setattr(node, k, np.broadcast_to(a, shape).copy())
        except ValueError:
            raise ShapeError(f"parameter '{k}' of shape {a.shape} does not broadcast to {shape}", node=name) from None
    node.input_type = {"input": np.array(shape)}
    node.output_type = {"output": np.array(shape)}


def broadcast_params(name: str, node) -> None:
    """A node's per-element parameters to one value per element, before shapes are inferred
    (neurons: their own parameters fix the population; elementwise nodes: their declared type)."""
    e = lookup(node)
    if e is None or not e.params:
        return
    if e.kind is Kind.NEURON:
        broadcast_neuron(name, node, e.params)
    else:
        broadcast_elementwise(name, node, e.params[0], node.output_type.get("output") if node.output_type else None)


def neuron(g, name: str, src) -> None:
    broadcast_neuron(name, g.nodes[name], lookup(g.nodes[name]).params, hint=src)


def elementwise(g, name: str, src) -> None:
    broadcast_elementwise(name, g.nodes[name], lookup(g.nodes[name]).params[0], src)


def conv(g, name: str, src) -> None:
    """A missing input shape from the input edge; then the input/output types recomputed."""
    node = g.nodes[name]
    if node.input_shape is None or g.shape_in(name) is None:
        shp = tuple(src[-2:]) if isinstance(node, nir.Conv2d) else int(src[-1])
        g.nodes[name] = type(node)(input_shape=shp, weight=node.weight, stride=node.stride, padding=node.padding,
                                   dilation=node.dilation, groups=node.groups, bias=node.bias)
    if g.nodes[name].input_shape is not None:
        conv_types(g.nodes[name])


def conv_types(node) -> None:
    """Correct a Conv1d/Conv2d node's input/output types (in channels = weight.shape[1]·groups,
    kernel extent per axis); NIR 1.0.8's constructor gets both wrong for grouped or
    non-square convolutions."""
    w = np.asarray(node.weight)
    spatial = (int(node.input_shape),) if isinstance(node, nir.Conv1d) else tuple(int(x) for x in node.input_shape)
    out = calculate_conv_output(spatial if len(spatial) > 1 else spatial[0], node.padding, node.dilation,
                                tuple(w.shape[2:]) if len(spatial) > 1 else w.shape[2], node.stride)
    node.input_type = {"input": np.array([w.shape[1] * int(node.groups), *spatial])}
    node.output_type = {"output": np.array([w.shape[0], *np.asarray(out).reshape(-1)])}


def flatten(g, name: str, src) -> None:
    node = g.nodes[name]
    if g.shape_in(name) is None:
        g.nodes[name] = nir.Flatten(input_type={"input": np.array(src)}, start_dim=node.start_dim,
                                    end_dim=node.end_dim)


def pool2d(g, name: str, src) -> None:
    node = g.nodes[name]
    if g.shape_in(name) is None:
        k = np.broadcast_to(np.asarray(node.kernel_size), 2)
        st = np.broadcast_to(np.asarray(node.stride), 2)
        pd = np.broadcast_to(np.asarray(node.padding), 2)
        hw = (np.asarray(src[-2:]) + 2 * pd - k) // st + 1
        node.input_type = {"input": np.array(src)}
        node.output_type = {"output": np.array([src[0], *hw])}


def output(g, name: str, src) -> None:
    if g.shape_in(name) is None:
        g.nodes[name] = nir.Output(output_type={"output": np.array(src)})
