"""The ``reference`` device: :class:`nmc.reference.ReferenceSimulator` in
float64 on the compiled graph, streamed one timestep at a time. It runs learning
rules (:mod:`nmc.plasticity`): ``modulate`` sets their third factor, ``set_rule``
changes their parameters while running.

``precision="float32"`` (an explicit device option, ``bundle.run(..., precision="float32")``)
runs the same simulator in float32: every tensor op in single precision, about half
the memory traffic, for throughput where the oracle's float64 is not needed. Its
values differ from the float64 oracle by rounding (spikes can move where v lands
within float32 rounding of the threshold); the default, and every check against
the reference (fidelity, the targets' tests), stays float64."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import OptionError
from nmc.reference import ReferenceSimulator

from ..base import Device, SteppedStreaming
from .program import ReferenceProgram


#: the device's precisions: option value → torch dtype (float64: the oracle, default)
PRECISIONS = ("float64", "float32")


class ReferenceDevice(SteppedStreaming, Device):
    name = "reference"

    def __init__(self, program: ReferenceProgram, precision: str = "float64"):
        import torch

        if precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}",
                              hint="precision='float64' (the oracle, default) or 'float32' (faster)")
        self.program = program
        self.precision = precision
        self.sim = ReferenceSimulator(program.graph, dtype=torch.float64 if precision == "float64" else torch.float32)

    def reset(self, batch: int = 1) -> None:
        self.sim.reset(batch)

    def step(self, inputs_t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One timestep with state kept: ``inputs_t[name]`` is (B, *shape)."""
        import torch

        o, _ = self.sim.step({k: torch.as_tensor(np.asarray(v), dtype=self.sim.dtype) for k, v in inputs_t.items()})
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
