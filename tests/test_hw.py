"""Hardware specs: every number sourced, overrides, inheritance, typed errors."""
import json

import pytest

from nmc.errors import ConfigError, InputFileError
from nmc.hw import GRADES, HardwareSpec, list_specs


def test_packaged_specs_present():
    assert {"spinnaker2", "spinnaker2-48chip", "loihi2", "brainscales2"} <= set(list_specs())


@pytest.mark.parametrize("name", list_specs())
def test_every_number_has_unit_grade_and_source(name):
    s = HardwareSpec.load(name)
    entries = list(s.entries())
    assert len(entries) > 20
    for key, e in entries:
        assert e.grade in GRADES, key
        assert e.source and len(e.source) > 10, key
        assert isinstance(e.unit, str), key
    assert s.has("energy.conventional.fp32_mac_j")
    assert s.get("energy.conventional.fp32_mac_j") == pytest.approx(4.6e-12)


def test_inheritance_48chip():
    s = HardwareSpec.load("spinnaker2-48chip")
    assert s.target == "spinnaker2" and s.name == "spinnaker2-48chip"
    assert s.get("board.chips") == 48
    assert s.get("core.neurons_max") == HardwareSpec.load("spinnaker2").get("core.neurons_max")


def test_override_by_dict_and_file(tmp_path):
    s = HardwareSpec.load("spinnaker2", overrides=[{"core": {"neurons_max": 128}}])
    e = s.entry("core.neurons_max")
    assert e.value == 128 and e.grade == "user" and e.unit == "neuron"
    f = tmp_path / "o.toml"
    f.write_text('[energy]\nsynaptic_op_j = { value = 1e-9, unit = "J", grade = "paper", source = "measured on our board" }\n')
    s2 = HardwareSpec.load("spinnaker2", overrides=[f])
    assert s2.get("energy.synaptic_op_j") == 1e-9 and s2.entry("energy.synaptic_op_j").grade == "paper"
    assert s2.sha256() != HardwareSpec.load("spinnaker2").sha256()
    assert HardwareSpec.load("spinnaker2").sha256() == HardwareSpec.load("spinnaker2").sha256()


def test_unknown_override_key_suggests_nearest():
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("spinnaker2", overrides=[{"core": {"neuron_max": 1}}])
    assert "core.neuron_max" in e.value.one_line() and "neurons_max" in e.value.one_line()
    s = HardwareSpec.load("spinnaker2", overrides=[{"extra": {"mine": {"value": 3, "unit": "count", "grade": "user", "source": "test"}}}])
    assert s.get("extra.mine") == 3


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[core\nx = 1\n")
    with pytest.raises(InputFileError) as e:
        HardwareSpec.load(bad)
    assert "bad.toml" in e.value.one_line() and "line" in e.value.one_line()
    with pytest.raises(InputFileError):
        HardwareSpec.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("spinaker2")
    assert "spinnaker2" in e.value.one_line()
    nosrc = tmp_path / "nosrc.toml"
    nosrc.write_text("[core]\nneurons_max = 5\n")
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load(nosrc)
    assert "core.neurons_max" in e.value.one_line()
    nograde = tmp_path / "ng.toml"
    nograde.write_text('[core]\nneurons_max = { value = 5, unit = "neuron", grade = "guess", source = "x" }\n')
    with pytest.raises(ConfigError):
        HardwareSpec.load(nograde)


def test_dict_round_trip_and_missing_key():
    s = HardwareSpec.load("loihi2")
    d = json.loads(json.dumps(s.to_dict()))
    s2 = HardwareSpec.from_dict(d)
    assert s2.sha256() == s.sha256() and s2.get("core.neurons_max") == 8192
    with pytest.raises(ConfigError):
        s.get("core.nope")
    assert s.get("core.nope", default=7) == 7
    assert s.section("numerics")["decay_scale"] == 4096
