"""Node semantics, one registry entry per node type (issue #18, item 5).

:mod:`.registry` holds the entries (kind, shape rule, per-element parameters,
weights, state, activity counters, per-target hooks) and the lookups
(:func:`of`, :func:`lookup`, :func:`by_name`, :func:`classes`);
:mod:`.nir_types` registers NIR 1.0.8's primitives; nmc's extension nodes
register themselves beside their class in :mod:`nmc.nodes`;
:mod:`nmc.reference_steps` (imports torch) registers each type's reference-simulator
step and linear map. Passes and backends ask the registry instead of keeping
their own ``isinstance`` chains.
"""
from . import nir_types  # noqa: F401  (registers NIR's primitives)
from .registry import (Kind, NodeType, by_name, classes, entries, hook_of, kind_of, lookup, missing, of,
                       register, register_hook, registered, unregister)

__all__ = ["Kind", "NodeType", "by_name", "classes", "entries", "hook_of", "kind_of", "lookup", "missing", "of",
           "register", "register_hook", "registered", "unregister"]
