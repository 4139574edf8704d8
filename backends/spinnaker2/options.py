"""The ``spinnaker2`` target's compile options (``--option KEY=VALUE``), typed (see :mod:`nmc.target_options`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmc.target_options import CommonOptions, option


@dataclass(frozen=True)
class SpiNNaker2Options(CommonOptions):
    target: ClassVar[str] = "spinnaker2"

    sys_tick: float | None = option("seconds per system tick, the time a PE has per step: the partition packs "
                                    "each PE's synaptic work into it (default: the spec's timing.sys_tick_s)",
                                    float, 0, lo_open=True)
    max_atoms_per_core: int | None = option("neurons per PE the partition pass places (default: the spec's "
                                            "core.neurons_max)", int, 1)
    curr_exp_order: str = option("order of the synaptic-current update", str, choices=("chip", "brian2"),
                                 default="chip")
    conv: bool = option("lower convolutions as conv projections (false: as dense)", bool, default=True)
    egru_weights: str = option("EGRU kernels' weights (ternary: packed 2-bit, quantize{scheme=ternary})", str,
                               choices=("int8", "float32", "ternary"), default="int8")
    density: float | None = option("language models: weights kept per EGRU layer", float, 0, 1, lo_open=True)
    prune_units: float | None = option("language models: fraction of least active units removed", float, 0, 1,
                                       hi_open=True)
    input_quantum: float = option("graded inputs: value of one repeated input event", float, 0, lo_open=True,
                                  default=1.0)
