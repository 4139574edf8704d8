"""SPORE (reward-based synaptic sampling, :mod:`nmc.plasticity`) on the plasticity processor: the
fixed-point model the emulator runs and the PPU kernel carries (``nmc_spore_row`` in
:mod:`.ppu_kernel`, compiled and compared bit for bit by the tests).

The PPU has no floating point. Each synapse keeps θ as an int32 in Q.12 (θ_q = θ·2^12) in PPU
memory beside the eligibility e (int32). Per PPU run (Δt = period·dt), synapses in row-major order
(rows ascending, then columns; the generator draws once per slot of the rows, an empty slot too, as
the kernel walks them), with c/a the 8-bit correlation codes and w the 6-bit weight::

    D = KP·c − KM·a                                                 (as for STDP, :mod:`.ppu`)
    reward:  e ← sat32(rnd(e·DE, 15) + w·D)                          (∂w/∂θ = w)
             r = rnd(KR·m·e, SR)                                    (m the host's reward, Q2.5)
    u = xorshift32(state);  s = u₀ + u₁ + u₂ + u₃ − 510             (the four bytes of u: Irwin–Hall,
                                                                     mean 0, variance 4·(256²−1)/12 = 21845)
    θ ← clamp(θ + rnd(KPRI·(MU − θ), 15) + r + rnd(KN·s, SN), THMIN, THMAX)
    w ← 0 if θ ≤ 0, else #{k = 0..62 : θ ≥ WT[k]}

so ξ = s/√21845 stands in for the Gaussian (same mean and variance; its tails end at ±3.45σ). The
constants: MU = round(μ·2^12), THMIN/THMAX likewise; KPRI = round(β·Δt/σ²·2^15) (< 2^15, else
refused: the prior's pull would overshoot in one run); KR = round(β·Δt·c_reward·lsb²/2^F·2^SR) (F the
reward's ``reward_frac``, 5 in the packaged Q2.5) and KN = round(√(2βTΔt)/√21845·2^(12+SN)), each with the largest shift (SR ≤ 40, SN ≤ 30) that keeps it
≤ 32767; the weight table WT[k] = ⌈(θ0 + ln((k + 0.5)·lsb))·2^12⌉ (w = exp(θ − θ0) rounded to a code
of ``lsb``, saturating at 63). θ starts at TI[w] (TI[0] = 0, TI[k] = round((θ0 + ln(k·lsb))·2^12)),
which the table maps back to w; the kernel sets it on its first run from the weights it reads.
``rnd`` and the reward as in :mod:`.ppu`. Rewiring under SPORE is not generated (refused).
"""
from __future__ import annotations

import math

import numpy as np

from nmc.errors import PlasticityError

from .ppu_format import KERNEL_WEIGHT_MAX

IRWIN_HALL_VAR = 4 * (256 ** 2 - 1) / 12      # 21845


def _shifted(x: float, max_shift: int, param: str, node: str, kmax: int = 32767) -> tuple[int, int]:
    """(K, S): K = round(x·2^S) ≤ kmax (the format's coefficient bound, 32767) with the largest
    S ≤ max_shift (K = 0 for x = 0)."""
    if x <= 0:
        return 0, 1
    s = max_shift
    while s > 1 and round(x * 2 ** s) > kmax:
        s -= 1
    if round(x * 2 ** s) > kmax:
        raise PlasticityError(f"plasticity parameter '{param}' moves θ by more than 8 per run of the plasticity "
                              "processor", node=node, hint=f"lower {param} or --option ppu_period")
    return int(round(x * 2 ** s)), s


#: θ above every reachable value: pads the weight table of a format with weight_max < 63 to the
#: kernel's nmc_w_table[63] (no θ reaches it, so w stays ≤ weight_max)
TABLE_PAD = 2 ** 31 - 1


