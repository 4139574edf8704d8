"""Lava's learning-engine widths are the spec's (hw_configs/loihi2.toml [plasticity],
backends/loihi2/learning_format.py): an ``--hw`` override changes the compiled program and the
emulator's learning, the ``lava`` device refuses engine widths Lava does not have, a wider mantissa
or exponent range than Lava's rule strings take is refused with a ConfigError, and programs
compiled with the packaged spec keep their bytes."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import nmc
from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2.emulator import LoihiEmulator
from nmc.backends.loihi2.learning import Engine
from nmc.backends.loihi2.learning_format import LearningFormat, packaged_format
from nmc.backends.loihi2.program import load_program
from nmc.errors import ConfigError, InputFileError, OptionError
from test_learning import plastic_net, pre_spikes


def _compile(tmp_path=None, text=None):
    hw = []
    if text is not None:
        p = tmp_path / "over.toml"
        p.write_text(text)
        hw = [p]
    return nmc.compile(plastic_net(), target="loihi2", fidelity_check=False, hw=hw)


def test_packaged_format_is_lavas():
    C = pytest.importorskip("lava.magma.core.learning.constants")
    R = pytest.importorskip("lava.magma.core.learning.random")
    f = packaged_format()
    assert (f.trace_bits, f.tag_bits, f.accumulator_bits, f.weight_bits, f.mantissa_bits) == \
        (C.W_TRACE, C.W_TAG_1_S, C.W_ACCUMULATOR_S, C.W_WEIGHTS_U, C.W_S_MANT)
    assert f.acc_shift == C.W_ACCUMULATOR_S - C.W_WEIGHTS_S == 7
    assert f.rounding_seed == inspect.signature(R.ConnVarRandom).parameters["seed_stochastic_rounding"].default
    assert (f.scale_exp_min, f.scale_exp_max) == (-7, 8)
    assert f.sign_range("mixed") == (-256, 255) and f.sign_range("inhibitory") == (-255, 0)
    assert f.tag_range == (-257, 255) and f.acc_range == (-(2 ** 15) - 1, 2 ** 15 - 1) and f.trace_max == 127


def test_rounding_seed_override_changes_the_program_and_the_emulator(tmp_path):
    base, over = _compile(), _compile(tmp_path, "[plasticity]\nrounding_seed = 3\n")
    assert "learning_format" not in base.program.meta
    assert over.program.meta["learning_format"] == {**packaged_format().to_dict(), "rounding_seed": 3}
    pb, po = (json.loads(b.program.files()["program.json"]) for b in (base, over))
    assert "learning_format" not in pb["meta"] and po["meta"]["learning_format"]["rounding_seed"] == 3
    # the record survives the program files, and the emulator rounds with the other generator
    back = load_program(over.program.files())
    assert LearningFormat.of_program(back).rounding_seed == 3
    x = pre_spikes()
    wb = base.device("emulator").run({"in": x}, record=["w"])["w.w"]
    wo = over.device("emulator").run({"in": x}, record=["w"])["w.w"]
    assert not np.array_equal(wb, wo)
    # Lava's engine rounds with seed 2: the lava device refuses rather than run the program in it
    with pytest.raises(OptionError) as e:
        BACKEND.device("lava", over.program)
    assert "rounding_seed = 3 (Lava: 2)" in e.value.message and "emulator" in e.value.hint


def test_trace_width_override_saturates_the_emulator_s_traces():
    rule = {"products": [["y0", ["x1"], 5, -3]], "x1_impulse": 20, "x1_tau": 1e9, "y1_impulse": 0, "y1_tau": 8.0,
            "seed": 7, "sign_mode": "mixed"}
    narrow = LearningFormat(**{**packaged_format().to_dict(), "trace_bits": 5})
    tops = {}
    for name, fmt in (("lava", None), ("narrow", narrow)):
        e = Engine(rule, np.array([[100]]), fmt)
        st = e.initial_state(1)
        for _ in range(10):           # 10 pre spikes of impulse 20, no decay: 200 before saturation
            e.update(st, np.array([[1]]), np.array([[0]]))
        tops[name] = int(st["x1"].max())
    assert tops == {"lava": 127, "narrow": 31}


def test_a_narrower_mantissa_is_still_lava_syntax(tmp_path):
    over = _compile(tmp_path, "[plasticity]\nmantissa_bits = 3\n")
    r = over.program.meta["plasticity"]["in->n"]
    assert all(1 <= abs(m) <= 3 for _, _, m, _ in r["products"])
    assert r["products"] != _compile().program.meta["plasticity"]["in->n"]["products"]
    BACKEND.device("lava", over.program)          # not an engine width: Lava runs it


@pytest.mark.parametrize("text, key", [
    ("[plasticity]\nscale_exp_max = 9\n", "scale_exp_max"),        # ProductSeries: s_exp < 9
    ("[plasticity]\nscale_exp_min = -8\n", "scale_exp_min"),
    ("[plasticity]\nmantissa_bits = 5\n", "mantissa_bits"),        # ProductSeries: s_mantissa in -8..7
    ("[plasticity]\naccumulator_bits = 9\n", "accumulator_bits"),  # no room below the 9-bit weight
])
def test_values_lava_rules_cannot_state_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        _compile(tmp_path, text)
    assert f"plasticity.{key}" in e.value.message and e.value.limit is not None and e.value.hint


def test_bad_learning_format_record_refused(tmp_path):
    files = _compile(tmp_path, "[plasticity]\nrounding_seed = 3\n").program.files()
    doc = json.loads(files["program.json"])
    doc["meta"]["learning_format"]["trace_bits"] = "__import__('os')"
    prog = load_program({**files, "program.json": json.dumps(doc).encode()})
    with pytest.raises(InputFileError, match="learning_format"):
        LoihiEmulator(prog)


@pytest.mark.parametrize("spec, over", [("loihi2", {"plasticity": {"trace_bits": 0}}),
                                        ("loihi2", {"plasticity": {"accumulator_bits": 15.5}}),
                                        ("brainscales2", {"plasticity": {"coef_frac": -3}})])
def test_the_spec_validates_the_plasticity_tables(spec, over):
    from nmc.hw import HardwareSpec

    key = next(iter(over["plasticity"]))
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load(spec, overrides=[over])
    assert f"plasticity.{key}" in e.value.message
    assert HardwareSpec.load(spec).entry(f"plasticity.{key}").source      # every number has its source


def test_the_learning_neuron_s_trace_decay_follows_the_numerics(tmp_path):
    from nmc.plasticity import Plasticity

    rule = Plasticity(tau_plus=10e-3, tau_minus=12e-3, a_plus=0.02, a_minus=0.024, w_min=-1.0, w_max=1.0,
                      third_factor="reward", lr=0.5, tau_e=0.05)
    p = tmp_path / "num.toml"
    p.write_text("[numerics]\ndecay_bits = 13\ndecay_scale = 8192\n")
    out = {}
    q = tmp_path / "trace.toml"
    q.write_text("[plasticity]\ntrace_bits = 6\n")
    nets, progs = {}, {}
    for name, hw in (("lava", []), ("13", [p]), ("trace6", [q])):
        b = nmc.compile(plastic_net(rule), target="loihi2", fidelity_check=False, hw=hw)
        out[name] = (b.program.meta["plasticity"]["in->n"]["y1_decay"],
                     LoihiEmulator(b.program).learn["in->n"].decay_bits)
        nets[name], progs[name] = b.program.files()["lava_net.py"].decode(), b.program
    assert out["lava"] == (round(4096 * np.exp(-1 / 12)), 12) and out["13"] == (round(8192 * np.exp(-1 / 12)), 13)
    # the emitted learning-neuron model decays y1 by the program's decay_bits and clips it at its trace
    # maximum: Lava's 12 and 127 at the packaged spec, the override's otherwise
    update = "self.y1[:] = np.minimum((self.y1.astype(np.int64) * q >> {}) + imp * s, {})"
    assert update.format(12, 127) in nets["lava"] and "min(127, (y1 * y1_decay >> 12)" in nets["lava"]
    assert update.format(13, 127) in nets["13"] and update.format(12, 63) in nets["trace6"]
    assert not any("@DECAY_BITS@" in t or "@TRACE_MAX@" in t for t in nets.values())
    # Lava's own engine has neither: the lava device refuses both programs rather than run them
    for name in ("13", "trace6"):
        with pytest.raises(OptionError):
            BACKEND.device("lava", progs[name])
