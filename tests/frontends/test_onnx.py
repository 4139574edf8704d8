"""ONNX frontend: every supported operator, the unsupported-operator error, and
the conversion's rate-coding fidelity (SNN output → ANN output as T grows)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc.errors import InputFileError, UnsupportedNodeError
from nmc.frontends.onnx import _ann_forward, _read, convert, encode
from nmc.reference import ReferenceSimulator

RNG = np.random.default_rng(0)


def _model(nodes, inits, in_shape, out_shape, path):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _ann(path, x):
    import torch

    ops, inits, in_name, _, out_name = _read(path)
    env, _ = _ann_forward(ops, inits, in_name, torch.as_tensor(x, dtype=torch.float64))
    return env[out_name].numpy()


def _snn_readout(g, x, T):
    out = ReferenceSimulator(g).run({"input": encode(x, T)}, batched=True, record=["readout"])
    return out["readout.v"][-1] / T  # mean input current per step = the ANN logits


def _check_close(path, in_shape, T=400, tol=0.08):
    x = RNG.random((64, *in_shape))
    g, rep = convert(path, data={"input": x}, timesteps=T, percentile=100)
    ann, snn = _ann(path, x), _snn_readout(g, x, T)
    err = np.abs(ann - snn).max() / (np.abs(ann).max() + 1e-9)
    assert err < tol, f"relative readout error {err:.3f}"
    return g, rep


def test_gemm_relu_gemm(tmp_path):
    p = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
                helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)],
               {"w1": RNG.normal(0, .5, (20, 6)), "b1": RNG.normal(0, .1, 20), "w2": RNG.normal(0, .5, (3, 20)),
                "b2": np.zeros(3)}, [6], [3], tmp_path / "m.onnx")
    g, rep = _check_close(p, (6,))
    types = [type(n).__name__ for n in g.nodes.values()]
    assert types.count("IF") == 1 and types.count("Affine") == 2
    assert rep["calibration"] == "data"


def test_matmul_add_and_clip_relu6(tmp_path):
    p = _model([helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["h"]),
                helper.make_node("Clip", ["h", "lo", "hi"], ["r"]),
                helper.make_node("MatMul", ["r", "w2"], ["y"])],
               {"w1": RNG.normal(0, 2, (6, 12)), "b1": RNG.normal(0, .1, 12), "lo": np.float32(0), "hi": np.float32(0.5),
                "w2": RNG.normal(0, .5, (12, 4))}, [6], [4], tmp_path / "m.onnx")
    g, _ = _check_close(p, (6,))
    thr = [n.v_threshold for n in g.nodes.values() if type(n).__name__ == "IF"][0]
    assert np.all(thr <= 0.5 + 1e-12)  # λ capped at the clip value: saturation reproduces the clip


def test_conv_batchnorm_avgpool_flatten(tmp_path):
    c = 4
    p = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
                helper.make_node("Relu", ["n"], ["r"]),
                helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Flatten", ["p"], ["f"]),
                helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)],
               {"w": RNG.normal(0, .5, (c, 1, 3, 3)), "b": np.zeros(c), "s": RNG.uniform(.5, 1.5, c),
                "bb": RNG.normal(0, .1, c), "m": RNG.normal(0, .1, c), "v": RNG.uniform(.5, 1.5, c),
                "w2": RNG.normal(0, .5, (5, c * 4 * 4)), "b2": np.zeros(5)}, [1, 8, 8], [5], tmp_path / "m.onnx")
    g, _ = _check_close(p, (1, 8, 8))
    names = [type(n).__name__ for n in g.nodes.values()]
    assert "BatchNormalization" not in names and names.count("Conv2d") == 1  # folded
    assert "AvgPool2d" in names and "Flatten" in names


def test_residual_add_reshape_identity_dropout(tmp_path):
    p = _model([helper.make_node("Reshape", ["x", "shape"], ["xf"]),
                helper.make_node("Gemm", ["xf", "w1", "b1"], ["h1"], transB=1),
                helper.make_node("Relu", ["h1"], ["r1"]),
                helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"], transB=1),
                helper.make_node("Add", ["h2", "r1"], ["s"]),
                helper.make_node("Relu", ["s"], ["r2"]),
                helper.make_node("Identity", ["r2"], ["i"]),
                helper.make_node("Dropout", ["i"], ["d"]),
                helper.make_node("Gemm", ["d", "w3", "b3"], ["y"], transB=1)],
               {"shape": np.array([-1, 8]), "w1": RNG.normal(0, .5, (10, 8)), "b1": np.zeros(10),
                "w2": RNG.normal(0, .3, (10, 10)), "b2": np.zeros(10), "w3": RNG.normal(0, .5, (3, 10)),
                "b3": np.zeros(3)}, [2, 4], [3], tmp_path / "m.onnx")
    # Reshape's shape initializer must stay int64
    m = onnx.load(str(p))
    for i, t in enumerate(m.graph.initializer):
        if t.name == "shape":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape"))
    onnx.save(m, str(p))
    g, _ = _check_close(p, (2, 4))
    assert any(type(n).__name__ == "Scale" for n in g.nodes.values())  # the skip path carries λ


def test_unsupported_ops_listed_at_once(tmp_path):
    p = _model([helper.make_node("Conv", ["x", "w"], ["c"]),
                helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2]),
                helper.make_node("Sigmoid", ["p"], ["y"], name="act")],
               {"w": RNG.normal(size=(2, 1, 3, 3))}, [1, 6, 6], [2, 2, 2], tmp_path / "m.onnx")
    with pytest.raises(UnsupportedNodeError) as e:
        convert(p)
    msg = e.value.one_line()
    assert "2 unsupported" in msg and "MaxPool" in msg and "act (Sigmoid)" in msg and "AveragePool" in msg


def test_corrupt_onnx_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputFileError):
        nmc.compile(p)


def test_encodings():
    x = np.array([[0.0, 0.25, 1.0]])
    r = encode(x, 8, "regular")
    assert r.sum(0).tolist() == [[0, 2, 8]]
    pz = encode(np.full((1, 1000), 0.3), 50, "poisson", seed=1)
    assert abs(pz.mean() - 0.3) < 0.02
    assert np.array_equal(encode(x, 3, "current")[2], x)


def test_compile_onnx_end_to_end_reports_accuracy(tmp_path):
    w1, w2 = RNG.normal(0, 1, (16, 4)), RNG.normal(0, 1, (3, 16))
    p = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)],
               {"w1": w1, "b1": np.zeros(16), "w2": w2, "b2": np.zeros(3)}, [4], [3], tmp_path / "m.onnx")
    x = RNG.random((200, 4))
    labels = _ann(p, x).argmax(1)  # the ANN is right by construction: the SNN must agree
    np.savez(tmp_path / "cal.npz", input=x, labels=labels)
    b = nmc.compile(p, target="reference", calibrate=tmp_path / "cal.npz", timesteps=128, output=tmp_path / "b")
    acc = b.report("conversion")["accuracy"]
    assert acc["ann"] == 1.0
    assert acc["snn"]["128"] >= 0.95
    assert acc["snn"]["128"] >= acc["snn"]["8"]


def test_avgpool_bundle_written_and_loaded_runs_the_same(tmp_path):
    """AvgPool2d's shapes are not NIR fields: the bundle keeps them (/nmc/shapes), so a loaded
    bundle runs, and equals the in-memory one."""
    import nmc

    c = 2
    p = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c"], ["r"]),
                helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Flatten", ["p"], ["f"]),
                helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)],
               {"w": RNG.normal(0, .5, (c, 1, 3, 3)), "b": np.zeros(c),
                "w2": RNG.normal(0, .5, (3, c * 4 * 4)), "b2": np.zeros(3)}, [1, 8, 8], [3], tmp_path / "m.onnx")
    b = nmc.compile(p, target="reference", timesteps=16)
    b.write(tmp_path / "m.nmc")
    b2 = nmc.load(tmp_path / "m.nmc")
    pool = next(k for k, n in b2.graph.nodes.items() if type(n).__name__ == "AvgPool2d")
    assert b2.graph.shape_in(pool) == (c, 8, 8) and b2.graph.shape_out(pool) == (c, 4, 4)
    x = encode(RNG.uniform(0, 1, (5, 1, 8, 8)).astype(np.float32), 16, "regular")
    np.testing.assert_array_equal(b2.run({"input": x})["output"], b.run({"input": x})["output"])
