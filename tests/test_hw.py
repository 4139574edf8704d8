"""Hardware specs: every number sourced, overrides, inheritance, typed errors."""
import dataclasses
import json
import math

import pytest

from nmc.errors import ConfigError, InputFileError
from nmc.hw import COUNT_UNITS, GRADES, HardwareSpec, SpecEntry, list_specs

PACKAGED = ("spinnaker2", "spinnaker2-48chip", "loihi2", "loihi2-halapoint", "brainscales2")
# keys every target carries, so generic passes can read them without a target switch
COMMON = ("chip.cores", "chip.cores_usable", "chip.mesh", "chip.cores_per_router", "core.neurons_max",
          "core.synapse_memory_bytes", "core.input_axons_max", "core.weight_bits", "numerics.weight_bits",
          "numerics.weight_min", "numerics.weight_max", "numerics.graded_events", "timing.sys_tick_s",
          "board.chips", "energy.static_chip_w", "energy.synaptic_op_j")
HOROWITZ = {"fp32_mac_j": 4.6e-12, "fp32_add_j": 0.9e-12, "int8_add_j": 0.03e-12, "int8_mult_j": 0.2e-12}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ packaged specs
def test_packaged_specs_present():
    assert set(PACKAGED) <= set(list_specs())
    assert list_specs() == sorted(list_specs())


@pytest.mark.parametrize("name", list_specs())
def test_every_number_has_unit_grade_and_source(name):
    s = HardwareSpec.load(name)
    entries = list(s.entries())
    assert len(entries) > 30
    assert len({k for k, _ in entries}) == len(entries)
    for key, e in entries:
        assert isinstance(e, SpecEntry)
        assert e.grade in GRADES and e.grade != "user", key  # packaged numbers are never user overrides
        assert isinstance(e.source, str) and len(e.source) > 15, key
        assert isinstance(e.unit, str) and e.unit, key
        vals = e.value if isinstance(e.value, list) else [e.value]
        assert vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals), key
        if e.unit in COUNT_UNITS:
            assert all(v > 0 and v == int(v) for v in vals), key
    assert s.section("energy.conventional") == pytest.approx(HOROWITZ)
    for k in HOROWITZ:
        assert "Horowitz 2014" in s.entry(f"energy.conventional.{k}").source


@pytest.mark.parametrize("name", PACKAGED)
def test_common_sections_and_keys(name):
    s = HardwareSpec.load(name)
    for key in COMMON:
        assert s.has(key), f"{name} lacks {key}"
    assert s.get("numerics.weight_min") < 0 < s.get("numerics.weight_max")
    assert s.get("numerics.weight_bits") == s.get("core.weight_bits")  # same_as mirror
    assert len(s.get("chip.mesh")) == 2
    mx, my = s.get("chip.mesh")
    assert mx * my * s.get("chip.cores_per_router") >= s.get("chip.cores")
    assert s.get("numerics.graded_events") in (True, False)
    if s.get("numerics.graded_events"):
        assert s.get("numerics.graded_payload_bits") == s.get("chip.payload_bits")
    assert s.name == name and s.target in ("spinnaker2", "loihi2", "brainscales2")


def test_known_values():
    s2 = HardwareSpec.load("spinnaker2")
    assert s2.get("core.neurons_max") == 256 and s2.get("core.sram_bytes") == 128 * 1024
    assert (s2.get("models.lif.weight_min"), s2.get("models.lif.weight_max"), s2.get("models.lif.delay_max")) == (-15, 15, 7)
    assert s2.get("models.lif_no_delay.weight_max") == 127
    assert s2.get("energy.dvfs.clock_hz") == [150e6, 300e6] and s2.get("energy.dvfs.voltage_v") == [0.5, 0.8]
    assert s2.entry("energy.synaptic_op_j").grade == "est" and "pe_cycle_j" in s2.entry("energy.synaptic_op_j").source
    # the software MAC cites its counted cycles and the per-cycle energy, not the MAC array's pJ
    mac = s2.entry("energy.mac_j").source
    assert all(w in mac for w in ("core.cycles_per_mac", "kernel_cycles.py", "pe_cycle_j", "MAC array"))
    pe = s2.get("energy.derivation.pe_cycle_j")
    assert s2.get("energy.mac_j") == pytest.approx(s2.get("core.cycles_per_mac") * pe)
    l2 = HardwareSpec.load("loihi2")
    n = l2.section("numerics")
    assert (n["decay_scale"], n["state_bits"], n["threshold_shift"], n["delay_max"], n["graded_payload_bits"]) == (4096, 24, 6, 63, 24)
    assert (n["weight_bits"], n["bias_mant_bits"], n["bias_exp_bits"], n["threshold_mant_bits"]) == (8, 13, 3, 17)
    b = HardwareSpec.load("brainscales2")
    assert b.get("timing.speedup") == 1000 and b.get("synapse_array.weight_max") == 63 and b.get("numerics.weight_bits") == 6
    assert b.get("calibration.spread_after_threshold") == 0.35 and b.get("numerics.graded_events") is False


