"""The ``loihi2`` target: Intel Loihi 2 through Lava (``lava-nc``).

Pipeline: normalize → (quantize, partition, place, route when registered) → lower
(:mod:`.lower`) to a :class:`~.program.LoihiProgram` of Lava processes. The
bundle holds ``program/lava_net.py`` (:mod:`.emit`), ``program.json`` and
arrays. Layout: :mod:`.lower`, :mod:`.program`, :mod:`.emit`, :mod:`.emulator`,
:mod:`.devices`.

Devices:

* ``emulator`` (default): :class:`~.emulator.LoihiEmulator`, nmc's vectorised
  re-implementation of Lava's bit-accurate fixed-point models (bit-exact).
* ``lava``: the emitted module run in Lava's ``Loihi2SimCfg(select_tag="fixed_pt")``
  in a child process under a timeout (:mod:`.devices.lava_device`); ``hw=True`` uses
  ``Loihi2HwCfg`` (needs Intel's lava-loihi). Streaming sessions keep one Lava
  network running in a child process and feed it through Lava's Injector /
  Extractor processes (:mod:`.devices.lava_stream`, :mod:`.devices.lava_stream_worker`).

Both devices stream (``reset`` + ``advance``, see :class:`~..base.LaggedStreaming`):
a session window costs O(window), and the rows equal ``run``'s bit for bit.

Both return what :class:`nmc.reference.ReferenceSimulator` returns, in float
units: ``{output: (T[, B], *shape)}`` (spikes 0/1, or membrane v for LI
readouts, or an SSM's output; through the port's linear host readout, float64,
where the graph's Output is fed through linear layers) and, for recorded nodes,
``<node>.spikes``, ``<node>.v`` (float) and
``<node>.v_int``/``<node>.s_int`` (Lava integers). With ``align=True``
(default) every group is shifted back by its latency (``out[t] = lava[t + L]``,
simulating T + max latency Lava steps), so rows line up with the reference;
``align=False`` gives raw Lava time.

Diagonal SSMs (``nmc.DiagSSM``) map onto Lava's fixed-point sigma-delta and
graded processes (:mod:`.ssm`, :mod:`.graded`), through the node registry's
``loihi2`` hooks (:mod:`.ssm_lower`); a ``StochasticSSMNeuron`` is refused.

Learning (``nmc.Plasticity`` pair STDP, with or without a reward or error third
factor) lowers to Lava's ``LearningDense`` (:mod:`.learning`); the emulator runs
Lava's fixed-point learning engine bit for bit, and ``modulate`` sets the third
factor on both devices; weight decay is a u0·w product. SPORE and rewiring are refused per rule.

Inputs: with ``input_bits = 0`` (default) the input must be 0/1 spikes; with
``input_bits = k`` graded spikes, integers in ``[−2^(k−1), 2^(k−1))``.
"""
from __future__ import annotations

from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.target_options import TargetOption

from ..base import Backend, Device
from . import ssm_lower  # noqa: F401  (registers the SSM nodes' loihi2 hooks: lower, internal_macs)
from .emulator import EmulatorDevice
from .options import Loihi2Options
from .program import LoihiProgram, load_program, with_io


class Loihi2Backend(Backend):
    name = "loihi2"
    summary = "Intel Loihi 2 via Lava: fixed-point LIF/Dense programs, bit-exact emulator, Lava sim or hardware"
    spec_name = "loihi2"
    devices = ("emulator", "lava")
    default_device = "emulator"
    #: compile options (``--option KEY=VALUE``): a frozen dataclass, parsed by :mod:`nmc.target_options`
    options = Loihi2Options
    #: lowering reads the Placement the ``partition`` pass writes (the passes are its only writer)
    lowering_requires = ("placement",)
    plasticity_refusal = None

    def plasticity_refusal_for(self, rule) -> str | None:
        """Pair STDP runs (Lava's LearningDense, :mod:`.learning`); the rest is refused with the reason."""
        from .learning import refusal

        return refusal(rule)

    def default_pipeline(self, options: dict) -> str:
        from nmc.passes import REGISTRY

        want = ["quantize{bits=8}", "partition", "place", "route"]
        steps = ["normalize"] + [p for p in want if p.split("{")[0] in REGISTRY]
        return ",".join(steps)

    def target_model(self, spec, options=None):
        """The neurocore model the passes and lowering share (:mod:`.target`)."""
        from .target import target_model

        return target_model(spec, options)

    def lower(self, graph: Graph, ctx) -> LoihiProgram:
        from .learning import attach
        from .lower import lower

        prog = lower(graph, ctx)
        attach(graph, prog, ctx)      # plastic projections: their Lava learning rules (no-op without)
        return with_io(prog)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> LoihiProgram:
        return load_program(files)

    def device(self, name: str, program: LoihiProgram, **opts) -> Device:
        if name == "emulator":
            return EmulatorDevice(program, **opts)
        if name == "lava":
            from .devices.lava_device import LavaDevice

            return LavaDevice(program, **opts)
        raise OptionError(f"target 'loihi2' has no device '{name}'", hint="use --device emulator or --device lava")


BACKEND = Loihi2Backend()
