"""Learning rules (:mod:`nmc.plasticity`) as the post population's PE runs them: float32 on the
Cortex-M4F, the arithmetic below, implemented identically here (numpy, the emulator) and in the
generated C kernel (:mod:`.plasticity_kernel`); the tests compare the weights bit for bit.

Weights. A plastic projection keeps, per synapse of the dense (out, in) block, a **float32 shadow
weight** ``w`` in the reference's float units (4 bytes), and the synapse row the neuron model reads
holds the integer ``q = clamp(rint(k_j · w), −Q, Q)`` (``rint``: round half to even, the FPU's
default; ``k_j`` = the row's integer units per float unit, g_j / s of :mod:`.lower`; Q the
model's weight bound, 127 for the int8 models). A shadow rather than an int8 weight updated in
place: an STDP step moves a weight by far less than one int8 step (a_plus·k ≈ 0.1), which nearest
rounding would lose every step and stochastic rounding would turn into noise the reference does
not have. The lowering sets the population's weight scale so that the rule's bounds fit
(``max(|w_min|, |w_max|)``; SPORE ``exp(theta_max − theta0)``). At step 0 the rows are the
program's weights (times the rewiring mask); every update rewrites them from the shadow.

Host constants, each rounded once to float32: dx = exp(−dt/τ+), dy = exp(−dt/τ−), de = exp(−dt/τe),
ap = a_plus, am = a_minus, lr, keep = 1 − decay, wlo = w_min, whi = w_max, cb = dt/τ_baseline (0
without a baseline), prune = prune_below, wnew = w_new; SPORE: mu = prior_mean, iv = 1/σ², bdt =
β·dt, sn = sqrt(2βT·dt), cr = c_reward, th0 = θ0, thlo, thhi, thnew = θ0 + log w_new.

One update per chip tick from the post population's latency tick on (the learner's step t = 0, 1,
…), after the neurons: ``pre`` s_i = the events that arrived this tick (the pre population's spikes
of the previous tick: the reference's step t, as a synapse adds one tick), ``post`` s_j = the post
neurons' spikes of this tick. Every operation is one float32 rounding, in this order:

1. x_i ← x_i·dx;  y_j ← y_j·dy
2. reward: M ← m − r̄;  r̄ ← r̄ + cb·M   (m: the word the host wrote, ``modulate``)
3. pair_ji ← (ap·s_j)·x_i − (am·y_j)·s_i     (not for third_factor="error")
4. stdp: none:   w ← w + pair
         reward: e_ji ← e_ji·de + pair_ji;  w ← w + (lr·M)·e_ji
         error:  e_i ← e_i·de + s_i;        w_ji ← w_ji + (lr·E_j)·e_i   (E_j: the host's error word per post neuron)
         then w ← w·keep (decay > 0 only), w ← min(max(w, wlo), whi), w ← 0 off the rewiring mask
   spore: e_ji ← e_ji·de + w_ji·pair_ji (reward only);  g ← (cr·M)·e_ji (0 without reward)
          θ ← θ + (bdt·((mu − θ)·iv + g) + sn·ξ_ji);  θ ← min(max(θ, thlo), thhi)
          w ← θ > 0 ? exp32(θ − th0) : 0, and 0 off the rewiring mask
5. x_i ← x_i + s_i;  y_j ← y_j + s_j;  t ← t + 1
6. rewiring when t % rewire_every = 0 (below, with this incremented t), then q from w.

A batch (the emulator's B rows) is one learner, as in the reference: traces, eligibility and
third factor are per row, and the weight (or θ) change of step 4 is the sequential sum over rows of
the per-row term, divided by B (the chip runs one row: the term itself).

exp32(z): z clamped to [−87, 88]; n = rint(z·log2 e); r = (z − n·LN2_HI) − n·LN2_LO (Cody–Waite,
LN2_HI = 0x1.62e4p-1 has 17 bits, so n·LN2_HI is exact); p = 1 + r(1 + r(1/2 + r(1/6 + r(1/24 +
r(1/120 + r/720))))) by Horner; exp32 = ldexpf(p, n) (exact). Within 2 ulp of exp; libm's expf
differs between platforms, this does not.

Random numbers: a counter-based generator, so every PE draws its own synapses' numbers whatever the
split, and numpy vectorises it. u32(stream, c) = the upper 32 bits of splitmix64's finaliser of
``(seed·256 + stream)·0xD1B54A32D192ED03 + c·0x9E3779B97F4A7C15`` (mod 2⁶⁴). SPORE's Gaussian ξ_ji
of step t is a sum of 12 uniforms (Irwin–Hall: mean 0, variance 1, tails cut at ±6):
ξ = float32(Σ_{k<12} (u32(1, 12·((t·out + j)·in + i) + k) >> 8) − 6·2²⁴) · 2⁻²⁴ (the integer sum is
exact; its conversion rounds once).

Rewiring (fan-in constant; the reference's semantics, the chip's generator): for each row j in
order, ``gone`` = the mask's synapses with |w| < prune (SPORE: θ ≤ 0), ascending; ``free`` = the
inputs without a synapse, ascending; k = min(|gone|, |free|) new labels by a partial Fisher–Yates
shuffle of ``free``: for a < k, swap free[a] with free[a + ⌊u32(2, (t·out + j)·in + a)·(|free| −
a) / 2³²⌋] (bias below |free|/2³²). gone[:k] leave the mask, the new labels join it; the new
labels and gone[k:] (kept when no free label was left) start at w = wnew (SPORE: θ = thnew) with
their eligibility cleared. Labels differ from the reference's (numpy's PCG64 there), the rule
and the statistics do not.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from nmc.errors import OptionError

F32 = np.float32
LN2_HI = F32(float.fromhex("0x1.62e4p-1"))
LN2_LO = F32(math.log(2) - float.fromhex("0x1.62e4p-1"))
LOG2E = F32(1 / math.log(2))
EXP_COEF = tuple(F32(1 / math.factorial(n)) for n in range(6, -1, -1))   # 1/720 ... 1/1, 1: Horner order
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
KEY_MUL = np.uint64(0xD1B54A32D192ED03)
STREAM_NOISE, STREAM_REWIRE = 1, 2
NORMAL_TERMS = 12


def exp32(z: np.ndarray) -> np.ndarray:
    """exp in float32 by the module docstring's method (the C kernel's ``nmc_exp32``)."""
    z = np.clip(np.asarray(z, F32), F32(-87), F32(88))
    n = np.rint(z * LOG2E)
    r = (z - n * LN2_HI) - n * LN2_LO
    p = EXP_COEF[0]
    for c in EXP_COEF[1:]:
        p = c + r * p
    return np.ldexp(p.astype(F32), n.astype(np.int32)).astype(F32)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def u32(seed: int, stream: int, ctr) -> np.ndarray:
    """The generator's 32-bit word for counters ``ctr`` (module docstring), as uint64."""
    with np.errstate(over="ignore"):
        key = np.uint64((int(seed) * 256 + stream) % 2 ** 64) * KEY_MUL
        return _mix(key + np.asarray(ctr, np.uint64) * GOLDEN) >> np.uint64(32)