# ------------------------------------------------------------------ inheritance
def test_inheritance_48chip():
    one, board = HardwareSpec.load("spinnaker2"), HardwareSpec.load("spinnaker2-48chip")
    assert board.target == "spinnaker2" and board.name == "spinnaker2-48chip" and one.get("board.chips") == 1
    assert board.get("board.chips") == 48 and board.get("board.chips_grid") == [8, 6]
    assert math.prod(board.get("board.chips_grid")) == board.get("board.chips")
    assert board.has("board.host_links") and board.get("chip.host_link_bps") == one.get("chip.host_link_bps")
    assert board.section("core") == one.section("core") and board.section("energy") == one.section("energy")
    assert "base" not in board.to_dict()


def test_inheritance_halapoint():
    one, big = HardwareSpec.load("loihi2"), HardwareSpec.load("loihi2-halapoint")
    assert big.target == "loihi2" and big.name == "loihi2-halapoint" and one.get("board.chips") == 8
    assert big.get("board.chips") == 1152 and math.prod(big.get("board.chips_grid")) == 1152
    for sec in ("chip", "core", "numerics", "timing", "energy"):
        assert big.section(sec) == one.section(sec), sec


def test_user_spec_with_base(tmp_path):
    parent = write(tmp_path, "parent.toml", '[spec]\nname = "p"\ntarget = "t"\n[core]\n'
                   'neurons_max = { value = 10, unit = "neuron", grade = "est", source = "parent file" }\n'
                   'weight_bits = { value = 8, unit = "bit", grade = "est", source = "parent file" }\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "child.toml", 'base = "../parent.toml"\n[spec]\nname = "c"\n[core]\n'
                  'neurons_max = { value = 20, unit = "neuron", grade = "paper", source = "child file" }\n'
                  '[numerics]\nweight_bits = { value = 8, unit = "bit", grade = "est", source = "child", same_as = "core.weight_bits" }\n')
    s = HardwareSpec.load(child)  # base resolved relative to the child's directory, not the cwd
    assert (s.name, s.target) == ("c", "t")
    assert s.entry("core.neurons_max") == SpecEntry(20, "neuron", "paper", "child file")
    assert s.get("core.weight_bits") == 8 and s.get("numerics.weight_bits") == 8
    named = write(tmp_path, "mine.toml", 'base = "loihi2"\n[spec]\nname = "mine"\n'
                  '[core]\nneurons_max = { value = 1024, unit = "neuron", grade = "est", source = "our partition" }\n')
    m = HardwareSpec.load(named)
    assert m.get("core.neurons_max") == 1024 and m.get("chip.cores") == 128 and m.target == "loihi2"


def test_base_errors(tmp_path):
    a = write(tmp_path, "a.toml", 'base = "b.toml"\n')
    write(tmp_path, "b.toml", 'base = "a.toml"\n')
    with pytest.raises(ConfigError, match="circular"):
        HardwareSpec.load(a)
    bad_child = write(tmp_path, "bad_child.toml", 'base = "spinnaker2"\n[core]\nneurons_max = 64\n')
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load(bad_child)  # a spec file (not an override) must source its numbers
    assert "bad_child.toml" in e.value.one_line() and "core.neurons_max" in e.value.one_line()
    with pytest.raises(InputFileError):
        HardwareSpec.load(write(tmp_path, "orphan.toml", 'base = "nowhere.toml"\n'))


