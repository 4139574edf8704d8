"""nmc.ir.Graph: structure edits, schedule (back edges), verify (names node/edge),
annotations, stable dump (golden files in tests/golden/).

Regenerate the golden dumps after an intended change with
``NMC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_ir.py`` and review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import nir
import numpy as np
import pytest

from nets import conv_pool, egru_net, egru_node, ff_lif, normalized, recurrent_cubalif
from nmc.annotations import Note, Quant, Reset
from nmc.errors import GraphError, OptionError, ShapeError, UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU, is_neuron, is_spiking, is_weight, neuron_count

GOLDEN = Path(__file__).parent / "golden"


def ff() -> Graph:
    return normalized(ff_lif())


# ----------------------------------------------------------------- schedule
def test_schedule_feedforward_is_topological():
    g = ff()
    order, back = g.schedule()
    assert back == set()
    assert order == ["input", "fc1", "lif1", "fc2", "lif2", "output"]


def test_schedule_recurrent_back_edge():
    g = normalized(recurrent_cubalif())
    order, back = g.schedule()
    assert back == {("rec", "lif1")}
    pos = {n: i for i, n in enumerate(order)}
    for a, b in g.edges:
        if (a, b) not in back:
            assert pos[a] < pos[b], (a, b)


def test_schedule_does_not_depend_on_edge_list_order_for_dag():
    g = ff()
    h = g.copy()
    h.edges = list(reversed(h.edges))
    order, back = h.schedule()
    pos = {n: i for i, n in enumerate(order)}
    assert not back and all(pos[a] < pos[b] for a, b in h.edges)


# ------------------------------------------------------------------- verify
def _err(g, cls=GraphError):
    with pytest.raises(cls) as e:
        g.verify()
    return e.value


def test_verify_ok():
    for b in (ff_lif, recurrent_cubalif, conv_pool, egru_net):
        normalized(b()).verify()


def test_verify_dangling_edge_names_node():
    g = ff()
    g.add_edge("lif1", "ghost")
    e = _err(g)
    assert e.node == "ghost" and "lif1 -> ghost" in e.message


def test_verify_duplicate_edge():
    g = ff()
    g.add_edge("fc1", "lif1")
    e = _err(g)
    assert e.node == "lif1" and "duplicate" in e.message


def test_verify_missing_input_and_output():
    g = ff()
    g.remove_node("input")
    assert "no Input" in _err(g).message
    g = ff()
    g.remove_node("output")
    assert "no Output" in _err(g).message


def test_verify_unconnected_node():
    g = ff()
    g.add_node("stray", nir.Scale(scale=np.ones(16)))
    g.add_edge("stray", "lif1")
    e = _err(g)
    assert e.node == "stray" and "no incoming edge" in e.message


def test_verify_input_with_incoming_and_output_with_outgoing():
    g = ff()
    g.add_edge("output", "input")
    e = _err(g)
    assert e.node in ("input", "output")


def test_verify_shape_mismatch_names_edge():
    g = ff()
    g.replace_node("fc2", nir.Affine(weight=np.ones((4, 15)), bias=np.zeros(4)))
    e = _err(g, ShapeError)
    assert e.node == "fc2" and "lif1 -> fc2" in e.message and "(16,)" in e.message


def test_verify_bad_parameters():
    g = ff()
    g.nodes["lif1"].tau[3] = -1.0
    e = _err(g)
    assert e.node == "lif1" and "tau" in e.message
    g = ff()
    g.nodes["fc1"].weight[0, 0] = np.nan
    e = _err(g)
    assert e.node == "fc1" and "non-finite" in e.message
    g = ff()
    g.nodes["lif1"].v_threshold = np.ones(5)
    e = _err(g, ShapeError)
    assert e.node == "lif1" and "v_threshold" in e.message


def test_verify_egru_shapes_and_threshold():
    g = normalized(egru_net())
    g.nodes["egru"].w_h = np.ones((21, 6))
    e = _err(g, ShapeError)
    assert e.node == "egru" and "w_h" in e.message
    g = normalized(egru_net())
    g.nodes["egru"].thr = np.zeros(7)
    e = _err(g)
    assert e.node == "egru" and "threshold" in e.message


def test_verify_unknown_node_type():
    class Foo(nir.NIRNode):
        def __init__(self):
            self.input_type = {"input": np.array([16])}
            self.output_type = {"output": np.array([16])}

    g = ff()
    g.replace_node("lif1", Foo())
    e = _err(g, UnsupportedNodeError)
    assert e.node == "lif1" and "Foo" in e.message


def test_verify_missing_shape():
    g = normalized(conv_pool())
    g.replace_node("pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                         padding=np.array([0, 0])))  # as exporters write it: no shape
    e = _err(g, ShapeError)
    assert e.node == "pool"


# -------------------------------------------------------------- structure
def test_edit_operations():
    g = ff()
    with pytest.raises(GraphError):
        g.add_node("fc1", nir.Scale(scale=np.ones(3)))
    with pytest.raises(GraphError):
        g.replace_node("nope", nir.Scale(scale=np.ones(3)))
    with pytest.raises(GraphError):
        g.annotate("nope", Note("x"))
    g.annotate("lif1", Note("x"))
    g.remove_node("lif1")
    assert "lif1" not in g.nodes and "lif1" not in g.annotations
    assert all("lif1" not in e for e in g.edges)
    assert g.preds("fc2") == [] and g.succs("fc1") == []


def test_copy_is_independent():
    g = ff()
    g.annotate("fc1", Quant(bits=4))
    h = g.copy()
    h.nodes["fc1"].weight[0, 0] = 123.0
    h.annotate("fc1", Quant(bits=2))
    h.meta["dt"] = 1.0
    h.add_edge("lif1", "output")
    assert g.nodes["fc1"].weight[0, 0] != 123.0
    assert g.ann("fc1", Quant).bits == 4 and g.meta["dt"] == 1e-3
    assert ("lif1", "output") not in g.edges


def test_reset_mode_resolution():
    from nmc.errors import GraphError
    from nmc.graph_meta import GraphMeta

    g = Graph.from_nir(ff_lif())
    with pytest.raises(GraphError, match="normalize"):   # no default before normalize: GraphMeta is the one place
        g.reset_mode("lif1")
    GraphMeta(1e-3, "euler", "zero").store(g)
    assert g.reset_mode("lif1") == "zero"
    g.meta["reset"] = "subtract"
    assert g.reset_mode("lif1") == "subtract"
    g.annotate("lif1", Reset("zero"))
    assert g.reset_mode("lif1") == "zero" and g.reset_mode("lif2") == "subtract"
    with pytest.raises(OptionError):
        Reset("bogus")


def test_node_classification():
    g = normalized(egru_net())
    assert is_neuron(g.nodes["egru"]) and not is_spiking(g.nodes["egru"])
    assert is_weight(g.nodes["fc"]) and not is_neuron(g.nodes["fc"])
    assert neuron_count(g.nodes["egru"]) == 7 and neuron_count(g.nodes["fc"]) == 0
    assert is_spiking(normalized(ff_lif()).nodes["lif1"])


def test_egru_node_shapes():
    n = egru_node(n_in=5, hidden=7)
    assert isinstance(n, EGRU) and n.hidden_size == 7
    assert tuple(n.input_type["input"]) == (5,) and tuple(n.output_type["output"]) == (7,)


def test_param_count():
    g = ff()
    assert g.param_count("fc1") == 16 * 8 + 16
    assert g.param_count("lif1") == 16 * 5


def test_from_nir_keeps_edges_and_names():
    src = recurrent_cubalif()
    g = Graph.from_nir(src)
    assert set(g.nodes) == set(src.nodes) and sorted(g.edges) == sorted(src.edges)


# -------------------------------------------------------------------- dump
def test_dump_is_stable_and_changes_with_content():
    g = ff()
    assert g.dump() == g.copy().dump() == ff().dump()
    h = g.copy()
    h.nodes["fc1"].weight[2, 3] += 1e-9
    assert h.dump() != g.dump()
    h = g.copy()
    h.annotate("lif1", Quant(bits=3, scale=np.array(0.5)))
    assert "@quant Quant(bits=3" in h.dump()


@pytest.mark.parametrize("builder", [ff_lif, recurrent_cubalif, conv_pool, egru_net])
def test_golden_dump(builder):
    g = normalized(builder())
    text = g.dump()
    path = GOLDEN / f"{builder.__name__}.txt"
    if os.environ.get("NMC_UPDATE_GOLDEN") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        if not os.environ.get("NMC_UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path} was missing and has been written; review and commit it")
    assert text == path.read_text(), f"graph dump differs from {path} (NMC_UPDATE_GOLDEN=1 to accept)"