def normal(seed: int, t: int, n_out: int, n_in: int) -> np.ndarray:
    """ξ (n_out, n_in) float32 of step ``t`` (Irwin–Hall, module docstring)."""
    base = ((np.uint64(t) * np.uint64(n_out) + np.arange(n_out, dtype=np.uint64)[:, None]) * np.uint64(n_in)
            + np.arange(n_in, dtype=np.uint64)[None, :]) * np.uint64(NORMAL_TERMS)
    k = np.arange(NORMAL_TERMS, dtype=np.uint64)
    s = (u32(seed, STREAM_NOISE, base[..., None] + k) >> np.uint64(8)).astype(np.int64).sum(-1)
    return (s - 6 * 2 ** 24).astype(F32) * F32(2.0 ** -24)


@dataclasses.dataclass(frozen=True)
class Consts:
    """The rule's host constants, float32 (module docstring)."""
    dx: F32; dy: F32; de: F32; ap: F32; am: F32; lr: F32; keep: F32; wlo: F32; whi: F32; cb: F32
    prune: F32; wnew: F32; mu: F32; iv: F32; bdt: F32; sn: F32; cr: F32; th0: F32; thlo: F32; thhi: F32
    thnew: F32

    @classmethod
    def of(cls, r, dt: float) -> "Consts":
        f = lambda v: F32(v)  # noqa: E731
        return cls(dx=f(math.exp(-dt / r.tau_plus)), dy=f(math.exp(-dt / r.tau_minus)), de=f(math.exp(-dt / r.tau_e)),
                   ap=f(r.a_plus), am=f(r.a_minus), lr=f(r.lr), keep=f(1.0 - r.decay), wlo=f(r.w_min), whi=f(r.w_max),
                   cb=f(dt / r.tau_baseline if r.tau_baseline > 0 else 0.0), prune=f(r.prune_below), wnew=f(r.w_new),
                   mu=f(r.prior_mean), iv=f(1.0 / r.prior_std ** 2), bdt=f(r.beta * dt),
                   sn=f(math.sqrt(2 * r.beta * r.temperature * dt)), cr=f(r.c_reward), th0=f(r.theta0),
                   thlo=f(r.theta_min), thhi=f(r.theta_max),
                   thnew=f(r.theta0 + math.log(r.w_new) if r.w_new > 0 else r.theta0))


