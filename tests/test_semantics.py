"""The node-type registry (nmc.semantics): every node type nmc reads has a complete
entry, and a new node type takes one entry (shape rule, counters, reference step)
to be verified, simulated, classified and read back from a file."""
from __future__ import annotations

import dataclasses

import nir
import numpy as np
import pytest
import torch

import nmc.reference  # noqa: F401  (registers the reference steps)
from nmc import semantics, serialize
from nmc.errors import UnknownNodeTypeError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EXTENSION_NODES, NIR_NODES, is_dense, is_extension, is_neuron, node_class, weight_matrix
from nmc.reference import ReferenceSimulator
from nmc.runtime.energy import TERMS
from nmc.semantics import Kind, NodeType, shapes
from nmc.reference_steps import Step


def test_every_allow_listed_node_type_has_a_complete_entry():
    allowed = {**NIR_NODES, **EXTENSION_NODES}
    assert len(allowed) == 22  # NIR 1.0.8's 18 primitives + nmc.EGRU, DiagSSM, StochasticSSMNeuron, LayerNorm
    terms = {t.kind for t in TERMS}
    for name, cls in allowed.items():
        e = semantics.lookup(cls)
        assert e is not None and e.name == name and e.cls is cls
        assert semantics.missing(e) == [], name
        assert set(e.counters) <= terms, name
        for f in e.params + e.weights:  # the fields an entry names exist on the class
            assert f in {x.name for x in dataclasses.fields(cls)}, (name, f)


def test_classification_follows_the_entries():
    assert {c.__name__ for c in semantics.classes(Kind.NEURON)} == {"I", "IF", "LI", "LIF", "CubaLI", "CubaLIF",
                                                                    "EGRU", "DiagSSM", "StochasticSSMNeuron"}
    assert {c.__name__ for c in semantics.classes(Kind.NEURON, spiking=True)} == {"IF", "LIF", "CubaLIF",
                                                                                  "StochasticSSMNeuron"}
    assert semantics.of(nir.Threshold(threshold=np.ones(2))).spiking


@dataclasses.dataclass(eq=False)
class Negate(nir.NIRNode):
    """A tiny extension node for the test: y = −g ⊙ x (per-element gain g)."""

    gain: np.ndarray

    nmc_type = "test.Negate"

    def __post_init__(self):
        self.gain = np.asarray(self.gain, dtype=float)
        self.input_type = {"input": np.array(self.gain.shape)}
        self.output_type = {"output": np.array(self.gain.shape)}

    def to_dict(self):
        d = super().to_dict()
        d["type"] = self.nmc_type
        return d


class NegateStep(Step):
    def __init__(self, sn):
        super().__init__(sn)
        self.p["g"] = self._param(sn.node.gain)

    def step(self, x, st):
        return -self.p["g"] * x, st, {}


NEGATE = NodeType(cls=Negate, name=Negate.nmc_type, kind=Kind.ELEMENTWISE, shape=shapes.elementwise,
                  params=("gain",), counters=(), hooks={("reference", "step"): NegateStep})


def _graph() -> Graph:
    g = Graph(meta={"dt": 1e-3, "integrator": "euler", "reset": "zero"})  # as normalize sets it
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}))
    g.add_node("neg", Negate(gain=np.array([1.0, 2.0, 0.5])))
    g.add_node("out", nir.Output(output_type={"output": np.array([3])}))
    g.add_edge("in", "neg")
    g.add_edge("neg", "out")
    return g


def test_a_new_node_type_is_one_registry_entry(tmp_path):
    with pytest.raises(UnsupportedNodeError, match="unknown node type Negate"):
        _graph().verify()  # before it is registered: refused, named, as any unknown type
    with pytest.raises(UnknownNodeTypeError):
        node_class("test.Negate")
    with semantics.registered(NEGATE):
        g = _graph()
        g.verify()
        assert is_extension(g.nodes["neg"]) and not is_neuron(g.nodes["neg"])
        assert semantics.missing(NEGATE) == []
        x = np.arange(12, dtype=float).reshape(4, 3)
        out = ReferenceSimulator(g).run({"in": x})["out"]
        np.testing.assert_array_equal(out, -x * np.array([1.0, 2.0, 0.5]))  # exact: one product per element
        # files: the nmc HDF5 file and the plain-data form both read it back through the registry
        serialize.write(tmp_path / "g.nir", g)
        back = serialize.read(tmp_path / "g.nir")
        np.testing.assert_array_equal(back.nodes["neg"].gain, [1.0, 2.0, 0.5])
        data = serialize.from_data(serialize.to_data(g, torch.from_numpy), "mem",
                                   lambda v: v.numpy() if isinstance(v, torch.Tensor) else v)
        assert data.dump() == g.dump()
    with pytest.raises(UnknownNodeTypeError):  # unregistered again: the allow-list is closed
        node_class("test.Negate")
    assert semantics.lookup(Negate) is None


