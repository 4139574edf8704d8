"""PyTorch frontend, tracing: a module's layer structure → a Graph.

:func:`from_module` walks a ``nn.Sequential`` (or Norse ``SequentialState``)
layer by layer, or traces any other module with ``torch.fx`` (neuron layers as
leaves; ``+`` of two branches becomes summed edges), and converts each layer
with :mod:`.convert`. The user's module is never run or copied: stateless layers
are evaluated on a dummy input for their output shapes.
"""
from __future__ import annotations

import operator

import nir
import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from nmc import nn as nnn
from nmc.errors import ShapeError, UnsupportedNodeError
from nmc.ir import Graph

from .convert import DEFAULT_DT, _attach, _convert, _is_neuron_module, _lm_graph, _run_step
from .ssm import SSM_LAYERS, finish_graph, stack_graph


def _is_leaf(m: nn.Module) -> bool:
    mod = type(m).__module__
    return (isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI, nnn.EGRU, *SSM_LAYERS))
            or mod.startswith(("snntorch", "norse"))
            or not any(True for _ in m.children()))


def _flatten_seq(m: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]] | None:
    """Layers of a Sequential-like container in order (nested ones inlined), else None."""
    names = {"Sequential", "SequentialState"}
    if type(m).__name__ not in names:
        return None
    out = []
    for k, c in m.named_children():
        sub = _flatten_seq(c, f"{prefix}{k}.")
        out += sub if sub is not None else [(f"{prefix}{k}", c)]
    return out


def _guess_input_shape(m: nn.Module):
    for c in m.modules():
        if isinstance(c, nn.Linear):
            return (c.in_features,)
        if isinstance(c, nnn.EGRU):
            return (c.input_size,)
        if isinstance(c, nnn.DiagSSM):
            return (c.d_model,)
        if isinstance(c, nnn.StochasticSpikingSSM):
            return (c.size,)
        if type(c).__name__ == "LIFRecurrentCell":
            return (int(c.input_size),)
        if isinstance(c, (nn.Conv1d, nn.Conv2d)) or (c is not m and any(True for _ in c.children()) is False
                                                        and not isinstance(c, (nn.Flatten, nn.Identity, nn.Dropout))):
            return None
    return None


def _has_snntorch(m) -> bool:
    return any(type(c).__module__.startswith("snntorch") for c in m.modules())


def from_module(module: nn.Module, *, input_shape=None, dt: float | None = None) -> Graph:
    """Convert a PyTorch module (nmc.nn / snnTorch / Norse / torch layers) to a Graph."""
    # the user's module is never run or copied: stateless layers are evaluated on a dummy
    # input for their output shapes; neuron layers keep the shape (EGRU: its hidden size)
    if isinstance(module, nnn.EGRULanguageModel):
        return _lm_graph(module, dt)
    dts = {float(m.dt) for m in module.modules() if hasattr(m, "dt") and isinstance(getattr(m, "dt"), (int, float))
           and type(m).__module__.startswith(("nmc", "norse"))}
    dt = float(dt) if dt is not None else (min(dts) if dts else (1e-4 if _has_snntorch(module) else DEFAULT_DT))
    if isinstance(module, (nnn.DiagSSMStack, nnn.SSMBlock)):
        return stack_graph(module, dt, _attach, _convert)
    if input_shape is None:
        input_shape = _guess_input_shape(module)
        if input_shape is None:
            raise ShapeError("cannot infer the model's input shape from its first layer", node=type(module).__name__,
                             hint="pass input_shape=(C, H, W) (CLI: --input-shape C,H,W)")
    input_shape = tuple(int(x) for x in input_shape)
    seq = _flatten_seq(module)
    g = Graph(meta={"dt": dt})
    g.add_node("input", nir.Input(input_type={"input": np.array(input_shape)}))
    warnings: list[tuple[str, str]] = []
    integrators: dict[str, str] = {}  # leaky node -> the integrator its layer was trained with
    pdt = next((q.dtype for q in module.parameters()), torch.get_default_dtype())
    x = torch.zeros((1, *input_shape), dtype=pdt)
    with torch.no_grad():
        if seq is not None:
            prev = "input"
            for name, m in seq:
                try:
                    y = _run_step(m, x)
                except Exception as e:
                    raise ShapeError(f"layer rejects an input of shape {tuple(x.shape[1:])}: {e}", node=name,
                                     hint="check input_shape / --input-shape") from None
                sub = _convert(name, m, tuple(x.shape[1:]), tuple(y.shape[1:]), dt)
                x = y
                if sub is None:
                    continue
                prev = _attach(g, sub, [prev], warnings, integrators)
            exits = [prev]
        else:
            exits = _trace(module, g, x, dt, warnings, integrators)
    out_shape = g.shape_out(exits[0]) if exits[0] != "input" else input_shape
    return finish_graph(g, exits, out_shape, integrators, dt, warnings)


def _trace(module: nn.Module, g: Graph, x: torch.Tensor, dt, warnings, integrators) -> list[str]:
    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return _is_leaf(m)

    try:
        graph = _Tracer().trace(module)
    except Exception as e:
        raise UnsupportedNodeError(f"cannot trace the model's forward with torch.fx ({type(e).__name__}: {e})",
                                   node=type(module).__name__,
                                   hint="write the model as nn.Sequential or avoid data-dependent control flow") from None
    class _Shape(nn.Module):  # stands in for a neuron layer during shape propagation only
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, *a, **k):
            return _run_step(self.m, x)

    root = {n.target: (_Shape(module.get_submodule(n.target)) if _is_neuron_module(module.get_submodule(n.target))
                       else module.get_submodule(n.target)) for n in graph.nodes if n.op == "call_module"}
    ShapeProp(fx.GraphModule(root, graph)).propagate(x)
    gm = fx.GraphModule(module, graph)
    where: dict[str, list[str]] = {}  # fx node -> graph nodes whose summed output it is
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if where:
                raise UnsupportedNodeError("models with several inputs are not supported", node=n.name)
            where[n.name] = ["input"]
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            src = n.args[0]
            in_shape = tuple(src.meta["tensor_meta"].shape[1:])
            tm = n.meta.get("tensor_meta")
            tm = tm if hasattr(tm, "shape") else tm[0]
            sub = _convert(str(n.target), m, in_shape, tuple(tm.shape[1:]), dt)
            where[n.name] = where[src.name] if sub is None else [_attach(g, sub, where[src.name], warnings, integrators)]
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            a, b = n.args[:2]
            if not all(isinstance(v, fx.Node) for v in (a, b)):
                raise UnsupportedNodeError("adding a constant is not supported (use a bias)", node=n.name)
            where[n.name] = where[a.name] + where[b.name]
        elif n.op == "call_function" and n.target is operator.getitem and n.args[1] == 0:
            where[n.name] = where[n.args[0].name]
        elif n.op == "call_function" and n.target in (torch.flatten,):
            src = n.args[0]
            in_shape = tuple(src.meta["tensor_meta"].shape[1:])
            name = n.name
            for p_ in where[src.name]:
                pass
            g.add_node(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1))
            for p_ in where[src.name]:
                g.add_edge(p_, name)
            where[n.name] = [name]
        elif n.op == "output":
            res = n.args[0]
            if isinstance(res, (tuple, list)):
                res = res[0]
            return where[res.name]
        else:
            raise UnsupportedNodeError(f"operation {n.op} {getattr(n.target, '__name__', n.target)} is not supported",
                                       node=n.name, hint="use nn modules (Linear, Conv2d, AvgPool2d, Flatten) and +")
    raise UnsupportedNodeError("model has no output", node=type(module).__name__)
