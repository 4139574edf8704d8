"""No code from untrusted files (issue #21, items 1 and 2): crafted ``.pt2``
archives and ``nmc.save`` files whose payload would write a canary file are
refused with a typed error; the canary stays absent; plain files still work."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hostile
from nmc.cli import main
from nmc.errors import InputFileError, UntrustedPickleError
from nmc.frontends.torch import load_file


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory):
    return hostile.small_export(tmp_path_factory.mktemp("pt2") / "m.pt2")


@pytest.mark.parametrize("craft", [hostile.pt2_pickled_weight, hostile.pt2_sample_inputs_fallback,
                                   hostile.pt2_opaque_constant])
def test_crafted_pt2_is_refused_without_running_code(tmp_path, plain_pt2, craft):
    canary = tmp_path / "canary"
    evil = craft(plain_pt2, tmp_path / "evil.pt2", canary)
    with pytest.raises(UntrustedPickleError) as e:
        load_file(evil)
    assert "--trust-pickle" in e.value.one_line() and "data/" in e.value.one_line()  # names the member and the fix
    for cmd in (["compile", evil, "--target", "reference", "-o", tmp_path / "b.nmc"], ["inspect", evil]):
        r = _cli(*cmd)
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and "Traceback" not in r.output
    assert not canary.exists()
    assert not (tmp_path / "b.nmc").exists()


def test_crafted_pt2_runs_only_with_trust_pickle(tmp_path, plain_pt2):
    """--trust-pickle hands the file to torch.export.load: the opt-in is real (the payload runs)."""
    canary = tmp_path / "canary"
    evil = hostile.pt2_sample_inputs_fallback(plain_pt2, tmp_path / "evil.pt2", canary)
    try:
        load_file(evil, trust_pickle=True)
    except InputFileError:  # the payload's object is not a valid sample input afterwards
        pass
    assert canary.exists()


def test_plain_pt2_compiles_without_trust_and_equals_torch_loader(tmp_path, plain_pt2):
    safe = load_file(plain_pt2)
    trusted = load_file(plain_pt2, trust_pickle=True)
    assert list(safe.nodes) == list(trusted.nodes) and safe.edges == trusted.edges
    for k in safe.nodes:
        for f, v in vars(safe.nodes[k]).items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(v, vars(trusted.nodes[k])[f]), (k, f)
    r = _cli("compile", plain_pt2, "--target", "reference", "-o", tmp_path / "b.nmc")
    assert r.exit_code == 0, r.output


def test_pt2_tensor_view_out_of_bounds_is_a_typed_error(tmp_path, plain_pt2):
    import json

    def edit(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            cfg["config"]["0.weight"]["tensor_meta"]["sizes"] = [{"as_int": 1000}, {"as_int": 1000}]
            return json.dumps(cfg).encode()
        return data
    bad = hostile.rewrite_zip(plain_pt2, tmp_path / "bad.pt2", edit)
    with pytest.raises(InputFileError) as e:
        load_file(bad)
    assert "needs" in e.value.one_line()


# ------------------------------------------------------------ nmc.save files
def _saved(tmp_path):
    from nmc import nn as nnn

    import nmc

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), nnn.LIF(3, beta=0.8))
    return nmc.save(net, tmp_path / "m.pt")


def _edit_saved(src, dst, fn):
    d = torch.load(src, weights_only=True)
    fn(d)
    torch.save(d, dst)
    return dst


def test_nmc_save_node_type_write_is_refused_and_touches_nothing(tmp_path):
    """Before the allow-list, type 'write' became nir.write(filename=...) and truncated the victim."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")

    def make_write(d):
        nodes = d["graph"]["nodes"]
        nodes["0"] = {"type": "write", "filename": str(victim), "graph": None}
    bad = _edit_saved(_saved(tmp_path), tmp_path / "bad.pt", make_write)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputFileError) as e:
        load_file(bad)
    assert "'write'" in e.value.one_line() and e.value.node == "0"
    r = _cli("compile", bad, "--target", "reference", "-o", tmp_path / "b.nmc")
    assert r.exit_code == 2 and "unknown node type 'write'" in r.output, r.output
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nmc_save_module_class_outside_allow_list_is_refused(tmp_path):
    from nmc.frontends.torch import load_module

    def make(d):
        d["module"]["layers"][0] = {"class": "Module", "args": [], "kw": {}}
    bad = _edit_saved(_saved(tmp_path), tmp_path / "bad.pt", make)
    with pytest.raises(InputFileError) as e:
        load_module(bad)
    assert "'Module'" in e.value.one_line()


def test_nir_file_node_type_write_is_refused(tmp_path):
    """The HDF5 reader resolves types through the same allow-list (no nir.write via a crafted type)."""
    import h5py

    from nets import ff_lif
    from nmc import serialize
    from nmc.ir import Graph

    f = tmp_path / "g.nir"
    serialize.write(f, Graph.from_nir(ff_lif()))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with h5py.File(f, "r+") as h:
        grp = h["node/nodes"]
        name = sorted(grp)[0]
        del grp[name]
        g2 = grp.create_group(name)
        g2.create_dataset("type", data="write")
        g2.create_dataset("filename", data=str(victim))
    with pytest.raises(InputFileError) as e:
        serialize.read(f)
    assert "'write'" in e.value.one_line()
    assert victim.read_text() == "precious"
