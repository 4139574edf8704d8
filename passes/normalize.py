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
* graph meta (:class:`nmc.graph_meta.GraphMeta`, set here once and read
  through ``GraphMeta.of`` by everything after): ``dt`` (s), ``integrator``
  (euler|exact), ``reset`` (zero|subtract) from the compile options, else kept
  from the model, else the defaults dt = 1e-4 s (snnTorch's export
  convention), euler, zero — a defaulted value is reported as a warning
  because NIR stores none of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Reset
from nmc.errors import GraphError, OptionError, ShapeError
from nmc.graph_meta import DEFAULTS, INTEGRATORS, KEYS, RESETS, GraphMeta, check_dt
from nmc.ir import Graph
from nmc.nodes import is_spiking_neuron
from nmc.semantics import lookup, shapes

from .conventions import TAU_FIELDS, exporter_options, reconcile_io_types, rockpool_rewrite, tau_findings
from .manager import Pass, PassContext, register

_np = shapes._np


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
            shapes.broadcast_params(name, node)  # per-neuron / per-element parameters (registry entry's params)
        for name, declared, used in reconcile_io_types(g):
            ctx.warnings.add(f"declared shape {declared} differs from its neighbour's {used} only in dimensions of "
                             f"size 1 (an exporter convention, e.g. Rockpool's output type): read as {used}",
                             node=name, source="normalize")
        opts = exporter_options(g, ctx.options.get("exporter"), ctx.options)
        for key, allowed in (("integrator", INTEGRATORS), ("reset", RESETS)):
            if opts.get(key) is not None and opts[key] not in allowed:
                raise OptionError(f"--{key} must be one of {', '.join(allowed)}, not {opts[key]!r}")
        if opts.get("dt") is not None:
            check_dt(opts["dt"])
        chosen = {}
        for key in KEYS:  # the compile option, else the model's stored value, else the default (warned)
            if opts.get(key) is not None:
                chosen[key] = float(opts[key]) if key == "dt" else opts[key]
            elif key in g.meta:
                chosen[key] = g.meta[key]
            else:
                chosen[key] = DEFAULTS[key]
                if key == "reset" and all(g.ann(n, Reset) is not None for n, nd in g.nodes.items()
                                          if is_spiking_neuron(nd)):
                    continue  # every spiking node states its own reset mode
                ctx.warnings.add(f"{key} not given and not stored in the model; using {DEFAULTS[key]!r} "
                                 f"(set it with --{key})", source="normalize")
        meta = GraphMeta(**chosen)
        meta.store(g)
        _scale_taus(g, opts.get("tau_scale"))
        if opts.get("exporter") == "rockpool":
            names = rockpool_rewrite(g, meta.dt)
            ctx.warnings.add(f"--exporter rockpool: dt = {meta.dt:g} s read from r; r and w_in of "
                             f"{', '.join(names)} rewritten to Rockpool's update (exact integrator, subtract reset)",
                             node=names[0], source="normalize")
        for f in tau_findings(g, meta.dt, meta.integrator):
            if f["fatal"]:
                raise GraphError(f["message"], node=f["node"], hint=f["hint"])
            ctx.warnings.add(f"{f['message']}; {f['hint']}", node=f["node"], source="normalize")
        if opts.get("reset") is not None:
            for name, node in g.nodes.items():
                if is_spiking_neuron(node):
                    g.annotate(name, Reset(opts["reset"]))
        for name, node in g.nodes.items():   # node types with a per-element delay (nir.Delay): whole steps
            e = lookup(node)
            if e is not None and "delay" in e.params:
                steps = np.asarray(node.delay, dtype=float) / meta.dt
                off = np.abs(steps - np.rint(steps))
                if np.any(off > 1e-6):
                    i = int(np.argmax(off))
                    ctx.warnings.add(f"delay {float(np.asarray(node.delay).reshape(-1)[i])} s is not a multiple of "
                                     f"dt = {meta.dt} s; simulated as {int(np.rint(steps.reshape(-1)[i]))} "
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
    """Each node's shape rule (its registry entry's, :mod:`nmc.semantics.shapes`), in schedule
    order, from the shape its first input edge delivers."""
    order, back = g.schedule()
    for name in order:
        node = g.nodes[name]
        preds = [p for p in g.preds(name) if (p, name) not in back] or g.preds(name)
        if not preds:
            continue
        src = g.shape_out(preds[0])
        entry = lookup(node)
        if src is None or entry is None:
            continue
        entry.shape(g, name, src)


