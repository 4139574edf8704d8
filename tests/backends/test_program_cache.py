"""backends.program_cache: one table per program and name, rebuilt on a new input, never stale."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from nmc.backends.program_cache import derived


class _Prog:
    pass


@dataclass(frozen=True)
class _Num:
    bits: int


def test_reused_while_inputs_are_the_same_and_rebuilt_on_a_new_one():
    p, calls = _Prog(), []
    w = np.arange(12).reshape(3, 4)

    def build():
        calls.append(1)
        return w.sum()

    assert derived(p, "t", (w, 2, _Num(8)), build) == 66
    assert derived(p, "t", (w, 2, _Num(8)), build) == 66 and len(calls) == 1     # equal values, same array
    derived(p, "t", (w.copy(), 2, _Num(8)), build)                                # an equal but new array
    assert len(calls) == 2
    derived(p, "t", (w, 3, _Num(8)), build)
    derived(p, "t", (w, 3, _Num(9)), build)
    assert len(calls) == 4
    derived(_Prog(), "t", (w, 3, _Num(9)), build)                                 # another program
    derived(p, "u", (w, 3, _Num(9)), build)                                       # another name
    assert len(calls) == 6


def test_inputs_are_made_read_only_with_the_arrays_they_view():
    base = np.zeros((4, 5))
    view = base[1:]
    derived(_Prog(), "t", ((view,), [1]), lambda: None)
    for a in (view, base):
        with pytest.raises(ValueError, match="read-only"):
            a[0, 0] = 1.0
