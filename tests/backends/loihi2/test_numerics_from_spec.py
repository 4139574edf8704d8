"""Loihi 2 numerics read from the spec (issue #18 item 3).

Before: the decay scale 4096, the shifts of 6 and the 24-bit state were literals in
lower.py, emulator.py and fast.py, so an ``--hw`` override of ``[numerics]`` silently
did nothing. Now the lowering reads them from the spec, the program records them (only
when they are not Lava's, so default bundles stay byte-identical), the emulator (numpy
and numba loops) follows the program, and the ``lava`` device refuses other widths.

Tolerances: the same as test_emulator.py's reference agreement (≥ 95 % equal spikes per
spiking layer; 8-bit weight mantissa and 12/13-bit decay rounding are the only errors).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from loihi2_nets import NETS, ff_lif, spikes

import nir

import nmc
from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2.emulator import LoihiEmulator
from nmc.backends.loihi2.numerics import LoihiNumerics, packaged_numerics
from nmc.backends.loihi2.program import load_program
from nmc.cli import main
from nmc.errors import ConfigError, InputFileError, OptionError
from nmc.hw import HardwareSpec
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.reference import ReferenceSimulator

#: 13-bit decays and a threshold shift one above the activation shift (drives scale by 2^(7-6))
OVERRIDE = "[numerics]\nthreshold_shift = 7\ndecay_bits = 13\ndecay_scale = 8192\n"


@pytest.fixture
def hw(tmp_path):
    p = tmp_path / "numerics.toml"
    p.write_text(OVERRIDE)
    return p


def _lower(g, spec):
    ctx = PassContext(spec=spec, options={}, target=BACKEND.target_model(spec) if spec is not None else None)
    if spec is not None:   # the lowering reads the cores from the Placement the partition pass writes
        g = PassManager(parse_pipeline("partition")).run(g, ctx)
    return BACKEND.lower(g, ctx)


def test_packaged_numerics_are_lavas():
    assert packaged_numerics() == LoihiNumerics(decay_bits=12, activation_shift=6, threshold_shift=6, state_bits=24,
                                                weight_bits=8)


@pytest.mark.parametrize("net", ["ff", "recurrent"])
def test_hw_override_changes_the_program_and_the_emulator_follows(hw, net):
    build, inp, _ = NETS[net]
    g, x = build(), inp()
    base = _lower(g, HardwareSpec.load("loihi2"))
    over = _lower(g, HardwareSpec.load("loihi2", overrides=[hw]))
    assert over.numerics == LoihiNumerics(13, 6, 7, 24, 8) and base.numerics == packaged_numerics()
    for gb, go in zip(base.groups, over.groups):
        if go.kind in ("LIF", "LI"):      # dv = round(2^decay_bits · dt/τ): about twice the 12-bit value
            assert np.all(np.abs(np.asarray(go.dv) - 2 * np.asarray(gb.dv)) <= 1)
        if go.spiking:                   # a threshold is v = 2^threshold_shift·vth: 2^7 instead of 2^6
            assert np.allclose(np.asarray(go.v_scale) / go.vth, 2 * np.asarray(gb.v_scale) / gb.vth)
    assert "numerics" not in json.loads(base.files()["program.json"])
    assert json.loads(over.files()["program.json"])["numerics"] == dataclasses.asdict(over.numerics)
    names = [gr.name for gr in over.groups]
    ref = ReferenceSimulator(g).run({"input": x}, record=names)
    emu = BACKEND.device("emulator", over).run({"input": x}, record=names)
    for gr in over.groups:
        if gr.spiking:
            agree = np.mean(emu[f"{gr.name}.spikes"] == ref[f"{gr.name}.spikes"])
            assert agree >= 0.95, (gr.name, agree)
    # the numpy and the compiled loop both follow the program's numerics, bit for bit
    payload = {"input": x[:, None].astype(np.int64)}
    a = LoihiEmulator(over).run(payload, x.shape[0], compiled=False)
    b = LoihiEmulator(over).run(payload, x.shape[0], compiled=True)
    for k in a:
        assert np.array_equal(a[k]["v"], b[k]["v"]) and np.array_equal(a[k]["s"], b[k]["s"])
    # ... and the program's numerics are what matters: the same arrays emulated in Lava's widths differ
    lava = LoihiEmulator(dataclasses.replace(over, numerics=packaged_numerics())).run(payload, x.shape[0])
    assert any(not np.array_equal(a[k]["v"], lava[k]["v"]) for k in a)


def test_program_numerics_roundtrip_through_files(hw):
    over = _lower(NETS["ff"][0](), HardwareSpec.load("loihi2", overrides=[hw]))
    back = load_program(over.files())
    assert back.numerics == over.numerics
    assert load_program(_lower(NETS["ff"][0](), None).files()).numerics == packaged_numerics()


def test_bad_numerics_record_refused(hw):
    files = _lower(NETS["ff"][0](), HardwareSpec.load("loihi2", overrides=[hw])).files()
    doc = json.loads(files["program.json"])
    doc["numerics"]["decay_bits"] = "__import__('os')"
    with pytest.raises(InputFileError, match="numerics"):
        load_program({**files, "program.json": json.dumps(doc).encode()})


def test_lava_device_refuses_other_numerics(hw):
    over = _lower(NETS["ff"][0](), HardwareSpec.load("loihi2", overrides=[hw]))
    with pytest.raises(OptionError) as e:
        BACKEND.device("lava", over)
    assert "threshold_shift = 7 (Lava: 6)" in e.value.message and "emulator" in e.value.hint


def test_decay_scale_must_match_decay_bits(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[numerics]\ndecay_bits = 13\n")
    with pytest.raises(ConfigError, match="decay_scale"):
        LoihiNumerics.from_spec(HardwareSpec.load("loihi2", overrides=[p]))


def test_cli_hw_override_reaches_the_bundle(tmp_path, hw):
    model = tmp_path / "net.nir"
    nir.write(model, ff_lif())
    outs = {}
    for name, extra in (("default", []), ("same", ["--hw", "loihi2"]), ("over", ["--hw", hw])):
        r = CliRunner().invoke(main, ["compile", str(model), "-t", "loihi2", "--dt", "1e-3", *map(str, extra),
                                      "-o", str(tmp_path / f"{name}.nmc")])
        assert r.exit_code == 0, r.output
        outs[name] = nmc.load(tmp_path / f"{name}.nmc")
    prog = lambda b: (b.path / "program" / "program.json").read_bytes()  # noqa: E731
    assert prog(outs["default"]) == prog(outs["same"])           # the packaged spec: the same program bytes
    assert json.loads(prog(outs["over"]))["numerics"]["threshold_shift"] == 7
    x = spikes(8, T=30, p=0.3, seed=1)
    want = ReferenceSimulator(outs["over"].graph).run({"input": x})["output"]
    assert np.mean(outs["over"].run({"input": x})["output"] == want) >= 0.95
