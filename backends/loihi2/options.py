"""The ``loihi2`` target's compile options (``--option KEY=VALUE``), typed (see :mod:`nmc.target_options`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmc.target_options import CommonOptions, option


@dataclass(frozen=True)
class Loihi2Options(CommonOptions):
    target: ClassVar[str] = "loihi2"

    vth_mant: int | None = option("threshold mantissa (Lava's 17-bit vth; default: chosen per layer)", int, 1, 131071)
    weight_bits: int | None = option("weight bits inside Lava's 8-bit weight (default: all of the spec's "
                                     "numerics.weight_bits)", int, 1, 8)
    input_bits: int = option("graded input bits (0: spikes; an input feeding only SSM nodes takes its width from "
                             "integer calibration data)", int, 0, 24, default=0)
    sparse_below: float = option("weight density below which a Sparse process is used", float, 0, 1, default=0.25)
    split_signs: bool = option("a mixed-sign weight matrix as an excitatory and an inhibitory Dense (false: one "
                               "Dense, 7 bits of magnitude)", bool, default=True)
