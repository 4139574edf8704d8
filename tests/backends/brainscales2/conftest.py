"""Fixtures of the brainscales2 tests: the recording stand-in of pynn_brainscales
(tests/backends/brainscales2/standin) that the bundle's run_brainscales2.py is executed against."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

STANDIN = str(Path(__file__).parent / "standin")
_MODULES = ("pynn_brainscales", "pynn_brainscales.brainscales2")


@pytest.fixture
def pynn(monkeypatch):
    """The stand-in's ``pynn_brainscales.brainscales2`` module, imported fresh with an empty log
    (and dropped from ``sys.modules`` afterwards, so no other test sees it)."""
    monkeypatch.syspath_prepend(STANDIN)
    for m in _MODULES:
        sys.modules.pop(m, None)
    mod = importlib.import_module("pynn_brainscales.brainscales2")
    mod.reset_log()
    yield mod
    for m in _MODULES:
        sys.modules.pop(m, None)
