"""Bundles: determinism (byte-identical directories), manifest hashes verified on
load, ``nmc.load`` round trip, running a loaded bundle == running the in-memory one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nir
import numpy as np
import pytest

import nmc
from nets import egru_net, ff_lif, normalized, recurrent_cubalif, spikes
from nmc import serialize
from nmc.driver.bundle import MANIFEST, Bundle
from nmc.errors import InputFileError
from nmc.ir import Graph
from nmc.reference import ReferenceSimulator


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def rec_file(tmp_path):
    p = tmp_path / "rec.nir"
    nir.write(p, recurrent_cubalif())
    return p


def test_same_inputs_same_bytes(rec_file, tmp_path):
    a = nmc.compile(rec_file, target="reference", output=tmp_path / "a.nmc", dt=1e-3, reset="subtract", seed=3)
    b = nmc.compile(rec_file, target="reference", output=tmp_path / "b.nmc", dt=1e-3, reset="subtract", seed=3)
    ta, tb = tree(a.path), tree(b.path)
    assert sorted(ta) == sorted(tb) and len(ta) >= 3
    for k in ta:
        assert ta[k] == tb[k], f"{k} differs between two identical compiles"


def test_same_bytes_when_recompiled_into_same_dir(rec_file, tmp_path):
    out = tmp_path / "x.nmc"
    nmc.compile(rec_file, output=out, dt=1e-3)
    first = tree(out)
    nmc.compile(rec_file, output=out, dt=1e-3)  # overwrite an existing bundle
    assert tree(out) == first


def test_options_change_bytes(rec_file, tmp_path):
    a = nmc.compile(rec_file, output=tmp_path / "a.nmc", dt=1e-3)
    b = nmc.compile(rec_file, output=tmp_path / "b.nmc", dt=2e-3)
    assert tree(a.path)["graph.nir"] != tree(b.path)["graph.nir"]


def test_manifest_describes_every_file(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "m.nmc", dt=1e-3, integrator="exact")
    m = json.loads((b.path / MANIFEST).read_text())
    assert m["nmc_version"] == nmc.__version__ and m["target"] == "reference"
    assert m["options"]["dt"] == 1e-3 and m["options"]["integrator"] == "exact"
    assert m["pipeline"].startswith("normalize")
    assert m["source"]["sha256"] == hashlib.sha256(rec_file.read_bytes()).hexdigest()
    assert m["inputs"] == {"input": [6]} and m["outputs"] == {"output": [3]}
    on_disk = {k: v for k, v in tree(b.path).items() if k != MANIFEST}
    assert set(m["files"]) == set(on_disk)
    for k, info in m["files"].items():
        assert info["sha256"] == hashlib.sha256(on_disk[k]).hexdigest() and info["bytes"] == len(on_disk[k])
    assert "graph.nir" in on_disk and any(k.startswith("reports/") for k in on_disk)


def test_tampered_file_is_detected(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "t.nmc", dt=1e-3)
    g = b.path / "graph.nir"
    data = bytearray(g.read_bytes())
    data[len(data) // 2] ^= 0x01
    g.write_bytes(bytes(data))
    with pytest.raises(InputFileError) as e:
        nmc.load(b.path)
    assert e.value.path == str(g) and "sha256" in e.value.message


def test_tampered_report_is_detected(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "t.nmc", dt=1e-3)
    rep = next((b.path / "reports").iterdir())
    rep.write_text(rep.read_text().replace("}", " }", 1))
    with pytest.raises(InputFileError) as e:
        nmc.load(b.path)
    assert e.value.path == str(rep)


def test_missing_file_and_corrupt_manifest(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "t.nmc", dt=1e-3)
    (b.path / "graph.nir").unlink()
    with pytest.raises(InputFileError) as e:
        nmc.load(b.path)
    assert "missing" in e.value.message and e.value.path.endswith("graph.nir")
    b = nmc.compile(rec_file, output=tmp_path / "u.nmc", dt=1e-3)
    (b.path / MANIFEST).write_text("{not json")
    with pytest.raises(InputFileError) as e:
        nmc.load(b.path)
    assert "manifest.json" in e.value.one_line()


def test_not_a_bundle(tmp_path):
    with pytest.raises(InputFileError):
        nmc.load(tmp_path / "nothing.nmc")
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputFileError) as e:
        nmc.load(tmp_path / "dir")
    assert "manifest" in e.value.message


def test_refuses_to_overwrite_non_bundle(rec_file, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("precious")
    with pytest.raises(InputFileError) as e:
        nmc.compile(rec_file, output=f, dt=1e-3)
    assert e.value.path == str(f) and f.read_text() == "precious"
    d = tmp_path / "somedir"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    with pytest.raises(InputFileError):
        nmc.compile(rec_file, output=d, dt=1e-3)
    assert (d / "keep.txt").exists()


@pytest.mark.parametrize("builder,shape", [(ff_lif, (8,)), (recurrent_cubalif, (6,)), (egru_net, (5,))])
def test_load_roundtrip_and_run_equal(builder, shape, tmp_path):
    b = nmc.compile(Graph.from_nir(builder()), target="reference", output=tmp_path / "r.nmc", dt=1e-3,
                    reset="subtract")
    loaded = nmc.load(tmp_path / "r.nmc")
    assert loaded.manifest == b.manifest and loaded.files == b.files
    assert loaded.graph.dump() == b.graph.dump()
    x = spikes(shape, T=25, seed=4) if builder is not egru_net else np.random.default_rng(0).normal(size=(25, 5))
    rec = [n for n in b.graph.nodes if n not in ("input", "output")][:2]
    r1 = b.run({"input": x}, record=rec)
    r2 = loaded.run({"input": x}, record=rec)
    assert set(r1) == set(r2) and "output" in r1
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k], err_msg=k)
    # and equals the reference simulator on the normalised graph directly
    want = ReferenceSimulator(normalized(builder(), reset="subtract")).run({"input": x})["output"]
    np.testing.assert_array_equal(r1["output"], want)


def test_bundle_graph_is_the_compiled_graph(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "g.nmc", dt=5e-4, reset="subtract")
    g = serialize.read(tmp_path / "g.nmc" / "graph.nir")
    assert g.meta["dt"] == 5e-4 and g.reset_mode("lif1") == "subtract"
    assert g.dump() == b.graph.dump()


def test_run_steps_and_batch(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "s.nmc", dt=1e-3)
    x = spikes(6, T=10, batch=2, seed=1)
    r = b.run({"input": x}, steps=15)
    assert r["output"].shape == (15, 2, 3)
    one = b.run({"input": x[:, 1]}, steps=15)
    np.testing.assert_allclose(r["output"][:, 1], one["output"], rtol=1e-12, atol=1e-12)


def test_loaded_bundle_without_verification(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "v.nmc", dt=1e-3)
    rep = next((b.path / "reports").iterdir())
    rep.write_text(rep.read_text() + "\n")
    assert Bundle.load(b.path, verify=False).target == "reference"


def test_bool_and_int_spike_inputs_equal_float(rec_file, tmp_path):
    b = nmc.compile(rec_file, output=tmp_path / "i.nmc", dt=1e-3)
    x = spikes(6, T=20, seed=7)
    want = b.run({"input": x})["output"]
    for dt in (bool, np.int8, np.uint8, np.float32):
        np.testing.assert_array_equal(b.run({"input": x.astype(dt)})["output"], want, err_msg=str(dt))
