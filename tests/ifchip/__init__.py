"""``ifchip``: a tiny integer integrate-and-fire chip, written as a target
package outside nmc to show (and test) that a new target plugs in through
:func:`nmc.backends.register` alone (see docs/new_target.md).

The chip: layers of IF neurons with 8-bit integer weights, an integer bias and
threshold per neuron and a 32-bit membrane; every synapse adds one step of
latency. Graphs it takes: Input → Affine/Linear → IF → … → Output, feed-forward.

Layout (the same as every nmc backend): :mod:`.lower` (Graph → Program),
:mod:`.program` (the frozen Program, its files and IO map), :mod:`.emit` (the
standalone numpy script the bundle ships), :mod:`.emulator` (the ``emulator``
device) and :mod:`.devices` (``script``: the emitted script run as a child
process, like a board that only runs whole recordings).
"""
from __future__ import annotations

from nmc.backends.base import Backend, Device

from .program import IFChipProgram, load_program


class IFChipBackend(Backend):
    name = "ifchip"
    summary = "test target: integer IF layers, 8-bit weights, one step per synapse"
    spec_name = None
    devices = ("emulator", "script")
    default_device = "emulator"
    options: dict = {}

    def default_pipeline(self, options: dict) -> str:
        return "normalize"

    def lower(self, graph, ctx) -> IFChipProgram:
        from .lower import lower

        return lower(graph, ctx)

    def load_program(self, files: dict[str, bytes], graph) -> IFChipProgram:
        return load_program(files, graph)

    def device(self, name: str, program: IFChipProgram, **opts) -> Device:
        if name == "emulator":
            from .emulator import IFChipEmulator

            return IFChipEmulator(program, **opts)
        if name == "script":
            from .devices.script import ScriptDevice

            return ScriptDevice(program, **opts)
        raise self.unknown_device(name)


BACKEND = IFChipBackend()
