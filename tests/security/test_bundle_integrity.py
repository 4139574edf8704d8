"""Bundles (issue #21, items 3, 4 and 9): ``-o`` replaces only a verifiable nmc
bundle, writes are atomic, manifest paths stay inside the bundle, and the
program is tied to the graph it was lowered from."""
from __future__ import annotations

import hashlib
import json
import os

import nir
import pytest
from click.testing import CliRunner

import nmc
from nets import egru_net, ff_lif, recurrent_cubalif
from nmc.driver.bundle import GRAPH_DIGEST, MANIFEST, Bundle
from nmc.cli import main
from nmc.errors import InputFileError, UnsupportedNodeError
from nmc.ir import Graph


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "rec.nir"
    nir.write(p, recurrent_cubalif())
    return p


@pytest.fixture
def bundle(tmp_path, model):
    return nmc.compile(model, output=tmp_path / "b.nmc", dt=1e-3).path


# ------------------------------------------------------------------ item 3
def test_web_app_with_manifest_json_is_not_deleted(tmp_path, model):
    app = tmp_path / "webapp"
    (app / "static").mkdir(parents=True)
    (app / MANIFEST).write_text(json.dumps({"name": "my app", "icons": []}))
    (app / "static" / "index.html").write_text("<html></html>")
    before = _tree(app)
    r = _cli("compile", model, "--dt", "1e-3", "-o", app)
    assert r.exit_code == 2 and r.output.startswith("error: ") and "not an nmc bundle" in r.output, r.output
    assert _tree(app) == before
    # an nmc-looking manifest whose file list does not match what is there is not enough either
    (app / MANIFEST).write_text(json.dumps({"format": 2, "nmc_version": "0", "target": "reference",
                                            "files": {"graph.nir": {"sha256": "0" * 64, "bytes": 1}}}))
    before = _tree(app)
    with pytest.raises(InputFileError):
        nmc.compile(model, output=app, dt=1e-3)
    assert _tree(app) == before


def test_recompile_over_bundle_with_user_file_refuses_and_keeps_it(tmp_path, model, bundle):
    note = bundle / "reports" / "my-notes.txt"
    note.write_text("do not delete")
    before = _tree(bundle)
    with pytest.raises(InputFileError) as e:
        nmc.compile(model, output=bundle, dt=2e-3)
    assert "my-notes.txt" in e.value.one_line() and "refusing to delete" in e.value.one_line()
    assert _tree(bundle) == before
    note.unlink()
    nmc.compile(model, output=bundle, dt=2e-3)           # a clean bundle is replaced
    assert json.loads((bundle / MANIFEST).read_text())["options"]["dt"] == 2e-3


def test_failed_write_leaves_nothing_and_keeps_the_previous_bundle(tmp_path, model, bundle):
    before = _tree(bundle)
    b = nmc.compile(model, dt=5e-4)
    b.files["reports"] = b"a file where a directory must go"     # 'reports/...' cannot be created: write fails
    with pytest.raises(OSError):
        b.write(bundle)
    assert _tree(bundle) == before                                   # the old bundle is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.nmc", "rec.nir"]   # no temporary left behind
    fresh = tmp_path / "fresh.nmc"
    with pytest.raises(OSError):
        b.write(fresh)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b.nmc", "rec.nir"]


def test_failed_compile_leaves_nothing_and_does_not_block_the_next(tmp_path):
    g = tmp_path / "egru.nir"
    from nmc import serialize

    serialize.write(g, Graph.from_nir(egru_net()))
    out = tmp_path / "e.nmc"
    with pytest.raises(UnsupportedNodeError):          # a lowering error
        nmc.compile(g, target="loihi2", output=out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["egru.nir"]
    nmc.compile(g, target="spinnaker2", output=out)
    assert Bundle.load(out).target == "spinnaker2"


def test_output_whose_parent_is_a_file_is_a_typed_error(tmp_path, model):
    f = tmp_path / "file"
    f.write_text("x")
    r = _cli("compile", model, "--dt", "1e-3", "-o", f / "b.nmc")
    assert r.exit_code == 2 and r.output.startswith("error: "), r.output
    assert f.read_text() == "x"


# ------------------------------------------------------------------ item 4
def _set_files(bundle, files):
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"] = files
    (bundle / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "program/../../outside",
                                  "./graph.nir", "a//b", "C:\\x", "manifest.json"])
def test_manifest_paths_outside_the_bundle_are_refused(bundle, name):
    m = json.loads((bundle / MANIFEST).read_text())
    _set_files(bundle, {**m["files"], name: {"sha256": "0" * 64, "bytes": 1}})
    with pytest.raises(InputFileError) as e:
        Bundle.load(bundle)
    assert "not a plain relative path" in e.value.one_line()
    r = _cli("inspect", bundle)
    assert r.exit_code == 2 and r.output.startswith("error: "), r.output


def test_symlink_escaping_the_bundle_is_refused(tmp_path, bundle):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (bundle / "program" / "leak").symlink_to(secret)
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"]["program/leak"] = {"sha256": hashlib.sha256(b"secret").hexdigest(), "bytes": 6}
    (bundle / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InputFileError) as e:
        Bundle.load(bundle)
    assert "outside the bundle" in e.value.one_line()


@pytest.mark.parametrize("files", [None, {}, [], ["graph.nir"], "graph.nir", {"graph.nir": []},
                                   {"graph.nir": {"sha256": 1, "bytes": 2}}])
def test_manifest_files_missing_empty_or_mistyped_is_a_typed_error(bundle, files):
    m = json.loads((bundle / MANIFEST).read_text())
    if files is None:
        del m["files"]
    else:
        m["files"] = files
    (bundle / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InputFileError):
        Bundle.load(bundle)
    r = _cli("inspect", bundle)
    assert r.exit_code == 2 and r.output.startswith("error: ") and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------ item 9
def test_swapped_graph_with_fixed_manifest_is_refused(tmp_path, bundle):
    other_src = tmp_path / "ff.nir"
    nir.write(other_src, ff_lif())
    other = nmc.compile(other_src, output=tmp_path / "o.nmc", dt=1e-3).path
    data = (other / "graph.nir").read_bytes()
    (bundle / "graph.nir").write_bytes(data)
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"]["graph.nir"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InputFileError) as e:
        Bundle.load(bundle)
    assert "not the graph the program was lowered from" in e.value.one_line()
    r = _cli("inspect", bundle)
    assert r.exit_code == 2 and "lowered from" in r.output, r.output


def test_program_and_manifest_record_the_graph_digest(bundle):
    m = json.loads((bundle / MANIFEST).read_text())
    sha = hashlib.sha256((bundle / "graph.nir").read_bytes()).hexdigest()
    assert m["graph_sha256"] == sha
    assert (bundle / GRAPH_DIGEST).read_text().strip() == sha
    assert GRAPH_DIGEST in m["files"]


def test_bundle_directory_is_not_private_after_atomic_write(bundle):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(bundle).st_mode & 0o777 == 0o777 & ~umask   # like mkdir, not mkdtemp's 0700
