"""Fuzzing every file nmc reads from a user (issue #21): NIR/HDF5 files,
``nmc.save`` files, ONNX models, ``.pt2`` archives, bundles (manifest and
files) and input ``.npz`` files. Each example mutates a valid seed file and
runs nmc's reader on it under :func:`fuzzkit.guarded`: only ``NmcError``
subclasses, no code execution (canary), no write outside ``out/``, peak memory
growth ≤ ``fuzzkit.MEM_BOUND``. ``NMC_FUZZ_EXAMPLES=2000 pytest tests/fuzz``
runs longer (see SECURITY.md)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hostile
from fuzzkit import SETTINGS, guarded, hostile_values, mutate_bytes, mutate_tree, workspace
from nets import ff_lif, spikes

import nmc
from nmc import serialize
from nmc.driver.bundle import MANIFEST, Bundle
from nmc.frontends import load_model
from nmc.ir import Graph


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Valid seed files, built once: {kind: bytes or structure}."""
    d = tmp_path_factory.mktemp("seeds")
    from nmc import nn as nnn

    buf = io.BytesIO()
    serialize.write(buf, Graph.from_nir(ff_lif()))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), nnn.LIF(3, beta=0.8))
    nmc.save(net, d / "m.pt")
    pt2 = hostile.small_export(d / "m.pt2")
    with zipfile.ZipFile(pt2) as z:
        pt2_members = {i.filename: z.read(i.filename) for i in z.infolist()}
    bundle = nmc.compile(d / "m.pt", target="reference", dt=1e-3)
    bundle.write(d / "b.nmc")
    return _Seeds({"nir": buf.getvalue(), "save": torch.load(d / "m.pt", weights_only=True),
            "onnx": _onnx_seed(), "pt2": pt2_members, "bundle": bundle,
            "bundle_tree": {p.relative_to(d / "b.nmc").as_posix(): p.read_bytes()
                            for p in sorted((d / "b.nmc").rglob("*")) if p.is_file()}})


class _Seeds(dict):
    def __repr__(self):   # keeps hypothesis' report of a failing example readable
        return f"<seeds {sorted(self)}>"


def _onnx_seed():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(rng.normal(0, .5, s).astype(np.float32), k)
         for k, s in (("w1", (5, 4)), ("b1", (5,)), ("w2", (2, 5)), ("b2", (2,)))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.fixture
def ws(tmp_path):
    return tmp_path


def _fresh(tmp):
    return workspace(tmp)


def _read_each(w, f, *readers):
    """Each reader on the mutated file ``f`` under :func:`fuzzkit.guarded` (only NmcError, no
    code run, no write outside ``out/``, bounded memory), then the workspace ``w`` removed."""
    for read in readers:
        with guarded(w):
            read(f)
    shutil.rmtree(w)


# ------------------------------------------------------------- NIR / HDF5
@SETTINGS
@given(data=st.data())
def test_fuzz_nir_files(seeds, ws, data):
    w = _fresh(ws)
    f = w / "g.nir"
    if data.draw(st.booleans(), label="structured"):
        import h5py

        f.write_bytes(seeds["nir"])
        with h5py.File(f, "r+") as h:
            names = []
            h.visit(lambda n: names.append(n) if isinstance(h[n], h5py.Dataset) else None)
            for _ in range(data.draw(st.integers(1, 3))):
                n = data.draw(st.sampled_from(names))
                v = data.draw(hostile_values(w))
                if n not in h:
                    continue
                del h[n]
                for value in (v if not isinstance(v, dict) else json.dumps(v), str(v).replace("\x00", "?"), 0):
                    try:   # the first form h5py can store
                        h.create_dataset(n, data=value)
                        break
                    except (TypeError, ValueError, OverflowError):
                        continue
    else:
        f.write_bytes(mutate_bytes(data, seeds["nir"]))
    _read_each(w, f, load_model)


# ------------------------------------------------------------- nmc.save files
@SETTINGS
@given(data=st.data())
def test_fuzz_nmc_save_files(seeds, ws, data):
    from nmc.frontends.torch import load_file, load_module

    w = _fresh(ws)
    f = w / "m.pt"
    kind = data.draw(st.sampled_from(["tree", "tree", "canary", "bytes"]), label="kind")
    if kind == "bytes":
        buf = io.BytesIO()
        torch.save(seeds["save"], buf)
        f.write_bytes(mutate_bytes(data, buf.getvalue()))
    else:
        values = hostile_values(w)
        if kind == "canary":
            values = st.just(hostile.CanaryWriter(w / "canary"))
        d = mutate_tree(data, seeds["save"], values)
        torch.save(d, f)
    _read_each(w, f, load_file, load_module)