def constants(rule, node: str, lsb: float, dt: float, period: int, fmt) -> dict:
    """The SPORE fields of :class:`.ppu.PPURule` for annotation ``rule`` in format ``fmt`` (a
    :class:`.ppu_format.PPUFormat`: θ with ``theta_frac`` fraction bits (12), weights
    0..``weight_max``, constants ≤ ``coef_max``); θ values beyond the kernel's int32_t are refused."""
    TH_FRAC, w_max, kmax = fmt.theta_frac, fmt.weight_max, fmt.coef_max
    q = lambda v: int(round(v * 2 ** TH_FRAC))   # noqa: E731
    step = period * dt
    kpri = round(rule.beta * step / rule.prior_std ** 2 * 2 ** 15)
    if kpri >= 2 ** 15:
        raise PlasticityError(f"beta·period·dt/prior_std² = {rule.beta * step / rule.prior_std ** 2:.3g} ≥ 1: the "
                              "prior's pull would overshoot in one run of the plasticity processor", node=node,
                              limit="beta·period·dt < prior_std²", actual=rule.beta,
                              hint="lower beta or --option ppu_period")
    kr, sr = (_shifted(rule.beta * step * abs(rule.c_reward) * lsb ** 2 / 2 ** fmt.reward_frac, 40, "c_reward", node, kmax)
              if rule.third_factor == "reward" else (0, 1))
    kr = -kr if rule.c_reward < 0 else kr
    kn, sn = _shifted(math.sqrt(2 * rule.beta * rule.temperature * step) / math.sqrt(IRWIN_HALL_VAR) * 2 ** TH_FRAC,
                      30, "temperature", node, kmax)
    wt = [int(math.ceil((rule.theta0 + math.log((k + 0.5) * lsb)) * 2 ** TH_FRAC)) for k in range(w_max)]
    wt += [TABLE_PAD] * (KERNEL_WEIGHT_MAX - w_max)
    ti = [0] + [q(rule.theta0 + math.log(k * lsb)) for k in range(1, 64)]
    big = max((abs(v) for v in (q(rule.prior_mean), q(rule.theta_min), q(rule.theta_max), *wt[:w_max], *ti)),
              default=0)
    if big > 2 ** 31 - 1:
        raise PlasticityError(f"θ = {big / 2 ** TH_FRAC:.4g} does not fit the plasticity processor's int32 θ in "
                              f"Q.{TH_FRAC}", node=node, limit=f"|θ| < {2 ** (31 - TH_FRAC):.4g}",
                              actual=big / 2 ** TH_FRAC, hint="narrow theta_min/theta_max, or give fewer "
                              "plasticity.theta_frac bits in the spec")
    return dict(k_prior=int(kpri), mu=q(rule.prior_mean), k_reward=kr, s_reward=sr, k_noise=kn, s_noise=sn,
                th_min=q(rule.theta_min), th_max=q(rule.theta_max), w_table=wt, th_init=ti)


def weight_of(r, theta) -> np.ndarray:
    """w = 0 where θ ≤ 0, else #{k : θ ≥ WT[k]}."""
    theta = np.asarray(theta, np.int64)
    w = np.searchsorted(np.asarray(r.w_table, np.int64), theta, side="right")
    return np.where(theta > 0, w, 0).astype(np.int64)


def update(r, theta, w, c, a, e, m: int, state: int, slots=None, n_slots: int | None = None):
    """One PPU run over the synapses (row-major order): returns (θ, w, e, state) as int64 arrays
    (e None without a reward) and the generator state after. The kernel draws once per slot of the
    projection's rows (``n_slots``, rows × columns), a slot without a synapse included: ``slots``
    (ascending) says which draw each synapse takes (default: one each, in order)."""
    from .ppu import INT32, rnd, xorshift32

    theta = np.asarray(theta, np.int64)
    w, c, a = (np.asarray(x, np.int64) for x in (w, c, a))
    d = r.kp * c - r.km * a
    if r.third_factor == "reward":
        e = np.clip(rnd(np.asarray(e, np.int64) * r.de, r.fmt.decay_frac) + w * d, *INT32)
        rew = rnd(np.int64(r.k_reward) * np.int64(m) * e, r.s_reward)
    else:
        e, rew = None, 0
    s = np.empty(theta.size if n_slots is None else n_slots, np.int64)
    for k in range(s.size):
        state = xorshift32(state)
        s[k] = (state & 255) + ((state >> 8) & 255) + ((state >> 16) & 255) + (state >> 24) - 510
    if slots is not None:
        s = s[np.asarray(slots, np.int64)]
    theta = theta + rnd(r.k_prior * (r.mu - theta), 15) + rew + rnd(r.k_noise * s, r.s_noise)
    theta = np.minimum(np.maximum(theta, r.th_min), r.th_max)
    return theta, weight_of(r, theta), e, state
