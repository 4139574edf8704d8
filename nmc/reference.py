"""Float reference simulator: the oracle every backend is checked against.

Discrete time with step ``dt`` (graph meta ``dt``, seconds), integrator and
reset mode from the graph (see :mod:`nmc.dynamics` for the equations). Per
timestep, nodes are evaluated in :meth:`nmc.ir.Graph.schedule` order; a node's
input is the **sum** of its predecessors' outputs; edges that close a cycle
deliver the source's output of the previous step (zero at t = 0), all others
deliver within the step. Batched and vectorised over neurons (torch, float64 by
default); the only Python loops are over timesteps and nodes.

Node semantics (x = summed input, B = batch; each type's step is registered
with its registry entry in :mod:`nmc.reference_steps`):

* ``Input``: the given input at t; ``Output``: x.
* ``Affine``: W·x + b; ``Linear``: W·x; ``Scale``: s ⊙ x (W is (out, in)).
* ``Conv1d``/``Conv2d``: torch convolution with NIR's stride/padding/dilation/groups, + bias.
* ``SumPool2d``: window sums; ``AvgPool2d``: window means (zero padding counted).
* ``Flatten``: reshape to the node's output shape.
* ``Delay``: x delayed by round(delay/dt) steps per channel.
* ``Threshold``: H(x − θ).
* ``I``: v += dt·R·x, output v. ``IF``: same, then spike/reset, output spikes.
* ``LI``/``CubaLI``: leaky (current-based) integrator, output v.
* ``LIF``/``CubaLIF``: leaky (current-based) integrate-and-fire, output spikes.
* ``nmc.EGRU``: :func:`nmc.dynamics.egru_step`, output the graded events y.

Recording: ``<node>.out`` (any node's output), ``<node>.v`` (membrane or cell
state, after reset), ``<node>.i`` (synaptic current), ``<node>.spikes``
(spiking nodes; for EGRU the event flags o).
"""
from __future__ import annotations

from typing import Iterable

import nir
import numpy as np
import torch

from . import semantics
from .errors import OptionError, ShapeError, UnsupportedNodeError
from .ir import Graph
from .reference_steps import tensor


class SimNode:
    """A graph node compiled for the simulator: its shapes, reset mode and numerics, and
    the step of its node type (the registry entry's ``("reference", "step")`` hook, see
    :mod:`nmc.reference_steps`)."""

    def __init__(self, name: str, node: nir.NIRNode, g: Graph, dt: float, integrator: str, dtype):
        self.name, self.node, self.dtype = name, node, dtype
        self.out_shape = g.shape_out(name)
        self.in_shape = g.shape_in(name)
        self.reset = g.reset_mode(name)
        self.dt, self.integrator = dt, integrator
        self.entry = semantics.of(node, name=name)
        impl = self.entry.reference()
        if impl is None:
            raise UnsupportedNodeError(f"the reference simulator has no semantics for {type(node).__name__}",
                                       node=name)
        self.impl = impl(self)

    def init_state(self, batch: int) -> dict:
        return self.impl.init_state(batch)

    def step(self, x: torch.Tensor, st: dict) -> tuple[torch.Tensor, dict, dict]:
        out, st, rec = self.impl.step(x, st)
        if "v" in st:
            rec["v"] = st["v"]
        return out, st, rec


