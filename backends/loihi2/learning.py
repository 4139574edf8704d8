"""Pair STDP on Loihi 2 through Lava's public learning API, and nmc's emulation of it.

A projection with ``Plasticity(rule="stdp", third_factor="none")`` lowers to one
``lava.proc.dense.LearningDense`` with a ``Loihi2FLearningRule`` (the emitted
``lava_net.py`` builds it; the post LIF's ``s_out`` also feeds the synapse's
``s_in_bap``); ``third_factor="reward"`` to a ``Loihi3FLearningRule`` (below,
"Reward"). Everything else is refused with the reason (:func:`refusal`).

**Mapping** (:func:`map_rule`). The lowered integer weight w relates to the float
weight W by ``w·2^e = k·W`` with ``k = v_scale·g / 2^activation_shift`` (the post
group's threshold scale and input gain; one k for the whole synapse, else refused).
``u = 2^e / k`` is the float weight of one weight LSB. With τ in steps
(``τ/dt``), x1 ⇐ pre trace (τ+), y1 ⇐ post trace (τ−), integer impulses I+, I−::

    dw = c+ · y0 · x1  −  c+I · y0 · x0  −  c− · x0 · y1      c = m·2^p, m ∈ 1..7, p ∈ −7..8
    c+ ≈ a+ · e^(1/τ+) / (u·I+)     c+I ≈ c+·I+     c− ≈ a− · e^(−1/τ−) / (u·I−)

(m, p, I) is chosen per term, I ∈ 1..32 (7-bit traces saturate at 127: a trace of
~4 reference units still fits), minimising |m·2^p·I − target|/target; the realised
a± are recorded in ``meta["plasticity"]``. The e^(±1/τ) factors undo the one-step
synapse delay: in Lava the post spike a pre spike causes comes one step later, so
a pair (pre at reference step s, post at t > s) sees x1 decayed over t − s + 1
steps, and a (post at p, pre at s > p) pair sees y1 decayed over s − p − 1 steps.
Pairs the reference does not make: a pre spike in the step after the post spike's
(reference time; Lava's same step, whose impulse x1 already holds) is taken back by
the c+I·y0·x0 product (to within its 3-bit mantissa, and exactly unless x1
saturated); one in the post spike's own step stays paired with it (+a+), which
no Lava product can see (x0 is this step's pre spike only): this is most of the
measured emulator–reference difference. ``t_epoch = 1``: the rule
updates every step, as nmc's does. The bounds: Lava saturates weights at its
format's ends, [−256, 255] (``SignMode.MIXED``), [0, 255] (``EXCITATORY``, when
w_min ≥ 0) or [−255, 0] (``INHIBITORY``, when w_max ≤ 0); the synapse's exponent
e is the smallest with max(|w_min|, |w_max|)·k ≤ 255·2^e, and the lowering picks
the post group's threshold mantissa (:func:`bound_vth`, at most the one its ranges
allow, which it sizes for weights at the bound: :func:`learned_range`) so that
255·u is the bound to within 1/vth; the realised bounds are in
``meta["plasticity"]`` and the compile report. The rule seed is
``Plasticity.seed`` (Lava's ``rng_seed``).

**Fixed-point engine** (Lava 0.10's ``LearningConnectionModelBitApproximate``,
``lava/magma/core/model/py/connection.py``, with t_epoch = 1; the widths written below — 7-bit
traces, 9-bit tag, 16-bit accumulator, ``w << 7``, 4-bit mantissas, exponents −7..8, rounding seed 2 —
are the packaged spec's ``[plasticity]``, :mod:`.learning_format`, and follow an ``--hw`` override), per step, after
the synapse accumulated this step's pre spikes with the weights of the step
before (so a change acts from the next step):

* random numbers: numpy ``default_rng`` generators seeded ``seed`` (x decay),
  ``seed+1`` (x impulse), ``seed+2`` (y decay), ``seed+3`` (y impulse), ``2``
  (weight rounding: Lava's ``ConnVarRandom()`` default). Each draws one number at
  construction; the trace generators advance twice per step (``recv_traces``),
  the weight one once (``run_lrn``), before use. One scalar per step and
  generator, shared by all synapses of the process. Deterministic: the emulator
  draws the same numbers and is **bit-exact** with Lava (tested).
* traces (7 bit): ``x ← floor(x·e^(−1/τ)) + [r_dec < frac(x·e^(−1/τ))]`` (float64
  product, r_dec ∈ [0, 1)), then where the neuron spiked this step
  ``x ← clip(x + I + [r_imp < 0], 0, 127)`` (r_imp ∈ 0..127 integer; the
  impulse's fractional part is 0 for integer I);
* dependencies x0 = pre spiked, y0 = post spiked this step; the traces in the
  products are the updated ones (this step's impulse included);
* accumulator (16-bit signed): ``acc = w << 7``; each product adds
  ``clip((dep·clip(trace, −128, 127)·m) << (p + 7), −2^15 − 1, 2^15 − 1)`` and
  acc is clipped to the same range after each add (the 7-bit trace and 4-bit
  mantissa need no right shift);
* sign mode: EXCITATORY acc = max(acc, 0), INHIBITORY min(acc, 0);
* stochastic rounding to the 8-bit weight: ``w = floor(acc/128) + [r_w <
  frac(acc/128)]``, then clipped to the sign mode's range (above).
* at the first step Lava truncates the initial weights like a Dense: a mixed
  synapse drops its lowest bit, ``w = (w >> 1) << 1``; learned weights keep
  every bit.

**Reward** (``third_factor="reward"``). Lava's tag ``t`` (9-bit signed, clipped to
[−257, 255]) is the eligibility trace and the post neuron's y2 carries the reward::

    dt = c+·y0·x1 − c−·x0·y1 − m_d·2^p_d·u0·t      (the pair terms in tag units, then decay)
    dw = m_w·2^p_w · u0 · t · (y2 − 64)

with tag LSB = u/2^s (s such that a pair adds about 16 LSB), c± as above in tag
units, m_d·2^p_d ≈ 1 − e^(−dt/τe) (to within 25 %, so from 2^−7/1.25: τe ≤ ~160 steps,
else refused naming tau_e) and m_w·2^p_w ≈ lr·2^(1−s); the realised lr and τe are
recorded. The reward reaches y2 as ``64 + clip(round(16·M), −64, 63)`` (M = r − r̄,
the reference's running mean, in steps of 1/16, |M| ≤ 4; :func:`reward_payload`).
Lava 0.10's fixed-point ``LearningLIF`` sends no y traces, so the emitted module
gives the post neurons a model of its own (Lava's bit-accurate LIF that also sends
its spikes as s_out_bap, its trace y1 as it was before the step, the reward as y2,
then ``y1 ← min(127, (y1·y1_decay >> 12) + I−·spike)``, y1_decay = round(4096·e^(−1/τ−)); 12 is the
program's ``numerics.decay_bits`` and 127 its ``2^plasticity.trace_bits − 1``, which the emulator
follows and the emitted model is written with, :func:`.emit.emit_lava_net`);
the reward comes from a RingBuffer into its a_third_factor_in. In the synapse the
received y1, y2 are decayed like traces (y2 with τ = 10⁹) and, for a neuron that
spiked, get the impulse and the [0, 127] clip, as Lava's model does; the products
``t·(y2 − 64)`` carry 20 bits, so Lava shifts them right by 5 (a floor). Lava
applies dw (with the old tag) before dt, both rounded with the same random number.
``Loihi3FLearningRule`` takes no y taus (with τ = 0 Lava's model reads the received
y traces as 0), so they are set through its property setters. ``Device.modulate(r)``
sets r; ``run`` starts with the last value set, a stream uses it from the next step.
Bit-exact with Lava (tested); the post group must reset to zero.

**Decay** (``decay > 0``, any third factor): one more dw product,
``−m·2^p·u0·w`` with m·2^p ≈ decay (to within 25 %, so from 2^−7/1.25 ≈ 0.0063 on, else refused naming
decay): Lava takes it from the weight before the step's update, the reference
multiplies the updated weight by 1 − decay (a second-order difference).

**Error** (``third_factor="error"``): the presynaptic eligibility is the x1 trace
itself (τ = τe, impulse I ≤ 127·(1 − e^(−dt/τe)): a pre neuron firing every step
just saturates it; longer runs of activity saturate at 127), the error E_j of post
neuron j reaches its y2 as ``64 + clip(round(16·E_j), −64, 63)`` through the same
learning LIF model (y1 unused, τ 0), and ``dw = m·2^p·u0·x1·(y2 − 64)`` with
m·2^p·I ≈ lr/(2u) (the 18-bit product is shifted right by 3, a floor). ``modulate``
takes the error per post neuron, (out,) or (B, out).

Lava runs one batch element after another, each a fresh network from the
initial weights; the emulator does the same (weights per batch element, every
element drawing the same random numbers), so a batch is B independent learners
here, not one learner averaging over the batch as the float reference does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nmc.errors import UnsupportedNodeError

from .learning_format import LearningFormat, packaged_format

#: the engine's widths (trace, tag, accumulator, mantissa, exponents, rounding seed) are the program's
#: :class:`.learning_format.LearningFormat`, read from the spec's ``[plasticity]`` (Lava's: 7, 9, 16, 4,
#: −7..8, 2 — the numbers in the module docstring)
IMPULSE_MAX = 32           # largest impulse nmc chooses: headroom for ~4 trace units before saturation
MANT_TOL = 0.25            # the largest relative error accepted for a factor m·2^p (the grid's nearest point is
                           # within 11 % from 4·2^−7 up, within 33 % below); the realised values are recorded


def _fmt(fmt: LearningFormat | None) -> LearningFormat:
    return packaged_format() if fmt is None else fmt


def mant_min(fmt: LearningFormat | None = None) -> float:
    """The smallest factor m·2^p within :data:`MANT_TOL` of the grid (2^−7/1.25 for Lava)."""
    return 2.0 ** _fmt(fmt).scale_exp_min / (1 + MANT_TOL)


def refusal(rule) -> str | None:
    """Why Loihi 2 (Lava's learning API as nmc maps it) cannot run ``rule``; None when it can."""
    if rule.rule == "spore":
        return ("Lava's learning API has no synaptic sampling: no Langevin noise term and no θ parameterisation "
                "(w = exp(θ − θ0)) in its dw/dd/dt product series")
    if rule.fan_in:
        return ("structural rewiring (fan_in > 0) needs label rewrites: Lava's LearningDense learns the weights, "
                "delays and tags of a fixed connectivity and cannot move a synapse to another presynaptic neuron")
    if rule.third_factor != "error" and rule.a_plus == 0 and rule.a_minus == 0 and \
            (rule.third_factor == "reward" or not rule.decay):
        return "a_plus = a_minus = 0: the rule learns nothing (drop the annotation to deploy the weights frozen)"
    return None


def _coefficient(target: float, name: str, node: str, fmt: LearningFormat | None = None,
                 imp_max: int | None = None) -> tuple[int, int, int, float]:
    """(m, p, I, realised) with m·2^p·I ≈ ``target`` (m 1..mant_max, p scale_exp_min..scale_exp_max,
    I 1..imp_max; default min(:data:`IMPULSE_MAX`, trace_max))."""
    fmt = _fmt(fmt)
    imp_max = min(IMPULSE_MAX, fmt.trace_max) if imp_max is None else imp_max
    best = None
    for imp in range(1, imp_max + 1):
        c = target / imp
        for p in range(fmt.scale_exp_min, fmt.scale_exp_max + 1):
            m = int(round(c / 2.0 ** p))
            if not 1 <= m <= fmt.mant_max:
                continue
            got = m * 2.0 ** p * imp
            err = abs(got - target) / target
            key = (round(err, 12), -imp)
            if best is None or key < best[0]:
                best = (key, (m, p, imp, got))
    if best is None:
        lo, hi = 2.0 ** fmt.scale_exp_min, fmt.mant_max * 2.0 ** fmt.scale_exp_max * imp_max
        raise UnsupportedNodeError(f"plasticity parameter '{name}' needs a Lava weight change of {target:.3g} LSB "
                                   f"per trace unit, outside what its learning rule can scale "
                                   f"({lo:.3g}..{hi:.3g})", node=node, actual=target, limit=hi if target > hi else lo,
                                   hint=f"scale {name} by a factor nearer 1 relative to the weights")
    return best[1]


def map_rule(rule, node: str, u: float, dt: float, fmt: LearningFormat | None = None,
             decay_bits: int | None = None) -> dict:
    """The Lava learning rule of ``rule`` (a :class:`nmc.plasticity.Plasticity`) for float weight
    ``u`` per weight LSB: ``{"dw": Lava's dw string, "products": [[dep, [factor, ...], m, p], ...],
    "x1_impulse", "x1_tau", "y1_impulse", "y1_tau", "seed", "sign_mode", "a_plus", "a_minus"}``
    (``a_plus``/``a_minus``: the realised float amplitudes). Equations in the module docstring;
    the mantissas, exponents and trace ceiling are ``fmt``'s, the learning neuron's y1 decay has
    ``decay_bits`` fraction bits (the program's numerics; None: the packaged spec's)."""
    fmt = _fmt(fmt)
    tau_x, tau_y = rule.tau_plus / dt, rule.tau_minus / dt
    out = {"x1_impulse": 0, "x1_tau": float(tau_x), "y1_impulse": 0, "y1_tau": float(tau_y), "seed": int(rule.seed),
           "products": [], "a_plus": 0.0, "a_minus": 0.0,
           "sign_mode": "excitatory" if rule.w_min >= 0 else "inhibitory" if rule.w_max <= 0 else "mixed"}
    terms = []
    if rule.a_plus and rule.third_factor == "none":
        m, p, imp, got = _coefficient(rule.a_plus * math.exp(1 / tau_x) / u, "a_plus", node, fmt)
        out.update(x1_impulse=imp, a_plus=got * u * math.exp(-1 / tau_x))
        out["products"].append(["y0", ["x1"], m, p])
        terms.append(f"({m}) * 2 ^ {p} * y0 * x1")
        if rule.third_factor == "none":    # the pair with this step's own pre spike: taken back
            mc, pc = _mantissa(m * 2.0 ** p * imp, "a_plus", node, "a smaller a_plus", fmt)
            out["products"].append(["y0", ["x0"], -mc, pc])
            terms.append(f"({-mc}) * 2 ^ {pc} * y0 * x0")
    if rule.a_minus and rule.third_factor == "none":
        m, p, imp, got = _coefficient(rule.a_minus * math.exp(-1 / tau_y) / u, "a_minus", node, fmt)
        out.update(y1_impulse=imp, a_minus=got * u * math.exp(1 / tau_y))
        out["products"].append(["x0", ["y1"], -m, p])
        terms.append(f"({-m}) * 2 ^ {p} * x0 * y1")
    out["dw"] = " + ".join(terms)
    if rule.third_factor == "reward":
        _reward(rule, node, u, dt, out, fmt, _decay_bits(decay_bits))
    elif rule.third_factor == "error":
        _error(rule, node, u, dt, out, fmt)
    if rule.decay:              # W ← W·(1 − decay): −decay·w of the weight before the step's update
        md, pd = _mantissa(rule.decay, "decay", node, f"decay ≥ {mant_min(fmt):.3g} per step, or 0", fmt)
        out["products"].append(["u0", ["w"], -md, pd])
        out["dw"] = " + ".join([t for t in [out["dw"]] if t] + [f"({-md}) * 2 ^ {pd} * u0 * w"])
        out["decay"] = md * 2.0 ** pd
    return out


def _error(rule, node: str, u: float, dt: float, out: dict, fmt: LearningFormat) -> None:
    """The error form (module docstring, "Error"): x1 is the presynaptic eligibility (τe, impulse I ≤
    127·(1 − e^(−dt/τe)), so a pre neuron firing every step just saturates it), dw = c·u0·x1·(y2 − 64)."""
    tau_e = rule.tau_e / dt
    cap = max(1, int(fmt.trace_max * (1 - math.exp(-1 / tau_e))))
    m, p, imp, got = _coefficient(rule.lr / (2 * u), "lr", node, fmt, imp_max=cap)
    out.update(third="error", x1_impulse=imp, x1_tau=float(tau_e), y1_impulse=0, y1_tau=0.0, y2_tau=1e9, y1_decay=0,
               baseline_rate=0.0, a_plus=0.0, a_minus=0.0, lr=got * 2 * u, products=[["u0", ["x1", "y2-64"], m, p]],
               dw=f"({m}) * 2 ^ {p} * u0 * x1 * (y2 - 64)")


def _decay_bits(bits: int | None) -> int:
    from .numerics import packaged_numerics

    return packaged_numerics().decay_bits if bits is None else int(bits)


def _reward(rule, node: str, u: float, dt: float, out: dict, fmt: LearningFormat, decay_bits: int) -> None:
    """The three-factor form (module docstring, "Reward"): the pair terms go to the tag (dt), the
    weight follows tag × reward (dw). Updates ``out`` in place."""
    tau_x, tau_y, tau_e = rule.tau_plus / dt, rule.tau_minus / dt, rule.tau_e / dt
    amp = max(rule.a_plus, rule.a_minus)
    s = int(round(math.log2(16 * u / amp)))          # tag LSB = u / 2^s: one pair ≈ 16 tag LSB
    kt = 2.0 ** s / u
    tag, dts = [], []
    for a, name, dep, tr, sign, corr, imp_key in (
            (rule.a_plus, "a_plus", "y0", "x1", 1, math.exp(1 / tau_x), "x1_impulse"),
            (rule.a_minus, "a_minus", "x0", "y1", -1, math.exp(-1 / tau_y), "y1_impulse")):
        if a:
            m, p, imp, got = _coefficient(a * corr * kt, name, node, fmt)
            out[imp_key], out[name] = imp, got / kt / corr
            tag.append([dep, [tr], sign * m, p])
            dts.append(f"({sign * m}) * 2 ^ {p} * {dep} * {tr}")
            if sign > 0:          # the pair with this step's own pre spike: taken back (as in pair STDP)
                mc, pc = _mantissa(m * 2.0 ** p * imp, name, node, "a smaller a_plus", fmt)
                tag.append(["y0", ["x0"], -mc, pc])
                dts.append(f"({-mc}) * 2 ^ {pc} * y0 * x0")
    d = 1 - math.exp(-1 / tau_e)
    md, pd = _mantissa(d, "tau_e", node, f"tau_e ≤ {-dt / math.log(1 - mant_min(fmt)):.3g} s", fmt)
    tag.append(["u0", ["t"], -md, pd])
    dts.append(f"({-md}) * 2 ^ {pd} * u0 * t")
    mw, pw = _mantissa(rule.lr * 2.0 ** (1 - s), "lr", node, "an lr nearer 1", fmt)
    out.update(third="reward", tag_products=tag, dt=" + ".join(dts), y2_tau=1e9,
               y1_decay=int(round(2 ** decay_bits * math.exp(-1 / tau_y))),
               baseline_rate=dt / rule.tau_baseline if rule.tau_baseline > 0 else 0.0,
               products=[["u0", ["t", "y2-64"], mw, pw]], dw=f"({mw}) * 2 ^ {pw} * u0 * t * (y2 - 64)",
               tau_e=-dt / math.log(1 - md * 2.0 ** pd), lr=mw * 2.0 ** pw * 2.0 ** (s - 1))


def _mantissa(target: float, name: str, node: str, hint: str, fmt: LearningFormat | None = None) -> tuple[int, int]:
    """(m, p), m 1..mant_max, p scale_exp_min..scale_exp_max, with m·2^p nearest ``target`` (relative)."""
    fmt = _fmt(fmt)
    lo, hi, mx = fmt.scale_exp_min, fmt.scale_exp_max, fmt.mant_max
    best = min(((abs(m * 2.0 ** p - target) / target, m, p) for m in range(1, mx + 1) for p in range(lo, hi + 1)))
    if best[0] > MANT_TOL:
        raise UnsupportedNodeError(f"plasticity parameter '{name}' needs a Lava factor of {target:.3g}, outside "
                                   f"1·2^{str(lo).replace('-', '−')}..{mx}·2^{hi}", node=node, actual=target,
                                   hint=f"give {hint}")
    return best[1], best[2]


# ------------------------------------------------------------------ reward
REWARD_UNIT = 16           # y2 = 64 + clip(round(16·M), −64, 63): M in steps of 1/16, |M| ≤ 4
REWARD_OFFSET = 64


def reward_payload(r: np.ndarray, base: np.ndarray, steps: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The post neurons' y2 for ``steps`` steps of reward ``r`` (B,) (or error (B, out)) from baseline
    ``base`` (same shape): M = r − r̄, r̄ ← r̄ + rate·(r − r̄) (the reference's running mean, rate = dt/τr;
    0: r̄ = 0), y2 = 64 + clip(round(16·M), −64, 63) → ((steps, *r.shape) int64, the new baseline).
    Float64, the same on every device."""
    r, base = np.asarray(r, np.float64), np.asarray(base, np.float64).copy()
    out = np.zeros((steps, *r.shape), np.int64)
    for t in range(steps):
        m = r - base
        if rate:
            base = base + rate * (r - base)
        out[t] = REWARD_OFFSET + np.clip(np.rint(REWARD_UNIT * m), -REWARD_OFFSET, REWARD_OFFSET - 1).astype(np.int64)
    return out, base


# ------------------------------------------------------------------ engine
def _draws(seed: int, steps: int, every: int, kind: str, top: int = 0) -> np.ndarray:
    """The value each step uses from a Lava generator: one draw at construction, ``every`` per step
    (``kind`` "int": integers 0..top − 1, Lava's impulse draws with top = 2^trace_bits)."""
    g = np.random.default_rng(seed=seed)
    one = (lambda: g.random(1)[0]) if kind == "float" else (
        lambda: g.integers(0, top, size=1, dtype=int)[0])
    vals = [one() for _ in range(1 + every * steps)]
    return np.asarray(vals[every::every])


@dataclass
class Randoms:
    """The random numbers Lava's learning engine uses, step by step (module docstring)."""
    seed: int
    n: int = 0
    fmt: LearningFormat | None = None     # rounding seed and trace width (None: the packaged spec's)

    def __post_init__(self):
        self.x_dec = self.x_imp = self.y_dec = self.y_imp = self.w = np.zeros(0)

    def at(self, t: int) -> tuple:
        """(x_dec, x_imp, y_dec, y_imp, w) of step t (0-based)."""
        if t >= self.n:
            n = max(2 * self.n, t + 1, 64)
            s, fmt = self.seed, _fmt(self.fmt)
            top = fmt.trace_max + 1
            self.x_dec, self.x_imp = _draws(s, n, 2, "float"), _draws(s + 1, n, 2, "int", top)
            self.y_dec, self.y_imp = _draws(s + 2, n, 2, "float"), _draws(s + 3, n, 2, "int", top)
            self.w = _draws(fmt.rounding_seed, n, 1, "float")
            self.n = n
        return self.x_dec[t], self.x_imp[t], self.y_dec[t], self.y_imp[t], self.w[t]


def _decay(v: np.ndarray, tau: float, r: float) -> np.ndarray:
    f = np.exp(-1 / tau) * v
    return (np.floor(f) + (r < f % 1)).astype(np.int64)


def _impulse(v: np.ndarray, spiked: np.ndarray, imp: int, r: int, top: int) -> np.ndarray:
    return np.where(spiked, np.clip(v + imp + int(r < 0), 0, top), v)


class Engine:
    """The fixed-point learning of one plastic synapse (module docstring). State (per batch
    element): ``{"w": (B, out, in), "x1": (B, in), "y1": (B, out), "t": step}``; the widths are
    ``fmt``'s (the program's :class:`.learning_format.LearningFormat`; None: the packaged spec's)."""

    def __init__(self, rule: dict, w0: np.ndarray, fmt: LearningFormat | None = None,
                 decay_bits: int | None = None):
        self.rule, self.fmt, self.decay_bits = rule, _fmt(fmt), _decay_bits(decay_bits)
        self.lo, self.hi = self.fmt.sign_range(rule["sign_mode"])
        w0 = np.asarray(w0).astype(np.int64)
        self.w0 = (w0 >> 1) << 1 if rule["sign_mode"] == "mixed" else w0    # Lava's first-step truncation
        self.rnd = Randoms(int(rule["seed"]), fmt=self.fmt)

    def initial_state(self, batch: int, reward=0.0) -> dict:
        n_out, n_in = self.w0.shape
        st = {"w": np.broadcast_to(self.w0, (batch, n_out, n_in)).copy(), "x1": np.zeros((batch, n_in), np.int64),
              "y1": np.zeros((batch, n_out), np.int64), "t": 0}
        third = self.rule.get("third")
        if third:               # the reward (B,) or the error per post neuron (B, out)
            shape = (batch,) if third == "reward" else (batch, n_out)
            st.update(tag=np.zeros((batch, n_out, n_in), np.int64), y1n=np.zeros((batch, n_out), np.int64),
                      r=np.broadcast_to(np.asarray(reward, np.float64), shape).copy(), base=np.zeros(shape),
                      y2=np.zeros((1, *shape), np.int64))
        return st

    @staticmethod
    def accumulate(st: dict, pre: np.ndarray) -> np.ndarray:
        """Σ_i w[b, j, i]·pre[b, i] with the current weights (B, out) int64."""
        return np.einsum("boi,bi->bo", st["w"], pre.astype(np.int64))

    def update(self, st: dict, pre: np.ndarray, post: np.ndarray) -> None:
        """One step of learning after this step's pre (B, in) and post (B, out) spikes."""
        r, fmt = self.rule, self.fmt
        top = fmt.trace_max
        x_dec, x_imp, y_dec, y_imp, r_w = self.rnd.at(st["t"])
        pre, post = pre != 0, post != 0
        x1 = _impulse(_decay(st["x1"], r["x1_tau"], x_dec), pre, r["x1_impulse"], x_imp, top)
        if r.get("third"):      # three factors: y1 (before this step's spike) and y2 come from the post neuron
            y1 = _impulse(_decay(st["y1n"], r["y1_tau"], y_dec), post, r["y1_impulse"], y_imp, top) if r["y1_tau"] \
                else np.zeros_like(st["y1n"])                 # τ = 0: Lava's model zeroes the trace
            st["y2"], st["base"] = reward_payload(st["r"], st["base"], 1, r["baseline_rate"])
            y2 = st["y2"][0] if st["y2"].ndim == 3 else st["y2"][0][:, None]
            y2 = _decay(np.broadcast_to(y2, post.shape), r["y2_tau"], y_dec)
            y2 = np.where(post, np.clip(y2, 0, top), y2)     # Lava clips every y row of a spiking neuron
        else:
            y1, y2 = _impulse(_decay(st["y1"], r["y1_tau"], y_dec), post, r["y1_impulse"], y_imp, top), None
        f = {"x0": pre[:, None, :].astype(np.int64), "x1": x1[:, None, :], "y1": y1[:, :, None], "y2": None if y2 is None else y2[:, :, None],
             "t": st.get("tag"), "w": st["w"]}
        dep = {"x0": pre[:, None, :], "y0": post[:, :, None], "u0": np.ones((1, 1, 1), bool)}
        st["w"] = self._apply(fmt, r["products"], st["w"], f, dep, r_w, self.lo, self.hi, r["sign_mode"])
        if r.get("third") == "reward":     # then the tag (Lava applies dw before dt, both from the old tag)
            st["tag"] = self._apply(fmt, r["tag_products"], st["tag"], f, dep, r_w, *fmt.tag_range, "mixed")
            st["y1n"] = np.clip((st["y1n"] * r["y1_decay"] >> self.decay_bits) + r["y1_impulse"] * post, 0, top)
        st["x1"], st["y1"] = x1, y1
        st["t"] += 1

    @staticmethod
    def _apply(fmt, products, var, f, dep, r_w, lo, hi, sign_mode):
        """Lava's fixed-point applier: one synaptic variable through its product series, rounded.
        A product m·2^p·Π factors enters the accumulator (LSB 2^−acc_shift of the variable's) shifted
        left by p + acc_shift, after a right shift (a floor) by the bits its factor and mantissa
        widths exceed accumulator_bits − 1."""
        shift, width_of = fmt.acc_shift, fmt.width
        acc_min, acc_max = fmt.acc_range
        acc = var << shift
        for d, factors, m, p in products:
            term = dep[d].astype(np.int64)
            width = fmt.mantissa_bits
            for k in factors:      # "y2-64": Lava's factor with a constant, (y2 − 64)
                v = f["y2"] - REWARD_OFFSET if k == "y2-64" else f[k]
                k = k.split("-")[0]
                term = term * np.clip(v, -2 ** width_of[k], 2 ** width_of[k] - 1)
                width += width_of[k]
            term = np.left_shift(np.right_shift(term * int(m), max(0, width - (fmt.accumulator_bits - 1))),
                                 int(p) + shift)
            acc = np.clip(acc + np.clip(term, acc_min, acc_max), acc_min, acc_max)
        if sign_mode == "excitatory":
            acc = np.maximum(acc, 0)
        elif sign_mode == "inhibitory":
            acc = np.minimum(acc, 0)
        q = acc / 2.0 ** shift
        return np.clip(np.floor(q).astype(np.int64) + (r_w < q % 1), lo, hi)


# ------------------------------------------------------------------ lowering
def plastic_pairs(graph) -> dict[tuple[str, str], str]:
    """``{(source node, post node): projection}`` of the plastic projections (their synapse is
    lowered as one Dense: the lowering does not split its signs)."""
    from nmc.plasticity import plastic, post_of

    return {(graph.preds(k)[0], post_of(k, graph, r)): k for k, r in plastic(graph).items()
            if len(graph.preds(k)) == 1}


def learned_range(graph, node: str | None, G: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The drive matrix the lowering sizes a group's ranges and vth by: ``G`` itself for a frozen
    term, for the plastic projection ``node`` its weights at the rule's bound, max(|w_min|, |w_max|),
    wherever it is larger (``gain``: the post neurons' drive per unit weight, g/unit)."""
    if node is None:
        return G
    from nmc.plasticity import Plasticity

    rule = graph.ann(node, Plasticity)
    b = max(abs(rule.w_min), abs(rule.w_max)) * np.abs(np.asarray(gain, float)).reshape(-1, 1)
    return np.maximum(np.abs(G), b)


def bound_vth(graph, nodes: list, vth: int, gain: np.ndarray, gshift: float, lim) -> int:
    """The threshold mantissa (≤ ``vth``, the one the ranges allow) at which a learning synapse's
    255-LSB end is its rule's bound: with b = max(|w_min|, |w_max|), k = vth·gshift·gain the weight
    scale, e = ⌊log2(vth·gshift·gain·b/255)⌋ and vth' = ⌊255·2^e/(gshift·gain·b)⌋, so Lava saturates at
    255·2^e/k' ≥ b, within 1/vth' of it. ``nodes``: the plastic projections into the group (the first
    sets it); none, or no vth ≥ 1 that fits: ``vth`` unchanged."""
    if not nodes:
        return vth
    from nmc.plasticity import Plasticity

    rule = graph.ann(nodes[0], Plasticity)
    gb = float(np.abs(np.asarray(gain, float)).max()) * gshift * max(abs(rule.w_min), abs(rule.w_max))
    if gb <= 0:
        return vth
    e = min(max(math.floor(math.log2(vth * gb / 255.0)), lim.weight_exp_min), lim.weight_exp_max)
    v = math.floor(255.0 * 2.0 ** e / gb)
    return v if 1 <= v <= vth else vth


def attach(graph, prog, ctx) -> None:
    """Map every plastic projection of ``graph`` onto its lowered synapse: re-quantize its weights
    to hold the rule's bounds, and record the Lava rule in ``prog.meta["plasticity"][synapse]``."""
    from nmc.graph_meta import GraphMeta
    from nmc.plasticity import plastic

    from .lower import _neuron_params
    from .numerics import LavaLimits

    rules = plastic(graph)
    if not rules:
        return
    meta = GraphMeta.of(graph)
    num = prog.numerics
    spec = getattr(ctx, "spec", None)
    fmt = LearningFormat.from_spec(spec)
    lim = LavaLimits.from_spec(spec)
    pairs = plastic_pairs(graph)
    out = {}
    for (src, post), node in pairs.items():
        rule = rules[node]
        syns = [s for s in prog.synapses if s.src == src and s.dst == post]
        others = [k for k in graph.succs(src) if k != node and post in _reach(graph, k, post)]
        if len(syns) != 1 or others:
            raise UnsupportedNodeError(f"the plastic projection's synapse into '{post}' is composed with other "
                                       "paths from the same source: one Lava learning rule needs one synapse",
                                       node=node, hint="connect the source to the post neurons through this "
                                       "projection only")
        s = syns[0]
        grp = prog.group(post)
        n = grp.n
        _, _, g, _, _ = _neuron_params(post, graph.nodes[post], meta.dt, meta.integrator, n, lambda *a: None,
                                       num.decay_scale)
        k = np.asarray(grp.v_scale, float).reshape(-1) * np.broadcast_to(np.asarray(g, float), (n,)) \
            / 2.0 ** num.activation_shift
        k = np.broadcast_to(k, (n,))
        if np.ptp(k) > 1e-9 * np.abs(k).max():
            raise UnsupportedNodeError("the post neurons scale their input differently (threshold or gain per "
                                       "neuron): one Lava learning rule has one weight scale", node=node,
                                       actual=float(np.ptp(k) / np.abs(k).max()),
                                       hint="give the post neurons one threshold and time constant")
        k = float(k[0])
        W = np.asarray(graph.nodes[node].weight, float)
        lo, hi = fmt.sign_range("excitatory" if rule.w_min >= 0 else "inhibitory" if rule.w_max <= 0 else "mixed")
        bound = max(abs(rule.w_min), abs(rule.w_max)) * k
        e = math.ceil(math.log2(bound / hi if hi > 0 else -bound / lo)) if bound > 0 else 0
        e = min(max(e, lim.weight_exp_min), lim.weight_exp_max)
        s.weights = np.clip(np.rint(W * k / 2.0 ** e), lo, hi).astype(np.int32)
        s.weight_exp, s.format = int(e), "dense"
        u = 2.0 ** e / k
        r = map_rule(rule, node, u, meta.dt, fmt, num.decay_bits)
        if rule.third_factor != "none" and grp.reset != "zero":
            raise UnsupportedNodeError("a three-factor projection needs post neurons that reset to zero (its "
                                       "learning neuron model is Lava's LIF)", node=node,
                                       hint="compile with --option reset=zero or drop the reward")
        r.update(node=node, post=post, w_lsb=u, w_bounds=[lo * u, hi * u])
        out[s.name] = r
    prog.meta["plasticity"] = out
    if fmt != packaged_format():   # recorded only when not Lava's: default programs keep their bytes
        prog.meta["learning_format"] = fmt.to_dict()
    ctx.reports.setdefault("loihi2_plasticity", {}).update(
        {r["node"]: {"synapse": name, "dw": r["dw"], "a_plus": r["a_plus"], "a_minus": r["a_minus"],
                     "w_lsb": r["w_lsb"], "w_bounds": r["w_bounds"]} for name, r in out.items()})


def _reach(graph, start: str, goal: str) -> set:
    """Nodes reachable from ``start`` through non-neuron nodes, ``goal`` included when reached."""
    from ..linear import NEURONS

    if start == goal:
        return {goal}
    if isinstance(graph.nodes[start], NEURONS):
        return set()
    seen, todo = set(), [start]
    while todo:
        k = todo.pop()
        for nxt in graph.succs(k):
            if nxt not in seen:
                seen.add(nxt)
                if not isinstance(graph.nodes[nxt], NEURONS):
                    todo.append(nxt)
    return seen
