"""The plasticity processor's numbers, read from the spec's ``[plasticity]`` table.

:mod:`.ppu` compiles a rule's constants in this format, the emulator's learner runs it and
:mod:`.ppu_kernel` writes it into the generated C (``NMC_FRAC``, ``NMC_DE_FRAC``, ``NMC_LR_FRAC``
and the rule's bounds), so an ``--hw`` override changes all three together:

* ``cadc_bits`` (8): a sensor read is ``min(2^cadc_bits − 1, ⌊v·G + 0.5⌋)``;
* ``sensor_gain`` G (16): CADC codes per unit of correlation;
* ``weight_max`` (63, the synapse array's): the bounds LO/HI, W_NEW, θ-table length (SPORE);
* ``coef_bits`` (16): KP, KM, DE, LR ≤ ``2^(coef_bits−1) − 1``;
* ``coef_frac`` F (12), ``decay_frac`` (15), ``lr_frac`` (8): the fraction bits of D, DE, LR;
* ``theta_frac`` (12): SPORE's θ, its prior mean, bounds and weight table in Q.theta_frac;
* ``reward_bits`` (8), ``reward_frac`` (5): the host's reward r reaches the PPU as the signed
  ``reward_bits``-bit m = clamp(round_half_away(r·2^reward_frac), −2^(reward_bits−1),
  2^(reward_bits−1) − 1), Q2.5 at the packaged values (:func:`.ppu.reward_code`; the bundle's
  hardware script writes the same code, :func:`.emit.script`).

``period`` (10) is the default of ``--option ppu_period`` (:func:`default_period`).

A rule records the format (``plasticity[i].format`` in ``bss2_program.json``) only when it differs
from the packaged spec's, so a program compiled with the packaged spec keeps its bytes and a rule
without the record runs in the packaged format. Values the generated kernel cannot hold are
refused (:meth:`PPUFormat.check`, a :class:`~nmc.errors.ConfigError` naming the key): the kernel
reads correlation codes as ``uint8_t`` (cadc_bits ≤ 8), keeps weights in ``uint8_t`` and SPORE's
θ table in ``nmc_w_table[63]`` (weight_max ≤ 63), forms ``d = KP·c − KM·a`` in ``int32_t``
(coef_bits + cadc_bits ≤ 31), rounds in ``int64_t`` (coef_frac + reward_frac + lr_frac ≤ 62) and
keeps the host's reward in ``int8_t nmc_reward`` (reward_bits ≤ 8, reward_frac < reward_bits).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

from nmc.errors import ConfigError, InputFileError
from nmc.hw import key_error, packaged, read_numbers

#: what the generated kernel's types hold (module docstring)
KERNEL_CODE_BITS = 8          # uint8_t correlation codes
KERNEL_WEIGHT_MAX = 63        # uint8_t weights, SPORE's nmc_w_table[63]
KERNEL_D_BITS = 31            # int32_t d = KP·c − KM·a (magnitude bits)
KERNEL_SHIFT_MAX = 62         # int64_t rounding shifts
KERNEL_REWARD_BITS = 8        # int8_t nmc_reward
#: the fields a rule's recorded format may lack (records older than these keys: the packaged values)
REWARD_KEYS = ("reward_bits", "reward_frac")


@dataclass(frozen=True)
class PPUFormat:
    cadc_bits: int
    sensor_gain: float
    weight_max: int
    coef_bits: int
    coef_frac: int
    decay_frac: int
    lr_frac: int
    theta_frac: int
    reward_bits: int
    reward_frac: int

    @property
    def cadc_max(self) -> int:
        return 2 ** self.cadc_bits - 1

    @property
    def coef_max(self) -> int:
        return 2 ** (self.coef_bits - 1) - 1

    @property
    def reward_range(self) -> tuple[int, int]:
        """The host's reward codes: [−2^(reward_bits−1), 2^(reward_bits−1) − 1] ([−128, 127])."""
        return -(2 ** (self.reward_bits - 1)), 2 ** (self.reward_bits - 1) - 1

    def check(self, where: str = "the spec's [plasticity]") -> None:
        """ConfigError unless the generated kernel can hold these numbers (module docstring)."""
        def bad(key, msg, limit, actual, hint):
            raise key_error(f"plasticity.{key}", msg, where=where, limit=limit, actual=actual, hint=hint)
        ints = [f.name for f in fields(self) if f.name != "sensor_gain"]
        for k in ints:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(k, "must be a whole number >= 1", ">= 1", v, f"give {k} a positive whole number")
        g = self.sensor_gain
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g <= 0:
            bad("sensor_gain", "must be a finite number > 0", "> 0", self.sensor_gain, "give a positive gain")
        if self.cadc_bits > KERNEL_CODE_BITS:
            bad("cadc_bits", f"the PPU kernel reads correlation codes as uint8_t", f"<= {KERNEL_CODE_BITS}",
                self.cadc_bits, f"give cadc_bits <= {KERNEL_CODE_BITS}")
        if self.weight_max > KERNEL_WEIGHT_MAX:
            bad("weight_max", "the PPU kernel writes 6-bit weight magnitudes (SPORE's table nmc_w_table[63])",
                f"<= {KERNEL_WEIGHT_MAX}", self.weight_max,
                "override synapse_array.weight_max with a value <= 63 (plasticity.weight_max follows it)")
        if self.coef_bits + self.cadc_bits > KERNEL_D_BITS:
            bad("coef_bits", f"d = KP*c - KM*a would overflow the kernel's int32_t with {self.cadc_bits}-bit codes",
                f"<= {KERNEL_D_BITS - self.cadc_bits}", self.coef_bits, "give fewer coefficient bits")
        if self.theta_frac > 30:
            bad("theta_frac", "SPORE's θ is an int32_t in the kernel", "<= 30", self.theta_frac,
                "give fewer fraction bits")
        if self.reward_bits > KERNEL_REWARD_BITS:
            bad("reward_bits", "the PPU kernel keeps the host's reward in an int8_t (nmc_reward)",
                f"<= {KERNEL_REWARD_BITS}", self.reward_bits, f"give reward_bits <= {KERNEL_REWARD_BITS}")
        if self.reward_frac >= self.reward_bits:
            bad("reward_frac", f"a signed {self.reward_bits}-bit reward holds at most {self.reward_bits - 1} "
                "fraction bits", f"<= {self.reward_bits - 1}", self.reward_frac, "give fewer fraction bits")
        if self.coef_frac + self.reward_frac + self.lr_frac > KERNEL_SHIFT_MAX or self.decay_frac > KERNEL_SHIFT_MAX:
            k, v = ("decay_frac", self.decay_frac) if self.decay_frac > KERNEL_SHIFT_MAX else ("lr_frac", self.lr_frac)
            bad(k, "the kernel's rounding shifts are int64_t", "coef_frac + reward_frac + lr_frac <= "
                f"{KERNEL_SHIFT_MAX}", v, "give fewer fraction bits")

    @classmethod
    def from_spec(cls, spec) -> "PPUFormat":
        """From the spec's ``[plasticity]`` (None: the packaged ``brainscales2`` spec)."""
        if spec is None:
            return packaged_format()
        fmt = cls(**read_numbers(spec, {f.name: f"plasticity.{f.name}" for f in fields(cls)}, real=("sensor_gain",)))
        fmt.check(getattr(spec, "where", "the spec"))
        return fmt

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where: str = "bss2_program.json") -> "PPUFormat":
        keys = {f.name for f in fields(cls)}
        if isinstance(d, dict) and not set(REWARD_KEYS) & set(d):
            # a record written before the reward's format was a spec key: its kernel and script used the
            # packaged one
            d = {**d, **{k: getattr(packaged_format(), k) for k in REWARD_KEYS}}
        if not isinstance(d, dict) or set(d) != keys:
            raise InputFileError(f"a plasticity rule's 'format' must hold {', '.join(sorted(keys))}", path=where,
                                 hint="recompile the bundle")
        fmt = cls(**d)
        try:
            fmt.check(where)
        except ConfigError as e:
            raise InputFileError(f"a plasticity rule's 'format' is not usable: {e.message}", path=where,
                                 hint="recompile the bundle") from None
        return fmt


@lru_cache(maxsize=1)
def packaged_format() -> PPUFormat:
    """The packaged spec's format (8-bit CADC, gain 16, 63, Q.12 / Q0.15 / Q.8, 16-bit constants)."""
    return PPUFormat.from_spec(packaged("brainscales2"))


def default_period(spec) -> int:
    """``plasticity.period`` of ``spec`` (None: the packaged spec): the PPU's cadence in model steps
    when ``--option ppu_period`` is not given; a whole number in 1..100000 (the option's range)."""
    spec = packaged("brainscales2") if spec is None else spec
    v = spec.get("plasticity.period")
    if isinstance(v, bool) or not float(v).is_integer() or not 1 <= v <= 100000:
        raise key_error("plasticity.period", "the PPU runs every whole number of model steps",
                        where=getattr(spec, "where", None), limit="1..100000", actual=v,
                        hint="give a whole number of steps in 1..100000")
    return int(v)
