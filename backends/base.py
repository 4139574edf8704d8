"""Shared pieces of every backend: the Program and Device interfaces."""
from __future__ import annotations

from typing import Iterable

import numpy as np


class Program:
    """A lowered network for one target. Subclasses hold per-core arrays,
    routing tables, io maps, native scripts."""

    def files(self) -> dict[str, bytes]:
        return {}

    def summary(self) -> dict:
        return {}


class Device:
    """Runs a Program. Emulators, third-party simulators and hardware adapters
    all implement this; vendor packages are imported inside the adapter only."""

    name = ""

    def reset(self, batch: int = 1) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray], steps: int | None = None,
            record: Iterable[str] = ()) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError
