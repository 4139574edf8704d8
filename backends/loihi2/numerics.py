"""Automatic fixed-point numerics for Loihi 2 (Lava's bit-accurate LIF + Dense).

Per neuron group, :func:`choose_vth` picks the threshold mantissa ``vth``, the
one free scale of the group: a membrane of one threshold is ``64·vth`` LSB, a
synapse's integer drive is ``T = vth·G`` (G: drive per unit input, in
thresholds) and the bias ``64·vth·c`` (c: constant drive per step, in
thresholds). Weights get their own exponent per synapse and biases per neuron
(:func:`quantize_weights`, :func:`quantize_bias`), so their *relative*
precision does not depend on vth; what does is every truncation measured in
LSB — the decays' ``trunc0`` (one LSB per step), the bias rounding (½ LSB),
a negative weight exponent's right shift (one LSB of ``a_in``, 64 LSB of v) —
so the largest vth that overflows nothing gives the most precision reaching
the neuron. The limits, read from ``hw_configs/loihi2.toml [numerics]``:

* ``threshold_mant_bits``: vth ≤ 2¹⁷ − 1;
* bias: ``64·vth·|c| ≤ (2^(bias_mant_bits−1) − 1)·2^(2^bias_exp_bits − 1)``;
* weights: ``vth·max|G| ≤ weight_max·2^weight_exp_max`` (the exponent field);
* current u (wraps at ``state_bits``, a silent wrong answer, so a hard limit):
  ``64·vth·u_max < 2^(state_bits−1)``;
* membrane v (clips at ±(2²³ − 1): only a very negative v saturates, a soft
  limit kept unless it would cost more than the precision floor): ``64·vth·v_max``.

``u_max``/``v_max`` (thresholds) come from the calibration data when the compile
has it (the float reference's largest |I| and |v| on it, times a margin of
:data:`MARGIN`), else from the worst case: every source active every step
(graded inputs at their largest payload), u at its steady state Σ|G|/(du/4096)
and v at (drive + |c|)/(dv/4096). A network is refused only when the hard
limits leave no vth ≥ 1; the error names the limit and the factor missing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from nmc.errors import OptionError, UnsupportedNodeError
from nmc.hw import key_error, packaged, read_numbers
from nmc.rowblocks import row_blocks

#: calibration-measured ranges are multiplied by this before they bound vth (inputs unseen in calibration)
MARGIN = 2.0
#: the precision floor the soft membrane limit may not push vth below: 2¹⁰ keeps every per-step
#: truncation (≤ 64 LSB) below 1/1024 of a threshold
VTH_FLOOR = 1024
#: steps of accumulation assumed for an undecaying (IF) membrane's negative excursion without calibration
IF_HORIZON = 100


@dataclass(frozen=True)
class LoihiNumerics:
    """The fixed-point format a program is lowered for and emulated in (the spec's ``[numerics]``):
    decays ``d/2^decay_bits``, ``u += a_in << activation_shift``, spike when
    ``v > vth << threshold_shift``, u and v ``state_bits`` wide, ``weight_bits`` weight mantissa.

    The program records it (``program.json`` → ``numerics``) when it differs from the packaged
    ``loihi2`` spec's (:func:`packaged_numerics`, Lava's own widths), so a bundle compiled with the
    default spec is byte-identical to one from before the record existed; a program without the
    record was compiled with the packaged values."""

    decay_bits: int
    activation_shift: int
    threshold_shift: int
    state_bits: int
    weight_bits: int

    @classmethod
    def from_spec(cls, spec) -> "LoihiNumerics":
        """From the spec's ``[numerics]`` (None: the packaged ``loihi2`` spec); ``decay_scale`` must be
        ``2^decay_bits`` (Lava divides by shifting)."""
        if spec is None:
            return packaged_numerics()
        num = cls(**read_numbers(spec, {k: f"numerics.{k}" for k in cls.__dataclass_fields__}))
        if spec.has("numerics.decay_scale"):
            scale = read_numbers(spec, {"s": "numerics.decay_scale"})["s"]
            if scale != num.decay_scale:
                raise key_error("numerics.decay_scale", f"is not 2^decay_bits = {num.decay_scale}",
                                where=spec.where, limit=num.decay_scale, actual=scale,
                                hint="override decay_bits and decay_scale together (the decay divides by a shift)")
        return num

    @property
    def decay_scale(self) -> int:
        """The decays' unit: ``d/decay_scale`` per step (4096 on Lava)."""
        return 2 ** self.decay_bits

    @property
    def v_max(self) -> int:
        """2^(state_bits − 1): u wraps beyond it, v clips to ±(v_max − 1)."""
        return 2 ** (self.state_bits - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "program/program.json") -> "LoihiNumerics":
        """The record a program file holds; every field a whole number in a sane range."""
        from nmc.errors import InputFileError

        keys = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or set(d) != keys or any(
                isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 62 for v in d.values()):
            raise InputFileError(f"'numerics' must hold the whole numbers {', '.join(sorted(keys))} (0..62)",
                                 path=where, hint="recompile the bundle")
        return cls(**d)


