"""A new target in one package (docs/new_target.md): ``tests/ifchip`` is written
against nmc's public contracts only (nmc.backends.base, nmc.iomap, nmc.errors,
nmc.filebytes' npz helpers) and plugs in with ``nmc.backends.register`` — or an
``nmc.targets`` entry point — without any change to nmc's packages. Driven here
through ``nmc.compile``, ``Bundle.load``/``run``, a streaming session on both of
its devices (one native, one by replay) and the CLI.

Error bound: every weight, bias and threshold of the test network is a
multiple of 1/4 with dt·r = 1, so the chip's power-of-two scaling makes them
exact integers and the integer chip's spikes equal the float64 reference's
exactly (the comparisons are on values exactly representable in both).
"""
from __future__ import annotations

import ast
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import ff_lif, spikes
from nmc import backends
from nmc.backends.base import Backend, Device, Program
from nmc.errors import OptionError, UnsupportedNodeError

PKG = Path(__file__).resolve().parents[1] / "ifchip"


@pytest.fixture
def ifchip():
    backends.register("ifchip", "ifchip:BACKEND")
    yield backends.get_backend("ifchip")
    backends.unregister("ifchip")


def if_net(seed=0, n_in=6, n_hid=10, n_out=3, reset="zero"):
    """Input → Affine → IF → Linear → IF → Output, weights/biases/thresholds multiples of 1/4."""
    rng = np.random.default_rng(seed)
    q = lambda *s: rng.integers(-6, 9, s) / 4  # noqa: E731
    r = lambda n: np.full(n, 1000.0)  # noqa: E731  dt·r = 1e-3·1000 = 1 (exact in float64)
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=q(n_hid, n_in), bias=q(n_hid) / 4),
             "if1": nir.IF(r=r(n_hid), v_threshold=np.full(n_hid, 1.0), v_reset=np.zeros(n_hid)),
             "fc2": nir.Linear(weight=q(n_out, n_hid)),
             "if2": nir.IF(r=r(n_out), v_threshold=np.full(n_out, 0.75), v_reset=np.zeros(n_out)),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "if2"), ("if2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def test_package_uses_only_public_contracts():
    """The target package imports nothing from nmc but its public contract modules."""
    allowed = {"nmc.backends.base", "nmc.iomap", "nmc.errors", "nmc.filebytes"}
    used = set()
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nmc"):
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used |= {a.name for a in node.names if a.name.startswith("nmc")}
    assert used and used <= allowed, used - allowed
    assert {p.name for p in PKG.iterdir()} >= {"__init__.py", "lower.py", "program.py", "emit.py", "emulator.py",
                                                "devices"}


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_compile_load_run_equals_reference(ifchip, tmp_path, reset):
    assert isinstance(ifchip, Backend)
    b = nmc.compile(if_net(), target="ifchip", dt=1e-3, reset=reset, output=tmp_path / "m.nmc")
    assert isinstance(b.program, Program) and b.program.io.output("output").latency == 2
    assert {"program/ifchip.json", "program/ifchip.npz", "program/run_ifchip.py"} <= set(b.files)
    assert b.report("fidelity")["device"] == "emulator"  # nmc's fidelity check ran the new target's device
    x = spikes((6,), T=40, p=0.4, seed=3, batch=5)
    ref = nmc.compile(if_net(), target="reference", dt=1e-3, reset=reset).run({"input": x})["output"]
    loaded = nmc.load(tmp_path / "m.nmc")
    out = loaded.run({"input": x})["output"]
    assert out.shape == ref.shape and ref.sum() > 10
    assert np.array_equal(out, ref)
    rec = loaded.run({"input": x[:, 0]}, record=["if1"])
    assert rec["if1.spikes"].shape == (40, 10) and np.array_equal(rec["output"], ref[:, 0])
    # the emitted script (a separate process) computes the same
    assert np.array_equal(loaded.run({"input": x}, device="script")["output"], ref)


def test_streaming_sessions_equal_run(ifchip):
    b = nmc.compile(if_net(seed=1), target="ifchip", dt=1e-3)
    x = spikes((6,), T=23, p=0.4, seed=4)
    want = b.run({"input": x})["output"]
    with nmc.open(b, window=4) as s:  # native: LaggedStreaming's look-ahead
        assert s.streaming and not s.replaying
        got = s.run_dense({"input": x})["output"][:23]
    assert np.array_equal(got, want) and want.sum() > 0
    with nmc.open(b, device="script", window=5) as s:  # whole recordings only: replayed
        assert s.replaying
        got = s.run_dense({"input": x})["output"][:23]
    assert np.array_equal(got, want)


def test_errors_name_the_node(ifchip):
    with pytest.raises(UnsupportedNodeError, match="ifchip has no LIF node") as e:
        nmc.compile(ff_lif(), target="ifchip", dt=1e-3)
    assert e.value.node == "lif1"
    b = nmc.compile(if_net(), target="ifchip", dt=1e-3)
    with pytest.raises(nmc.errors.ShapeError, match="expected \\(T, 6\\)"):
        b.run({"input": np.zeros((5, 7))})  # the shared validator, from the program's IO map
    with pytest.raises(OptionError, match="no device 'board'"):
        b.device("board")


def test_cli_lists_and_compiles_the_registered_target(ifchip, tmp_path):
    from nmc.cli import main

    nir.write(tmp_path / "net.nir", if_net())
    r = CliRunner().invoke(main, ["targets"])
    assert r.exit_code == 0 and "ifchip" in r.output
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "net.nir"), "--target", "ifchip", "--dt", "1e-3",
                                  "-o", str(tmp_path / "m.nmc")])
    assert r.exit_code == 0, r.output
    assert nmc.load(tmp_path / "m.nmc").target == "ifchip"