# ------------------------------------------------------------------ overrides
def test_override_by_dict_bare_number_and_table():
    base = HardwareSpec.load("spinnaker2")
    s = HardwareSpec.load("spinnaker2", overrides=[{"core": {"neurons_max": 128}}])
    e = s.entry("core.neurons_max")
    assert (e.value, e.grade, e.unit) == (128, "user", "neuron") and "user override" in e.source
    assert base.get("core.neurons_max") == 256  # the original is untouched
    t = base.with_overrides([{"energy": {"synaptic_op_j": {"value": 1e-9, "unit": "J", "grade": "paper", "source": "our board"}}}])
    assert t.entry("energy.synaptic_op_j") == SpecEntry(1e-9, "J", "paper", "our board")
    part = base.with_overrides([{"energy": {"synaptic_op_j": {"value": 2e-10}}}])  # fields not given: unit kept, grade user
    assert part.entry("energy.synaptic_op_j") == SpecEntry(2e-10, "J", "user", "user override (<dict>)")
    lst = base.with_overrides([{"chip": {"mesh": [10, 4]}}])
    assert lst.get("chip.mesh") == [10, 4] and lst.entry("chip.mesh").unit == "count"
    later = base.with_overrides([{"core": {"neurons_max": 100}}, {"core": {"neurons_max": 50}}])
    assert later.get("core.neurons_max") == 50  # applied in order


def test_override_by_file(tmp_path):
    f = write(tmp_path, "board.toml", '[energy]\nsynaptic_op_j = { value = 1e-9, unit = "J", grade = "paper", source = "measured on our board" }\n'
              '[core]\nneurons_max = 64\n[extra]\nfan = { value = 3, unit = "count", grade = "user", source = "ours" }\n')
    s = HardwareSpec.load("spinnaker2", overrides=[f])
    assert s.entry("energy.synaptic_op_j") == SpecEntry(1e-9, "J", "paper", "measured on our board")
    e = s.entry("core.neurons_max")
    assert (e.value, e.grade, e.unit) == (64, "user", "neuron") and "board.toml" in e.source
    assert s.get("extra.fan") == 3
    assert HardwareSpec.load("spinnaker2", overrides=[str(f)]).sha256() == s.sha256()  # str paths too


def test_unknown_override_key_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("spinnaker2", overrides=[{"core": {"neuron_max": 1}}])
    assert "core.neuron_max" in e.value.one_line() and "core.neurons_max" in e.value.one_line()
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("loihi2", overrides=[write(tmp_path, "o.toml", "[energy]\nsynop_j = 1e-12\n")])
    line = e.value.one_line()
    assert "o.toml" in line and "energy.synop_j" in line and "energy.synaptic_op_j" in line
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("loihi2", overrides=[{"enrgy": {"x": 1}}])
    assert "'energy'" in e.value.one_line()
    s = HardwareSpec.load("spinnaker2", overrides=[{"extra": {"mine": {"value": 3, "unit": "count", "grade": "user", "source": "test"}}}])
    assert s.get("extra.mine") == 3
    with pytest.raises(ConfigError):  # [extra] entries are validated like any other
        HardwareSpec.load("spinnaker2", overrides=[{"extra": {"mine": 3}}])


def test_override_shape_and_value_errors(tmp_path):
    s = HardwareSpec.load("spinnaker2")
    with pytest.raises(ConfigError, match="list"):
        s.with_overrides([{"chip": {"mesh": 4}}])
    with pytest.raises(ConfigError, match="table"):
        s.with_overrides([{"core": 5}])
    with pytest.raises(ConfigError) as e:
        s.with_overrides([write(tmp_path, "zero.toml", "[core]\nneurons_max = 0\n")])
    assert "zero.toml" in e.value.one_line() and "core.neurons_max" in e.value.one_line()
    with pytest.raises(ConfigError):
        s.with_overrides([{"core": {"neurons_max": 1.5}}])  # counts are integers
    with pytest.raises(ConfigError):
        s.with_overrides([{"energy": {"synaptic_op_j": math.inf}}])
    with pytest.raises(ConfigError):
        s.with_overrides([{"energy": {"synaptic_op_j": {"value": 1e-9, "grade": "guess"}}}])
    with pytest.raises(InputFileError) as e:
        s.with_overrides([write(tmp_path, "broken.toml", "[core\n")])
    assert "broken.toml" in e.value.one_line()
    with pytest.raises(InputFileError):
        s.with_overrides([tmp_path / "absent.toml"])


