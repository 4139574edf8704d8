"""The plasticity processor's numbers are the spec's (hw_configs/brainscales2.toml [plasticity],
backends/brainscales2/ppu_format.py): an ``--hw`` override changes the compiled rule, the generated
kernel and the emulator together; the packaged spec's rules keep their JSON bytes; a number the
generated kernel's C types cannot hold is refused with a ConfigError naming the key."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nmc.backends.brainscales2 import ppu
from nmc.backends.brainscales2.ppu_format import PPUFormat, packaged_format
from nmc.backends.brainscales2.ppu_kernel import kernel_files
from nmc.errors import ConfigError
from nmc.hw import HardwareSpec
from test_ppu_emulator import STDP, W, compile_, inputs, net
from test_ppu_kernel import CC, build, updates_match


def _hw(tmp_path, text: str):
    p = tmp_path / "over.toml"
    p.write_text(text)
    return [p]


def test_packaged_format_is_the_documented_one():
    f = packaged_format()
    assert f == PPUFormat(cadc_bits=8, sensor_gain=16.0, weight_max=63, coef_bits=16, coef_frac=12, decay_frac=15,
                          lr_frac=8, theta_frac=12, reward_bits=8, reward_frac=5)
    assert (f.cadc_max, f.coef_max, f.reward_range) == (255, 32767, (-128, 127))
    assert (ppu.SENSOR_GAIN, ppu.CADC_MAX, ppu.W_MAX, ppu.DEFAULT_PERIOD) == (16.0, 255, 63, 10)


def test_period_override_changes_the_program_the_kernel_and_the_emulator(tmp_path):
    g, x = net(W, STDP), inputs()
    base = compile_(g)
    over = compile_(g, hw=_hw(tmp_path, "[plasticity]\nperiod = 5\n"))
    rb, ro = base.program.plasticity[0], over.program.plasticity[0]
    assert rb["period"] == 10 and ro["period"] == 5
    assert "format" not in rb and "format" not in ro          # only the period changed: no format record
    kb, ko = (kernel_files(b.program.plasticity)["ppu_rule_0.cpp"].decode() for b in (base, over))
    assert "run every 10 model steps" in kb and "run every 5 model steps" in ko
    wb = base.device("emulator").run({"in": x}, record=["w"])["w.w"]
    wo = over.device("emulator").run({"in": x}, record=["w"])["w.w"]
    changed = lambda w: np.flatnonzero(np.any(np.diff(w, axis=0).reshape(len(w) - 1, -1) != 0, axis=1))  # noqa: E731
    cb, co = changed(wb), changed(wo)        # the steps after which the weights moved: one per PPU run
    assert len(cb) > 2 and len(set(cb % 10)) == 1
    assert len(co) > 2 and len(set(co % 5)) == 1 and len(set(co % 10)) == 2
    # the option still wins over the spec's default
    assert compile_(g, hw=_hw(tmp_path, "[plasticity]\nperiod = 5\n"), ppu_period=20).program.plasticity[0][
        "period"] == 20


def test_weight_max_and_format_overrides_reach_rule_kernel_and_emulator(tmp_path):
    g, x = net(W, STDP), inputs()
    over = compile_(g, hw=_hw(tmp_path, "[synapse_array]\nweight_max = 31\n[plasticity]\ncoef_frac = 10\n"
                                        "sensor_gain = 8.0\n"))
    r = ppu.PPURule.from_json(over.program.plasticity[0])
    assert r.fmt == PPUFormat(8, 8.0, 31, 16, 10, 15, 8, 12, 8, 5) and r.format == r.fmt.to_dict()
    assert r.exc_hi <= 31 and r.inh_hi <= 31
    src = kernel_files(over.program.plasticity)["ppu_rule_0.cpp"].decode()
    assert "#define NMC_FRAC 10\n" in src and f"#define NMC_EXC_HI {r.exc_hi}\n" in src
    w = over.device("emulator").run({"in": x}, record=["w"])["w.w"]
    lsb = r.lsb
    assert np.abs(w).max() <= 31 * lsb + 1e-12                 # the emulator saturates at the format's bound
    base = compile_(g)
    assert not np.allclose(base.device("emulator").run({"in": x}, record=["w"])["w.w"], w)
    # the packaged spec's rule JSON has no format key: programs compiled before keep their bytes
    assert "format" not in json.loads(base.program.files()["bss2_program.json"])["plasticity"][0]


@pytest.mark.skipif(CC is None, reason="no host C compiler")
def test_a_non_packaged_format_is_bit_exact_between_kernel_and_model(tmp_path):
    fmt = PPUFormat(cadc_bits=7, sensor_gain=16.0, weight_max=31, coef_bits=14, coef_frac=10, decay_frac=13,
                    lr_frac=6, theta_frac=12, reward_bits=8, reward_frac=4)
    r = ppu.PPURule(projection=0, node="w", period=10, third_factor="reward", kp=2000, km=1900, decay_plus=0.9,
                    decay_minus=0.9, de=7000, lr=600, format=fmt.to_dict())
    assert r.exc_hi == 31 and r.fmt == fmt
    exe = build(tmp_path, r)
    rng = np.random.default_rng(3)
    n, cases = 400, []
    for sign in (1, -1):
        for reward in (0, 1, -1, 127, -128):
            w, c, a = rng.integers(0, 32, n), rng.integers(0, 128, n), rng.integers(0, 128, n)
            e = rng.integers(-(1 << 28), 1 << 28, n, dtype=np.int64)
            cases.append((w, c, a, e, sign, reward))
    assert updates_match(exe, r, cases) > 0      # weights and eligibilities (a reward rule) bit for bit
    # a read saturates at the format's CADC code
    assert ppu.read_sensor([0.0, 1.0, 100.0], fmt).tolist() == [0, 16, 127]


@pytest.mark.parametrize("text, key", [
    ("[plasticity]\ncadc_bits = 9\n", "cadc_bits"),                  # the kernel reads uint8_t codes
    ("[synapse_array]\nweight_max = 100\n", "weight_max"),           # 6-bit weights, nmc_w_table[63]
    ("[plasticity]\ncoef_bits = 24\n", "coef_bits"),                 # int32_t d = KP*c - KM*a
    ("[plasticity]\nsensor_gain = -1.0\n", "sensor_gain"),
    ("[plasticity]\nperiod = 2.5\n", "period"),
    ("[plasticity]\ntheta_frac = 31\n", "theta_frac"),              # SPORE's θ is an int32_t
    ("[plasticity]\nreward_bits = 9\n", "reward_bits"),            # int8_t nmc_reward
    ("[plasticity]\nreward_frac = 8\n", "reward_frac"),            # a signed byte holds 7 fraction bits
])
def test_values_the_kernel_cannot_hold_are_refused(tmp_path, text, key):
    g = net(W, STDP)
    with pytest.raises(ConfigError) as e:
        compile_(g, hw=_hw(tmp_path, text))
    assert f"plasticity.{key}" in e.value.message and e.value.limit is not None and e.value.hint


def test_reward_format_override_reaches_script_kernel_and_emulator(tmp_path):
    """plasticity.reward_frac = 4 (Q3.4): the hardware script's reward code, the kernel's shift and
    the emulator's reward all follow it; the packaged spec's script keeps Q2.5's text."""
    import runpy

    rule = STDP.__class__(**{**STDP.__dict__, "third_factor": "reward", "tau_e": 40e-3, "lr": 0.05})
    g, x = net(W, rule), inputs()
    base = compile_(g, output=tmp_path / "base")
    over = compile_(g, hw=_hw(tmp_path, "[plasticity]\nreward_frac = 4\n"), output=tmp_path / "over")
    r = ppu.PPURule.from_json(over.program.plasticity[0])
    assert (r.fmt.reward_bits, r.fmt.reward_frac) == (8, 4) and r.format["reward_frac"] == 4
    sb, so = ((tmp_path / d / "program" / "run_brainscales2.py").read_text() for d in ("base", "over"))
    assert "abs(r) * 32 + 0.5" in sb and "r * 2^5), -128, 127" in sb
    assert "abs(r) * 16 + 0.5" in so and "r * 2^4), -128, 127" in so
    mod = runpy.run_path(str(tmp_path / "over" / "program" / "run_brainscales2.py"))
    for v in (0.5, -0.013, 1 / 32, -1 / 32, 7.0, -9.0, 0.0, 3.3):   # the script's code is the model's
        assert mod["reward_code"](v) == ppu.reward_code(v, r.fmt)
    assert ppu.reward_code(0.5, r.fmt) == 8 and ppu.reward_code(0.5) == 16 and ppu.reward_code(7.0, r.fmt) == 112
    ko = kernel_files(over.program.plasticity)["ppu_rule_0.cpp"].decode()
    kb = kernel_files(base.program.plasticity)["ppu_rule_0.cpp"].decode()
    assert "#define NMC_REWARD_FRAC 4\n" in ko and "reward Q3.4." in ko
    assert "#define NMC_REWARD_FRAC 5\n" in kb and "reward Q2.5." in kb
    def learned(b, reward):
        dev = b.device("emulator")
        dev.modulate(reward)
        return dev.run({"in": x}, record=["w"])["w.w"]

    # the emulator: m·2^-reward_frac is the same 1.0 in both formats, so the same weights; 3.97
    # rounds to 127/32 in Q2.5 and to 64/16 in Q3.4, so the weights differ
    assert np.array_equal(learned(base, 1.0), learned(over, 1.0))
    assert not np.array_equal(learned(base, 3.97), learned(over, 3.97))


