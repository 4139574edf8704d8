"""The ``reference`` device: :class:`nmc.reference.ReferenceSimulator` in
float64 on the compiled graph, streamed one timestep at a time. It runs learning
rules (:mod:`nmc.plasticity`): ``modulate`` sets their third factor, ``set_rule``
changes their parameters while running."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.reference import ReferenceSimulator

from ..base import Device, SteppedStreaming
from .program import ReferenceProgram


class ReferenceDevice(SteppedStreaming, Device):
    name = "reference"

    def __init__(self, program: ReferenceProgram):
        self.program = program
        self.sim = ReferenceSimulator(program.graph)

    def reset(self, batch: int = 1) -> None:
        self.sim.reset(batch)

    def step(self, inputs_t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One timestep with state kept: ``inputs_t[name]`` is (B, *shape)."""
        import torch

        o, _ = self.sim.step({k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in inputs_t.items()})
        return {k: v.numpy() for k, v in o.items()}

    @property
    def takes_modulator(self) -> bool:
        return any(lr.rule.third_factor != "none" for lr in self.sim.learners.values())

    def modulate(self, value) -> None:
        """The third factor of every plastic projection with one (:meth:`ReferenceSimulator.modulate`)."""
        if not self.takes_modulator:
            return super().modulate(value)   # DeviceError: nothing here learns from a third factor
        self.sim.modulate(value)

    def set_rule(self, projection: str | None = None, **changes) -> None:
        """Change running rule parameters (a learning-rate or temperature schedule)."""
        self.sim.set_rule(projection, **changes)

    def run(self, inputs, steps=None, record: Iterable[str] = ()) -> dict[str, np.ndarray]:
        return self.sim.run(inputs, steps=steps, record=record)
