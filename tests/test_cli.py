"""The ``nmc`` command line end to end (click's CliRunner on nmc.cli.main), plus one
real subprocess of ``.venv/bin/nmc`` for the exit code and a traceback-free stderr."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import recurrent_cubalif, spikes
from nmc.cli import main

NMC = Path(sys.executable).parent / "nmc"


def invoke(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, f"nmc {' '.join(map(str, args))} failed:\n{r.output}\n{r.exception!r}"
    return r


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "x.nir"
    nir.write(p, recurrent_cubalif())
    return p


@pytest.fixture
def inputs(tmp_path):
    x = spikes(6, T=30, seed=5)
    p = tmp_path / "in.npz"
    np.savez(p, input=x)
    return p, {"input": x}


@pytest.fixture
def bundle(tmp_path, model):
    b = tmp_path / "b.nmc"
    invoke("compile", model, "--target", "reference", "-o", b, "--dt", "1e-3", "--reset", "subtract")
    return b


def test_compile_then_run_equals_api(tmp_path, model, inputs, bundle):
    inp, arrays = inputs
    out = tmp_path / "out.npz"
    r = invoke("run", bundle, "--input", inp, "-o", out)
    assert "wrote" in r.output
    want = nmc.compile(model, target="reference", dt=1e-3, reset="subtract").run(arrays)
    with np.load(out) as z:
        got = dict(z)
    assert set(got) == set(want) == {"output"}
    np.testing.assert_array_equal(got["output"], want["output"])
    assert got["output"].shape == (30, 3)


def test_compiled_bundle_matches_api_bundle_bytes(tmp_path, model, bundle):
    api = nmc.compile(model, target="reference", output=tmp_path / "api.nmc", dt=1e-3, reset="subtract")
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = f.relative_to(bundle)
        assert f.read_bytes() == (api.path / rel).read_bytes(), rel


def test_run_record_and_steps(tmp_path, inputs, bundle):
    inp, arrays = inputs
    out = tmp_path / "rec.npz"
    invoke("run", bundle, "--input", inp, "--record", "lif1,li", "--steps", "40", "-o", out)
    with np.load(out) as z:
        got = dict(z)
    assert {"output", "lif1.v", "lif1.spikes", "li.v"} <= set(got)
    assert got["lif1.v"].shape == (40, 12) and got["output"].shape == (40, 3)
    want = nmc.load(bundle).run(arrays, steps=40, record=["lif1", "li"])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert got["lif1.spikes"].sum() > 0


def test_run_device_option(tmp_path, inputs, bundle):
    invoke("run", bundle, "--input", inputs[0], "--device", "reference", "-o", tmp_path / "o.npz")
    r = invoke("run", bundle, "--input", inputs[0], "--device", "loihi", ok=False)
    assert r.exit_code == 2 and "device" in r.output


def test_compile_default_output_name(tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke("compile", model, "--dt", "1e-3")
    assert (tmp_path / "x.nmc" / "manifest.json").exists()


def test_compile_dump_ir(tmp_path, model):
    d = tmp_path / "ir"
    invoke("compile", model, "-o", tmp_path / "d.nmc", "--dump-ir", d, "--passes", "normalize")
    assert sorted(p.name for p in d.iterdir()) == ["00-input.txt", "01-normalize.txt"]


def test_compile_warns_about_defaults(tmp_path, model):
    r = invoke("compile", model, "-o", tmp_path / "w.nmc")
    assert "warning:" in r.stderr and "dt" in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith("warning: ") for ln in lines), lines  # one line each


def test_inspect_model_and_bundle(model, bundle):
    r = invoke("inspect", model, "--json")
    info = json.loads(r.stdout)
    nodes = {n["node"]: n for n in info["nodes"]}
    assert nodes["lif1"]["type"] == "CubaLIF" and nodes["lif1"]["out"] == [12]
    assert nodes["fc_in"]["params"] == 12 * 6 + 12
    assert info["info"]["source"]["format"] == "nir"
    r = invoke("inspect", bundle, "--json")
    info = json.loads(r.stdout)
    assert info["info"]["target"] == "reference" and info["meta"]["reset"] == "subtract"
    assert {n["node"]: n["annotations"] for n in info["nodes"]}["lif1"] == ["reset"]
    r = invoke("inspect", bundle)  # table form
    assert "lif1" in r.output and "CubaLIF" in r.output


def test_targets_and_passes():
    r = invoke("targets")
    assert "reference" in r.output
    r = invoke("passes")
    assert "normalize" in r.output


def test_every_command_help_has_example():
    assert "Example" in invoke("--help").output or "nmc compile" in invoke("--help").output
    for name in main.commands:
        r = invoke(name, "--help")
        assert "Example" in r.output, f"`nmc {name} --help` has no example"
        assert f"nmc {name}" in r.output


def test_version():
    assert nmc.__version__ in invoke("--version").output


def test_user_error_is_one_line_exit_2(tmp_path):
    r = invoke("compile", tmp_path / "missing.nir", ok=False)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.nir" in lines[0]
    assert "Traceback" not in r.output


def test_debug_shows_exception(tmp_path):
    r = CliRunner().invoke(main, ["--debug", "compile", str(tmp_path / "missing.nir")])
    assert r.exit_code != 0 and type(r.exception).__name__ == "InputFileError"


def test_subprocess_exit_code_and_stderr(tmp_path, model, inputs):
    """The installed console script: user error → exit 2, exactly one stderr line, no traceback."""
    r = subprocess.run([str(NMC), "run", str(tmp_path / "nope.nmc"), "--input", str(inputs[0])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "nope.nmc" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    b = tmp_path / "sp.nmc"
    r = subprocess.run([str(NMC), "compile", str(model), "-o", str(b), "--dt", "1e-3"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(NMC), "run", str(b), "--input", str(inputs[0]), "-o", str(tmp_path / "o.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "o.npz") as z:
        assert z["output"].shape == (30, 3)