def test_same_as_mirrors_follow_overrides():
    s = HardwareSpec.load("loihi2", overrides=[{"core": {"weight_bits": 6}}])
    assert s.get("numerics.weight_bits") == 6 and s.entry("numerics.weight_bits").grade == "user"
    assert "core.weight_bits" in s.entry("numerics.weight_bits").source
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("loihi2", overrides=[{"numerics": {"weight_bits": 6}}])
    assert "core.weight_bits" in e.value.one_line()
    both = HardwareSpec.load("loihi2", overrides=[{"core": {"weight_bits": 6}, "numerics": {"weight_bits": 6}}])
    assert both.get("numerics.weight_bits") == 6


# ------------------------------------------------------------------ bad files
def test_bad_files(tmp_path):
    bad = write(tmp_path, "bad.toml", "[core\nx = 1\n")
    with pytest.raises(InputFileError) as e:
        HardwareSpec.load(bad)
    assert "bad.toml" in e.value.one_line() and "line 1" in e.value.one_line()
    with pytest.raises(InputFileError) as e:
        HardwareSpec.load(tmp_path / "missing.toml")
    assert "missing.toml" in e.value.one_line()
    with pytest.raises(InputFileError):
        HardwareSpec.load(str(tmp_path))  # a directory
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load("spinaker2")
    assert "spinnaker2" in e.value.one_line()


@pytest.mark.parametrize("body, key", [
    ("[core]\nneurons_max = 5\n", "core.neurons_max"),
    ('[core]\nneurons_max = { value = 5, unit = "neuron", grade = "guess", source = "x" }\n', "core.neurons_max"),
    ('[core]\nneurons_max = { value = 5, unit = "neuron", grade = "est" }\n', "core.neurons_max"),
    ('[core]\nneurons_max = { value = 5, unit = "neuron", grade = "est", source = "" }\n', "core.neurons_max"),
    ('[core]\nneurons_max = { value = 5, grade = "est", source = "x" }\n', "core.neurons_max"),
    ('[core]\nneurons_max = { value = -5, unit = "neuron", grade = "est", source = "x" }\n', "core.neurons_max"),
    ('[core]\nclock_hz = { value = nan, unit = "Hz", grade = "est", source = "x" }\n', "core.clock_hz"),
    ('[core]\nclock_hz = { value = "fast", unit = "Hz", grade = "est", source = "x" }\n', "core.clock_hz"),
    ('[core]\nmesh = { value = [], unit = "count", grade = "est", source = "x" }\n', "core.mesh"),
    ('[core]\nclock_hz = { value = 1, unit = "Hz", grade = "est", source = "x", sorce = "y" }\n', "core.clock_hz"),
    ('[core]\nclock_hz = { vaule = 1, unit = "Hz", grade = "est", source = "x" }\n', "core.clock_hz"),
    ('[core]\nsizes = [1, 2]\n', "core.sizes"),
    ('[numerics]\nw = { value = 8, unit = "bit", grade = "est", source = "x", same_as = "core.nothing" }\n', "numerics.w"),
])
def test_invalid_entries_name_file_and_key(tmp_path, body, key):
    f = write(tmp_path, "spec.toml", '[spec]\nname = "x"\n' + body)
    with pytest.raises(ConfigError) as e:
        HardwareSpec.load(f)
    assert "spec.toml" in e.value.one_line() and key in e.value.one_line()


def test_plain_text_allowed(tmp_path):
    f = write(tmp_path, "ok.toml", '[spec]\nname = "x"\ntarget = "y"\ndescription = "d"\n[numerics]\ngraded_events = true\n'
              'modes = ["a", "b"]\nw = { value = 8, unit = "bit", grade = "est", source = "x" }\n')
    s = HardwareSpec.load(f)
    assert (s.name, s.target, s.get("numerics.graded_events"), s.get("numerics.modes")) == ("x", "y", True, ["a", "b"])
    assert [k for k, _ in s.entries()] == ["numerics.w"]


