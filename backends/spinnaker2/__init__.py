"""The ``spinnaker2`` target: py-spinnaker2 programs, a bit-accurate emulator,
a runnable board script, and a board device (vendor package imported lazily).

Layout: :mod:`.lower` (Graph → :class:`~.program.S2Program`), :mod:`.program`,
:mod:`.emit` (the board script), :mod:`.emulator`, :mod:`.devices`.

Devices: ``emulator`` (default, :mod:`.emulator`), ``brian2`` (the same program
in Brian2, :mod:`.devices.brian2_sim`), ``spinnaker2`` (a board:
``nmc run BUNDLE --device spinnaker2 --board IP``, :mod:`.devices.board`).

EGRU cells run as generated per-PE C kernels (:mod:`.egru`, CSC weights, int8
with per-row scales or float32 with ``--option egru_weights=float32``; ternary
weights — ``quantize{scheme=ternary}`` or ``--option egru_weights=ternary`` — as
packed 2-bit codes, :mod:`.egru_packed`); the
kernels can be built and stepped on the host (:mod:`.ckernels`, ``nmc run
lm.nmc --text ... --engine c``). SSM nodes (``nmc.DiagSSM``, ``nmc.StochasticSSMNeuron``)
run as generated per-PE C kernels too (:mod:`.ssm`, lowered by :mod:`.ssm_lower`, the
registry's spinnaker2 ``lower`` hook); ``nmc.LayerNorm`` runs on one PE of its own (:mod:`.ssm_norm`).
The ``partition`` pass places every population (lowering reads its Placement). An output fed by one
layer through linear nodes (an LM's decoder) is read out on the host in float64 (``readout`` in the
program). Learning rules (:mod:`nmc.plasticity`) run on the post population's PEs
(:mod:`.plasticity`: the float32 model the emulator runs; :mod:`.plasticity_kernel`: the
generated C kernels, bit-exact with it). Language models are a feature of this target (``language_model``,
:mod:`.lm`): their default pipeline, the host engines and the LM report's
chip parts.
"""
from __future__ import annotations

from nmc.errors import OptionError
from nmc.ir import Graph

from ..base import Backend, Device
from .program import S2Program, load_program, with_graph
from .options import SpiNNaker2Options


class SpiNNaker2Backend(Backend):
    name = "spinnaker2"
    summary = "SpiNNaker 2: py-spinnaker2 populations/projections, float32 emulator, board script"
    spec_name = "spinnaker2"
    devices = ("emulator", "brian2", "spinnaker2")
    default_device = "emulator"
    #: compile options (``--option KEY=VALUE``): a frozen dataclass, parsed by :mod:`nmc.target_options`
    options = SpiNNaker2Options
    #: lowering reads the Placement the ``partition`` pass writes (the passes are its only writer;
    #: a LayerNorm's PE too, :meth:`.target.SpiNNaker2Target.own_core_nodes`)
    lowering_requires = ("placement",)
    plasticity_refusal = None   # the post population's PEs run the rules (.plasticity, .plasticity_kernel)

    def plasticity_refusal_for(self, rule) -> str | None:
        """None for every rule of :mod:`nmc.plasticity`: a generated PE kernel runs each; what the PE
        cannot learn on (delays, conv, recurrent or graded projections) is refused at lowering."""
        from .plasticity import refusal_for

        return refusal_for(rule)

    def default_pipeline(self, options: dict) -> str:
        return "normalize,quantize{bits=8},partition,place,route"

    def target_model(self, spec, options=None):
        """The PE model the passes and lowering share (:mod:`.target`)."""
        from .target import target_model

        return target_model(spec, options)

    @property
    def language_model(self):
        """What this target does for EGRU language models (:class:`nmc.lm.target.LanguageModelTarget`)."""
        from .lm import LANGUAGE_MODELS  # lazy: torch

        return LANGUAGE_MODELS

    def lower(self, graph: Graph, ctx) -> S2Program:
        from .lower import lower

        return with_graph(lower(graph, ctx), graph)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> S2Program:
        return with_graph(load_program(files), graph)

    def device(self, name: str, program: S2Program, **opts) -> Device:
        if name == "emulator":
            from .emulator import S2Emulator

            return S2Emulator(program, curr_exp_order=opts.get("curr_exp_order"), align=opts.get("align", True))
        if name == "brian2":
            plastic = [q.plastic["node"] for q in program.projections if q.plastic]
            if plastic:   # Brian2 would run the initial weights frozen: refuse rather than not learn
                from nmc.errors import DeviceError

                raise DeviceError(f"device 'brian2' runs the program's weights frozen, but projection '{plastic[0]}' "
                                  "learns", node=plastic[0], hint="use --device emulator (it runs the learning "
                                  "kernels' arithmetic)")
            from .devices.brian2_sim import Brian2Device

            return Brian2Device(program, curr_exp_order=opts.get("curr_exp_order"))
        if name == "spinnaker2":
            from .devices.board import S2Hardware

            return S2Hardware(program.files(), **opts)
        raise OptionError(f"target 'spinnaker2' has no device '{name}'", hint=f"devices: {', '.join(self.devices)}")


BACKEND = SpiNNaker2Backend()
