"""The plasticity processor's (PPU's) learning rule: a fixed-point model of what the embedded
processor beside the synapse array runs for a :class:`nmc.plasticity.Plasticity` projection.

The emulator runs this model (:class:`PPULearner`), and the PPU kernel the hardware script hands
to the vendor stack carries the same arithmetic as a plain C function (:mod:`.ppu_kernel`); the
tests compile that C here and compare it bit for bit with :func:`update_row` and :func:`rewire`.

**Cadence.** The PPU runs every ``period`` model steps (compile option ``ppu_period``, default
:data:`DEFAULT_PERIOD`), after the step's spikes: the n-th run follows step n·period − 1 (0-based),
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
:data:`SENSOR_GAIN` codes per unit of correlation (one pre→post pair at zero delay), and the
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
m = clamp(round_half_away(r·2^5), −128, 127) (Q2.5: −4 … 3.97 in steps of 1/32); it holds until
written again (:meth:`PPULearner.modulate`). One reward for the batch.

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

import numpy as np

from nmc.errors import OptionError, PlasticityError

#: PPU runs every this many model steps unless ``--option ppu_period`` says otherwise
DEFAULT_PERIOD = 10
#: CADC codes per unit of correlation (one pre→post pair at zero delay)
SENSOR_GAIN = 16.0
CADC_MAX = 255
W_MAX = 63
FRAC = 12          # fraction bits of KP, KM and D
DE_FRAC = 15       # eligibility decay per run, Q0.15
REWARD_FRAC = 5    # the host's reward, signed Q2.5
LR_FRAC = 8        # learning rate × period, Q.8
COEF_MAX = 32767
INT32 = (-(1 << 31), (1 << 31) - 1)


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
    exc_hi: int = W_MAX
    inh_lo: int = 0
    inh_hi: int = W_MAX
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

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "PPURule":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def bounds(self, sign):
        """(LO, HI) per synapse for row signs ``sign`` (±1)."""
        s = np.asarray(sign)
        return np.where(s < 0, self.inh_lo, self.exc_lo), np.where(s < 0, self.inh_hi, self.exc_hi)


def compile_rule(rule, node: str, index: int, lsb: float, dt: float, period: int, n_src: int = 0) -> PPURule:
    """:class:`PPURule` for annotation ``rule`` on ``node`` (weight LSB ``lsb`` in model units,
    model step ``dt``); raises :class:`PlasticityError` naming the parameter that does not fit."""
    def coef(v, param, scale, frac):
        q = round_half_away(v * scale * 2 ** frac)
        if q > COEF_MAX:
            raise PlasticityError(f"plasticity parameter '{param}' = {v:g} does not fit the plasticity processor's "
                                  f"16-bit coefficient ({q} > {COEF_MAX} at a weight LSB of {lsb:.4g})", node=node,
                                  limit=f"{param} ≤ {COEF_MAX / (scale * 2 ** frac):.4g}", actual=v,
                                  hint=f"lower {param}, or widen the layer's weight range (a larger LSB)")
        return q

    k = 1.0 / (SENSOR_GAIN * lsb)
    kw = dict(kp=coef(rule.a_plus, "a_plus", k, FRAC), km=coef(rule.a_minus, "a_minus", k, FRAC))
    if rule.third_factor == "reward":
        kw["de"] = min(COEF_MAX, round_half_away(math.exp(-period * dt / rule.tau_e) * 2 ** DE_FRAC))
        kw["lr"] = coef(rule.lr, "lr", period, LR_FRAC)
    eps = 1e-9
    lo = lambda v: int(min(max(0, math.ceil(v / lsb - eps)), W_MAX))    # noqa: E731
    hi = lambda v: int(max(min(W_MAX, math.floor(v / lsb + eps)), 0))   # noqa: E731
    kw.update(exc_lo=lo(rule.w_min), exc_hi=hi(rule.w_max), inh_lo=lo(-rule.w_max), inh_hi=hi(-rule.w_min))
    if rule.rule == "spore":
        from .ppu_spore import constants

        kw.update(rule="spore", **{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in constants(rule, node, lsb, dt, period).items()})
    if rule.fan_in:
        kw.update(fan_in=int(rule.fan_in), prune=int(min(max(0, math.ceil(rule.prune_below / lsb - eps)), W_MAX + 1)),
                  w_new=int(min(max(round_half_away(rule.w_new / lsb), 0), W_MAX)),
                  rewire_runs=max(1, -(-int(rule.rewire_every) // period)), seed=int(rule.seed))
    return PPURule(index, node, int(period), rule.third_factor, decay_plus=math.exp(-dt / rule.tau_plus),
                   decay_minus=math.exp(-dt / rule.tau_minus), lsb=float(lsb), n_src=int(n_src), **kw)


# ---------------------------------------------------------------- the arithmetic (bit-exact with C)
def read_sensor(v) -> np.ndarray:
    """The CADC's 8-bit code of sensor value(s) ``v``: min(255, ⌊v·G + 0.5⌋)."""
    return np.minimum(CADC_MAX, np.floor(np.asarray(v, float) * SENSOR_GAIN + 0.5)).astype(np.int64)