def test_registry_rules(ifchip):
    with pytest.raises(OptionError, match="built in"):
        backends.register("loihi2", "ifchip:BACKEND")
    with pytest.raises(OptionError, match="already registered"):
        backends.register("ifchip", "ifchip.lower:lower")
    with pytest.raises(OptionError, match="module:attribute"):
        backends.register("other", "ifchip")
    _refused_when_loaded("notabackend", "ifchip.lower:lower", "not an nmc.backends.base.Backend")
    with pytest.raises(OptionError, match="unknown target 'ifchip2'"):
        backends.get_backend("ifchip2")
    _refused_when_loaded("broken", "no_such_module_for_nmc:BACKEND",
                         "target 'broken' .* cannot be loaded: ModuleNotFoundError")


def _refused_when_loaded(name: str, where: str, match: str) -> None:
    """``name`` registered at ``where`` is accepted, and asking for it is an OptionError matching ``match``."""
    backends.register(name, where)
    try:
        with pytest.raises(OptionError, match=match):
            backends.get_backend(name)
    finally:
        backends.unregister(name)


def test_entry_point_group(tmp_path, monkeypatch):
    """An installed distribution declaring ``[nmc.targets]`` makes its target available (the real
    importlib.metadata discovery, over a dist-info directory on sys.path)."""
    di = tmp_path / "ifchip_target-1.0.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: ifchip-target\nVersion: 1.0\n")
    (di / "entry_points.txt").write_text("[nmc.targets]\nifchip_ep = ifchip:BACKEND\nloihi2 = ifchip:BACKEND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "ifchip_ep" in backends.targets()
    assert backends.get_backend("ifchip_ep").name == "ifchip"
    assert type(backends.get_backend("loihi2")).__name__ == "Loihi2Backend"  # built-in names are not replaced
    assert "ifchip_ep" not in backends.REGISTRY


def test_every_builtin_backend_has_the_same_layout():
    root = Path(backends.__file__).parent
    for name in backends.BUILTIN:
        be = backends.get_backend(name)
        assert isinstance(be, Backend) and be.default_device in be.devices
        files = {p.name for p in (root / name).iterdir()}
        want = {"__init__.py", "lower.py", "program.py", "emulator.py"} | (
            set() if name == "reference" else {"emit.py", "devices"})
        assert want <= files, (name, want - files)


def test_device_contract_is_enforced():
    class Half(Device):  # no advance: cannot be instantiated
        def reset(self, batch=1):
            pass

        def run(self, inputs, steps=None, record=()):
            return {}

    with pytest.raises(TypeError, match="advance"):
        Half()