@lru_cache(maxsize=1)
def packaged_numerics() -> LoihiNumerics:
    """The packaged spec's numerics: the widths Lava's own fixed-point models hard-code."""
    return LoihiNumerics.from_spec(packaged("loihi2"))


def check_lava_numerics(num: LoihiNumerics) -> None:
    """The ``lava`` device runs Lava's own LIF/Dense models, whose widths are fixed: refuse a program
    lowered for others rather than silently running it in Lava's."""
    lava = packaged_numerics()
    if num != lava:
        diff = ", ".join(f"{k} = {v} (Lava: {getattr(lava, k)})" for k, v in num.to_dict().items()
                         if v != getattr(lava, k))
        raise OptionError(f"this program was lowered for numerics Lava's models do not have: {diff}",
                          hint="run it on --device emulator (it follows the program's numerics), or recompile "
                               "without the --hw override of [numerics]")


@dataclass(frozen=True)
class LavaLimits:
    """Lava's fixed-point widths (from the spec's ``[numerics]`` table; None: the packaged spec)."""
    vth_max: int
    bias_mant_max: int
    bias_exp_max: int
    weight_max: int
    weight_exp_min: int
    weight_exp_max: int
    state_max: int
    shift: int                           # threshold_shift (v LSB per vth LSB: 2^shift)
    weight_bits: int

    @classmethod
    def from_spec(cls, spec) -> "LavaLimits":
        spec = spec if spec is not None else packaged("loihi2")
        n = read_numbers(spec, {k: f"numerics.{k}" for k in (
            "threshold_mant_bits", "bias_mant_bits", "bias_exp_bits", "weight_max", "weight_exp_min",
            "weight_exp_max", "state_bits", "threshold_shift", "weight_bits")})
        return cls(vth_max=2 ** n["threshold_mant_bits"] - 1, bias_mant_max=2 ** (n["bias_mant_bits"] - 1) - 1,
                   bias_exp_max=2 ** n["bias_exp_bits"] - 1, weight_max=n["weight_max"],
                   weight_exp_min=n["weight_exp_min"], weight_exp_max=n["weight_exp_max"],
                   state_max=2 ** (n["state_bits"] - 1) - 1, shift=n["threshold_shift"],
                   weight_bits=n["weight_bits"])

    @property
    def bias_max(self) -> float:
        return float(self.bias_mant_max * 2 ** self.bias_exp_max)


@dataclass
class Choice:
    vth: int
    bound_by: str          # which limit set vth
    limits: dict           # every candidate limit on vth (float)
    ranges: dict           # u_max, v_max, c_max, g_max (thresholds), source of the ranges