def reward_code(r: float) -> int:
    """The host's 8-bit reward: clamp(round_half_away(r·2^5), −128, 127)."""
    return min(max(round_half_away(float(r) * 2 ** REWARD_FRAC), -128), 127)


def update_row(r: PPURule, w, c, a, sign, e=None, m: int = 0):
    """One PPU update of synapses ``w`` (magnitudes) from codes ``c``, ``a`` on rows of sign
    ``sign`` (broadcasts); returns (w, e) as int64 (e None without a reward)."""
    w, c, a = (np.asarray(x, np.int64) for x in (w, c, a))
    d = r.kp * c - r.km * a
    if r.third_factor == "reward":
        e = np.clip(rnd(np.asarray(e, np.int64) * r.de, DE_FRAC) + d, *INT32)
        dw = rnd(np.int64(r.lr) * np.int64(m) * e, FRAC + REWARD_FRAC + LR_FRAC)
    else:
        dw = rnd(d, FRAC)
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


# ---------------------------------------------------------------- the emulator's learner
class PPULearner:
    """One plastic projection on the emulator: the synapse array's plastic part (magnitudes, labels),
    the sensors, the eligibility, the generator and the host's reward; ``weights()`` the effective
    (post, pre) matrix in LSBs (label matching, row signs: :func:`.synapses.effective_matrix`)."""

    def __init__(self, rule: PPURule, proj, circuits):
        self.rule, self.q, self.circuits = rule, proj, np.asarray(circuits, np.int64)
        self.col_neuron = np.repeat(np.arange(self.circuits.size), self.circuits)
        self.rr, self.cc = np.nonzero(proj.arr_label >= 0)         # the synapses (fixed positions)
        self.sign = proj.row_sign[self.rr]
        self.j = self.col_neuron[self.cc]
        self.reward = 0
        self.trace = None          # a list when the node is recorded (model weights per step)
        self.reset(1)

    def reset(self, batch: int) -> None:
        q = self.q
        self.w = q.arr_w[self.rr, self.cc].astype(np.int64)
        self.lab = q.arr_label[self.rr, self.cc].astype(np.int64)
        self.state = seed_state(self.rule.seed)
        self.runs = self.steps = 0
        self._src = None
        # SPORE: θ (Q.12) from the weights, as the kernel sets it on its first run (:mod:`.ppu_spore`)
        self.theta = np.asarray(self.rule.th_init, np.int64)[self.w] if self.rule.rule == "spore" else None
        self.reset_traces(batch)

    def reset_traces(self, batch: int) -> None:
        n_post, n_pre = self.q.w6.shape
        self.x, self.y = np.zeros((batch, n_pre)), np.zeros((batch, n_post))
        self.causal, self.acausal = np.zeros(self.w.size), np.zeros(self.w.size)
        self.e = np.zeros(self.w.size, np.int64)

    def sources(self) -> np.ndarray:
        """The source index of every synapse (its row group and stored label); kept until a rewiring."""
        if self._src is None:
            q = self.q
            lut = np.full((int(q.group.max(initial=0)) + 1, 64), -1, np.int64)
            lut[q.group, q.label] = np.arange(q.group.size)
            self._src = lut[q.row_group[self.rr], self.lab]
        return self._src

    def weights(self) -> np.ndarray:
        n_post, n_pre = self.q.w6.shape
        W = np.zeros((n_post, n_pre), np.int64)
        np.add.at(W, (self.j, self.sources()), self.sign * self.w)
        return W

    def modulate(self, value) -> None:
        v = np.asarray(value, float)
        if v.size != 1 or not np.isfinite(v).all():
            raise OptionError(f"the reward for '{self.rule.node}' must be one finite number (the host writes one "
                              f"8-bit reward into the plasticity processor's memory), got shape {v.shape}",
                              node=self.rule.node)
        self.reward = reward_code(float(v.reshape(-1)[0]))

    def step(self, pre: np.ndarray, post: np.ndarray) -> bool:
        """Sensors after one model step (pre (B, in), post (B, out) spikes); the PPU run when the
        period ends. True when the weights changed."""
        r = self.rule
        self.x *= r.decay_plus
        self.y *= r.decay_minus
        i = self.sources()
        self.causal += (self.x[:, i] * post[:, self.j]).mean(0)
        self.acausal += (self.y[:, self.j] * pre[:, i]).mean(0)
        self.x += pre
        self.y += post
        self.steps += 1
        if self.steps % r.period:
            return False
        self.run_ppu()
        return True

    def run_ppu(self) -> None:
        r = self.rule
        c, a = read_sensor(self.causal), read_sensor(self.acausal)
        self.causal[:] = 0.0
        self.acausal[:] = 0.0
        if r.rule == "spore":
            from .ppu_spore import update

            self.theta, self.w, e, self.state = update(r, self.theta, self.w, c, a, self.e, self.reward, self.state)
        else:
            self.w, e = update_row(r, self.w, c, a, self.sign, self.e, self.reward)
        if e is not None:
            self.e = e
        self.runs += 1
        if r.fan_in and self.runs % r.rewire_runs == 0:
            n_pre = self.q.w6.shape[1]
            for col in range(self.col_neuron.size):
                at = np.flatnonzero(self.cc == col)                # its synapses, in row order
                at = at[np.argsort(self.rr[at], kind="stable")]
                w, lab = self.w[at].copy(), self.lab[at].copy()
                self.state, made = rewire(r, w, lab, n_pre, self.state)
                self.w[at], self.lab[at] = w, lab
                self.e[at[made]] = 0
            self._src = None


