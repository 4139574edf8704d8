"""The node-type registry: one :class:`NodeType` entry per node class.

An entry says, in one place, what every pass, simulator and backend needs to
know about a node type:

* ``name``: the type string files use (NIR's class name, ``nmc.<Class>`` for
  extension nodes); readers map a file's string to a class only through this
  registry (an allow-list, never ``getattr``);
* ``kind`` (:class:`Kind`): io / weight / linear / index / elementwise / neuron;
* ``spiking``: its output is a 0/1 spike train;
* ``params``: per-element parameter fields (one value per neuron or element,
  a scalar broadcast by ``normalize``); ``weights``: synaptic weight fields;
  ``state``: the state variables the reference simulator keeps and records;
* ``arrays``: fields with a shape of their own (not one value per neuron: an SSM's per-mode Λ, Δ
  and its B, C), exempt from the per-neuron size check; ``complex_fields``: fields that may
  hold complex values (an SSM's Λ, B, C), exempt from the real-values check;
* ``shape``: the shape rule ``normalize`` applies: ``shape(g, name, src)``
  gives the node its input/output types from the shape ``src`` its input edge
  delivers (:func:`nmc.semantics.shapes.fixed` where the node's own fields fix
  them);
* ``counters``: the activity counters (``()``: none) of :mod:`nmc.runtime.energy` the node's
  output feeds per step (``synaptic_ops`` for spikes, ``macs`` for graded
  values, ``neuron_updates`` for a placed neuron);
* ``hooks``: ``{(target, hook): callable}``; target ``None`` is shared by all
  targets. The reference simulator registers its per-node ``reference`` step
  (:mod:`nmc.reference_steps`, also the node's ``linear_map``); a backend
  registers its own hooks with :func:`register_hook` under its target name, and
  :meth:`NodeType.hook` falls back to the shared one.

Adding a node type is one :func:`register` call with its entry (see
``tests/test_semantics.py``); :func:`of` refuses an unregistered one with
:class:`~nmc.errors.UnsupportedNodeError` naming it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterator


class Kind(str, Enum):
    IO = "io"                    # Input, Output: the graph's boundary
    WEIGHT = "weight"            # linear maps that hold synaptic weights (Affine, Linear, Conv)
    LINEAR = "linear"            # linear maps without a weight matrix (Scale, pooling)
    INDEX = "index"              # index mappings: the same values, another shape (Flatten)
    ELEMENTWISE = "elementwise"  # per-element, shape-preserving, not linear (Threshold, Delay)
    NEURON = "neuron"            # per-neuron state (LIF, ..., EGRU)


#: Hooks every entry must have (``(target, hook)``), checked by :func:`missing`.
REQUIRED_HOOKS = (("reference", "step"),)


@dataclass(frozen=True, eq=False)
class NodeType:
    cls: type
    name: str
    kind: Kind
    spiking: bool = False
    params: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    complex_fields: tuple[str, ...] = ()
    shape: Callable | None = None
    counters: tuple[str, ...] | None = None
    hooks: dict = field(default_factory=dict)
    doc: str = ""

    @property
    def is_neuron(self) -> bool:
        return self.kind is Kind.NEURON

    @property
    def membrane_tau(self) -> str | None:
        """The parameter holding a neuron's membrane time constant (``tau``, or ``tau_mem`` of a
        current-based neuron), None without one (IF, I: no leak)."""
        return next((p for p in ("tau", "tau_mem") if p in self.params), None)

    @property
    def current_based(self) -> bool:
        """A neuron with a synaptic current state of its own (``tau_syn``: CubaLIF, CubaLI)."""
        return "tau_syn" in self.params

    @property
    def is_linear(self) -> bool:
        """A linear map a backend composes into synapse matrices (weights, pooling, Scale, Flatten)."""
        return self.kind in (Kind.WEIGHT, Kind.LINEAR, Kind.INDEX)

    def hook(self, name: str, target: str | None = None) -> Callable | None:
        """The ``target``'s hook ``name``, else the shared one, else None."""
        h = self.hooks.get((target, name)) if target is not None else None
        return h if h is not None else self.hooks.get((None, name))

    def reference(self) -> Callable | None:
        return self.hook("step", "reference")


