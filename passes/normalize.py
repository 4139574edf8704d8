"""``normalize``: bring any imported graph into the canonical form every later
pass and backend assumes.

* parameters as numpy arrays (torch tensors converted), 0-d neuron parameters
  broadcast to one value per neuron, a missing ``v_reset`` set to 0;
* nested sub-graphs already flattened by :meth:`Graph.from_nir`; NIR
  ``Identity`` nodes bypassed;
* snnTorch's leaked batch dimension removed (an Input/Output of shape (1, *s)
  or (B, *s) next to a node of shape s);
* missing Conv/Flatten input shapes inferred from their predecessors; Conv
  input/output types recomputed (NIR 1.0.8 ignores ``groups`` in the input
  channel count and uses the first kernel dimension for every axis);
* a Delay that is not a whole number of timesteps is warned about (simulators
  round it to the nearest step);
* exporter conventions (:mod:`.conventions`): Input/Output types that differ
  from their neighbour's only in singleton dimensions take its shape (warned);
  the option ``tau_scale`` multiplies every time constant (Norse ≤ 1.1.0 writes
  dt_export·τ: ``--tau-scale 1000``); a τ below dt is warned about with the
  likely exporter bug, and refused where the Euler update would overshoot
  (dt/τ > 1);
* ``exporter`` (``--exporter snntorch|norse|sinabs|rockpool``): the options that
  exporter's convention implies, where not given (:data:`.conventions.EXPORTERS`);
  for Rockpool also its dt, read from ``r``, and its update written as NIR
  parameters under the exact integrator (:func:`.conventions.rockpool_rewrite`);
* graph meta: ``dt`` (s), ``integrator`` (euler|exact), ``reset``
  (zero|subtract) from the compile options, else kept from the model, else
  the defaults dt = 1e-4 s (snnTorch's export convention), euler, zero — a
  defaulted value is reported as a warning because NIR stores none of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Reset
from nmc.errors import GraphError, OptionError, ShapeError
from nmc.ir import Graph
from nmc.nodes import SPIKING_TYPES

from .conventions import TAU_FIELDS, exporter_options, reconcile_io_types, rockpool_rewrite, tau_findings
from .manager import Pass, PassContext, register

DEFAULTS = {"dt": 1e-4, "integrator": "euler", "reset": "zero"}
NIR_NEURONS = (nir.CubaLIF, nir.CubaLI, nir.LI, nir.LIF, nir.IF, nir.I)
_NEURON_FIELDS = ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in")


def _np(v):
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return v


@register
@dataclass(frozen=True)
class Normalize(Pass):
    name = "normalize"
    summary = "canonical form: numpy params, per-neuron arrays, no batch dim, shapes inferred, dt/reset/integrator set"
    provides = ("meta:dt", "meta:integrator", "meta:reset")

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        g.check_edges()  # imported files may hold edges to missing nodes; everything below walks edges
        for name, node in list(g.nodes.items()):
            for k, v in list(vars(node).items()):
                if k in ("input_type", "output_type"):
                    continue
                if hasattr(v, "detach"):
                    setattr(node, k, _np(v))
            if type(node).__name__ == "Identity":
                for p in g.preds(name):
                    for s in g.succs(name):
                        g.add_edge(p, s)
                g.remove_node(name)
        for w in g.meta.pop("warnings", []):  # left by frontends (e.g. an inexact snnTorch reset)
            ctx.warnings.add(w["message"], node=w.get("node"), source="frontend")
        _strip_batch_dim(g)
        _infer_shapes(g)
        for name, node in g.nodes.items():
            if isinstance(node, NIR_NEURONS):
                _broadcast_neuron(name, node)
            if isinstance(node, tuple(_ELEMENTWISE)):
                _broadcast_elementwise(name, node, node.output_type.get("output") if node.output_type else None)
        for name, declared, used in reconcile_io_types(g):
            ctx.warnings.add(f"declared shape {declared} differs from its neighbour's {used} only in dimensions of "
                             f"size 1 (an exporter convention, e.g. Rockpool's output type): read as {used}",
                             node=name, source="normalize")
        opts = exporter_options(g, ctx.options.get("exporter"), ctx.options)
        for key, allowed in (("dt", None), ("integrator", ("euler", "exact")), ("reset", ("zero", "subtract"))):
            val = opts.get(key)
            if val is not None:
                if allowed and val not in allowed:
                    raise OptionError(f"--{key} must be one of {', '.join(allowed)}, not {val!r}")
                if key == "dt" and not (float(val) > 0):
                    raise OptionError(f"--dt must be > 0 seconds, got {val}")
                g.meta[key] = float(val) if key == "dt" else val
            elif key not in g.meta:
                g.meta[key] = DEFAULTS[key]
                if key == "reset" and all(g.ann(n, Reset) is not None for n, nd in g.nodes.items()
                                          if isinstance(nd, SPIKING_TYPES)):
                    continue  # every spiking node states its own reset mode
                ctx.warnings.add(f"{key} not given and not stored in the model; using {DEFAULTS[key]!r} "
                                 f"(set it with --{key})", source="normalize")
        _scale_taus(g, opts.get("tau_scale"))
        if opts.get("exporter") == "rockpool":
            names = rockpool_rewrite(g, g.meta["dt"])
            ctx.warnings.add(f"--exporter rockpool: dt = {g.meta['dt']:g} s read from r; r and w_in of "
                             f"{', '.join(names)} rewritten to Rockpool's update (exact integrator, subtract reset)",
                             node=names[0], source="normalize")
        for f in tau_findings(g, g.meta["dt"], g.meta["integrator"]):
            if f["fatal"]:
                raise GraphError(f["message"], node=f["node"], hint=f["hint"])
            ctx.warnings.add(f"{f['message']}; {f['hint']}", node=f["node"], source="normalize")
        if opts.get("reset") is not None:
            for name, node in g.nodes.items():
                if isinstance(node, SPIKING_TYPES):
                    g.annotate(name, Reset(opts["reset"]))
        for name, node in g.nodes.items():
            if isinstance(node, nir.Delay):
                steps = np.asarray(node.delay, dtype=float) / g.meta["dt"]
                off = np.abs(steps - np.rint(steps))
                if np.any(off > 1e-6):
                    i = int(np.argmax(off))
                    ctx.warnings.add(f"delay {float(np.asarray(node.delay).reshape(-1)[i])} s is not a multiple of "
                                     f"dt = {g.meta['dt']} s; simulated as {int(np.rint(steps.reshape(-1)[i]))} "
                                     f"step(s) (rounded to the nearest step)", node=name, source="normalize")
        return g


def _scale_taus(g: Graph, scale) -> None:
    """``tau_scale``: multiply every time constant (an exporter that wrote τ in other units)."""
    if scale is None:
        return
    try:
        s = float(scale)
    except (TypeError, ValueError):
        s = float("nan")
    if not (s > 0 and np.isfinite(s)):
        raise OptionError(f"--tau-scale must be a positive number, not {scale!r}", hint="e.g. --tau-scale 1000")
    for node in g.nodes.values():
        for k in TAU_FIELDS:
            v = getattr(node, k, None)
            if v is not None:
                setattr(node, k, np.asarray(v, dtype=np.float64) * s)


#: Per-element nodes whose shape is their one parameter's shape (scalars broadcast).
_ELEMENTWISE = {nir.Threshold: "threshold", nir.Scale: "scale", nir.Delay: "delay"}


def _broadcast_elementwise(name: str, node, hint) -> None:
    """Threshold/Scale/Delay: a scalar parameter applies to every element of the
    shape ``hint`` (what the input edge delivers)."""
    field = _ELEMENTWISE[type(node)]
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


def _broadcast_neuron(name: str, node, hint=None) -> None:
    """Give every neuron parameter one value per neuron. The population's shape is
    that of its first parameter with more than one value, else ``hint`` (the
    shape its input edge delivers: all-scalar parameters mean "same for all"),
    else the node's declared output type, else (1,)."""
    shape = None
    for k in _NEURON_FIELDS:
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
    for k in _NEURON_FIELDS:
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


