"""Float reference simulator: the oracle every backend is checked against.

Discrete time with step ``dt`` (seconds), integrator and reset mode from the
graph's :class:`~nmc.graph_meta.GraphMeta` (see :mod:`nmc.dynamics` for the
equations). The graph must have been through the ``normalize`` pass (which
sets them: nmc.compile, nmc.load and every pipeline do); a graph without them
is refused with a GraphError naming the missing key, not run at a guessed dt. Per
timestep, nodes are evaluated in :meth:`nmc.ir.Graph.schedule` order; a node's
input is the **sum** of its predecessors' outputs; edges that close a cycle
deliver the source's output of the previous step (zero at t = 0), all others
deliver within the step. Batched and vectorised over neurons (torch, float64 by
default); the only Python loops are over timesteps and nodes.

Node semantics (x = summed input, B = batch):

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
import torch.nn.functional as F

from . import dynamics as D
from .errors import OptionError, ShapeError, UnsupportedNodeError
from .graph_meta import GraphMeta
from .ir import Graph
from .nodes import EGRU


def _t(a, dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64), dtype=dtype)


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[-1]))


class _Node:
    """Compiled per-node step: parameters as tensors, state init, step."""

    def __init__(self, name: str, node: nir.NIRNode, g: Graph, dt: float, integrator: str, dtype):
        self.name, self.node, self.dtype = name, node, dtype
        self.out_shape = g.shape_out(name)
        self.in_shape = g.shape_in(name)
        self.reset = g.reset_mode(name)
        self.dt, self.integrator = dt, integrator
        n = node
        p = lambda a: _t(a, dtype)  # noqa: E731
        self.p: dict[str, torch.Tensor] = {}
        if isinstance(n, (nir.Affine, nir.Linear)):
            self.p["w"] = p(n.weight)
            self.p["b"] = p(n.bias) if isinstance(n, nir.Affine) else None
        elif isinstance(n, nir.Scale):
            self.p["s"] = p(n.scale)
        elif isinstance(n, (nir.Conv1d, nir.Conv2d)):
            self.p["w"], self.p["b"] = p(n.weight), p(n.bias)
        elif isinstance(n, nir.Threshold):
            self.p["thr"] = p(n.threshold)
        elif isinstance(n, nir.Delay):
            steps = np.rint(np.asarray(n.delay, dtype=float) / dt).astype(np.int64)
            if np.any(steps < 0):
                raise ShapeError("negative delay", node=name)
            self.delay_steps = torch.as_tensor(np.broadcast_to(steps, self.out_shape).copy())
            self.depth = int(self.delay_steps.max()) + 1
        elif isinstance(n, EGRU):
            for k in ("w_x", "w_h", "b_x", "b_h", "thr"):
                self.p[k] = p(getattr(n, k))
        else:
            for k in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in"):
                if hasattr(n, k) and getattr(n, k) is not None:
                    self.p[k] = p(np.broadcast_to(np.asarray(getattr(n, k), dtype=float), self.out_shape))

    def init_state(self, batch: int) -> dict:
        z = lambda: torch.zeros((batch, *self.out_shape), dtype=self.dtype)  # noqa: E731
        n = self.node
        if isinstance(n, (nir.LIF, nir.LI, nir.I, nir.IF)):
            return {"v": z()}
        if isinstance(n, (nir.CubaLIF, nir.CubaLI)):
            return {"v": z(), "i": z()}
        if isinstance(n, EGRU):
            return {"v": z(), "y": z()}
        if isinstance(n, nir.Delay):
            return {"buf": torch.zeros((self.depth, batch, *self.out_shape), dtype=self.dtype), "pos": 0}
        return {}

    def step(self, x: torch.Tensor, st: dict) -> tuple[torch.Tensor, dict]:
        n, p, dt, integ = self.node, self.p, self.dt, self.integrator
        B = x.shape[0]
        rec: dict = {}
        if isinstance(n, (nir.Input, nir.Output)):
            out = x
        elif isinstance(n, (nir.Affine, nir.Linear)):
            out = x.reshape(B, -1) @ p["w"].T
            if p["b"] is not None:
                out = out + p["b"]
        elif isinstance(n, nir.Scale):
            out = x * p["s"]
        elif isinstance(n, nir.Conv2d):
            pad = n.padding if isinstance(n.padding, str) else _pair(n.padding)
            out = F.conv2d(x, p["w"], p["b"], stride=_pair(n.stride), padding=pad,
                           dilation=_pair(n.dilation), groups=int(n.groups))
        elif isinstance(n, nir.Conv1d):
            pad = n.padding if isinstance(n.padding, str) else int(np.asarray(n.padding).reshape(-1)[0])
            out = F.conv1d(x, p["w"], p["b"], stride=int(np.asarray(n.stride).reshape(-1)[0]), padding=pad,
                           dilation=int(np.asarray(n.dilation).reshape(-1)[0]), groups=int(n.groups))
        elif isinstance(n, (nir.SumPool2d, nir.AvgPool2d)):
            k, s, pd = _pair(n.kernel_size), _pair(n.stride), _pair(n.padding)
            out = F.avg_pool2d(x, k, s, pd, divisor_override=1 if isinstance(n, nir.SumPool2d) else None)
        elif isinstance(n, nir.Flatten):
            out = x.reshape(B, *self.out_shape)
        elif isinstance(n, nir.Threshold):
            out = D.heaviside(x - p["thr"])
            rec["spikes"] = out
        elif isinstance(n, nir.Delay):
            buf, pos = st["buf"], st["pos"]
            buf[pos] = x
            idx = (pos - self.delay_steps) % self.depth
            out = torch.gather(buf, 0, idx.expand(B, *self.out_shape).unsqueeze(0)).squeeze(0)
            st = {"buf": buf, "pos": (pos + 1) % self.depth}
        elif isinstance(n, (nir.I, nir.IF)):
            v = D.integrate(st["v"], x, p["r"], dt)
            if isinstance(n, nir.IF):
                out, v = D.fire(v, p["v_threshold"], p["v_reset"], self.reset)
                rec["spikes"] = out
            else:
                out = v
            st = {"v": v}
        elif isinstance(n, (nir.LI, nir.LIF)):
            v = D.leaky(st["v"], x, p["tau"], p["r"], p["v_leak"], dt, integ)
            if isinstance(n, nir.LIF):
                out, v = D.fire(v, p["v_threshold"], p["v_reset"], self.reset)
                rec["spikes"] = out
            else:
                out = v
            st = {"v": v}
        elif isinstance(n, (nir.CubaLI, nir.CubaLIF)):
            i = D.synaptic(st["i"], x, p["tau_syn"], p["w_in"], dt, integ)
            v = D.leaky(st["v"], i, p["tau_mem"], p["r"], p["v_leak"], dt, integ)
            if isinstance(n, nir.CubaLIF):
                out, v = D.fire(v, p["v_threshold"], p["v_reset"], self.reset)
                rec["spikes"] = out
            else:
                out = v
            st = {"v": v, "i": i}
            rec["i"] = i
        elif isinstance(n, EGRU):
            y, c, o = D.egru_step(x.reshape(B, -1), st["v"], st["y"], p["w_x"], p["w_h"], p["b_x"], p["b_h"], p["thr"])
            out, st = y, {"v": c, "y": y}
            rec["spikes"] = o
        else:
            raise UnsupportedNodeError(f"the reference simulator has no semantics for {type(n).__name__}",
                                       node=self.name)
        if "v" in st:
            rec["v"] = st["v"]
        return out, st, rec


class ReferenceSimulator:
    """Stateful float simulation of a :class:`Graph`.

    ``run(inputs, steps)`` resets and simulates; ``step(inputs_t)`` advances one
    timestep keeping state (used by runtime sessions); ``reset(batch)``.
    ``graph``: a normalized graph (``dt``/``integrator``/``reset`` set, see the module doc).
    """

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        graph.verify()
        self.graph = graph
        self.dtype = dtype
        meta = GraphMeta.of(graph)   # set by normalize; a graph it has not seen is refused, never guessed at
        dt, integ = meta.dt, meta.integrator
        self.order, self.back = graph.schedule()
        self.nodes = {k: _Node(k, graph.nodes[k], graph, dt, integ, dtype) for k in self.order}
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
        tens = {k: _t(v, self.dtype) for k, v in arrs.items()}
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