# ------------------------------------------------------------------ access and serialisation
def test_access_api():
    s = HardwareSpec.load("loihi2")
    with pytest.raises(ConfigError) as e:
        s.get("core.neuron_max")
    assert "loihi2" in e.value.one_line() and "core.neurons_max" in e.value.one_line()
    assert s.get("core.nope", default=7) == 7 and s.get("core.nope", default=None) is None
    with pytest.raises(ConfigError):
        s.entry("core")  # a table, not a number
    with pytest.raises(ConfigError):
        s.section("core.neurons_max")  # a number, not a table
    e = s.entry("core.neurons_max")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.value = 1
    sec = s.section("energy")
    assert sec["synaptic_op_j"] == 23.6e-12 and sec["conventional"]["fp32_mac_j"] == 4.6e-12
    mesh = s.get("chip.mesh")
    mesh.append(99)  # values come back as copies
    assert s.get("chip.mesh") == [16, 8]
    assert [k for k, _ in s.entries()] == [k for k, _ in HardwareSpec.load("loihi2").entries()]


def test_dict_round_trip_and_sha():
    for name in PACKAGED:
        s = HardwareSpec.load(name)
        d = json.loads(json.dumps(s.to_dict()))
        s2 = HardwareSpec.from_dict(d)
        assert s2.sha256() == s.sha256() and s2.to_dict() == s.to_dict()
        assert (s2.name, s2.target) == (s.name, s.target)
        assert list(s2.entries()) == list(s.entries())
    s = HardwareSpec.load("loihi2")
    assert s.sha256() == HardwareSpec.load("loihi2").sha256()
    assert len(s.sha256()) == 64 and s.sha256() != HardwareSpec.load("spinnaker2").sha256()
    d = s.to_dict()
    reordered = HardwareSpec.from_dict(dict(reversed(list(d.items()))))
    assert reordered.sha256() == s.sha256()  # canonical: key order does not matter
    assert json.loads(s.canonical_json()) == d
    o = s.with_overrides([{"core": {"neurons_max": 4096}}])
    assert o.sha256() != s.sha256()
    assert HardwareSpec.from_dict(o.to_dict()).entry("core.neurons_max").grade == "user"
    d["core"]["neurons_max"]["grade"] = "made up"
    with pytest.raises(ConfigError):
        HardwareSpec.from_dict(d)
    assert s.get("core.neurons_max") == 8192  # to_dict handed out a copy


def test_read_numbers_checks_each_key_and_names_it(tmp_path):
    from nmc.hw import packaged, read_numbers

    s = HardwareSpec.load("loihi2")
    keys = {"exp": "numerics.weight_exp_min", "tick": "timing.sys_tick_s"}
    assert read_numbers(s, keys, real=("tick",)) == {"exp": -8, "tick": s.get("timing.sys_tick_s")}
    got = read_numbers(s.with_overrides([{"numerics": {"weight_exp_min": -8.0}}]), keys, real=("tick",))
    assert type(got["exp"]) is int and type(got["tick"]) is float      # -8.0 in an override reads as -8
    # a unit that is not a count lets the spec hold a fraction: the reader refuses it, naming the key
    over = s.with_overrides([write(tmp_path, "o.toml", "[numerics]\nweight_exp_min = -7.5\n")])
    with pytest.raises(ConfigError) as e:
        read_numbers(over, keys, real=("tick",))
    assert "numerics.weight_exp_min = -7.5" in e.value.message and e.value.path == s.where and e.value.hint
    with pytest.raises(ConfigError, match="numerics.nope"):
        read_numbers(s, {"x": "numerics.nope"})
    assert packaged("loihi2") is packaged("loihi2") and packaged("loihi2").sha256() == s.sha256()


def test_a_fractional_exponent_is_refused_not_truncated(tmp_path):
    from nmc.backends.loihi2.numerics import LavaLimits

    over = HardwareSpec.load("loihi2", [write(tmp_path, "o.toml", "[numerics]\nweight_exp_min = -7.5\n")])
    with pytest.raises(ConfigError, match="numerics.weight_exp_min"):
        LavaLimits.from_spec(over)