# ---------------------------------------------------------------- the emulator's hooks
def initial_state(program, rules: list[PPURule], batch: int, W: dict, reward=None) -> dict:
    """The learners' part of the emulator's state (empty without rules): ``ppu`` (one learner per
    rule, fresh weights) and ``W`` (the emulator's weights with the plastic ones the learners')."""
    if not rules:
        return {}
    learners = []
    for r in rules:
        q = program.projections[r.projection]
        lr = PPULearner(r, q, program.layer(q.post).circuits)
        lr.reset(batch)
        if reward is not None and r.third_factor == "reward":
            lr.modulate(reward)
        learners.append(lr)
    return {"ppu": learners, "W": dict(W)}


def record_weights(state: dict, record) -> dict[str, list]:
    """``{node: []}`` for the recorded plastic nodes; their learners append the model weights
    (post, pre) broadcast over the batch after every step."""
    out = {}
    for lr in state.get("ppu", []):
        if lr.rule.node in record:
            lr.trace = out[lr.rule.node] = []
    return out


def after_step(program, state: dict, ext: dict, cur_sub: dict, prev_sub: dict) -> None:
    """The learners after one emulator step: pre = the events the projection delivered this step
    (host events, the source layer's spikes, or last step's for a recurrent projection), post =
    the post layer's spikes; changed weights go into ``state['W']`` (× the layer's LSB)."""
    st = state["st"]
    for lr in state["ppu"]:
        q = lr.q
        if q.pre in ext:
            pre = ext[q.pre]
        else:
            pre = (prev_sub[q.pre] if q.recurrent else cur_sub[q.pre]).max(axis=0)
        if lr.step(pre, st[q.post]["s"]):
            state["W"][id(q)] = lr.weights().astype(float) * program.layer(q.post).scale
        if lr.trace is not None:
            B = pre.shape[0]
            lr.trace.append(np.broadcast_to(lr.weights() * lr.rule.lsb, (B, *q.w6.shape)).copy())


def set_rule(program, rules: list[PPURule], learners: list, projection: str | None, changes: dict,
             current: dict) -> list[PPURule]:
    """Rules with ``changes`` to the annotation of ``projection`` (None: every plastic projection),
    recompiled to the PPU's constants — the host writing new constants into PPU memory; the
    learners' state (weights, labels, eligibility, generator) is kept. ``current``: the rules as
    changed so far (node → Plasticity; starts from the graph's annotations, updated here).
    Returns the new rule list."""
    import dataclasses

    from nmc.plasticity import Plasticity

    names = [r.node for r in rules]
    if projection is not None and projection not in names:
        raise OptionError(f"'{projection}' is not a plastic projection", node=projection,
                          hint=f"plastic projections: {', '.join(names) or 'none'}")
    unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(Plasticity)}]
    if unknown:
        raise OptionError(f"a plasticity rule has no parameter '{unknown[0]}'", node=projection)
    fixed = [k for k in changes if k in ("rule", "third_factor", "fan_in", "post", "seed")]
    if fixed:
        raise OptionError(f"'{fixed[0]}' of a running rule cannot change (it sets the learner's state)",
                          node=projection, hint="compile the network again with the new rule")
    out = []
    for r in rules:
        if projection is not None and r.node != projection:
            out.append(r)
            continue
        base = current.get(r.node) or (program.graph.ann(r.node, Plasticity) if program.graph is not None else None)
        if base is None:
            raise OptionError("the program carries no graph with the rule to change", node=r.node)
        new = dataclasses.replace(base, **changes)
        why = refusal(new)
        if why is not None:
            raise OptionError(f"the changed rule cannot run on the plasticity processor: {why}", node=r.node)
        current[r.node] = new
        out.append(compile_rule(new, r.node, r.projection, r.lsb, program.dt, r.period, r.n_src))
    for lr, r in zip(learners, out):
        lr.rule = r
    return out