def test_format_record_is_checked_on_load():
    from nmc.errors import InputFileError

    d = ppu.PPURule(projection=0, node="w", period=10, third_factor="none", kp=1, km=1, decay_plus=0.5,
                    decay_minus=0.5).to_json()
    for bad in ({**packaged_format().to_dict(), "cadc_bits": 12}, {"cadc_bits": 8},
                {**packaged_format().to_dict(), "reward_frac": 9}):
        with pytest.raises(InputFileError, match="format"):
            ppu.PPURule.from_json({**d, "format": bad})
    # a record older than the reward keys ran with the packaged reward format
    old = {k: v for k, v in {**packaged_format().to_dict(), "coef_frac": 10}.items() if not k.startswith("reward")}
    f = ppu.PPURule.from_json({**d, "format": old}).fmt
    assert (f.coef_frac, f.reward_bits, f.reward_frac) == (10, 8, 5)


def test_spec_table_has_a_source_for_every_number():
    s = HardwareSpec.load("brainscales2")
    keys = [k for k, _ in s.entries() if k.startswith("plasticity.")]
    assert {k.split(".")[1] for k in keys} == {"period", "cadc_bits", "sensor_gain", "weight_max", "coef_bits",
                                               "coef_frac", "decay_frac", "lr_frac", "theta_frac", "reward_bits",
                                               "reward_frac"}
    assert all(s.entry(k).source.strip() for k in keys)


def test_theta_format_override_reaches_spore_s_constants(tmp_path):
    from nmc.plasticity import Plasticity

    spore = Plasticity(rule="spore", beta=1.0, temperature=0.1, w_min=0.0)
    base = ppu.PPURule.from_json(compile_(net(W, spore)).program.plasticity[0])
    over = ppu.PPURule.from_json(compile_(net(W, spore), hw=_hw(tmp_path, "[plasticity]\ntheta_frac = 10\n"))
                                 .program.plasticity[0])
    assert (base.th_max, over.th_max) == (round(spore.theta_max * 2 ** 12), round(spore.theta_max * 2 ** 10))
    assert over.fmt.theta_frac == 10 and base.format is None
