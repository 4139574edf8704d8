"""The ``reference`` target: the float reference simulator as a backend.

Its Program is the compiled graph itself (already in the bundle as
``graph.nir``); its one device, ``reference``, is
:class:`nmc.reference.ReferenceSimulator` in float64. Every other target is
checked against it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.reference import ReferenceSimulator
from nmc.target_options import CommonOptions

from ..base import Device, Program


class ReferenceProgram(Program):
    def __init__(self, graph: Graph):
        self.graph = graph

    def summary(self) -> dict:
        return {"nodes": len(self.graph.nodes), "edges": len(self.graph.edges),
                "parameters": sum(self.graph.param_count(n) for n in self.graph.nodes)}


class ReferenceDevice(Device):
    name = "reference"
    streams = True  # Device.advance steps it one timestep at a time

    def __init__(self, program: ReferenceProgram):
        self.sim = ReferenceSimulator(program.graph)

    def reset(self, batch: int = 1) -> None:
        self.sim.reset(batch)

    def step(self, inputs_t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One timestep with state kept: ``inputs_t[name]`` is (B, *shape)."""
        import torch

        o, _ = self.sim.step({k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in inputs_t.items()})
        return {k: v.numpy() for k, v in o.items()}

    def run(self, inputs, steps=None, record: Iterable[str] = ()) -> dict[str, np.ndarray]:
        return self.sim.run(inputs, steps=steps, record=record)


class ReferenceBackend:
    name = "reference"
    summary = "float64 reference simulator (the oracle every target is checked against)"
    spec_name = None
    devices = ("reference",)
    default_device = "reference"
    options = CommonOptions  # no target options of its own (see nmc.target_options.CommonOptions)

    def default_pipeline(self, options: dict) -> str:
        return "normalize"

    def lower(self, graph: Graph, ctx) -> ReferenceProgram:
        return ReferenceProgram(graph)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> ReferenceProgram:
        return ReferenceProgram(graph)

    def device(self, name: str, program: ReferenceProgram, **opts) -> Device:
        if name not in self.devices:
            raise OptionError(f"target 'reference' has no device '{name}'", hint="use --device reference")
        return ReferenceDevice(program)


BACKEND = ReferenceBackend()