_BY_CLASS: dict[type, NodeType] = {}
_BY_NAME: dict[str, NodeType] = {}


def register(entry: NodeType) -> NodeType:
    """Add a node type (its class and file name must both be new)."""
    if entry.cls in _BY_CLASS or entry.name in _BY_NAME:
        raise ValueError(f"node type {entry.name} ({entry.cls.__name__}) is already registered")
    if not isinstance(entry.kind, Kind):
        raise ValueError(f"node type {entry.name}: kind must be a Kind, not {entry.kind!r}")
    _BY_CLASS[entry.cls] = entry
    _BY_NAME[entry.name] = entry
    return entry


def unregister(cls: type) -> None:
    entry = _BY_CLASS.pop(cls)
    _BY_NAME.pop(entry.name, None)


@contextlib.contextmanager
def registered(entry: NodeType) -> Iterator[NodeType]:
    """Register ``entry`` for the duration of a ``with`` block (tests, plug-ins scoped to one use)."""
    register(entry)
    try:
        yield entry
    finally:
        unregister(entry.cls)


def register_hook(target: str | None, hook: str, *classes: type) -> Callable:
    """Decorator: ``fn`` is ``target``'s hook ``hook`` for the node ``classes``
    (``target=None``: shared by every target)."""
    def deco(fn):
        for c in classes:
            _BY_CLASS[c].hooks[(target, hook)] = fn
        return fn
    return deco


def lookup(node_or_cls: Any) -> NodeType | None:
    """The entry of a node (or node class), None when the type is not registered. A subclass
    of a registered class without an entry of its own has its nearest registered base's
    entry (as ``isinstance`` checks treated it)."""
    cls = node_or_cls if isinstance(node_or_cls, type) else type(node_or_cls)
    e = _BY_CLASS.get(cls)
    if e is None:
        e = next((_BY_CLASS[b] for b in cls.__mro__[1:] if b in _BY_CLASS), None)
    return e


def hook_of(node_or_cls: Any, name: str, target: str | None = None) -> Callable | None:
    """The hook ``name`` of a node's (or node class's) entry for ``target`` (else the shared one);
    None when the type is not registered or has no such hook. A pass or backend asks this instead of
    testing the node's class: a node type takes part by registering the hook."""
    e = lookup(node_or_cls)
    return e.hook(name, target) if e is not None else None


def of(node: Any, *, name: str | None = None) -> NodeType:
    """The entry of ``node``; :class:`~nmc.errors.UnsupportedNodeError` naming it when unregistered."""
    e = lookup(node)
    if e is None:
        from nmc.errors import UnsupportedNodeError

        raise UnsupportedNodeError(f"unknown node type {type(node).__name__}", node=name,
                                   hint="nmc supports NIR 1.0.8's primitives and nmc extension nodes")
    return e


def by_name(type_name: str) -> NodeType | None:
    return _BY_NAME.get(type_name) if isinstance(type_name, str) else None


def entries() -> list[NodeType]:
    return list(_BY_CLASS.values())


def classes(*kinds: Kind, spiking: bool | None = None) -> tuple[type, ...]:
    """Registered classes of the given kinds (all kinds when none given)."""
    return tuple(e.cls for e in _BY_CLASS.values()
                 if (not kinds or e.kind in kinds) and (spiking is None or e.spiking == spiking))


def kind_of(node: Any) -> Kind | None:
    e = lookup(node)
    return e.kind if e is not None else None


def missing(entry: NodeType) -> list[str]:
    """Required parts an entry lacks (empty when complete)."""
    out = [f for f in ("name", "kind", "shape") if not getattr(entry, f)]
    out += ["counters"] if entry.counters is None else []  # () is a declaration: counts nothing itself
    out += [f"hook {t}.{h}" for t, h in REQUIRED_HOOKS if entry.hook(h, t) is None]
    return out