def initial_mask(w0: np.ndarray, fan_in: int) -> np.ndarray | None:
    """The rewiring mask at step 0: each row's ``fan_in`` largest |w| (ties: lower index), as the reference."""
    if not fan_in:
        return None
    order = np.argsort(-np.abs(np.asarray(w0, float)), axis=1, kind="stable")[:, :fan_in]
    m = np.zeros(np.shape(w0), bool)
    np.put_along_axis(m, order, True, axis=1)
    return m


def initial_theta(w0: np.ndarray, r) -> np.ndarray:
    """SPORE's θ at step 0, float32: θ0 + log w where w > 0, else 0 (computed in float64, rounded once)."""
    w0 = np.asarray(w0, float)
    with np.errstate(divide="ignore"):
        return np.where(w0 > 0, r.theta0 + np.log(np.where(w0 > 0, w0, 1.0)), 0.0).astype(F32)


def weight_bound(r) -> float:
    """The largest |w| the rule can reach (the lowering's weight scale covers it)."""
    return math.exp(r.theta_max - r.theta0) if r.rule == "spore" else max(abs(r.w_min), abs(r.w_max))


def state_bytes_per_synapse(r) -> int:
    """SRAM per synapse of the dense block besides the row's own synapse: the float32 shadow weight,
    an eligibility (reward, SPORE with reward), θ (SPORE), a mask byte (rewiring)."""
    return (4 + (4 if r.third_factor == "reward" else 0) + (4 if r.rule == "spore" else 0)
            + (1 if r.fan_in else 0))


def state_bytes_per_neuron(r) -> int:
    """SRAM per post neuron: its trace y (and its error word, third_factor="error")."""
    return 4 + (4 if r.third_factor == "error" else 0)


def state_bytes_per_run(r, n_in: int) -> int:
    """SRAM per PE: the pre traces x (and the presynaptic eligibility, "error"), the reward and its
    baseline, the step counter."""
    return 4 * n_in * (2 if r.third_factor == "error" else 1) + 12


