"""NIR HDF5 read/write: every NIR node type, the EGRU extension node, every
annotation class, graph meta; interoperability with plain ``nir.read``/``nir.write``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import h5py
import nir
import numpy as np
import pytest

from nets import egru_net, egru_node, ff_lif, node_zoo, normalized, recurrent_cubalif, single_node_graph, spikes
from nmc import annotations as A
from nmc import serialize
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph, _params
from nmc.reference import ReferenceSimulator


def assert_value_equal(a, b, what=""):
    assert type(a) is type(b), f"{what}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=what)
    elif isinstance(a, dict):
        assert list(a) == list(b) or set(a) == set(b), what
        for k in a:
            assert_value_equal(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_value_equal(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def assert_graph_equal(g: Graph, h: Graph):
    assert set(g.nodes) == set(h.nodes)
    assert sorted(g.edges) == sorted(h.edges)
    assert g.meta == h.meta
    for name in g.nodes:
        a, b = g.nodes[name], h.nodes[name]
        assert type(a) is type(b), name
        pa, pb = _params(a), _params(b)
        assert set(pa) == set(pb), (name, set(pa) ^ set(pb))
        for k in pa:
            assert_value_equal(pa[k], pb[k], f"{name}.{k}")
        assert g.shape_in(name) == h.shape_in(name) and g.shape_out(name) == h.shape_out(name), name
    assert set(g.annotations) == set(h.annotations)
    for name in g.annotations:
        assert set(g.annotations[name]) == set(h.annotations[name])
        for kind, ann in g.annotations[name].items():
            other = h.annotations[name][kind]
            assert type(ann) is type(other)
            for k, v in ann.fields().items():
                assert_value_equal(v, other.fields()[k], f"{name}@{kind}.{k}")


def roundtrip(g: Graph, tmp_path, name="g.nir") -> Graph:
    p = tmp_path / name
    serialize.write(p, g)
    return serialize.read(p)


ZOO = [k for k in node_zoo() if k not in ("Input", "Output")]


@pytest.mark.parametrize("kind", ZOO)
def test_every_nir_node_roundtrips(kind, tmp_path):
    g = Graph.from_nir(single_node_graph(node_zoo()[kind], "n"), meta={"dt": 1e-3})
    h = roundtrip(g, tmp_path)
    assert_graph_equal(g, h)
    assert g.dump() == h.dump()


def test_input_output_multidim_roundtrip(tmp_path):
    g = Graph.from_nir(nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2, 3, 4])}),
                                           "out": nir.Output(output_type={"output": np.array([2, 3, 4])})},
                                    edges=[("in", "out")]))
    assert_graph_equal(g, roundtrip(g, tmp_path))


def test_nested_graph_is_flattened_and_roundtrips(tmp_path):
    """A nested NIRGraph (as NIR files may hold) becomes dotted node names; edges
    into/out of the sub-graph are rewired to its first/last real nodes."""
    zoo = node_zoo()
    outer = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}), "sub": zoo["NIRGraph"],
                                "s": nir.Scale(scale=np.full(4, 2.0)),
                                "output": nir.Output(output_type={"output": np.array([4])})},
                         edges=[("input", "sub"), ("sub", "s"), ("s", "output")], type_check=False)
    p = tmp_path / "nested.nir"
    nir.write(p, outer)
    g = serialize.read(p)
    assert set(g.nodes) == {"input", "sub.w", "s", "output"}
    assert sorted(g.edges) == sorted([("input", "sub.w"), ("sub.w", "s"), ("s", "output")])
    h = roundtrip(g, tmp_path)
    assert_graph_equal(g, h)
    x = np.random.default_rng(0).normal(size=(3, 4))
    out = ReferenceSimulator(normalized(h)).run({"input": x})["output"]
    np.testing.assert_allclose(out, 2 * x @ zoo["NIRGraph"].nodes["w"].weight.T, rtol=1e-12)


def test_egru_roundtrip(tmp_path):
    g = Graph.from_nir(egru_net(), meta={"dt": 1e-3})
    h = roundtrip(g, tmp_path)
    assert_graph_equal(g, h)
    assert h.dump() == g.dump()
    with h5py.File(tmp_path / "g.nir") as f:
        assert f["node/nodes/egru/type"][()].decode() == "nmc.EGRU"


def test_plain_nir_reader_rejects_extension_nmc_reads_it(tmp_path):
    serialize.write(tmp_path / "e.nir", Graph.from_nir(egru_net()))
    with pytest.raises(Exception):
        nir.read(tmp_path / "e.nir")
    assert "egru" in serialize.read(tmp_path / "e.nir").nodes


# --------------------------------------------------------------- annotations
def _example(cls: type[A.Annotation], rng) -> A.Annotation:
    """A non-default instance of any annotation class (arrays for Any/None fields)."""
    explicit = {
        A.Reset: dict(mode="subtract"),
        A.Quant: dict(bits=4, scheme="ternary", scale=rng.uniform(size=3), w_int=rng.integers(-1, 2, (3, 5)).astype(np.int8),
                      method="percentile"),
        A.Sparsity: dict(density=0.25, format="csr", mask=rng.random((3, 5)) < 0.25),
        A.Note: dict(text="from snnTorch Leaky 'lif1' — ünïcode"),
    }
    if cls in explicit:
        return cls(**explicit[cls])
    kw = {}
    for f in dataclasses.fields(cls):
        d = f.default
        if d is None or d is dataclasses.MISSING:
            kw[f.name] = rng.integers(0, 100, 7).astype(np.int32)
        elif isinstance(d, bool):
            kw[f.name] = not d
        elif isinstance(d, int):
            kw[f.name] = d + 3
        elif isinstance(d, float):
            kw[f.name] = d + 0.125
        else:
            kw[f.name] = d
    return cls(**kw)


def test_every_annotation_class_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    g = Graph.from_nir(ff_lif())
    assert len(A.REGISTRY) >= 5
    for cls in A.REGISTRY.values():
        g.annotate("fc1", _example(cls, rng))
        g.annotate("lif1", cls())  # all defaults too
    h = roundtrip(g, tmp_path)
    assert_graph_equal(g, h)
    assert set(h.annotations["fc1"]) == {c.kind for c in A.REGISTRY.values()}


@dataclass(frozen=True)
class _AllTypes(A.Annotation):
    kind: ClassVar[str] = "test-all-types"
    none: Any = None
    flag: bool = True
    i: int = 0
    f: float = 0.0
    s: str = ""
    t: Any = None
    lst: Any = None
    d: Any = None
    a_f32: Any = None
    a_i64: Any = None
    a_bool: Any = None
    a_0d: Any = None


@pytest.fixture
def all_types_registered():
    A.register(_AllTypes)
    yield _AllTypes
    del A.REGISTRY["_AllTypes"]


def test_annotation_value_types_are_lossless(tmp_path, all_types_registered):
    ann = _AllTypes(none=None, flag=False, i=-7, f=1 / 3, s="x,y{z}", t=(1, 2.5, "a", (3,)), lst=[1, [2, 3], "b"],
                    d={"k": 1, "nested": {"q": [1.5, None], "tup": (1, 2)}},
                    a_f32=np.arange(20, dtype=np.float32).reshape(4, 5), a_i64=np.array([-(2**40), 5]),
                    a_bool=np.array([True, False, True]), a_0d=np.array(3.25))
    g = Graph.from_nir(ff_lif())
    g.annotate("lif2", ann)
    h = roundtrip(g, tmp_path)
    assert_graph_equal(g, h)


def test_unknown_annotation_in_file_is_a_typed_error(tmp_path, all_types_registered):
    from nmc.errors import InputFileError

    g = Graph.from_nir(ff_lif())
    g.annotate("lif2", _AllTypes(i=1))
    serialize.write(tmp_path / "a.nir", g)
    del A.REGISTRY["_AllTypes"]
    try:
        with pytest.raises(InputFileError) as e:
            serialize.read(tmp_path / "a.nir")
        assert "_AllTypes" in str(e.value) and "lif2" in str(e.value)
    finally:
        A.register(_AllTypes)


def test_meta_roundtrip(tmp_path):
    g = Graph.from_nir(ff_lif(), meta={"dt": 2.5e-4, "integrator": "exact", "reset": "subtract", "name": "net"})
    assert roundtrip(g, tmp_path).meta == g.meta


def test_write_is_deterministic(tmp_path):
    g = normalized(recurrent_cubalif())
    g.annotate("fc_in", A.Quant(bits=8, scale=np.array(0.1), w_int=np.ones((12, 6), np.int8)))
    serialize.write(tmp_path / "a.nir", g)
    serialize.write(tmp_path / "b.nir", g.copy())
    assert (tmp_path / "a.nir").read_bytes() == (tmp_path / "b.nir").read_bytes()


def test_large_arrays_are_stored_uncompressed_and_roundtrip(tmp_path, monkeypatch):
    """Arrays of RAW_MIN_ELEMENTS or more are written contiguous, without gzip; smaller ones keep gzip
    level 4 + shuffle; both read back bit-exactly, and the write stays deterministic."""
    g = normalized(recurrent_cubalif())
    w = np.asarray(g.nodes["fc_in"].weight)
    g.annotate("fc_in", A.Quant(bits=8, scale=np.array(0.1), w_int=np.arange(w.size, dtype=np.int32).reshape(w.shape)))
    monkeypatch.setattr(serialize, "RAW_MIN_ELEMENTS", w.size)   # fc_in's arrays are "large" now
    serialize.write(tmp_path / "a.nir", g)
    serialize.write(tmp_path / "b.nir", g.copy())
    assert (tmp_path / "a.nir").read_bytes() == (tmp_path / "b.nir").read_bytes()
    with h5py.File(tmp_path / "a.nir") as f:
        big = f["node/nodes/fc_in/weight"]
        assert big.compression is None and big.chunks is None
        assert f["nmc/annotations/fc_in/Quant/w_int"].compression is None
        ws = [f[f"node/nodes/{k}/weight"] for k in f["node/nodes"] if "weight" in f[f"node/nodes/{k}"]]
        small = [d for d in ws if 16 <= d.size < w.size]
        assert small and all(d.compression == "gzip" and d.compression_opts == 4 and d.shuffle for d in small)
        assert all(d.compression is None for d in ws if d.size >= w.size)
    assert_graph_equal(g, serialize.read(tmp_path / "a.nir"))


def test_read_bytes(tmp_path):
    g = normalized(ff_lif())
    serialize.write(tmp_path / "a.nir", g)
    assert_graph_equal(g, serialize.read_bytes((tmp_path / "a.nir").read_bytes()))


# ------------------------------------------------------ NIR interoperability
def test_nir_read_reads_nmc_written_pure_nir_file(tmp_path):
    """Annotations and meta live in /nmc, which plain NIR ignores: nir.read sees the same nodes."""
    zoo = node_zoo()
    for kind in ZOO:
        g = Graph.from_nir(single_node_graph(zoo[kind], "n"), meta={"dt": 1e-3})
        g.annotate("input", A.Note("hello"))
        serialize.write(tmp_path / f"{kind}.nir", g)
        back = Graph.from_nir(nir.read(tmp_path / f"{kind}.nir"))
        assert set(back.nodes) == set(g.nodes), kind
        for name in g.nodes:
            assert type(back.nodes[name]) is type(g.nodes[name])
            for k, v in _params(g.nodes[name]).items():
                np.testing.assert_array_equal(np.asarray(getattr(back.nodes[name], k)), np.asarray(v), err_msg=f"{kind}.{k}")


def test_to_nir_roundtrips_through_nir_write(tmp_path):
    g = normalized(recurrent_cubalif())
    nir.write(tmp_path / "x.nir", g.to_nir())
    h = normalized(serialize.read(tmp_path / "x.nir"))
    x = spikes(6, T=25, seed=2)
    a = ReferenceSimulator(g).run({"input": x})["output"]
    b = ReferenceSimulator(h).run({"input": x})["output"]
    np.testing.assert_array_equal(a, b)


def test_to_nir_refuses_egru_naming_the_node():
    g = Graph.from_nir(egru_net())
    with pytest.raises(UnsupportedNodeError) as e:
        g.to_nir()
    assert e.value.node == "egru" and "EGRU" in e.value.one_line()
    with pytest.raises(UnsupportedNodeError):
        g.to_nir(strict=False)  # an extension node can never be exported


def test_to_nir_refuses_subtract_reset_naming_the_node():
    g = normalized(ff_lif(), reset="zero")
    g.annotate("lif2", A.Reset("subtract"))
    with pytest.raises(UnsupportedNodeError) as e:
        g.to_nir()
    assert e.value.node == "lif2" and "subtract" in e.value.one_line()
    g2 = normalized(ff_lif(), reset="subtract")
    with pytest.raises(UnsupportedNodeError) as e:
        g2.to_nir()
    assert e.value.node in ("lif1", "lif2")
    assert isinstance(g2.to_nir(strict=False), nir.NIRGraph)


def test_reads_nir_write_file_and_simulates_like_in_memory(ff_file, ff_nir, ff_inputs):
    a = ReferenceSimulator(normalized(serialize.read(ff_file))).run(ff_inputs)["output"]
    b = ReferenceSimulator(normalized(ff_nir)).run(ff_inputs)["output"]
    np.testing.assert_array_equal(a, b)
    assert a.sum() > 0


def _zero_d_file(path):
    """A NIR file (as another writer makes it) with 0-d neuron parameters and no v_reset."""
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                            "fc": nir.Linear(weight=np.eye(3) * 2.0),
                            "lif": nir.LIF(tau=np.array([0.01]), r=np.array([10.0]), v_leak=np.array([0.0]),
                                           v_threshold=np.array([1.0])),
                            "thr": nir.Threshold(threshold=np.array([0.5])),
                            "output": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "thr"), ("thr", "output")], type_check=False)
    nir.write(path, g)
    with h5py.File(path, "a") as f:
        for node, keys in (("lif", ("tau", "r", "v_leak", "v_threshold")), ("thr", ("threshold",))):
            grp = f[f"node/nodes/{node}"]
            for k in keys:
                v = grp[k][()].reshape(())
                del grp[k]
                grp.create_dataset(k, data=v)
        del f["node/nodes/lif/v_reset"]


def test_zero_d_params_and_missing_v_reset_are_normalised(tmp_path):
    _zero_d_file(tmp_path / "z.nir")
    g = serialize.read(tmp_path / "z.nir")
    assert np.ndim(g.nodes["lif"].tau) == 0
    h = normalized(g)
    lif = h.nodes["lif"]
    for k in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
        assert getattr(lif, k).shape == (3,), k
    np.testing.assert_array_equal(lif.v_reset, np.zeros(3))
    assert h.nodes["thr"].threshold.shape == (3,)
    x = np.array([[1.0, 0.0, 0.0]] * 6)
    out = ReferenceSimulator(h).run({"input": x}, record=["lif"])
    assert out["lif.spikes"][:, 0].sum() > 0 and out["lif.spikes"][:, 1:].sum() == 0


def test_snntorch_batch_dim_is_stripped(tmp_path):
    """snnTorch exports Input/Output with a leading batch dimension of 1."""
    g = ff_lif()
    g.nodes["input"] = nir.Input(input_type={"input": np.array([1, 8])})
    g.nodes["output"] = nir.Output(output_type={"output": np.array([1, 4])})
    nir.write(tmp_path / "b.nir", g)
    h = normalized(serialize.read(tmp_path / "b.nir"))
    assert h.shape_out("input") == (8,) and h.shape_in("output") == (4,)
    x = spikes(8, T=20, seed=3)
    np.testing.assert_array_equal(ReferenceSimulator(h).run({"input": x})["output"],
                                  ReferenceSimulator(normalized(ff_lif())).run({"input": x})["output"])


def test_torch_tensor_params_become_numpy():
    import torch

    g = ff_lif()
    g.nodes["fc1"].weight = torch.as_tensor(g.nodes["fc1"].weight)
    h = normalized(g)
    assert isinstance(h.nodes["fc1"].weight, np.ndarray)


def test_egru_simulates_same_after_roundtrip(tmp_path):
    g = normalized(egru_net())
    h = roundtrip(g, tmp_path)
    x = np.random.default_rng(1).normal(size=(15, 5))
    np.testing.assert_array_equal(ReferenceSimulator(g).run({"input": x})["output"],
                                  ReferenceSimulator(h).run({"input": x})["output"])
    assert isinstance(egru_node(), nir.NIRNode)