class ReferenceSimulator:
    """Stateful float simulation of a :class:`Graph`.

    ``run(inputs, steps)`` resets and simulates; ``step(inputs_t)`` advances one
    timestep keeping state (used by runtime sessions); ``reset(batch)``.
    """

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        graph.verify()
        self.graph = graph
        self.dtype = dtype
        dt = float(graph.meta.get("dt", 1e-4))
        integ = graph.meta.get("integrator", "euler")
        if integ not in ("euler", "exact"):
            raise OptionError(f"unknown integrator {integ!r}", hint="use 'euler' or 'exact'")
        self.order, self.back = graph.schedule()
        self.nodes = {k: SimNode(k, graph.nodes[k], graph, dt, integ, dtype) for k in self.order}
        self.preds = {k: graph.preds(k) for k in self.order}
        self.batch = 1
        self.reset()

    def reset(self, batch: int = 1) -> None:
        self.batch = batch
        self.state = {k: n.init_state(batch) for k, n in self.nodes.items()}
        self.prev = {k: torch.zeros((batch, *n.out_shape), dtype=self.dtype) for k, n in self.nodes.items()}

    def step(self, inputs: dict[str, torch.Tensor], record: Iterable[str] = ()) -> tuple[dict, dict]:
        """One step. ``inputs[name]``: (B, *shape). Returns (outputs, recorded)."""
        cur: dict[str, torch.Tensor] = {}
        recd: dict[str, torch.Tensor] = {}
        record = set(record)
        B = self.batch
        for k in self.order:
            nd = self.nodes[k]
            if k in self.graph.inputs:
                x = inputs[k]
            else:
                x = None
                for s in self.preds[k]:
                    v = self.prev[s] if (s, k) in self.back else cur[s]
                    x = v if x is None else x + v
                x = x.reshape(B, *nd.in_shape)
            out, self.state[k], rec = nd.step(x, self.state[k])
            cur[k] = out
            if k in record:
                recd[f"{k}.out"] = out
                for rk, rv in rec.items():
                    recd[f"{k}.{rk}"] = rv
        self.prev = cur
        return {k: cur[k] for k in self.graph.outputs}, recd

    def run(self, inputs: dict[str, np.ndarray], steps: int | None = None, record: Iterable[str] = (),
            batched: bool | None = None) -> dict[str, np.ndarray]:
        """Simulate from reset. ``inputs[name]``: (T, *shape) or (T, B, *shape).

        Returns ``{output_node: (T[, B], *shape)}`` plus ``<node>.<var>`` for recorded nodes.
        """
        arrs, T, batched = check_inputs(self.graph, inputs, steps, batched)
        record = list(record)
        for r in record:
            if r not in self.graph.nodes:
                raise OptionError(f"cannot record unknown node '{r}'", node=r,
                                  hint=f"nodes: {', '.join(self.graph.nodes)}")
        B = next(iter(arrs.values())).shape[1]
        self.reset(B)
        tens = {k: tensor(v, self.dtype) for k, v in arrs.items()}
        outs: dict[str, list] = {}
        with torch.no_grad():
            for t in range(T):
                o, r = self.step({k: v[t] if t < v.shape[0] else torch.zeros_like(v[0]) for k, v in tens.items()},
                                 record)
                for k, v in {**o, **r}.items():
                    outs.setdefault(k, []).append(v)
        res = {k: torch.stack(v).numpy() for k, v in outs.items()}
        if not batched:
            res = {k: v[:, 0] for k, v in res.items()}
        return res


def check_inputs(graph: Graph, inputs: dict, steps: int | None, batched: bool | None):
    """Validate ``inputs`` against the graph's input nodes; return ((T, B, *shape) arrays, T, batched).

    Inputs shorter than ``steps`` are padded with zeros (silence), never truncated
    silently: ``steps`` smaller than the input length is an error.
    """
    if not isinstance(inputs, dict):
        if len(graph.inputs) == 1:
            inputs = {graph.inputs[0]: inputs}
        else:
            raise ShapeError(f"graph has {len(graph.inputs)} inputs; pass a dict keyed by {graph.inputs}")
    missing = [k for k in graph.inputs if k not in inputs]
    extra = [k for k in inputs if k not in graph.inputs]
    if missing:
        raise ShapeError("no input given for this input node", node=missing[0],
                         hint=f"provide arrays named {graph.inputs}")
    if extra:
        raise ShapeError("input given for a node that is not an input of the graph", node=extra[0],
                         hint=f"input nodes: {graph.inputs}")
    out, T, bflag = {}, None, batched
    for k in graph.inputs:
        a = np.asarray(inputs[k])
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise ShapeError(f"input array has dtype {a.dtype}, expected numbers", node=k)
        shp = graph.shape_out(k)
        if bflag is None:
            bflag = a.ndim == len(shp) + 2
        want = len(shp) + (2 if bflag else 1)
        if a.ndim != want or tuple(a.shape[-len(shp):] if shp else ()) != shp:
            raise ShapeError(f"input array has shape {a.shape}, expected (T, {', '.join(map(str, shp))})"
                             + (" with a batch axis after T" if bflag else ""), node=k,
                             hint="arrays are time-major: (timesteps, *node shape)")
        if not np.all(np.isfinite(a)):
            raise ShapeError("input array has non-finite values", node=k)
        if a.shape[0] < 1 or (bflag and a.shape[1] < 1):
            raise ShapeError(f"input array has shape {a.shape}: " + ("no timesteps (T = 0)" if a.shape[0] < 1
                             else "an empty batch (batch = 0)"), node=k,
                             hint="give at least one timestep and one sample: (T >= 1[, batch >= 1], *node shape)")
        if not bflag:
            a = a[:, None]
        out[k] = a
        T = a.shape[0] if T is None else max(T, a.shape[0])
    if steps is not None:
        if steps < 1:
            raise OptionError(f"--steps must be >= 1, got {steps}", limit=1, actual=steps,
                              hint="omit --steps to run the input's length")
        from .limits import check_shape_alloc

        B = max(a.shape[1] for a in out.values())
        for k in graph.outputs:  # each output is recorded for every step: (steps, B, *shape) float64
            check_shape_alloc((steps, B, *graph.shape_in(k)), 8, f"--steps {steps}: output '{k}'", node=k,
                              error=OptionError, hint="run fewer steps")
        if steps < T:
            raise ShapeError(f"--steps {steps} is shorter than the input ({T} steps); events would be lost",
                             limit=steps, actual=T, hint="omit --steps or pass a larger value")
        T = steps
    return out, T, bflag
