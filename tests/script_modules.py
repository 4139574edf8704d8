"""A repository file (an example's or a benchmark's script) loaded as a module of its own name.

Examples share file names (run.py, train.py), so a plain ``import run`` would return whichever
example was imported first; each caller names its module instead."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path, name: str) -> ModuleType:
    """``ROOT / path`` executed as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
