"""The ``reference`` target: the float reference simulator as a backend.

Its Program (:mod:`.program`) is the compiled graph itself (already in the
bundle as ``graph.nir``); :mod:`.lower` has nothing to do; its one device,
``reference`` (:mod:`.emulator`), is :class:`nmc.reference.ReferenceSimulator`
in float64. It has no native artefact (no ``emit``) and no third-party or
hardware devices (no ``devices/``). Every other target is checked against it.
"""
from __future__ import annotations

from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.target_options import CommonOptions

from ..base import Backend, Device
from .emulator import ReferenceDevice
from .program import ReferenceProgram, program


class ReferenceBackend(Backend):
    name = "reference"
    summary = "float64 reference simulator (the oracle every target is checked against)"
    spec_name = None
    devices = ("reference",)
    default_device = "reference"
    options = CommonOptions  # no target options of its own (see nmc.target_options.CommonOptions)
    plasticity_refusal = None  # runs every nmc.plasticity rule in float (nmc.reference_plasticity)

    def default_pipeline(self, options: dict) -> str:
        return "normalize"

    def lower(self, graph: Graph, ctx) -> ReferenceProgram:
        from .lower import lower

        return lower(graph, ctx)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> ReferenceProgram:
        return program(graph)

    def device(self, name: str, program: ReferenceProgram, **opts) -> Device:
        if name not in self.devices:
            raise OptionError(f"target 'reference' has no device '{name}'", hint="use --device reference")
        return ReferenceDevice(program, **opts)


BACKEND = ReferenceBackend()
