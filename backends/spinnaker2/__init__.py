"""The ``spinnaker2`` target: py-spinnaker2 programs, a bit-accurate emulator,
a runnable board script, and a board device (vendor package imported lazily).

Devices: ``emulator`` (default, :mod:`.emulator`), ``brian2`` (the same program
in Brian2, :mod:`.brian2_sim`), ``spinnaker2`` (a board:
``nmc run BUNDLE --device spinnaker2 --board IP``).

EGRU cells run as generated per-PE C kernels (:mod:`.egru`, CSC weights, int8
with per-row scales or float32 with ``--option egru_weights=float32``); the
kernels can be built and stepped on the host (:mod:`.ckernels`, ``nmc run
lm.nmc --text ... --engine c``). An output fed by one layer through linear
nodes (an LM's decoder) is read out on the host in float64 (``readout`` in the
program). Language models are a feature of this target (``language_model``,
:mod:`.lm`): their default pipeline, the host engines and the LM report's
chip parts.
"""
from __future__ import annotations

from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.target_options import TargetOption

from ..base import Device
from .program import S2Program, load_program


class SpiNNaker2Backend:
    name = "spinnaker2"
    summary = "SpiNNaker 2: py-spinnaker2 populations/projections, float32 emulator, board script"
    spec_name = "spinnaker2"
    devices = ("emulator", "brian2", "spinnaker2")
    default_device = "emulator"
    #: compile options (``--option KEY=VALUE``), checked by :mod:`nmc.target_options`
    options = {
        "sys_tick": TargetOption("seconds per system tick (default: the spec's timing.sys_tick_s)", float, 0,
                                 lo_open=True),
        "max_atoms_per_core": TargetOption("neurons per PE (default: the spec's core.neurons_max)", int, 1),
        "curr_exp_order": TargetOption("order of the synaptic-current update", str, choices=("chip", "brian2")),
        "conv": TargetOption("lower convolutions as conv projections (false: as dense)", str,
                             choices=(True, False, "true", "false", 0, 1)),
        "egru_weights": TargetOption("EGRU kernels' weights", str, choices=("int8", "float32")),
        "density": TargetOption("language models: weights kept per EGRU layer", float, 0, 1, lo_open=True),
        "prune_units": TargetOption("language models: fraction of least active units removed", float, 0, 1,
                                    hi_open=True),
        "input_quantum": TargetOption("graded inputs: value of one repeated input event (default 1)", float, 0,
                                      lo_open=True),
    }

    def default_pipeline(self, options: dict) -> str:
        return "normalize,quantize{bits=8},partition,place,route"

    @property
    def language_model(self):
        """What this target does for EGRU language models (:class:`nmc.lm.target.LanguageModelTarget`)."""
        from .lm import LANGUAGE_MODELS  # lazy: torch

        return LANGUAGE_MODELS

    def lower(self, graph: Graph, ctx) -> S2Program:
        from .lower import lower

        return lower(graph, ctx)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> S2Program:
        prog = load_program(files)
        prog.graph = graph
        return prog

    def device(self, name: str, program: S2Program, **opts) -> Device:
        graph = getattr(program, "graph", None)
        if name == "emulator":
            from .emulator import S2Emulator

            return S2Emulator(program, graph, curr_exp_order=opts.get("curr_exp_order"),
                              align=opts.get("align", True))
        if name == "brian2":
            from .brian2_sim import Brian2Device

            return Brian2Device(program, graph, curr_exp_order=opts.get("curr_exp_order"))
        if name == "spinnaker2":
            from .device import S2Hardware

            return S2Hardware(program.files(), **opts)
        raise OptionError(f"target 'spinnaker2' has no device '{name}'", hint=f"devices: {', '.join(self.devices)}")


BACKEND = SpiNNaker2Backend()
