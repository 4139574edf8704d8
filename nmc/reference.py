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
* ``nmc.DiagSSM`` / ``nmc.StochasticSSMNeuron`` / ``nmc.LayerNorm``: :mod:`nmc.nodes_ssm`'s
  equations (:mod:`nmc.reference_steps_ssm`); one step per tick, or per event with its own
  interval through :func:`nmc.reference_ssm.run_events`.

Learning rules: a projection with a :class:`nmc.plasticity.Plasticity` annotation changes its
weights after every step (:mod:`nmc.reference_plasticity`); :meth:`ReferenceSimulator.modulate` sets
the third factor, :meth:`ReferenceSimulator.set_rule` changes a running rule's parameters, and
recording a plastic projection adds ``<node>.w`` (its weights after the step).

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
from .iomap import IOMap, validate_inputs
from .graph_meta import GraphMeta
from .ir import Graph
from .reference_steps import tensor
from .plasticity import plastic
from .reference_plasticity import Learner
from . import reference_steps_ssm  # noqa: F401  (registers the SSM nodes' steps)


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

    @property
    def event_time(self) -> bool:
        """The step takes a per-event interval ``tau`` (SSM nodes, :mod:`nmc.reference_steps_ssm`)."""
        return bool(getattr(self.impl, "event_time", False))

    def step(self, x: torch.Tensor, st: dict, tau=None) -> tuple[torch.Tensor, dict, dict]:
        out, st, rec = self.impl.step(x, st, tau) if tau is not None and self.event_time else self.impl.step(x, st)
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
        self.nodes = {k: SimNode(k, graph.nodes[k], graph, dt, integ, dtype) for k in self.order}
        self.preds = {k: graph.preds(k) for k in self.order}
        # learning rules (nmc.plasticity): each learner updates its projection's weight tensor in place
        self.learners = {k: Learner(k, rule, graph, self.nodes[k].impl.p["w"], dt)
                         for k, rule in plastic(graph).items()}
        self.batch = 1
        self.reset()

    def reset(self, batch: int = 1) -> None:
        self.batch = batch
        self.state = {k: n.init_state(batch) for k, n in self.nodes.items()}
        self.prev = {k: torch.zeros((batch, *n.out_shape), dtype=self.dtype) for k, n in self.nodes.items()}
        for lr in self.learners.values():   # the initial weights: run() always starts from them
            lr.reset(batch)

    def reset_state(self, batch: int = 1) -> None:
        """Like :meth:`reset`, but plastic projections keep what they learned (weights, connectome,
        SPORE's θ, the generators' positions): a new trial (a sample, an episode) for a learner."""
        learned = self.learners
        self.learners = {}
        try:
            self.reset(batch)
        finally:
            self.learners = learned
        for lr in learned.values():
            lr.reset_traces(batch)

    def modulate(self, value, projection: str | None = None) -> None:
        """Set the third factor (reward, or error per post neuron) of every plastic projection with
        one (or of ``projection``); it holds until set again (:mod:`nmc.plasticity`)."""
        targets = self._learners(projection)
        if projection is None:
            targets = [lr for lr in targets if lr.rule.third_factor != "none"]
        if not targets:
            raise OptionError("no plastic projection of this graph takes a third factor",
                              hint="give a projection a Plasticity annotation with third_factor='reward' or 'error'")
        for lr in targets:
            lr.modulate(value)

    def set_rule(self, projection: str | None = None, **changes) -> None:
        """Change running rule parameters (learning rate, temperature, ...) of one or every plastic projection."""
        for lr in self._learners(projection):
            lr.set_rule(**changes)

    def _learners(self, projection: str | None) -> list[Learner]:
        if projection is not None and projection not in self.learners:
            raise OptionError(f"'{projection}' is not a plastic projection", node=projection,
                              hint=f"plastic projections: {', '.join(self.learners) or 'none'}")
        return [self.learners[projection]] if projection is not None else list(self.learners.values())

    def step(self, inputs: dict[str, torch.Tensor], record: Iterable[str] = (), tau=None) -> tuple[dict, dict]:
        """One step. ``inputs[name]``: (B, *shape). Returns (outputs, recorded). ``tau`` (B,): this
        step's interval in ticks for event-mode SSM nodes (:func:`nmc.reference_ssm.run_events`)."""
        cur: dict[str, torch.Tensor] = {}
        recd: dict[str, torch.Tensor] = {}
        record = set(record)
        B = self.batch
        pre: dict[str, torch.Tensor] = {}
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
            out, self.state[k], rec = nd.step(x, self.state[k], tau)
            cur[k] = out
            if k in self.learners:
                pre[k] = x
            if k in record:
                recd[f"{k}.out"] = out
                for rk, rv in rec.items():
                    recd[f"{k}.{rk}"] = rv
        for k, lr in self.learners.items():   # after the step: every rule sees this step's pre and post spikes
            lr.update(pre[k], cur[lr.post])
            if k in record:
                recd[f"{k}.w"] = lr.w.clone().expand(B, *lr.w.shape)
        self.prev = cur
        return {k: cur[k] for k in self.graph.outputs}, recd

    def run(self, inputs: dict[str, np.ndarray], steps: int | None = None, record: Iterable[str] = (),
            batched: bool | None = None) -> dict[str, np.ndarray]:
        """Simulate from reset. ``inputs[name]``: (T, *shape) or (T, B, *shape).

        Returns ``{output_node: (T[, B], *shape)}`` plus ``<node>.<var>`` for recorded nodes.
        """
        arrs, T, batched = validate_inputs(IOMap.of_graph(self.graph), inputs, steps, batched)
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
