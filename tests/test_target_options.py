"""Typed target options (issue #18 item 3): each backend's options are a frozen dataclass
parsed like pass options; unknown keys, wrong types and out-of-range values are refused on
the command line and in nmc.compile, and lowering reads the typed object."""
from __future__ import annotations

import dataclasses

import nir
import pytest
from click.testing import CliRunner
from nets import ff_lif, normalized

import nmc
from nmc.backends import REGISTRY, get_backend
from nmc.backends.loihi2 import BACKEND as LOIHI2
from nmc.backends.loihi2.options import Loihi2Options
from nmc.backends.spinnaker2.options import SpiNNaker2Options
from nmc.cli import main
from nmc.errors import OptionError
from nmc.passes import PassContext
from nmc.target_options import COMMON, CommonOptions, TargetOptions, options_text


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "net.nir"
    nir.write(p, ff_lif())
    return p


def cli_error(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


def test_every_backend_declares_a_frozen_options_dataclass():
    for name in REGISTRY:
        cls = get_backend(name).options
        assert issubclass(cls, CommonOptions) and dataclasses.is_dataclass(cls)
        assert set(COMMON) <= set(cls.declared())
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls().timesteps = 3  # type: ignore[misc]


def test_values_are_typed():
    o = Loihi2Options.parse({"vth_mant": "300", "split_signs": "false", "sparse_below": 1})
    assert o.vth_mant == 300 and o.split_signs is False and o.sparse_below == 1.0 and isinstance(o.sparse_below, float)
    assert Loihi2Options.parse({}).split_signs is True
    s = SpiNNaker2Options.parse({"conv": 0, "input_quantum": "0.5"})
    assert s.conv is False and s.input_quantum == 0.5 and s.curr_exp_order == "chip"


@pytest.mark.parametrize("opts,words", [
    ({"weight_bit": 4}, ["weight_bit", "valid options", "weight_bits", "split_signs"]),   # unknown key
    ({"vth_mant": "many"}, ["vth_mant", "int"]),                                          # wrong type
    ({"vth_mant": 2.5}, ["vth_mant", "int"]),                                             # not whole
    ({"vth_mant": 0}, ["vth_mant", "[1, 131071]"]),                                       # out of range
    ({"sparse_below": 1.5}, ["sparse_below", "[0.0, 1.0]"]),
    ({"split_signs": "maybe"}, ["split_signs", "true | false"]),
])
def test_bad_options_refused_by_api_and_cli(model, tmp_path, opts, words):
    with pytest.raises(OptionError) as e:
        nmc.compile(model, target="loihi2", dt=1e-3, **opts)
    text = e.value.one_line()
    assert all(w in text for w in words), text
    (k, v), = opts.items()
    line = cli_error("compile", model, "--dt", "1e-3", "-t", "loihi2", "--option", f"{k}={v}", "-o", tmp_path / "o.nmc")
    assert all(w in line for w in words), line
    assert not (tmp_path / "o.nmc").exists()


def test_hand_built_context_parses_its_options_too():
    g = normalized(ff_lif())
    with pytest.raises(OptionError, match="no option 'vth_mnt'"):
        LOIHI2.lower(g, PassContext(options={"dt": 1e-3, "vth_mnt": 100}))
    ctx = PassContext(options={"dt": 1e-3}, target_options=Loihi2Options(vth_mant=100))
    assert TargetOptions.of(ctx) is ctx.target_options
    assert all(grp.vth == 100 for grp in LOIHI2.lower(g, ctx).groups if grp.spiking)


def test_split_signs_option_reaches_lowering(model):
    """README's ``--option split_signs=false`` was read by the lowering but not declared, so it was refused."""
    split = nmc.compile(model, target="loihi2", dt=1e-3, fidelity_check=False)._program
    one = nmc.compile(model, target="loihi2", dt=1e-3, fidelity_check=False, split_signs=False)._program
    assert any(s.name.endswith(".inh") for s in split.synapses)
    assert not any(s.name.endswith(".inh") for s in one.synapses)


def test_recorded_options_are_as_given(model):
    b = nmc.compile(model, target="loihi2", dt=1e-3, fidelity_check=False, vth_mant=300)
    recorded = b.manifest["options"]
    assert recorded["vth_mant"] == 300 and "split_signs" not in recorded and "weight_bits" not in recorded


def test_targets_command_lists_the_options():
    assert CliRunner().invoke(main, ["targets"]).exit_code == 0
    listed = {t: options_text(get_backend(t)).split(", ") for t in REGISTRY}   # the `nmc targets` column
    assert listed["loihi2"][:5] == ["vth_mant", "weight_bits", "input_bits", "sparse_below", "split_signs"]
    assert "input_quantum" in listed["spinnaker2"] and "bias_repeat_max" in listed["brainscales2"]
    assert all(set(COMMON) <= set(v) for v in listed.values())


@pytest.mark.parametrize("opts,words", [
    ({"curr_exp_order": "both"}, ["curr_exp_order", "chip", "brian2"]),
    ({"egru_weights": "int4"}, ["egru_weights", "int8", "float32"]),
])
def test_spinnaker2_choices_refused_before_lowering(model, tmp_path, monkeypatch, opts, words):
    """spinnaker2's lowering no longer checks curr_exp_order / egru_weights itself (#18): the typed
    options refuse the same values, on the command line and in nmc.compile, before any pass runs
    (lowering is never reached)."""
    from nmc.backends.spinnaker2 import lower as s2_lower

    def never(*a, **k):
        raise AssertionError("lowering reached with a refused option")

    monkeypatch.setattr(s2_lower, "lower", never)
    with pytest.raises(OptionError) as e:
        nmc.compile(model, target="spinnaker2", dt=1e-3, **opts)
    text = e.value.one_line()
    assert all(w in text for w in words), text
    (k, v), = opts.items()
    line = cli_error("compile", model, "--dt", "1e-3", "-t", "spinnaker2", "--option", f"{k}={v}",
                     "-o", tmp_path / "o.nmc")
    assert all(w in line for w in words), line
    assert not (tmp_path / "o.nmc").exists()
    assert SpiNNaker2Options.parse({"curr_exp_order": "brian2", "egru_weights": "float32"}).egru_weights == "float32"