def _strip_batch_dim(g: Graph) -> None:
    for name in g.inputs:
        s = g.shape_out(name)
        nxt = [g.shape_in(n) for n in g.succs(name)]
        if s and len(s) >= 2 and nxt and all(x is not None and tuple(x) == s[1:] for x in nxt):
            g.nodes[name] = nir.Input(input_type={"input": np.array(s[1:])})
    for name in g.outputs:
        s = g.shape_in(name)
        prv = [g.shape_out(n) for n in g.preds(name)]
        if s and len(s) >= 2 and prv and all(x is not None and tuple(x) == s[1:] for x in prv):
            g.nodes[name] = nir.Output(output_type={"output": np.array(s[1:])})


def _infer_shapes(g: Graph) -> None:
    order, back = g.schedule()
    for name in order:
        node = g.nodes[name]
        preds = [p for p in g.preds(name) if (p, name) not in back] or g.preds(name)
        if not preds:
            continue
        src = g.shape_out(preds[0])
        if src is None:
            continue
        if isinstance(node, NIR_NEURONS):
            _broadcast_neuron(name, node, hint=src)
            continue
        if isinstance(node, tuple(_ELEMENTWISE)):
            _broadcast_elementwise(name, node, src)
            continue
        if isinstance(node, nir.Conv2d) and (node.input_shape is None or g.shape_in(name) is None):
            g.nodes[name] = nir.Conv2d(input_shape=tuple(src[-2:]), weight=node.weight, stride=node.stride,
                                       padding=node.padding, dilation=node.dilation, groups=node.groups,
                                       bias=node.bias)
        elif isinstance(node, nir.Conv1d) and (node.input_shape is None or g.shape_in(name) is None):
            g.nodes[name] = nir.Conv1d(input_shape=int(src[-1]), weight=node.weight, stride=node.stride,
                                       padding=node.padding, dilation=node.dilation, groups=node.groups,
                                       bias=node.bias)
        if isinstance(g.nodes[name], (nir.Conv1d, nir.Conv2d)) and g.nodes[name].input_shape is not None:
            _conv_types(g.nodes[name])
            continue
        if isinstance(node, nir.Flatten) and g.shape_in(name) is None:
            g.nodes[name] = nir.Flatten(input_type={"input": np.array(src)}, start_dim=node.start_dim,
                                        end_dim=node.end_dim)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)) and g.shape_in(name) is None:
            k = np.broadcast_to(np.asarray(node.kernel_size), 2)
            st = np.broadcast_to(np.asarray(node.stride), 2)
            pd = np.broadcast_to(np.asarray(node.padding), 2)
            hw = (np.asarray(src[-2:]) + 2 * pd - k) // st + 1
            node.input_type = {"input": np.array(src)}
            node.output_type = {"output": np.array([src[0], *hw])}
        elif isinstance(node, nir.Output) and g.shape_in(name) is None:
            g.nodes[name] = nir.Output(output_type={"output": np.array(src)})


def _conv_types(node) -> None:
    """Correct a Conv1d/Conv2d node's input/output types (in channels = weight.shape[1]·groups,
    kernel extent per axis); NIR 1.0.8's constructor gets both wrong for grouped or
    non-square convolutions."""
    from nir.ir.utils import calculate_conv_output

    w = np.asarray(node.weight)
    spatial = (int(node.input_shape),) if isinstance(node, nir.Conv1d) else tuple(int(x) for x in node.input_shape)
    out = calculate_conv_output(spatial if len(spatial) > 1 else spatial[0], node.padding, node.dilation,
                                tuple(w.shape[2:]) if len(spatial) > 1 else w.shape[2], node.stride)
    node.input_type = {"input": np.array([w.shape[1] * int(node.groups), *spatial])}
    node.output_type = {"output": np.array([w.shape[0], *np.asarray(out).reshape(-1)])}