def choose_vth(name: str, lim: LavaLimits, *, c: np.ndarray, G_abs_max: float, u_max: float, v_max: float,
               ranges_from: str) -> Choice:
    """The largest threshold mantissa within the hard limits (bias, weight exponent, u), then within the
    soft membrane limit unless that falls below :data:`VTH_FLOOR`."""
    s = 2 ** lim.shift
    cmax = float(np.abs(c).max()) if np.size(c) else 0.0
    hard = {"threshold_mant_bits": float(lim.vth_max),
            "bias_mant_bits/bias_exp_bits": lim.bias_max / (s * cmax) if cmax > 0 else math.inf,
            "weight_exp_max": lim.weight_max * 2.0 ** lim.weight_exp_max / G_abs_max if G_abs_max > 0 else math.inf,
            "state_bits (current u wraps)": lim.state_max / (s * u_max) if u_max > 0 else math.inf}
    soft = lim.state_max / (s * v_max) if v_max > 0 else math.inf
    key = min(hard, key=hard.get)
    top = hard[key]
    if top < 1:
        raise UnsupportedNodeError(
            f"no threshold scale fits Lava's fixed point: {key} would need vth_mant = {top:.3g} < 1, "
            f"{1 / top:.3g}× too large a range", node=name, limit=1, actual=top,
            hint="lower the bias or the weights into this layer relative to its threshold (retrain with a "
                 "larger v_threshold), or give --calibrate data so the range comes from real activity")
    vth, bound = top, key
    if soft < vth:     # the membrane range would clip: give way to it down to the precision floor
        vth = max(soft, min(top, VTH_FLOOR))
        if vth == soft:
            bound = "state_bits (membrane v clips)"
        elif vth < top:
            bound = (f"precision floor {VTH_FLOOR} (a membrane beyond ±{lim.state_max / (s * vth):.3g} "
                     "thresholds would clip)")
    ranges = {"u_max": u_max, "v_max": v_max, "c_max": cmax, "g_max": G_abs_max, "ranges_from": ranges_from}
    return Choice(int(math.floor(vth)), bound, {**hard, "state_bits (membrane v clips)": soft}, ranges)


def quantize_weights(T: np.ndarray, bits: int, lim: LavaLimits):
    """T ≈ w·2^e with w on Lava's 8-bit grid (``lim.weight_bits``; ``bits`` < 8 coarsens it).
    Returns (w int32, e, rel_err). Computed in row blocks (:func:`nmc.rowblocks.row_blocks`): the temporaries
    of a 10⁸-synapse matrix stay a few MB; the result is the same bits as on the whole array."""
    T = np.asarray(T)
    lo, hi = (float(T.min()), float(T.max())) if T.size else (0.0, 0.0)
    m = max(hi, -lo)   # = max |T|
    if m == 0.0:
        return np.zeros(T.shape, np.int32), 0, 0.0
    mixed = bool(lo < 0 < hi)
    wb = lim.weight_bits
    q = 2 ** ((wb + 1 if mixed else wb) - bits)    # grid step inside Lava's 8-bit weight
    kmax = 2 ** (bits - 1) - 1 if mixed else 2 ** bits - 1
    e = math.ceil(math.log2(m / (q * kmax)))
    e = min(max(e, lim.weight_exp_min), lim.weight_exp_max)
    w = np.empty_like(T, dtype=np.int32)   # the memory order of T, as T.astype would give (bundles store it)
    dmax = 0.0
    for r in row_blocks(T.shape):
        k = T[r] / 2.0 ** e
        k /= q
        np.rint(k, out=k)
        np.clip(k, -kmax, kmax, out=k)
        k *= q
        w[r] = k
        d = w[r] * 2.0 ** e
        d -= T[r]
        np.abs(d, out=d)
        dmax = max(dmax, float(d.max(initial=0.0)))
    return w, int(e), dmax / m


def max_row_error(w: np.ndarray, e: int, T: np.ndarray, unit: float) -> float:
    """max over rows of Σ_j |w·2^e − T| / unit (row blocks, as :func:`quantize_weights`)."""
    best = 0.0
    for r in row_blocks(T.shape):
        d = w[r] * 2.0 ** e
        d -= T[r]
        np.abs(d, out=d)
        d /= unit
        best = max(best, float(d.sum(axis=1).max(initial=0.0)))
    return best


