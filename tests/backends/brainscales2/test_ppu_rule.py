"""The plasticity processor's fixed-point rule (backends/brainscales2/ppu.py), hand-worked: the
rounding shift at its half-way edges, the 6-bit saturation with the row sign kept, the CADC's 8-bit
reads, the host's 8-bit reward, the eligibility, the constants from a rule, and rewiring's labels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nmc.backends.brainscales2 import ppu
from nmc.errors import PlasticityError
from nmc.plasticity import Plasticity


def rule(**kw):
    base = dict(projection=0, node="w", period=1, third_factor="none", kp=4096, km=2048, decay_plus=0.5,
                decay_minus=0.5)
    base.update(kw)
    return ppu.PPURule(**base)


def test_rounding_shift_rounds_half_away_from_zero():
    assert ppu.rnd([2048, 2047, -2048, -2047, 6143, 6144, -6144, 0], 12).tolist() == [1, 0, -1, 0, 1, 2, -2, 0]


def test_update_hand_worked_with_saturation_and_row_sign():
    r = rule()   # KP = 1.0, KM = 0.5 codes per CADC code (Q.12)
    # D = 4096·3 − 2048·1 = 10240 → Δ = (10240 + 2048) >> 12 = 3
    w, _ = ppu.update_row(r, [10, 10, 62, 1, 0], [3, 3, 3, 0, 0], [1, 1, 1, 9, 9], [1, -1, 1, 1, -1])
    # excitatory +3; inhibitory −3 on the magnitude; 62 + 3 saturates at 63; 1 − 5 (D = −18432 → −5 after
    # rounding −4.5 away from zero) stops at 0; an inhibitory row's magnitude grows by 5 from 0
    assert w.tolist() == [13, 7, 63, 0, 5]


def test_update_half_way_and_bounds():
    r = rule(kp=2048, km=2047, exc_lo=2, exc_hi=40, inh_lo=1, inh_hi=3)
    # +0.5 codes → +1 (away from zero); −0.49976 → 0
    w, _ = ppu.update_row(r, [20, 20], [1, 0], [0, 1], [1, 1])
    assert w.tolist() == [21, 20]
    # clamp to LO first, then HI, per row sign
    w, _ = ppu.update_row(r, [0, 45, 0, 9], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, -1, -1])
    assert w.tolist() == [2, 40, 1, 3]


def test_reward_eligibility_hand_worked():
    r = rule(third_factor="reward", kp=4096, km=0, de=16384, lr=256)   # e decays by 0.5 per run, lr·period = 1
    m = ppu.reward_code(1.0)
    assert m == 32
    w, e = ppu.update_row(r, [10], [2], [0], [1], [0], m)
    # e = 0·0.5 + 2·4096 = 8192 (2 codes in Q.12); Δ = rnd(256·32·8192, 25) = 2
    assert e.tolist() == [8192] and w.tolist() == [12]
    w, e = ppu.update_row(r, w, [0], [0], [1], e, m)
    assert e.tolist() == [4096] and w.tolist() == [13]
    w2, e2 = ppu.update_row(r, w, [0], [0], [1], e, -m)                   # a negative reward depresses
    assert e2.tolist() == [2048] and w2.tolist() == [12]
    w3, _ = ppu.update_row(r, w, [0], [0], [1], e, 0)                      # no reward: no change
    assert w3.tolist() == [13]
    _, e4 = ppu.update_row(rule(third_factor="reward", kp=4096, km=0, de=32767, lr=256),
                           [0], [255], [0], [1], [(1 << 31) - 1], 0)       # the eligibility saturates
    assert e4.tolist() == [(1 << 31) - 1]


def test_cadc_reads_and_reward_codes():
    g = ppu.SENSOR_GAIN
    assert ppu.read_sensor([0.0, 0.49 / g, 0.5 / g, 1.0, 255.4 / g, 1e3]).tolist() == [0, 0, 1, 16, 255, 255]
    assert g == 16.0
    assert [ppu.reward_code(x) for x in (0.5, 1 / 64, -1 / 64, 1 / 65, 10, -10, 3.96875)] == \
           [16, 1, -1, 0, 127, -128, 127]


def test_constants_from_a_rule():
    p = Plasticity(a_plus=0.01, a_minus=0.012, w_min=-0.25, w_max=0.5, third_factor="reward", tau_e=0.1, lr=0.5)
    r = ppu.compile_rule(p, "w", 3, lsb=1 / 64, dt=1e-3, period=10, n_src=5)
    assert r.kp == round(0.01 * 4096 * 64 / 16) == 164 and r.km == round(0.012 * 4096 * 64 / 16) == 197
    assert r.de == round(math.exp(-10e-3 / 0.1) * 2 ** 15) and r.lr == 0.5 * 10 * 256
    assert (r.exc_lo, r.exc_hi, r.inh_lo, r.inh_hi) == (0, 32, 0, 16)
    assert r.decay_plus == math.exp(-1e-3 / 20e-3) and r.n_src == 5
    with pytest.raises(PlasticityError) as e:          # one pair would move the weight by > 8 codes
        ppu.compile_rule(Plasticity(a_plus=5.0), "w", 0, lsb=1 / 64, dt=1e-3, period=10)
    assert e.value.node == "w" and "a_plus" in str(e.value)
    rw = ppu.compile_rule(Plasticity(fan_in=3, prune_below=0.1, w_new=0.2, rewire_every=25, seed=4, w_min=0),
                          "w", 0, lsb=1 / 64, dt=1e-3, period=10)
    assert (rw.fan_in, rw.prune, rw.w_new, rw.rewire_runs, rw.seed) == (3, 7, 13, 3, 4)


def test_rewire_hand_worked():
    r = rule(fan_in=3, prune=5, w_new=7)
    w, lab = np.array([10, 1, 4]), np.array([0, 1, 2])
    s0 = ppu.seed_state(0)
    s1 = ppu.xorshift32(s0)
    s2 = ppu.xorshift32(s1)
    free = [3, 4]
    first = free.pop(s1 % 2)
    second = free.pop(s2 % 1)
    state, made = ppu.rewire(r, w, lab, 5, s0)
    assert made == [1, 2] and state == s2
    assert lab.tolist() == [0, first, second] and w.tolist() == [10, 7, 7]
    # nothing free: the synapse keeps its label and restarts at W_NEW
    w, lab = np.array([1, 30]), np.array([0, 1])
    state, made = ppu.rewire(r, w, lab, 2, s0)
    assert state == s0 and lab.tolist() == [0, 1] and w.tolist() == [7, 30] and made == [0]


@pytest.mark.parametrize("change, word", [(dict(rule="spore", fan_in=2, w_new=0.1), "spore"), (dict(third_factor="error"), "error"),
                                          (dict(third_factor="reward", tau_baseline=1.0), "tau_baseline"),
                                          (dict(decay=0.1), "decay")])
def test_refusals_name_the_rule_or_parameter(change, word):
    assert word in ppu.refusal(Plasticity(**change))


def test_runs_stdp_reward_and_rewiring():
    for p in (Plasticity(), Plasticity(third_factor="reward"), Plasticity(fan_in=2, w_min=0),
              Plasticity(rule="spore"), Plasticity(rule="spore", third_factor="reward", decay=0.5)):
        assert ppu.refusal(p) is None


def test_spore_weight_table_and_initial_theta():
    from nmc.backends.brainscales2 import ppu_spore

    p = Plasticity(rule="spore", theta0=3.0, beta=1.0, temperature=0.1)
    r = ppu.compile_rule(p, "w", 0, lsb=1 / 50, dt=1e-3, period=10)
    ti = np.asarray(r.th_init)
    k = np.arange(64)
    # θ of each weight maps back to it, unless θ0 + ln(w) ≤ 0: retracted, as on the reference
    assert np.array_equal(ppu_spore.weight_of(r, ti), np.where(ti > 0, k, 0))
    assert np.sum(ti[1:] <= 0) == np.sum(3.0 + np.log(k[1:] / 50) <= 0) > 0
    th = np.random.default_rng(0).integers(-4096, 6 * 4096, 5000)
    w = ppu_spore.weight_of(r, th)
    exact = np.minimum(np.exp(th / 4096 - 3.0) * 50, 63)                    # exp(θ − θ0) in codes of lsb
    assert np.all(w[th <= 0] == 0)
    assert np.all(np.abs(w[th > 0] - exact[th > 0]) <= 0.5 + 1e-9)
    assert (r.k_prior, r.mu, r.th_min, r.th_max) == (round(10e-3 * 2 ** 15), 0, -10 * 4096, 10 * 4096)
    assert r.k_reward == 0 and 16384 <= r.k_noise <= 32767
    with pytest.raises(PlasticityError) as e:     # β·Δt ≥ σ²: the prior's pull overshoots
        ppu.compile_rule(Plasticity(rule="spore", beta=200.0), "w", 0, lsb=1 / 50, dt=1e-3, period=10)
    assert e.value.node == "w" and "prior" in str(e.value)