# ------------------------------------------------------------- ONNX
@SETTINGS
@given(data=st.data())
def test_fuzz_onnx_files(seeds, ws, data):
    import onnx

    w = _fresh(ws)
    f = w / "m.onnx"
    if data.draw(st.booleans(), label="structured"):
        m = onnx.load_from_string(seeds["onnx"])
        for _ in range(data.draw(st.integers(1, 3))):
            what = data.draw(st.sampled_from(["op", "dim", "init_dims", "attr", "drop_input"]))
            if what == "op":
                n = data.draw(st.sampled_from(list(m.graph.node)))
                n.op_type = data.draw(st.sampled_from(["Gemm", "Relu", "Conv", "MatMul", "Add", "Flatten",
                                                       "AveragePool", "MaxPool", "Loop", "write", ""]))
            elif what == "dim":
                d = m.graph.input[0].type.tensor_type.shape.dim[1]
                d.dim_value = data.draw(st.sampled_from([0, 1, 3, 2 ** 20, 2 ** 40, 2 ** 62]))
            elif what == "init_dims":
                t = data.draw(st.sampled_from(list(m.graph.initializer)))
                t.dims[0] = data.draw(st.sampled_from([0, 1, 7, 2 ** 31, 2 ** 40]))
            elif what == "attr":
                n = m.graph.node[0]
                n.attribute[0].i = data.draw(st.sampled_from([-1, 0, 2, 2 ** 40]))
            else:
                n = data.draw(st.sampled_from(list(m.graph.node)))
                if len(n.input) > 1:
                    del n.input[-1]
        f.write_bytes(m.SerializeToString())
    else:
        f.write_bytes(mutate_bytes(data, seeds["onnx"]))
    _read_each(w, f, load_model)


# ------------------------------------------------------------- .pt2 archives
@SETTINGS
@given(data=st.data())
def test_fuzz_pt2_archives(seeds, ws, data):
    import pickle

    w = _fresh(ws)
    members = dict(seeds["pt2"])
    names = sorted(members)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        name = data.draw(st.sampled_from(names), label="member")
        kind = data.draw(st.sampled_from(["json", "bytes", "canary", "drop", "raw_pickle"]), label="kind")
        if kind == "json" and name.endswith(".json"):
            try:
                members[name] = json.dumps(mutate_tree(data, json.loads(members[name]), hostile_values(w))).encode()
            except (TypeError, ValueError):
                members[name] = b"{"
        elif kind == "canary":
            members[name] = hostile.canary_torch_save(w / "canary")
        elif kind == "raw_pickle":
            members[name] = pickle.dumps(hostile.CanaryWriter(w / "canary"))
        elif kind == "drop":
            members.pop(name, None)
        elif name in members:
            members[name] = mutate_bytes(data, members[name])
    f = w / "m.pt2"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    _read_each(w, f, load_model)


# ------------------------------------------------------------- bundles
@SETTINGS
@given(data=st.data())
def test_fuzz_bundles(seeds, ws, data):
    w = _fresh(ws)
    tree = dict(seeds["bundle_tree"])
    manifest = json.loads(tree[MANIFEST])
    kind = data.draw(st.sampled_from(["manifest", "file", "file_fixed_sha"]), label="kind")
    if kind == "manifest":
        manifest = mutate_tree(data, manifest, hostile_values(w))
    else:
        name = data.draw(st.sampled_from(sorted(k for k in tree if k != MANIFEST)), label="file")
        tree[name] = mutate_bytes(data, tree[name])
        if kind == "file_fixed_sha" and isinstance(manifest.get("files"), dict):
            manifest["files"][name] = {"sha256": hashlib.sha256(tree[name]).hexdigest(), "bytes": len(tree[name])}
    try:
        tree[MANIFEST] = json.dumps(manifest).encode()
    except (TypeError, ValueError):
        tree[MANIFEST] = b"{}"
    b = w / "in.nmc"
    for rel, v in tree.items():
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(v)
    with guarded(w):
        loaded = Bundle.load(b)
        loaded.graph
        loaded.program
        loaded.write(w / "out" / "copy.nmc")
    # the same tree as an existing -o target: replaced only if it is verifiably a bundle, else untouched
    target = w / "out" / "over.nmc"
    shutil.copytree(b, target)
    before = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    refused = False
    with guarded(w):
        try:
            seeds["bundle"].write(target)
        except nmc.errors.NmcError:
            refused = True
            raise
    after = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == (before if refused else seeds["bundle_tree"])
    shutil.rmtree(w)


# ------------------------------------------------------------- input .npz
@SETTINGS
@given(data=st.data())
def test_fuzz_input_npz(seeds, ws, data):
    from nmc.runtime.events import load_inputs_npz

    w = _fresh(ws)
    f = w / "in.npz"
    x = spikes(4, T=6, seed=1)
    kind = data.draw(st.sampled_from(["arrays", "bytes", "pickle"]), label="kind")
    if kind == "arrays":
        dtype = data.draw(st.sampled_from(["float64", "float32", "int8", "uint64", "bool", "complex128", "float16",
                                           "U3", "V8", "datetime64[s]"]))
        shape = data.draw(st.lists(st.integers(0, 7), max_size=4))
        name = data.draw(st.sampled_from(["input", "input/x", "../x", "", "output", "a" * 200]))
        try:
            arr = np.zeros(shape, dtype=dtype)
        except (TypeError, ValueError):
            arr = x
        np.savez(f, **{name: arr}) if name else np.savez(f, arr)
    elif kind == "pickle":
        np.savez(f, input=np.array([hostile.CanaryWriter(w / "canary")], dtype=object))
    else:
        buf = io.BytesIO()
        np.savez(buf, input=x)
        f.write_bytes(mutate_bytes(data, buf.getvalue()))
    with guarded(w):
        inputs = load_inputs_npz(f)
        seeds["bundle"].run(inputs)
    shutil.rmtree(w)