class PELearner:
    """The learning state of one plastic projection (module docstring), batch rows ``B``.

    ``w0``: (out, in) float weights of the graph (the shadow's start, float32); ``q0``: the
    program's integer weights; ``k``: (out,) integer units per float unit; ``qmax``: the bound."""

    def __init__(self, name: str, rule, w0: np.ndarray, q0: np.ndarray, k: np.ndarray, qmax: int, dt: float):
        self.name, self.rule, self.dt = name, rule, float(dt)
        self.c = Consts.of(rule, dt)
        self.w0 = np.asarray(w0, float).astype(F32)
        self.q0 = np.asarray(q0, np.int32)
        self.k = np.asarray(k, F32)
        self.qmax = int(qmax)
        self.reset(1)

    def reset(self, batch: int) -> None:
        r = self.rule
        self.mask = initial_mask(self.w0, r.fan_in)
        self.w = self.w0.copy()
        self.q = self.q0.copy()
        if self.mask is not None:
            self.q = np.where(self.mask, self.q, 0).astype(np.int32)
            if r.rule != "spore":
                self.w = np.where(self.mask, self.w, F32(0))
        if r.rule == "spore":
            self.theta = initial_theta(self.w0, r)
            self.w = self._w_of_theta()
        self.t = 0
        self.rewired = 0
        self.reset_traces(batch)

    def reset_traces(self, batch: int) -> None:
        r = self.rule
        n_out, n_in = self.w.shape
        self.batch = batch
        self.x = np.zeros((batch, n_in), F32)
        self.y = np.zeros((batch, n_out), F32)
        self.e = (None if r.third_factor == "none" else
                  np.zeros((batch, n_in) if r.third_factor == "error" else (batch, n_out, n_in), F32))
        self.m = np.zeros((batch, n_out) if r.third_factor == "error" else (batch,), F32)
        self.rb = np.zeros((batch,), F32)

    def modulate(self, value) -> None:
        """The third factor from now on (the words the host writes): a reward (scalar or per batch
        row) or, for third_factor="error", the error per post neuron ((out,) or (B, out))."""
        r = self.rule
        if r.third_factor == "none":
            raise OptionError(f"projection '{self.name}' has no third factor to modulate", node=self.name,
                              hint="set third_factor='reward' or 'error' in its Plasticity annotation")
        v = np.asarray(value, dtype=np.float64)
        try:
            v = np.broadcast_to(v, self.m.shape)
        except ValueError:
            raise OptionError(f"the {r.third_factor} for '{self.name}' has shape {v.shape}, expected "
                              f"{self.m.shape} (or one that broadcasts to it)", node=self.name) from None
        if not np.all(np.isfinite(v)):
            raise OptionError(f"the {r.third_factor} for '{self.name}' is not finite", node=self.name)
        self.m = v.astype(F32)

    def set_rule(self, **changes) -> None:
        """Change rule parameters mid-run (schedules); the host rewrites the kernel's constants."""
        from nmc.reference_plasticity import Learner

        Learner.set_rule(self, **changes)   # the reference's checks and replace
        self.c = Consts.of(self.rule, self.dt)

    def _w_of_theta(self) -> np.ndarray:
        w = np.where(self.theta > 0, exp32(self.theta - self.c.th0), F32(0)).astype(F32)
        return w if self.mask is None else np.where(self.mask, w, F32(0))

    @staticmethod
    def _mean(terms: np.ndarray) -> np.ndarray:
        """Σ over batch rows in order, divided by B (float32)."""
        acc = terms[0]
        for b in range(1, terms.shape[0]):
            acc = acc + terms[b]
        return (acc / F32(terms.shape[0])).astype(F32) if terms.shape[0] > 1 else acc

    def step(self, pre: np.ndarray, post: np.ndarray) -> None:
        """One update: ``pre`` (B, in) events that arrived, ``post`` (B, out) spikes of this tick."""
        r, c = self.rule, self.c
        pre, post = np.asarray(pre, F32), np.asarray(post, F32)
        self.x = self.x * c.dx
        self.y = self.y * c.dy
        M = None
        if r.third_factor == "reward":
            M = self.m - self.rb
            self.rb = self.rb + c.cb * M
        pair = None
        if not (r.rule == "stdp" and r.third_factor == "error"):
            pair = (c.ap * post)[:, :, None] * self.x[:, None, :] - (c.am * self.y)[:, :, None] * pre[:, None, :]
        if r.rule == "spore":
            if M is not None:
                self.e = self.e * c.de + self.w[None] * pair
                g = self._mean((c.cr * M)[:, None, None] * self.e)
            else:
                g = F32(0)
            xi = normal(r.seed, self.t, *self.w.shape)
            self.theta = self.theta + (c.bdt * ((c.mu - self.theta) * c.iv + g) + c.sn * xi)
            self.theta = np.minimum(np.maximum(self.theta, c.thlo), c.thhi)
            self.w = self._w_of_theta()
        else:
            if r.third_factor == "none":
                dw = self._mean(pair)
            elif r.third_factor == "reward":
                self.e = self.e * c.de + pair
                dw = self._mean((c.lr * M)[:, None, None] * self.e)
            else:
                self.e = self.e * c.de + pre
                dw = self._mean((c.lr * self.m)[:, :, None] * self.e[:, None, :])
            w = self.w + dw
            if r.decay:
                w = w * c.keep
            w = np.minimum(np.maximum(w, c.wlo), c.whi)
            self.w = w if self.mask is None else np.where(self.mask, w, F32(0))
        self.x = self.x + pre
        self.y = self.y + post
        self.t += 1
        if r.fan_in and self.t % r.rewire_every == 0:
            self._rewire()
        self.q = np.clip(np.rint(self.k[:, None] * self.w), -self.qmax, self.qmax).astype(np.int32)

    def _rewire(self) -> None:
        r, c = self.rule, self.c
        n_out, n_in = self.w.shape
        dead = self.mask & (~(self.theta > 0) if r.rule == "spore" else (np.abs(self.w) < c.prune))
        for j in np.flatnonzero(dead.any(axis=1)):
            gone = np.flatnonzero(dead[j])
            free = np.flatnonzero(~self.mask[j])
            k = min(gone.size, free.size)
            base = (self.t * n_out + int(j)) * n_in
            for a in range(k):
                u = int(u32(r.seed, STREAM_REWIRE, base + a))
                b = a + ((u * (free.size - a)) >> 32)
                free[a], free[b] = free[b], free[a]
            new = free[:k]
            self.mask[j, gone[:k]] = False
            self.mask[j, new] = True
            targets = np.concatenate([new, gone[k:]])
            self.w[j, gone[:k]] = 0
            self.w[j, targets] = c.wnew
            if self.e is not None and self.e.ndim == 3:
                self.e[:, j, gone[:k]] = 0
                self.e[:, j, targets] = 0
            if r.rule == "spore":
                self.theta[j, gone[:k]] = 0
                self.theta[j, targets] = c.thnew
            self.rewired += gone.size

    def labels(self) -> np.ndarray:
        """(out, fan_in) presynaptic labels per post neuron, ascending (rewiring only)."""
        return np.stack([np.flatnonzero(row) for row in self.mask])


