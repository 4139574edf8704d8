"""ONNX frontend: every supported operator, the unsupported-operator error, and
the conversion's rate-coding fidelity (SNN output → ANN output as T grows)."""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc.errors import InputFileError, OptionError, UnsupportedNodeError
from nmc.frontends.onnx import _ann_forward, _read, convert, encode
from nmc.reference import ReferenceSimulator

RNG = np.random.default_rng(0)


def _model(nodes, inits, in_shape, out_shape, path):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f" else np.int64), k)
         for k, v in inits.items()])
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


# ------------------------------------------------------------ issue 25: layers of common classifiers
def _signed(*shape):
    """Weights away from 0 (|w| in [0.5, 1]) so no synapse quantizes to 0 on a chip."""
    return RNG.uniform(0.5, 1.0, shape) * RNG.choice([-1, 1], shape)


def _branchy(path, softmax="Softmax"):
    """conv → relu → [depthwise conv → relu] ‖ [1×1 conv → relu] → Concat → GlobalAveragePool → Flatten
    → Gemm → Softmax: the pieces of a MobileNet/Inception head."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=4, name="dw"),
             helper.make_node("Relu", ["cd"], ["rd"], name="dw_relu"),
             helper.make_node("Conv", ["r1", "wp"], ["cp"], name="pw"),
             helper.make_node("Relu", ["cp"], ["rp"]),
             helper.make_node("Concat", ["rd", "rp"], ["cat"], axis=1, name="cat"),
             helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1)]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node(softmax, ["logits"], ["y"], axis=1, name="sm"))
        out = "y"
    inits = {"w1": _signed(4, 2, 3, 3) * .5, "b1": np.full(4, .1), "wd": _signed(4, 1, 3, 3) * .5, "bd": np.zeros(4),
             "wp": _signed(2, 4, 1, 1), "w2": _signed(3, 6) * 2, "b2": np.zeros(3)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_depthwise_concat_gap_softmax_convert_close_to_the_ann(tmp_path):
    p = _branchy(tmp_path / "m.onnx", softmax=None)
    g, _ = _check_close(p, (2, 6, 6))
    dw = g.nodes["dw"]
    assert int(dw.groups) == 4 and g.shape_in("dw") == (4, 6, 6)  # NIR's constructor says (1, 6, 6)
    assert any(type(n).__name__ == "AvgPool2d" and g.shape_out(k) == (6, 1, 1) for k, n in g.nodes.items())


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_output_softmax_is_dropped_with_a_note(tmp_path, op):
    p = _branchy(tmp_path / "m.onnx", softmax=op)
    x = RNG.random((32, 2, 6, 6))
    g, rep = convert(p, data={"input": x}, timesteps=300, percentile=100)
    assert [n["node"] for n in rep["notes"]] == ["sm"] and "argmax" in rep["notes"][0]["message"]
    import torch

    ops, inits, in_name, _, _ = _read(p)
    logits = _ann_forward(ops, inits, in_name, torch.as_tensor(x))[0]["logits"].numpy()
    snn = _snn_readout(g, x, 300)  # the readout holds the logits, not the probabilities
    assert np.abs(snn - logits).max() / np.abs(logits).max() < 0.08
    b = nmc.compile(p, target="reference", timesteps=16, calibrate={"input": x})
    assert any(w["node"] == "sm" and w["source"] == "onnx" for w in b.report("compile")["warnings"])


def test_softmax_inside_the_network_is_refused_with_the_reason(tmp_path):
    p = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
                helper.make_node("Softmax", ["h"], ["s"], axis=1, name="inner"),
                helper.make_node("Gemm", ["s", "w2", "b2"], ["y"], transB=1)],
               {"w1": RNG.normal(size=(5, 4)), "b1": np.zeros(5), "w2": RNG.normal(size=(3, 5)), "b2": np.zeros(3)},
               [4], [3], tmp_path / "m.onnx")
    with pytest.raises(UnsupportedNodeError) as e:
        convert(p)
    assert "inner (Softmax inside the network" in e.value.one_line() and "argmax" in e.value.one_line()


def test_concat_of_feature_vectors_and_a_residual_of_unequal_depth(tmp_path):
    """Concat of two (N, F) branches; an Add whose terms are one and two neuron layers deep (relays align them)."""
    p = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),
                helper.make_node("Relu", ["h1"], ["r1"]),
                helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"], transB=1),
                helper.make_node("Relu", ["h2"], ["r2"]),
                helper.make_node("Gemm", ["x", "w3", "b3"], ["h3"], transB=1),
                helper.make_node("Relu", ["h3"], ["r3"]),
                helper.make_node("Concat", ["r2", "r3"], ["cat"], axis=-1),
                helper.make_node("Gemm", ["cat", "w4", "b4"], ["h4"], transB=1),
                helper.make_node("Add", ["h4", "r1"], ["s"]),
                helper.make_node("Relu", ["s"], ["r4"]),
                helper.make_node("Gemm", ["r4", "w5", "b5"], ["y"], transB=1)],
               {"w1": RNG.normal(0, .6, (8, 6)), "b1": np.zeros(8), "w2": RNG.normal(0, .5, (5, 8)), "b2": np.zeros(5),
                "w3": RNG.normal(0, .6, (4, 6)), "b3": np.zeros(4), "w4": RNG.normal(0, .5, (8, 9)),
                "b4": np.zeros(8), "w5": RNG.normal(0, .5, (3, 8)), "b5": np.zeros(3)}, [6], [3], tmp_path / "m.onnx")
    g, _ = _check_close(p, (6,))
    assert any("relay" in k for k in g.nodes)  # r1 reaches the Add one layer early: padded with a relay


def test_grouped_conv_and_concat_lower_on_every_chip_with_grouped_synapse_counts(tmp_path, monkeypatch):
    """The depthwise projection holds 4 channels × 16 × 16 taps (3×3, padding 1, 6×6), not the dense
    4 × 4 × 256: every target stores only the connections the groups make. The SNNs agree with the ANN.
    The model and data come from a fresh seed-0 generator, not the module's shared one, so they do not
    depend on which tests ran before.

    Bound: on this model every target (brainscales2 included) agrees with the ANN's class on all of
    400 fresh inputs of the same distribution (measured 2026-12-07), so its expected disagreement q is
    ≤ 3/400 = 0.0075 at 95 % (rule of three); the test's n = 24 inputs then fall below 0.9 agreement
    (3 or more disagreements) with probability ≤ P[Binom(24, 0.0075) ≥ 3] ≈ 8e-4. The old bound 0.8
    was met at 0.79 only because the shared generator drew another model, depending on test order:
    of six model draws (seeds 0-5), brainscales2 agreed on 400 fresh inputs 100 % on four and 74 % /
    78 % on two (the other targets 91-100 %), where pointwise-branch neurons saturate on the
    reference (one fires 44 of 48 steps, its membrane carrying up to 5 thresholds of excess after
    the subtractive reset) and the analog neuron, reset and held for half a step after each spike,
    cannot carry the excess (16 of 48)."""
    monkeypatch.setattr(sys.modules[__name__], "RNG", np.random.default_rng(0))
    p = _branchy(tmp_path / "m.onnx")
    x = RNG.random((24, 2, 6, 6))
    want = 4 * 16 * 16
    ann = _ann(p, x).argmax(1)
    counts = {}
    for target in ("spinnaker2", "loihi2", "brainscales2"):
        b = nmc.compile(p, target=target, timesteps=48, encoding="regular", calibrate={"input": x})
        prog = b._program
        if target == "spinnaker2":
            counts[target] = next(q.nnz for q in prog.projections if q.post == "dw_relu_if")
        elif target == "loihi2":
            # mixed-sign weights are an excitatory and an inhibitory Dense: count both
            counts[target] = sum(int(np.count_nonzero(s.weights)) for s in prog.synapses if s.dst == "dw_relu_if")
        else:
            counts[target] = next(v["synapses"] for k, v in b.report("compile")["program"]["projections"].items()
                                  if k.endswith("->dw_relu_if"))
        out = b.run({"input": encode(x, 48, "regular")}, record=["readout"])["readout.v"][-1]
        assert np.mean(out.argmax(-1) == ann) >= 0.9, target
    assert counts == {t: want for t in counts}


def test_mul_div_by_constants_are_folded(tmp_path):
    p = _model([helper.make_node("Mul", ["x", "two"], ["xs"]),
                helper.make_node("Gemm", ["xs", "w1", "b1"], ["h"], transB=1),
                helper.make_node("Mul", ["h", "ch"], ["hc"]),
                helper.make_node("Relu", ["hc"], ["r"]),
                helper.make_node("Div", ["r", "three"], ["rd"]),
                helper.make_node("Gemm", ["rd", "w2", "b2"], ["y0"], transB=1),
                helper.make_node("Div", ["y0", "half"], ["y"])],
               {"two": np.float32(2.0), "w1": RNG.normal(0, .5, (7, 5)), "b1": RNG.normal(0, .1, 7),
                "ch": RNG.uniform(.5, 2, 7), "three": np.float32(3.0), "w2": RNG.normal(0, .5, (3, 7)),
                "b2": np.zeros(3), "half": np.float32(0.5)}, [5], [3], tmp_path / "m.onnx")
    g, _ = _check_close(p, (5,))
    assert sorted(type(n).__name__ for n in g.nodes.values()).count("Affine") == 2


def test_transpose_and_shape_arithmetic_around_linear_layers(tmp_path):
    """The patterns exporters insert: a Transpose of the weight before a MatMul, x.view(x.size(0), -1)
    as Shape → Gather → Unsqueeze → Concat → Reshape, and an NHWC Transpose before the flatten."""
    p = _model([helper.make_node("Relu", ["x"], ["rx"]),
                helper.make_node("Transpose", ["rx"], ["t"], perm=[0, 2, 3, 1]),
                helper.make_node("Shape", ["t"], ["sh"]),
                helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
                helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
                helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
                helper.make_node("Reshape", ["t", "shape"], ["f"]),
                helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),
                helper.make_node("MatMul", ["f", "w"], ["m"]),
                helper.make_node("Add", ["m", "b"], ["y"])],
               {"wt": RNG.normal(0, .5, (3, 2 * 3 * 4)), "b": RNG.normal(0, .1, 3), "zero": np.array(0),
                "axes": np.array([0]), "minus1": np.array([-1])}, [2, 3, 4], [3], tmp_path / "m.onnx")
    g, _ = _check_close(p, (2, 3, 4))
    assert not any(type(n).__name__ in ("Shape", "Gather") for n in g.nodes.values())


def test_transpose_of_an_activation_not_followed_by_a_flatten_is_refused(tmp_path):
    p = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                helper.make_node("Relu", ["t"], ["y"], name="after")], {}, [2, 3], [3, 2], tmp_path / "m.onnx")
    with pytest.raises(UnsupportedNodeError, match="Transpose of an activation"):
        convert(p)


def _pool_model(path, op):
    return _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c"], ["r"]),
                   helper.make_node(op, ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
                   helper.make_node("Flatten", ["p"], ["f"]),
                   helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)],
                  {"w": RNG.normal(0, .5, (3, 1, 3, 3)), "b": np.full(3, .05),
                   "w2": RNG.normal(0, .5, (4, 3 * 3 * 3)), "b2": np.zeros(4)}, [1, 6, 6], [4], path)


def test_maxpool_refused_by_default_and_spiking_option_approximates_it(tmp_path):
    p = _pool_model(tmp_path / "m.onnx", "MaxPool")
    with pytest.raises(UnsupportedNodeError, match="pool \\(MaxPool: .*AveragePool and retrain.*maxpool=spiking"):
        convert(p)
    x = RNG.random((64, 1, 6, 6))
    T = 400
    g, rep = convert(p, data={"input": x}, timesteps=T, percentile=100, maxpool="spiking")
    assert rep["maxpool"] == "spiking"
    maxes = [k for k, n in g.nodes.items() if type(n).__name__ == "IF" and k.startswith("pool_max")]
    assert len([k for k in maxes if "relay" not in k]) == 3  # 2×2: a tree of 3
    ann, snn = _ann(p, x), _snn_readout(g, x, T)
    # error bound: each max node counts max(0, Σ_t(a_t − b_t)) spikes instead of T·relu(a − b) when the sign
    # of a_t − b_t changes over the run; with percentile-100 thresholds this stays a few % of the logit range
    err = np.abs(ann - snn).max() / np.abs(ann).max()
    assert err < 0.1, err
    assert np.mean(ann.argmax(1) == snn.argmax(1)) >= 0.9
    with pytest.raises(OptionError, match="maxpool"):
        convert(p, maxpool="fast")


def test_spiking_maxpool_compiles_for_loihi2_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from nmc.cli import main

    p = _pool_model(tmp_path / "m.onnx", "MaxPool")
    r = CliRunner().invoke(main, ["compile", str(p), "--target", "loihi2", "-o", str(tmp_path / "b.nmc"),
                                  "--timesteps", "16", "--option", "maxpool=spiking"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compile", str(p), "--target", "loihi2", "-o", str(tmp_path / "c.nmc")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "maxpool=spiking" in r.output


class _Classifier:
    """A torch classifier with everything the exporters emit for these layers."""

    @staticmethod
    def build():
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
                self.bn = torch.nn.BatchNorm2d(4)
                self.dw = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
                self.pw = torch.nn.Conv2d(4, 4, 1)
                self.side = torch.nn.Conv2d(4, 2, 1)
                self.gap = torch.nn.AdaptiveAvgPool2d(1)
                self.fc = torch.nn.Linear(6, 3)

            def logits(self, x):
                h = torch.relu(self.bn(self.c1(x)))
                a = torch.relu(self.pw(torch.relu(self.dw(h))) + h)
                c = torch.cat([a, torch.relu(self.side(h))], 1)
                return self.fc(self.gap(c).flatten(1) * 0.5) / 2.0

            def forward(self, x):
                return torch.log_softmax(self.logits(x), 1)

        torch.manual_seed(0)
        m = M()
        with torch.no_grad():
            m.bn.running_mean.uniform_(-.1, .1)
            m.bn.running_var.uniform_(.5, 1.5)
        return m.eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_both_torch_exporters_convert(tmp_path, dynamo):
    import warnings

    import torch

    m = _Classifier.build()
    x = torch.rand(1, 1, 8, 8)
    p = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:  # torch 2.13's default exporter; needs onnxscript
            torch.onnx.export(m, (x,), str(p), input_names=["input"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False)
        else:
            torch.onnx.export(m, (x,), str(p), dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "batch"}})
    ops = {n.op_type for n in onnx.load(str(p)).graph.node}
    assert {"Concat", "LogSoftmax"} <= ops and ops & {"GlobalAveragePool", "ReduceMean"}
    xs = RNG.random((48, 1, 8, 8))
    g, rep = convert(p, data={"input": xs}, timesteps=300, percentile=100)
    with torch.no_grad():
        logits = m.logits(torch.as_tensor(xs, dtype=torch.float32)).double().numpy()
    snn = _snn_readout(g, xs, 300)
    assert np.abs(snn - logits).max() / np.abs(logits).max() < 0.08
    assert rep["notes"] and "LogSoftmax" in rep["notes"][0]["message"]


def test_readme_operator_table_matches_the_frontend():
    """README.md's ONNX operator table lists exactly the operators OPERATORS converts."""
    import re
    from pathlib import Path

    from nmc.frontends.onnx import OPERATORS

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("### ONNX operators", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert sorted(listed) == sorted(OPERATORS) and len(listed) == len(set(listed))


def test_concat_and_grouped_conv_round_trip_through_nmc_files(tmp_path):
    """Concat's index-mapping nodes and a depthwise Conv2d are NIR nodes: nmc's writer/reader keep them
    (NIR's reader alone would give the depthwise conv C_in / groups input channels)."""
    from nmc import serialize

    p = _branchy(tmp_path / "m.onnx")
    x = RNG.random((8, 2, 6, 6))
    g, _ = convert(p, data={"input": x}, timesteps=16)
    serialize.write(tmp_path / "g.nir", g)
    g2 = serialize.read(tmp_path / "g.nir")
    assert g2.shape_in("dw") == (4, 6, 6)
    inp = {"input": encode(x, 16)}
    a = ReferenceSimulator(g).run(inp, batched=True, record=["readout"])["readout.v"]
    b = ReferenceSimulator(g2).run(inp, batched=True, record=["readout"])["readout.v"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("where", ["../secret.bin", "ABS", "link.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, where):
    """A tensor's external data may only be a regular file in the model's folder: a location
    with "..", an absolute one, or a symbolic link out of the folder is refused with the reason
    (the secret's bytes are never read into the model)."""
    (tmp_path / "secret.bin").write_bytes(b"SECRET-0123456789abcdef")
    d = tmp_path / "m"
    d.mkdir()
    if where == "link.bin":
        (d / "link.bin").symlink_to(tmp_path / "secret.bin")
    loc = str(tmp_path / "secret.bin") if where == "ABS" else where
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 2], [0, 0, 0, 0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    (d / "model.onnx").write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(InputFileError, match="ONNX model refused: .*(outside|relative path|symbolic link)") as e:
        _read(d / "model.onnx")
    assert "SECRET" not in e.value.one_line() and "folder" in e.value.one_line()
