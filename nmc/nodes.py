"""nmc's extension nodes: what NIR 1.0.8 cannot say.

Each is a dataclass deriving from :class:`nir.NIRNode` (so it can sit in a
``nir.NIRGraph`` beside NIR's own nodes) with its discrete-time equations in
the docstring. They are written to and read from nmc's NIR HDF5 files under the
type name ``nmc.<Class>`` (see :mod:`nmc.serialize`); NIR's own reader rejects
them, and :meth:`nmc.ir.Graph.to_nir` refuses to export them, naming the node.

The state-space-model nodes (``DiagSSM``, ``StochasticSSMNeuron``, ``LayerNorm``)
live in :mod:`nmc.nodes_ssm` and are re-exported here.

Each registers its :class:`~nmc.semantics.NodeType` entry right after its
class (kind, shape rule, counters; its reference step is in
:mod:`nmc.reference_steps`). Also here: the file allow-list
(:func:`node_class`, through the registry) and small helpers every
pass/backend uses to classify nodes (:func:`is_neuron`, :func:`is_weight`),
which ask the registry.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from . import semantics
from .errors import UnknownNodeTypeError
from .extension_node import ExtensionNode
from .semantics import shapes
from .semantics.nir_types import CELL


@dataclass(eq=False)
class EGRU(ExtensionNode):
    """Event-based GRU cell (EvNN semantics), one step per timestep.

    Weights use NIR's (out, in) orientation with the three gates stacked in the
    order z, r, g (rows ``[0:H]`` = z, ``[H:2H]`` = r, ``[2H:3H]`` = g)::

        [xz, xr, xg] = W_x · x_t + b_x             W_x: (3H, in),  b_x: (3H,)
        [hz, hr, hg] = W_h · y_{t-1} + b_h         W_h: (3H, H),   b_h: (3H,)   (only events y feed back)
        z = σ(xz + hz);   r = σ(xr + hr);   g = tanh(xg + r ⊙ hg)
        ĉ = z ⊙ c_{t-1} + (1 − z) ⊙ g
        o = H(ĉ − ϑ)          Heaviside with H(0) = 0, ϑ = ``thr`` (per unit, > 0)
        y_t = o ⊙ ĉ           graded event: the unit emits its value when it crosses ϑ
        c_t = ĉ − o ⊙ ϑ       reset by subtraction

    EvNN's ``kernel`` (in, 3H) is ``W_x.T`` and ``recurrent_kernel`` (H, 3H) is
    ``W_h.T``. The recurrent input y_{t-1} is internal to the node: it needs no
    graph edge and adds no extra delay. The output is the graded event vector
    y_t (shape (H,)). State: c (initially 0) and y (initially 0).
    """

    w_x: np.ndarray
    w_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray
    thr: np.ndarray

    nmc_type = "nmc.EGRU"

    def __post_init__(self):
        for f in ("w_x", "w_h", "b_x", "b_h", "thr"):
            setattr(self, f, np.asarray(getattr(self, f)))
        h = int(self.thr.shape[0]) if self.thr.ndim else int(self.w_h.shape[1])
        self.input_type = {"input": np.array([self.w_x.shape[1]])}
        self.output_type = {"output": np.array([h])}

    @property
    def hidden_size(self) -> int:
        return int(self.output_type["output"][0])


semantics.register(semantics.NodeType(
    cls=EGRU, name=EGRU.nmc_type, kind=semantics.Kind.NEURON, shape=shapes.fixed, counters=CELL,
    weights=("w_x", "w_h"), state=("v", "y"), doc="nmc.dynamics.egru_step, output the graded events y"))

from .nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron  # noqa: E402  (registers the SSM node types)

#: NIR 1.0.8 primitives a file may name, by type name (the registry's entries for NIR's classes).
#: Every reader maps a type string from a file to a class through :func:`node_class` (the
#: registry: an allow-list), never with ``getattr(nir, name)``: ``nir`` also holds functions
#: such as ``nir.write`` that a crafted type name must not reach.
NIR_NODES: dict[str, type] = {e.name: e.cls for e in semantics.entries() if e.cls.__module__.startswith("nir")}
#: Extension node classes by their file type name, as registered when nmc.nodes was imported
#: (:func:`is_extension` asks the registry, so a node type registered later counts too).
EXTENSION_NODES: dict[str, type] = {e.name: e.cls for e in semantics.entries() if e.cls not in NIR_NODES.values()}


def node_class(type_name: str, *, node: str | None = None, path=None) -> type:
    """The node class a file's type string names (a registered node type: NIR primitive or nmc extension).

    Raises :class:`~nmc.errors.UnknownNodeTypeError` (an InputFileError) naming the type for anything else.
    """
    e = semantics.by_name(type_name)
    if e is None:
        known = ", ".join(sorted(NIR_NODES) + sorted(e.name for e in semantics.entries()
                                                     if e.cls not in NIR_NODES.values()))
        raise UnknownNodeTypeError(f"unknown node type {type_name!r} in the file", node=node, path=path,
                                   hint=f"node types nmc reads: {known}")
    return e.cls


# Classifications as the registry holds them when nmc.nodes is imported (NIR's primitives and
# nmc's extension nodes); the functions below ask the registry each time.
#: NIR node types that hold neuron state and may spike.
SPIKING_TYPES = semantics.classes(semantics.Kind.NEURON, spiking=True)
#: NIR/extension node types with per-neuron state (spiking or not).
NEURON_TYPES = semantics.classes(semantics.Kind.NEURON)
#: Node types that hold synaptic weights.
WEIGHT_TYPES = semantics.classes(semantics.Kind.WEIGHT)


def is_extension(node: nir.NIRNode) -> bool:
    """A registered node type that is not one of NIR's primitives."""
    return semantics.lookup(node) is not None and type(node) not in NIR_NODES.values()


def is_neuron(node: nir.NIRNode) -> bool:
    return semantics.kind_of(node) is semantics.Kind.NEURON


def is_spiking(node: nir.NIRNode) -> bool:
    """True for nodes whose output is a spike train (0/1)."""
    e = semantics.lookup(node)
    return e is not None and e.spiking


def is_spiking_neuron(node: nir.NIRNode) -> bool:
    """A neuron whose output is a spike train (it has a reset mode)."""
    e = semantics.lookup(node)
    return e is not None and e.kind is semantics.Kind.NEURON and e.spiking


def is_weight(node: nir.NIRNode) -> bool:
    return semantics.kind_of(node) is semantics.Kind.WEIGHT


def type_name(node: nir.NIRNode) -> str:
    e = semantics.lookup(node)
    return e.name if e is not None else getattr(node, "nmc_type", type(node).__name__)


def is_dense(node: nir.NIRNode) -> bool:
    """A weight map whose weight is one (out, in) matrix on the flattened input (Affine, Linear: the
    node types with a ``dense_weight`` hook)."""
    return semantics.hook_of(node, "dense_weight") is not None


def weight_matrix(node: nir.NIRNode) -> np.ndarray | None:
    """The (out, in) dense weight of a dense node (:func:`is_dense`), else None."""
    h = semantics.hook_of(node, "dense_weight")
    return np.asarray(h(node)) if h is not None else None


def neuron_count(node: nir.NIRNode) -> int:
    """Number of neurons (units) a neuron node holds; 0 for others."""
    if not is_neuron(node):
        return 0
    return int(np.prod(node.output_type["output"]))