# ------------------------------------------------------------ lowering and program
#: the neuron models a learning kernel runs beside (no synaptic delays, no conv kernel)
LEARNING_MODELS = ("lif_no_delay", "lif_curr_exp_no_delay")


def plastic_terms(graph, post: str, terms: list, pops: dict, model: str, g: np.ndarray) -> dict:
    """``{term index: (projection, rule, bound on |g·w|, W (out, in))}`` of the plastic projections
    into population ``post`` (:func:`.lower.lower`'s terms), refusing what a PE cannot learn on:
    the projection must be the only path from one input or spiking layer to ``post``, forward,
    without synaptic delays, feeding a ``lif_no_delay``/``lif_curr_exp_no_delay`` population with
    one event per spike."""
    from nmc.errors import UnsupportedNodeError
    from nmc.plasticity import plastic, post_of

    from .program import KERNEL_MODELS

    out = {}
    for proj, rule in plastic(graph).items():
        if post_of(proj, graph, rule) != post:
            continue

        def refuse(why, hint):
            raise UnsupportedNodeError(f"spinnaker2 cannot run the plasticity rule '{rule.rule}' on this projection: "
                                       f"{why}", node=proj, hint=hint)

        preds = graph.preds(proj)
        W = np.asarray(graph.nodes[proj].weight, float)
        src = preds[0] if len(preds) == 1 else None
        hits = [i for i, t in enumerate(terms) if t[0] == src]
        if src is None or src not in pops or len(hits) != 1:
            refuse("its input is not one input or neuron layer", "feed the plastic projection directly from one "
                   "input or spiking layer")
        i = hits[0]
        m = np.asarray(terms[i][3], float).T
        if m.shape != W.shape or not np.allclose(m, W, rtol=1e-12, atol=0.0):
            refuse(f"other linear paths from '{src}' join it before '{post}' (the PE learns one synapse matrix)",
                   "give the plastic projection its own source-to-layer path")
        if terms[i][2]:
            refuse("it is a recurrent projection (its spikes arrive one step late for the pairing)",
                   "learn on a forward projection")
        if model not in LEARNING_MODELS:
            refuse(f"its post population runs the '{model}' model (synaptic delays or a conv kernel); the learning "
                   "kernel runs beside lif_no_delay / lif_curr_exp_no_delay rows", "balance the path lengths into "
                   f"'{post}' and keep it dense (--option conv=false)")
        if pops[src].model in KERNEL_MODELS or pops[src].quantum != 1.0:
            refuse(f"its source '{src}' sends graded values, not spikes", "feed it spikes (input quantum 1)")
        out[i] = (proj, rule, float(np.max(np.abs(g))) * weight_bound(rule), W)
    return out


def learn_spec(entry: tuple, k: np.ndarray, qmax: int, dt: float) -> dict:
    """What a plastic :class:`~.program.Projection` carries: the graph node, the rule's fields, the
    rows' integer units per float unit ``k`` (float32), the float weights ``w0`` (float32), the
    weight bound ``qmax`` and ``dt``."""
    proj, rule, _, W = entry
    return {"node": proj, "rule": rule.fields(), "k": np.asarray(k, F32), "w0": W.astype(F32),
            "qmax": int(qmax), "dt": float(dt)}


def rule_of(spec: dict):
    from nmc.plasticity import Plasticity

    return Plasticity(**spec["rule"])


def learner(q) -> PELearner:
    """The learner of plastic projection ``q`` (a :class:`~.program.Projection`)."""
    s = q.plastic
    return PELearner(s["node"], rule_of(s), s["w0"], q.weights, s["k"], s["qmax"], s["dt"])


def refusal_for(rule) -> str | None:
    """What the PE kernels cannot run of ``rule``: every rule and third factor of
    :mod:`nmc.plasticity` runs; the structure is checked at lowering (:func:`plastic_terms`)."""
    return None