def test_hooks_per_target_fall_back_to_the_shared_one():
    e = semantics.lookup(nir.Affine)
    shared = e.hook("linear_map")
    assert shared is not None and e.hook("linear_map", "some-target") is shared
    own = semantics.register_hook("some-target", "linear_map", nir.Affine)(lambda *a, **k: "own")
    try:
        assert e.hook("linear_map", "some-target") is own and e.hook("linear_map") is shared
    finally:
        del e.hooks[("some-target", "linear_map")]


def test_hook_of_asks_the_entry_and_answers_none_for_unregistered_types():
    """``hook_of(node, hook, target)``: the target's hook, else the shared one, else None; None for a
    type without an entry (a pass or backend then treats the node as one that does not take part)."""
    lif = nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    aff = nir.Affine(weight=np.eye(2), bias=np.zeros(2))
    assert semantics.hook_of(aff, "linear_map") is semantics.lookup(nir.Affine).hook("linear_map")
    assert semantics.hook_of(nir.Affine, "linear_map", "some-target") is semantics.hook_of(aff, "linear_map")
    assert semantics.hook_of(lif, "linear_map") is None
    assert semantics.hook_of(Negate(gain=np.ones(2)), "linear_map") is None          # not registered
    own = semantics.register_hook("some-target", "dense_weight", nir.Affine)(lambda node: "own")
    try:
        assert semantics.hook_of(aff, "dense_weight", "some-target") is own
        assert semantics.hook_of(aff, "dense_weight") is not own
    finally:
        del semantics.lookup(nir.Affine).hooks[("some-target", "dense_weight")]
    # "dense" is the registered dense_weight hook: Affine and Linear, not a convolution or a Scale
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 3, 3)), stride=1, padding=1, dilation=1, groups=1,
                      bias=np.zeros(1))
    assert [is_dense(n) for n in (aff, nir.Linear(weight=np.eye(2)), conv, nir.Scale(scale=np.ones(2)), lif)] \
        == [True, True, False, False, False]
    np.testing.assert_array_equal(weight_matrix(aff), np.eye(2))
    assert weight_matrix(conv) is None


def test_registering_a_type_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        semantics.register(NodeType(cls=nir.LIF, name="LIF2", kind=Kind.NEURON, shape=shapes.neuron, counters=()))


def test_with_weights_hook_keeps_the_map_and_replaces_weight_and_bias():
    """``with_weights(node, w, b)``: the ONNX frontend folds BatchNormalization through it. A grouped
    Conv2d keeps its stride, padding, dilation, groups and input type (NIR's constructor alone would
    read C_in / groups as the input channels), and equals the node the ONNX frontend builds."""
    from nmc.frontends.onnx_ops import _conv2d

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 2, 3, 3)), rng.normal(size=6)
    conv = _conv2d(w, b, (8, 8), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    w2, b2 = w * 0.5, b + 1.0
    got = semantics.lookup(nir.Conv2d).hook("with_weights")(conv, w2, b2)
    want = _conv2d(w2, b2, conv.input_shape, conv.stride, conv.padding, conv.dilation, conv.groups)
    for f in ("input_shape", "stride", "padding", "dilation", "groups"):
        assert np.array_equal(np.asarray(getattr(got, f)), np.asarray(getattr(want, f))), f
    assert np.array_equal(got.weight, w2) and np.array_equal(got.bias, b2)
    assert {k: v.tolist() for k, v in got.input_type.items()} == {k: v.tolist() for k, v in want.input_type.items()}
    assert {k: v.tolist() for k, v in got.output_type.items()} == {k: v.tolist() for k, v in want.output_type.items()}
    assert got.input_type["input"][0] == 4
    aff = semantics.lookup(nir.Affine).hook("with_weights")(nir.Affine(weight=w[:, 0, 0], bias=b), w2[:, 0, 0], b2)
    assert isinstance(aff, nir.Affine) and np.array_equal(aff.weight, w2[:, 0, 0]) and np.array_equal(aff.bias, b2)
