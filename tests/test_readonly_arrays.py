"""nmc.readonly: an array is frozen when it and every array base below it are read-only; freeze
makes it so (the guarantee the compile-time digest memo and the run-time program tables rest on)."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.readonly import freeze, frozen


def test_a_view_is_frozen_only_with_its_base():
    base = np.arange(12.0)
    view = base.reshape(3, 4)[1:]
    view.flags.writeable = False
    assert not frozen(view)                       # writable through its base
    freeze(view)
    assert frozen(view) and frozen(base)
    with pytest.raises(ValueError):
        base[0] = 1.0


def test_an_array_over_bytes_is_frozen_read_only():
    a = np.frombuffer(b"\x00" * 16, np.float64)
    assert frozen(a)
    w = np.zeros(3)
    assert not frozen(w)
    freeze(w)
    assert frozen(w)
