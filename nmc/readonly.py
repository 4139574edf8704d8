"""Read-only arrays, the one guarantee nmc's caches keyed by array identity rest on.

An array is *frozen* when nobody can write its elements through it or through an array it views:
it and every array base below it have ``writeable = False`` (a base that is no array, e.g.
``bytes``, is immutable). A cache may then keep what it derived from the array under the array's
identity, holding the array itself so its id is not reused while the entry lives:

* compile time: :attr:`nmc.passes.manager.PassContext.digests` keeps a frozen node array's content
  digest (:func:`nmc.passes.netmodel.structure_key`). The pass manager freezes the node arrays only
  while the passes run (:meth:`nmc.ir.Graph.freeze_arrays`, the arrays alone, thawed after the last
  pass) and empties the memo when it thaws them; the key fingerprints the arrays' content (equal
  values, equal key, whichever graph copy or array holds them), so it is a digest, computed once
  per array and compile (``Network.memo`` in :mod:`nmc.passes.netmodel`, values derived from one
  network model, needs neither: it is keyed by value, and a model is never changed once built);
* run time: :func:`nmc.backends.program_cache.derived` freezes a program's arrays for good when it
  builds a table from them (:func:`freeze`) and compares them by identity alone, with no digest:
  a replaced weight is a new object, and a program's tables are never shared across programs.
"""
from __future__ import annotations

import numpy as np


def freeze(a: np.ndarray) -> None:
    """``a`` and the arrays it views made read-only (so :func:`frozen` holds from now on)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            a.flags.writeable = False
        a = a.base


def frozen(a: np.ndarray) -> bool:
    """Whether ``a`` is frozen: it and every array base below it read-only."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return True