def quantize_bias(B: np.ndarray, lim: LavaLimits):
    """B ≈ bias_mant·2^bias_exp per neuron, the smallest exponent that fits the mantissa."""
    bexp = np.zeros(B.shape, np.int32)
    nz = np.abs(B) > lim.bias_mant_max
    bexp[nz] = np.ceil(np.log2(np.abs(B[nz]) / lim.bias_mant_max)).astype(np.int32)
    bexp = np.minimum(bexp, lim.bias_exp_max)
    bmant = np.clip(np.rint(B / 2.0 ** bexp), -lim.bias_mant_max, lim.bias_mant_max).astype(np.int32)
    return bmant, bexp


def worst_case_ranges(G_terms: list[tuple[np.ndarray, float]], c: np.ndarray, a_u: np.ndarray, a_v: np.ndarray,
                      spiking: bool, cuba: bool) -> tuple[float, float]:
    """(u_max, v_max) in thresholds with every source active every step at payload ``amp``.
    ``G_terms``: (G (n_dst, n_src) drive per unit input in thresholds, amp)."""
    n = len(c)
    pos, neg = np.zeros(n), np.zeros(n)
    for G, amp in G_terms:
        # one buffer of G's shape and memory order (as np.clip's result: the same sums, bit for bit)
        # for both signs' parts, instead of three fresh G-sized arrays (800 MB each at 10⁸ synapses)
        buf = np.empty_like(G)
        pos += np.clip(G, 0, None, out=buf).sum(axis=1) * amp
        np.negative(G, out=buf)
        neg += np.clip(buf, 0, None, out=buf).sum(axis=1) * amp
        del buf
    drive = np.maximum(pos, neg)
    u = drive / a_u
    if cuba:
        u = u + np.abs(c)                          # the bias transient carried by u (see lower.py)
    up = 1.0 + u + np.clip(c, 0, None) if spiking else (u + np.abs(c)) / np.maximum(a_v, 1.0 / IF_HORIZON)
    down = (neg / a_u + np.clip(-c, 0, None)) / np.maximum(a_v, 1.0 / IF_HORIZON)
    return float(u.max(initial=0.0)), float(np.maximum(up, down).max(initial=0.0))


def measured_output(graph, data: dict, name: str, steps: int = 200) -> float | None:
    """MARGIN × the largest |output| of node ``name`` (an SSM: what it sends) in the float reference on
    the calibration data (the first 16 samples, ``steps`` steps, as :func:`measured_ranges`), or None
    (no data for every input)."""
    from nmc.iomap import IOMap, validate_inputs
    from nmc.reference import ReferenceSimulator

    if not data or any(k not in data for k in graph.inputs):
        return None
    arrs, _, _ = validate_inputs(IOMap.of_graph(graph), {k: data[k] for k in graph.inputs})
    arrs = {k: v[:steps, :16] for k, v in arrs.items()}
    res = ReferenceSimulator(graph).run(arrs, record=[name], batched=True)
    return MARGIN * float(np.abs(np.asarray(res[f"{name}.out"])).max())


def measured_ranges(graph, data: dict, name: str, unit: np.ndarray, scale_u: np.ndarray,
                    steps: int = 200) -> tuple[float, float] | None:
    """(u_max, v_max) in thresholds from the float reference on the calibration data, or None
    (no data for every input). u is the current as Lava's u sees it (``scale_u``·I per threshold)."""
    from nmc.iomap import IOMap, validate_inputs
    from nmc.reference import ReferenceSimulator

    if not data or any(k not in data for k in graph.inputs):
        return None
    arrs, _, _ = validate_inputs(IOMap.of_graph(graph), {k: data[k] for k in graph.inputs})
    arrs = {k: v[:steps, :16] for k, v in arrs.items()}
    res = ReferenceSimulator(graph).run(arrs, record=[name], batched=True)
    v = np.asarray(res[f"{name}.v"]).reshape(-1, len(unit)) / unit
    i = res.get(f"{name}.i")
    u = np.abs(np.asarray(i).reshape(-1, len(unit)) * scale_u).max() if i is not None else 0.0
    return MARGIN * float(u), MARGIN * float(np.abs(v).max())
