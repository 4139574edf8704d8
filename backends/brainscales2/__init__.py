"""The ``brainscales2`` target: a BrainScaleS-2-style accelerated mixed-signal system.

Devices: ``emulator`` (continuous-time, options ``mismatch`` = off |
calibrated | uncalibrated and ``noise``), ``hardware`` (runs the emitted
PyNN script; ``pynn_brainscales`` imported lazily). :func:`analog_report`
runs one input noiseless, with uncalibrated and calibrated mismatch, and with
noise, and says what each costs.

Layout: :mod:`.lower` (Graph → :class:`~.program.BSS2Program`), :mod:`.program`,
:mod:`.emit` (the PyNN script), :mod:`.emulator`, :mod:`.devices`; learning rules:
:mod:`.ppu` (the plasticity processor's fixed-point model), :mod:`.ppu_spore`, :mod:`.ppu_lower`,
:mod:`.ppu_kernel`.
"""
from __future__ import annotations

import numpy as np

from nmc.errors import OptionError
from nmc.ir import Graph

from ..base import Backend, Device
from .program import BSS2Program, load_program, with_graph
from .options import BrainScaleS2Options


class BrainScaleS2Backend(Backend):
    name = "brainscales2"
    summary = "BrainScaleS-2-style analog: 6-bit signed rows, labels, DAC codes via calibration, noisy emulator"
    spec_name = "brainscales2"
    devices = ("emulator", "hardware")
    default_device = "emulator"
    #: compile options (``--option KEY=VALUE``): a frozen dataclass, parsed by :mod:`nmc.target_options`
    options = BrainScaleS2Options
    #: lowering reads the Placement the ``partition`` pass writes (the passes are its only writer)
    lowering_requires = ("placement",)
    plasticity_refusal = None

    def plasticity_refusal_for(self, rule) -> str | None:
        """The plasticity processor runs pair STDP (alone, reward-modulated, with rewiring) and SPORE (:mod:`.ppu`)."""
        from .ppu import refusal

        return refusal(rule)

    def default_pipeline(self, options: dict) -> str:
        # 6-bit magnitude + row sign = 7-bit signed; rewire assigns label groups without pruning
        # (neurons with a large fan-in merge circuits instead): its budget is the whole chip's rows;
        # partition places logical neurons on hemispheres and runs (nmc.passes.hemispheres)
        from nmc.hw import HardwareSpec

        spec = HardwareSpec.load(self.spec_name)
        budget = int(spec.get("synapse_array.rows")) * int(spec.get("chip.neuron_circuits"))
        return f"normalize,quantize{{bits=7}},rewire{{fan_in={budget}}},partition"

    def target_model(self, spec, options=None):
        """The hemisphere model the passes and lowering share (:mod:`.target`)."""
        from .target import target_model

        return target_model(spec, options)

    def lower(self, graph: Graph, ctx) -> BSS2Program:
        from .lower import lower

        return with_graph(lower(graph, ctx), graph)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> BSS2Program:
        return with_graph(load_program(files), graph)

    def device(self, name: str, program: BSS2Program, **opts) -> Device:
        if name == "emulator":
            from .emulator import BSS2Emulator

            return BSS2Emulator(program, **opts)
        if name == "hardware":
            from .devices.hardware import BSS2Hardware

            return BSS2Hardware(program.files(), **opts)
        raise OptionError(f"target 'brainscales2' has no device '{name}'", hint="devices: emulator, hardware")


def analog_report(bundle, inputs: dict, labels=None, seed: int = 0) -> dict:
    """Same input noiseless, with mismatch uncalibrated / calibrated, and with noise."""
    runs = {"noiseless": dict(mismatch="off"), "mismatch uncalibrated": dict(mismatch="uncalibrated"),
            "mismatch calibrated": dict(mismatch="calibrated"),
            "calibrated + noise": dict(mismatch="calibrated", noise=True, seed=seed)}
    base = None
    rep = {}
    for k, o in runs.items():
        out = bundle.run(inputs, **o)
        y = next(iter(out.values()))
        if base is None:
            base = y
        entry = {"agreement_with_noiseless": float(np.mean(y == base))}
        if labels is not None:
            pred = y.sum(0).argmax(-1)
            entry["accuracy"] = float(np.mean(pred == np.asarray(labels)))
        rep[k] = entry
    return rep


BACKEND = BrainScaleS2Backend()
