"""Tables derived from a lowered :class:`~.base.Program`, built once per program and never stale.

An emulator derives run-time tables from a program's arrays (the compiled Loihi 2 loop's neuron
vectors and CSR blocks, the BrainScaleS-2 input kernels). :func:`derived` keeps them per program,
under a name, with the inputs they were built from, by one rule:

* every array among the inputs is made read-only (``writeable = False``, its base arrays too:
  :func:`nmc.readonly.freeze`) when the table is built, for good: a write in place into it raises
  ``ValueError`` instead of leaving the table stale;
* a changed input is a new object: an array, or any mutable object, compares by identity (the entry
  holds it, so its id is not reused while the entry lives); numbers, strings and frozen dataclasses
  (the numerics) by type and value. A weight replaced (a learner's or
  a re-quantization's ``synapse.weights = new``), a parameter changed or a program lowered for other
  numerics therefore rebuilds the table; nothing is hashed per run (the check is O(number of inputs)).

Entries live as long as their program (a weak-keyed map: copies and reloads of a program build their own).
The compile-time digest memo rests on the same read-only guarantee but keeps content digests, and
freezes only while the passes run (:mod:`nmc.readonly` says why the two differ).
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable

import numpy as np

from nmc.readonly import freeze

#: program → {name: (inputs, table)}
_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _walk(x) -> None:
    if isinstance(x, np.ndarray):
        freeze(x)
    elif isinstance(x, (tuple, list)):
        for y in x:
            _walk(y)


#: inputs of these types compare by value; frozen dataclasses too (field by field, as :func:`_same`)
_VALUES = (int, float, complex, bool, str, bytes, type(None), np.generic)


def _same(a, b) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, _VALUES):
        return bool(a == b)
    if dataclasses.is_dataclass(a) and a.__dataclass_params__.frozen:
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return False                        # arrays and every other object: only the same object


def fields_of(*objs) -> tuple:
    """The inputs a table takes from dataclass objects (a program's groups, synapses, projections):
    per object its type and every field's value, as :func:`derived` compares them."""
    return tuple((type(o).__name__, tuple(getattr(o, f.name) for f in dataclasses.fields(o))) for o in objs)


def derived(program, name: str, inputs: tuple, build: Callable[[], Any]) -> Any:
    """``build()``'s table for ``program``, built once and reused while ``inputs`` (a tuple of the
    arrays and values it derives from) are the same objects and values; see the module docstring."""
    _walk(inputs)
    per = _TABLES.get(program)
    if per is None:
        per = _TABLES[program] = {}
    hit = per.get(name)
    if hit is not None and _same(hit[0], inputs):
        return hit[1]
    table = build()
    per[name] = (inputs, table)
    return table
