"""The ``brainscales2`` target's compile options (``--option KEY=VALUE``), typed (see :mod:`nmc.target_options`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmc.target_options import CommonOptions, option


@dataclass(frozen=True)
class BrainScaleS2Options(CommonOptions):
    target: ClassVar[str] = "brainscales2"

    calibration: str | None = option("measured per-circuit calibration table (JSON file)")
    t_refrac: float | None = option("refractory time in seconds of model time", float, 0)
    speedup: float | None = option("hardware speed-up over model time (default: chosen within "
                                   "timing.speedup_range)", float, 0, lo_open=True)
    bias_repeat_max: int = option("most repeated bias-source events per step for a large bias", int, 1, 64,
                                  default=8)
    ppu_period: int | None = option("model steps between two runs of the plasticity processor's learning rule "
                                    "(default: the spec's plasticity.period, 10; backends/brainscales2/ppu.py)",
                                    int, 1, 100000)
