"""The plasticity processor's (PPU's) learning rule: a fixed-point model of what the embedded
processor beside the synapse array runs for a :class:`nmc.plasticity.Plasticity` projection.

The emulator runs this model (:class:`.ppu_learner.PPULearner`), and the PPU kernel the hardware script hands
to the vendor stack carries the same arithmetic as a plain C function (:mod:`.ppu_kernel`); the
tests compile that C here and compare it bit for bit with :func:`update_row` and :func:`rewire`.

**Numbers.** The gain G, the CADC width, the weight range 0..63, the 16-bit constants and the
fraction bits F = 12, 15, 8 below are the packaged spec's (``hw_configs/brainscales2.toml
[plasticity]``, :mod:`.ppu_format`); a rule compiled under an ``--hw`` override carries its own
(:attr:`PPURule.fmt`) and the emulator and the generated kernel follow it.

**Cadence.** The PPU runs every ``period`` model steps (compile option ``ppu_period``, default
the spec's ``plasticity.period``, 10), after the step's spikes: the n-th run follows step n·period − 1 (0-based),
so its weights drive the steps from n·period on. Between runs the synapses learn nothing; the
float reference (:mod:`nmc.reference_plasticity`) updates every step.

**Correlation sensors** (the STDP traces). Each synapse (row r, column c) has a causal and an
anti-causal sensor. The analog part is modelled in float64, per model step and in this order::

    x_i ← x_i·exp(−dt/τ+)     y_j ← y_j·exp(−dt/τ−)                       (decay)
    causal_rc   += mean_b(x_b,i · s_b,j)     acausal_rc += mean_b(y_b,j · s_b,i)
    x_i ← x_i + s_i           y_j ← y_j + s_j                             (this step's spikes)

with i the source the synapse's label selects in its row's group and j the neuron of column c —
the reference's pair terms without A±, so spikes of the same step pair with nothing. A batch is
one learner: the sensors take the batch mean (the reference's mean change over the batch). At a
PPU run the CADC reads each sensor as an 8-bit code, ``code = min(255, ⌊v·G + 0.5⌋)``, G =
``sensor_gain`` (16) codes per unit of correlation (one pre→post pair at zero delay), and the
sensors are reset to 0 after the read (``reset_correlation``).

**Weight update** (integers only; w the synapse's 6-bit magnitude 0..63, σ = ±1 its row's sign,
c/a the causal/acausal codes)::

    D   = KP·c − KM·a                                     int32, Q.F (F = 12 fraction bits)
    none:    Δ = rnd(D, F)
    reward:  e ← sat32(rnd(e·DE, 15) + D)                 eligibility per synapse, int32 in PPU memory
             Δ = rnd(LR·m·e, F + 5 + 8)
    w   ← min(max(w + σ·Δ, LO_σ), HI_σ)                   the magnitude saturates, the row keeps its sign

``rnd(x, s) = sign(x)·((|x| + 2^(s−1)) >> s)``: a right shift rounding half away from zero (int64
intermediate). The constants come from the rule and the projection's weight LSB ``lsb`` (model
weight per code): KP = round(A+·2^F/(G·lsb)), KM likewise (each ≤ 32767, else refused naming
``a_plus``/``a_minus``); DE = min(32767, round(exp(−period·dt/τe)·2^15)) (Q0.15: the eligibility
decays once per run and takes the run's summed D, where the reference decays and adds per step);
LR = round(lr·period·2^8) (Q.8, ≤ 32767; the reference applies lr·M·e every step, the PPU once per
period). The bounds map [w_min, w_max] onto magnitudes: excitatory LO = max(0, ⌈w_min/lsb⌉), HI =
min(63, ⌊w_max/lsb⌋), inhibitory LO = max(0, ⌈−w_max/lsb⌉), HI = min(63, ⌊−w_min/lsb⌋) (clamp to LO
first, then HI). A weight cannot cross zero: its sign is its row's. Every pair (neuron, source) of a
plastic projection has a synapse, at magnitude 0 where the weight is 0 (on an excitatory row unless
every weight is ≤ 0).

**Reward.** The host writes the reward r as a signed 8-bit fixed-point number into PPU memory,
m = clamp(round_half_away(r·2^5), −128, 127) (Q2.5: −4 … 3.97 in steps of 1/32; the spec's
``plasticity.reward_bits``/``reward_frac``, :func:`reward_code`); it holds until
written again (:meth:`.ppu_learner.PPULearner.modulate`). One reward for the batch.

**Structural rewiring** (``fan_in`` > 0, Billaudelle et al. 2021). Every neuron has exactly
``fan_in`` synapses (rows 0..fan_in−1 of its column; the fan_in largest |W| of its row, ties to the
lower index, as the reference); all sources sit in one label group (≤ 64 sources, label = source
index). Every RW = ⌈rewire_every/period⌉ PPU runs, after the weight update, the PPU walks the
columns in order and, per column, its synapses in row order: the free labels are the sources the
column had no synapse from before this rewiring; a synapse with w < θ = ⌈prune_below/lsb⌉ takes
label ``free[u mod n_free]`` (the free labels ascending, that one then taken) with u the next
output of the PPU's xorshift32 generator (x ^= x << 13; x ^= x >> 17; x ^= x << 5 on a uint32;
seeded x₀ = (seed·2654435761 + 1) mod 2^32, 0 → 1), or keeps its label when none is free; either
way w ← W_NEW = clip(round_half_away(w_new/lsb), 0, 63) and its eligibility ← 0. The fan-in stays
exactly ``fan_in``. Rewiring needs excitatory weights (W ≥ 0, w_new ≥ 0).

**SPORE** (``rule="spore"``): θ per synapse in Q.12, its prior, reward and Irwin–Hall noise from
the same xorshift32, the weight from a table of θ: :mod:`.ppu_spore`.

Not run (refused, :func:`refusal`): ``third_factor="error"`` (one error per neuron),
``tau_baseline`` > 0 (the host subtracts its baseline before writing the reward), ``decay`` > 0 with
``stdp``, and rewiring under SPORE.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from nmc.errors import PlasticityError

from .ppu_format import PPUFormat, packaged_format

INT32 = (-(1 << 31), (1 << 31) - 1)

#: the packaged spec's numbers under their former module names (read from hw_configs/brainscales2.toml
#: [plasticity]; the code takes them from a rule's :attr:`PPURule.fmt` or the compile's spec)
_PACKAGED = {"SENSOR_GAIN": "sensor_gain", "CADC_MAX": "cadc_max", "W_MAX": "weight_max", "FRAC": "coef_frac",
             "DE_FRAC": "decay_frac", "LR_FRAC": "lr_frac", "COEF_MAX": "coef_max"}


def __getattr__(name):
    if name in _PACKAGED:
        return getattr(packaged_format(), _PACKAGED[name])
    if name == "DEFAULT_PERIOD":
        from .ppu_format import default_period

        return default_period(None)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def refusal(rule) -> str | None:
    """Why the PPU model cannot run ``rule`` (a :class:`~nmc.plasticity.Plasticity`), None when it can."""
    if rule.rule == "spore" and rule.fan_in:
        return ("rewiring under synaptic sampling (rule='spore' with fan_in > 0) is not generated for the "
                "plasticity processor (SPORE's own retraction, θ ≤ 0, runs: fan_in=0)")
    if rule.third_factor == "error":
        return ("third_factor='error' needs an error per post neuron; the plasticity processor takes one reward "
                "from the host (third_factor='reward')")
    if rule.third_factor == "reward" and rule.tau_baseline > 0:
        return ("tau_baseline > 0: the plasticity processor keeps no running mean of the reward; give the device "
                "the reward minus its baseline (tau_baseline=0)")
    if rule.decay > 0 and rule.rule == "stdp":
        return "decay > 0: the plasticity processor's rule has no weight decay (decay=0)"
    return None


def rnd(x, s: int):
    """sign(x)·((|x| + 2^(s−1)) >> s) on int64: a right shift rounding half away from zero."""
    x = np.asarray(x, np.int64)
    m = (np.abs(x) + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)
    return np.where(x < 0, -m, m)


def round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


@dataclass(frozen=True)
class PPURule:
    """The fixed-point constants of one plastic projection (JSON in the program)."""

    projection: int            # index into the program's projections
    node: str                  # the annotated weight node
    period: int
    third_factor: str          # none | reward
    kp: int
    km: int
    decay_plus: float          # sensor trace decay per model step, exp(−dt/τ+)
    decay_minus: float
    de: int = 0
    lr: int = 0
    exc_lo: int = 0
    exc_hi: int | None = None  # None: the format's weight_max
    inh_lo: int = 0
    inh_hi: int | None = None
    fan_in: int = 0
    prune: int = 0
    w_new: int = 0
    rewire_runs: int = 1       # PPU runs between rewirings
    seed: int = 0
    lsb: float = 1.0           # model weight per code (reports)
    n_src: int = 0             # sources of the projection (rewiring draws labels 0..n_src−1)
    rule: str = "stdp"         # stdp | spore (SPORE's constants below: :mod:`.ppu_spore`)
    k_prior: int = 0
    mu: int = 0
    k_reward: int = 0
    s_reward: int = 1
    k_noise: int = 0
    s_noise: int = 1
    th_min: int = 0
    th_max: int = 0
    w_table: tuple = ()
    th_init: tuple = ()
    #: the PPU format it was compiled for (:class:`.ppu_format.PPUFormat` as a dict); None: the packaged
    #: spec's, and then not in the JSON (programs compiled with the packaged spec keep their bytes)
    format: dict | None = None

    def __post_init__(self):
        fmt = self.fmt          # a recorded format is checked here (InputFileError when unusable)
        for k in ("exc_hi", "inh_hi"):
            if getattr(self, k) is None:
                object.__setattr__(self, k, fmt.weight_max)

    @property
    def fmt(self) -> PPUFormat:
        if self.format is None:
            return packaged_format()
        try:
            return _format_of(tuple(sorted(self.format.items())))
        except (AttributeError, TypeError):      # not a dict of numbers: from_dict says what is wrong
            return PPUFormat.from_dict(self.format)

    def to_json(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if d["format"] is None:
            del d["format"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PPURule":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def bounds(self, sign):
        """(LO, HI) per synapse for row signs ``sign`` (±1)."""
        s = np.asarray(sign)
        return np.where(s < 0, self.inh_lo, self.exc_lo), np.where(s < 0, self.inh_hi, self.exc_hi)


@lru_cache(maxsize=64)
def _format_of(items: tuple) -> PPUFormat:
    return PPUFormat.from_dict(dict(items))


def compile_rule(rule, node: str, index: int, lsb: float, dt: float, period: int, n_src: int = 0,
                 fmt: PPUFormat | None = None) -> PPURule:
    """:class:`PPURule` for annotation ``rule`` on ``node`` (weight LSB ``lsb`` in model units,
    model step ``dt``) in format ``fmt`` (None: the packaged spec's); raises
    :class:`PlasticityError` naming the parameter that does not fit."""
    fmt = packaged_format() if fmt is None else fmt
    cmax, w_max = fmt.coef_max, fmt.weight_max

    def coef(v, param, scale, frac):
        q = round_half_away(v * scale * 2 ** frac)
        if q > cmax:
            raise PlasticityError(f"plasticity parameter '{param}' = {v:g} does not fit the plasticity processor's "
                                  f"{fmt.coef_bits}-bit coefficient ({q} > {cmax} at a weight LSB of {lsb:.4g})",
                                  node=node, limit=f"{param} ≤ {cmax / (scale * 2 ** frac):.4g}", actual=v,
                                  hint=f"lower {param}, or widen the layer's weight range (a larger LSB)")
        return q

    k = 1.0 / (fmt.sensor_gain * lsb)
    kw = dict(kp=coef(rule.a_plus, "a_plus", k, fmt.coef_frac), km=coef(rule.a_minus, "a_minus", k, fmt.coef_frac))
    if rule.third_factor == "reward":
        kw["de"] = min(cmax, round_half_away(math.exp(-period * dt / rule.tau_e) * 2 ** fmt.decay_frac))
        kw["lr"] = coef(rule.lr, "lr", period, fmt.lr_frac)
    if fmt != packaged_format():
        kw["format"] = fmt.to_dict()
    eps = 1e-9
    lo = lambda v: int(min(max(0, math.ceil(v / lsb - eps)), w_max))    # noqa: E731
    hi = lambda v: int(max(min(w_max, math.floor(v / lsb + eps)), 0))   # noqa: E731
    kw.update(exc_lo=lo(rule.w_min), exc_hi=hi(rule.w_max), inh_lo=lo(-rule.w_max), inh_hi=hi(-rule.w_min))
    if rule.rule == "spore":
        from .ppu_spore import constants

        kw.update(rule="spore", **{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in constants(rule, node, lsb, dt, period, fmt).items()})
    if rule.fan_in:
        kw.update(fan_in=int(rule.fan_in), prune=int(min(max(0, math.ceil(rule.prune_below / lsb - eps)), w_max + 1)),
                  w_new=int(min(max(round_half_away(rule.w_new / lsb), 0), w_max)),
                  rewire_runs=max(1, -(-int(rule.rewire_every) // period)), seed=int(rule.seed))
    return PPURule(index, node, int(period), rule.third_factor, decay_plus=math.exp(-dt / rule.tau_plus),
                   decay_minus=math.exp(-dt / rule.tau_minus), lsb=float(lsb), n_src=int(n_src), **kw)


# ---------------------------------------------------------------- the arithmetic (bit-exact with C)
def read_sensor(v, fmt: PPUFormat | None = None) -> np.ndarray:
    """The CADC's code of sensor value(s) ``v``: min(2^cadc_bits − 1, ⌊v·G + 0.5⌋) (``fmt``'s; None:
    the packaged spec's, min(255, ⌊16·v + 0.5⌋))."""
    fmt = packaged_format() if fmt is None else fmt
    return np.minimum(fmt.cadc_max, np.floor(np.asarray(v, float) * fmt.sensor_gain + 0.5)).astype(np.int64)


def reward_code(r: float, fmt: PPUFormat | None = None) -> int:
    """The host's reward code in ``fmt`` (None: the packaged spec's, 8-bit Q2.5):
    clamp(round_half_away(r·2^reward_frac), −2^(reward_bits−1), 2^(reward_bits−1) − 1)."""
    fmt = packaged_format() if fmt is None else fmt
    lo, hi = fmt.reward_range
    return min(max(round_half_away(float(r) * 2 ** fmt.reward_frac), lo), hi)


def update_row(r: PPURule, w, c, a, sign, e=None, m: int = 0):
    """One PPU update of synapses ``w`` (magnitudes) from codes ``c``, ``a`` on rows of sign
    ``sign`` (broadcasts); returns (w, e) as int64 (e None without a reward)."""
    w, c, a = (np.asarray(x, np.int64) for x in (w, c, a))
    f = r.fmt
    d = r.kp * c - r.km * a
    if r.third_factor == "reward":
        e = np.clip(rnd(np.asarray(e, np.int64) * r.de, f.decay_frac) + d, *INT32)
        dw = rnd(np.int64(r.lr) * np.int64(m) * e, f.coef_frac + f.reward_frac + f.lr_frac)
    else:
        dw = rnd(d, f.coef_frac)
    lo, hi = r.bounds(sign)
    return np.minimum(np.maximum(w + np.where(np.asarray(sign) < 0, -dw, dw), lo), hi), e


def xorshift32(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def seed_state(seed: int) -> int:
    return ((int(seed) * 2654435761 + 1) & 0xFFFFFFFF) or 1


def rewire(r: PPURule, w, lab, n_src: int, state: int):
    """Rewire one column: ``w``, ``lab`` its fan_in synapses in row order (int arrays, changed in
    place); returns (the generator state after, the positions re-created)."""
    free = [i for i in range(n_src) if i not in set(int(x) for x in lab)]
    made = []
    for k in range(len(w)):
        if w[k] < r.prune:
            if free:
                state = xorshift32(state)
                lab[k] = free.pop(state % len(free))
            w[k] = r.w_new
            made.append(k)
    return state, made
