"""The widths of Lava's fixed-point learning engine, read from the spec's ``[plasticity]`` table.

:mod:`.learning` maps a rule onto these and emulates the engine in them; the numbers are
Lava 0.10's (``hw_configs/loihi2.toml [plasticity]`` cites the file and constant of each):

* ``trace_bits`` (7): traces x1, y1, y2 saturate at ``2^trace_bits − 1``; a product reads a
  trace clipped to ``[−2^trace_bits, 2^trace_bits − 1]``;
* ``tag_bits`` (9, signed): the tag t clips to ``[−2^(tag_bits−1) − 1, 2^(tag_bits−1) − 1]``
  (Lava's bound as written there);
* ``accumulator_bits`` (16, signed): the update accumulates in ``w << acc_shift`` with
  ``acc_shift = accumulator_bits − (weight_bits + 1)`` (7; weight_bits is ``numerics.weight_bits``,
  the weight factor w is ``weight_bits + 1`` bits signed), each product and the sum clipped to
  ``[−2^(accumulator_bits−1) − 1, 2^(accumulator_bits−1) − 1]``; a product of factor widths
  summing (with the mantissa's) to more than ``accumulator_bits − 1`` is shifted right first (a floor);
* ``mantissa_bits`` (4), ``scale_exp_min``/``scale_exp_max`` (−7, 8): a product's constant is
  ``m·2^p`` with ``1 ≤ |m| ≤ 2^(mantissa_bits−1) − 1`` and p in the range;
* ``rounding_seed`` (2): the seed of the generator whose numbers round the weights stochastically.

The program records the format (``program.json`` → ``meta.learning_format``) only when it differs
from the packaged spec's, so bundles compiled with the packaged spec keep their program bytes; a
program without the record was compiled with the packaged values. The ``lava`` device runs Lava's
own engine, so it refuses a program whose trace, tag, accumulator or rounding seed differ.
A narrower mantissa or exponent range is Lava syntax still; a wider one is not: the emitted rule
string would hold constants Lava's ``ProductSeries`` refuses, so the spec is refused first
(:data:`LAVA_MANTISSA_BITS`, :data:`LAVA_SCALE_EXP`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

from nmc.errors import ConfigError, InputFileError, OptionError
from nmc.hw import key_error, packaged, read_numbers

#: the widest scaling mantissa Lava's rule strings take (ProductSeries: s_mantissa in −8..7)
LAVA_MANTISSA_BITS = 4
#: the scaling exponents Lava's rule strings take (ProductSeries: −7 ≤ s_exp < 9)
LAVA_SCALE_EXP = (-7, 8)
#: the fields the engine's arithmetic depends on: the lava device refuses others than Lava's
ENGINE_FIELDS = ("trace_bits", "tag_bits", "accumulator_bits", "weight_bits", "rounding_seed")


@dataclass(frozen=True)
class LearningFormat:
    trace_bits: int
    tag_bits: int
    accumulator_bits: int
    weight_bits: int
    mantissa_bits: int
    scale_exp_min: int
    scale_exp_max: int
    rounding_seed: int

    # ------------------------------------------------------------ derived
    @property
    def trace_max(self) -> int:
        return 2 ** self.trace_bits - 1

    @property
    def acc_shift(self) -> int:
        return self.accumulator_bits - (self.weight_bits + 1)

    @property
    def acc_range(self) -> tuple[int, int]:
        return -(2 ** (self.accumulator_bits - 1)) - 1, 2 ** (self.accumulator_bits - 1) - 1

    @property
    def tag_range(self) -> tuple[int, int]:
        return -(2 ** (self.tag_bits - 1)) - 1, 2 ** (self.tag_bits - 1) - 1

    @property
    def mant_max(self) -> int:
        return 2 ** (self.mantissa_bits - 1) - 1

    @property
    def width(self) -> dict:
        """Factor widths of the products (x0 one bit, traces, tag, weight)."""
        t = self.trace_bits
        return {"x0": 1, "x1": t, "y1": t, "y2": t, "t": self.tag_bits, "w": self.weight_bits + 1}

    def sign_range(self, mode: str) -> tuple[int, int]:
        """The weight range of Lava's sign modes: mixed [−2^wb, 2^wb − 1], excitatory [0, 2^wb − 1],
        inhibitory [−(2^wb − 1), 0] (wb = weight_bits)."""
        top = 2 ** self.weight_bits - 1
        return {"mixed": (-top - 1, top), "excitatory": (0, top), "inhibitory": (-top, 0)}[mode]

    # ------------------------------------------------------------ reading
    def check(self, where: str = "the spec's [plasticity]") -> None:
        """ConfigError unless the widths make an engine the emitted Lava rule can state."""
        def bad(key, msg, limit, actual, hint):
            raise key_error(f"plasticity.{key}", msg, where=where, limit=limit, actual=actual, hint=hint)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in asdict(self).values()):
            raise ConfigError("the [plasticity] widths must be whole numbers", path=where, actual=asdict(self))
        if not 1 <= self.mantissa_bits <= LAVA_MANTISSA_BITS:
            bad("mantissa_bits", "Lava's learning rules take scaling mantissas of at most "
                f"{LAVA_MANTISSA_BITS} bits (-8..7)", f"1..{LAVA_MANTISSA_BITS}", self.mantissa_bits,
                "a narrower mantissa is allowed; Lava's ProductSeries refuses a wider one")
        if self.mantissa_bits < 2:
            bad("mantissa_bits", "a signed mantissa needs 2 bits for |m| >= 1", f"2..{LAVA_MANTISSA_BITS}",
                self.mantissa_bits, "give mantissa_bits >= 2")
        lo, hi = LAVA_SCALE_EXP
        if self.scale_exp_min < lo or self.scale_exp_max > hi:
            k = "scale_exp_min" if self.scale_exp_min < lo else "scale_exp_max"
            v = getattr(self, k)
            bad(k, f"Lava's learning rules take scaling exponents {lo}..{hi} only", f"{lo}..{hi}", v,
                "narrow the exponent range; Lava's ProductSeries refuses a wider one")
        if self.acc_shift < 1 or self.accumulator_bits > 62:
            bad("accumulator_bits", f"the accumulator must hold the {self.weight_bits + 1}-bit weight with "
                "fraction bits below it (and fit 62 bits)", f"{self.weight_bits + 2}..62", self.accumulator_bits,
                "give accumulator_bits > numerics.weight_bits + 1")
        for k in ("trace_bits", "tag_bits"):
            if not 1 <= getattr(self, k) <= 30:
                bad(k, "outside 1..30 bits", "1..30", getattr(self, k), f"give {k} in 1..30")
        if self.rounding_seed < 0:
            bad("rounding_seed", "numpy's generators take seeds >= 0", ">= 0", self.rounding_seed,
                "give a seed >= 0")

    @classmethod
    def from_spec(cls, spec) -> "LearningFormat":
        """From the spec's ``[plasticity]`` and ``numerics.weight_bits`` (None: the packaged spec)."""
        if spec is None:
            return packaged_format()
        keys = {k: f"plasticity.{k}" for k in cls.__dataclass_fields__}
        keys["weight_bits"] = "numerics.weight_bits"
        fmt = cls(**read_numbers(spec, keys))
        fmt.check(getattr(spec, "where", "the spec"))
        return fmt

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where: str = "program/program.json") -> "LearningFormat":
        keys = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or set(d) != keys or any(
                isinstance(v, bool) or not isinstance(v, int) or not -64 <= v <= 64 for v in d.values()):
            raise InputFileError(f"'meta.learning_format' must hold the whole numbers {', '.join(sorted(keys))}",
                                 path=where, hint="recompile the bundle")
        try:
            fmt = cls(**d)
            fmt.check(where)
            return fmt
        except ConfigError as e:
            raise InputFileError(f"'meta.learning_format' is not a usable format: {e.message}", path=where,
                                 hint="recompile the bundle") from None

    @classmethod
    def of_program(cls, prog) -> "LearningFormat":
        """The format a Loihi program was lowered for (its record, else the packaged spec's)."""
        d = getattr(prog, "meta", {}).get("learning_format")
        return packaged_format() if d is None else cls.from_dict(d)


@lru_cache(maxsize=1)
def packaged_format() -> LearningFormat:
    """The packaged spec's format: Lava 0.10's learning engine."""
    return LearningFormat.from_spec(packaged("loihi2"))


def check_lava_learning(prog) -> None:
    """The ``lava`` device runs Lava's own learning engine: refuse a program lowered for other
    engine widths rather than run it in Lava's."""
    fmt, lava = LearningFormat.of_program(prog), packaged_format()
    diff = [f"{k} = {getattr(fmt, k)} (Lava: {getattr(lava, k)})" for k in ENGINE_FIELDS
            if getattr(fmt, k) != getattr(lava, k)]
    if diff:
        raise OptionError("this program's learning synapses were lowered for a learning engine Lava does not have: "
                          + ", ".join(diff),
                          hint="run it on --device emulator (it follows the program's [plasticity] widths), or "
                               "recompile without the --hw override of [plasticity]")
