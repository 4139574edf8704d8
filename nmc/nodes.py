"""nmc's extension nodes: what NIR 1.0.8 cannot say.

Each is a dataclass deriving from :class:`nir.NIRNode` (so it can sit in a
``nir.NIRGraph`` beside NIR's own nodes) with its discrete-time equations in
the docstring. They are written to and read from nmc's NIR HDF5 files under the
type name ``nmc.<Class>`` (see :mod:`nmc.serialize`); NIR's own reader rejects
them, and :meth:`nmc.ir.Graph.to_nir` refuses to export them, naming the node.

Also here: small helpers every pass/backend uses to classify nodes
(:func:`is_neuron`, :func:`is_weight`, :data:`NEURON_TYPES`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import nir
import numpy as np


@dataclass(eq=False)
class EGRU(nir.NIRNode):
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

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        d["type"] = self.nmc_type
        return d


#: Extension node classes by their file type name. Explicit, no scanning.
EXTENSION_NODES: dict[str, type] = {EGRU.nmc_type: EGRU}

#: NIR 1.0.8 primitives a file may name, by type name. Every reader maps a type
#: string from a file to a class through :func:`node_class` (this allow-list),
#: never with ``getattr(nir, name)``: ``nir`` also holds functions such as
#: ``nir.write`` that a crafted type name must not reach.
NIR_NODES: dict[str, type] = {c.__name__: c for c in (
    nir.Affine, nir.AvgPool2d, nir.Conv1d, nir.Conv2d, nir.CubaLI, nir.CubaLIF, nir.Delay, nir.Flatten, nir.I,
    nir.IF, nir.Input, nir.LI, nir.LIF, nir.Linear, nir.Output, nir.Scale, nir.SumPool2d, nir.Threshold)}


def node_class(type_name: str, *, node: str | None = None, path=None) -> type:
    """The node class a file's type string names (NIR primitive or nmc extension).

    Raises :class:`~nmc.errors.UnknownNodeTypeError` (an InputFileError) naming the type for anything else.
    """
    cls = NIR_NODES.get(type_name) if isinstance(type_name, str) else None
    if cls is None and isinstance(type_name, str):
        cls = EXTENSION_NODES.get(type_name)
    if cls is None:
        from nmc.errors import UnknownNodeTypeError

        known = ", ".join(sorted(NIR_NODES) + sorted(EXTENSION_NODES))
        raise UnknownNodeTypeError(f"unknown node type {type_name!r} in the file", node=node, path=path,
                             hint=f"node types nmc reads: {known}")
    return cls

#: NIR node types that hold neuron state and may spike.
SPIKING_TYPES = (nir.LIF, nir.CubaLIF, nir.IF)
#: NIR/extension node types with per-neuron state (spiking or not).
NEURON_TYPES = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI, nir.I, EGRU)
#: Node types that hold synaptic weights.
WEIGHT_TYPES = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)


def is_extension(node: nir.NIRNode) -> bool:
    return type(node) in EXTENSION_NODES.values()


def is_neuron(node: nir.NIRNode) -> bool:
    return isinstance(node, NEURON_TYPES)


def is_spiking(node: nir.NIRNode) -> bool:
    """True for nodes whose output is a spike train (0/1)."""
    return isinstance(node, SPIKING_TYPES + (nir.Threshold,))


def is_weight(node: nir.NIRNode) -> bool:
    return isinstance(node, WEIGHT_TYPES)


def type_name(node: nir.NIRNode) -> str:
    return getattr(node, "nmc_type", type(node).__name__)


def weight_matrix(node: nir.NIRNode) -> np.ndarray | None:
    """The (out, in) dense weight of an Affine/Linear node, else None."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return np.asarray(node.weight)
    return None


def neuron_count(node: nir.NIRNode) -> int:
    """Number of neurons (units) a neuron node holds; 0 for others."""
    if not is_neuron(node):
        return 0
    return int(np.prod(node.output_type["output"]))
