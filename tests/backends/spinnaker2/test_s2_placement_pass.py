"""SpiNNaker 2's lowering only reads the Placement the passes wrote (issue #18): the
``partition`` pass places every population the lowering runs — neuron layers, EGRU and SSM
kernels as its units, every LayerNorm kernel on one PE of its own after them
(``SpiNNaker2Target.own_core_nodes``) — and lowering a graph without a Placement is a
PassError naming the pass, which ``nmc.compile`` appends to a pipeline that lacks it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nmc
from nets import egru_net, ff_lif
from nmc.annotations import Placement
from nmc.backends import get_backend
from nmc.errors import PassError
from nmc.hw import HardwareSpec
from nmc.ir import Graph
from nmc.nodes_ssm import LayerNorm
from nmc.passes import PassContext, PassManager, parse_pipeline

OPTS = {"dt": 1e-3, "integrator": "euler", "reset": "subtract"}
FIELDS = ("core", "chip", "x", "y", "slot", "rate")


def _snap(g: Graph) -> dict:
    """Every Placement of ``g``, its fields copied."""
    out = {}
    for k in g.nodes:
        a = g.ann(k, Placement)
        if a is not None:
            out[k] = {f: np.array(getattr(a, f)) for f in FIELDS if getattr(a, f) is not None}
    return out


def _ssm_stack(path):
    """An nmc.nn DiagSSMStack of two blocks: three LayerNorms (two pre-norms and the final one)."""
    from nmc import nn as nnn

    torch.manual_seed(0)
    m = nnn.DiagSSMStack(5, 8, 3, n_layers=2, state_size=4, output="relu")
    nmc.save(m, path, input_shape=(5,))
    return path


@pytest.fixture
def lowered(monkeypatch):
    """Records (graph's Placements before lowering, the lowering's graph, ctx) of every spinnaker2 lowering."""
    be = get_backend("spinnaker2")
    seen = []
    orig = type(be).lower

    def spy(self, graph, ctx):
        seen.append((_snap(graph), graph, ctx))
        return orig(self, graph, ctx)

    monkeypatch.setattr(type(be), "lower", spy)
    return seen


def test_layer_norm_pes_come_from_the_partition_pass(tmp_path, lowered):
    """Each LayerNorm gets one PE of its own after every unit's PE, in schedule order, written by the
    pass before lowering; lowering reads exactly those PEs (every population's) and changes no
    Placement; the placement report counts the units' PEs."""
    b = nmc.compile(_ssm_stack(tmp_path / "m.pt"), target="spinnaker2", fidelity_check=False)
    (before, graph, ctx), = lowered
    norms = [k for k in graph.schedule()[0] if isinstance(graph.nodes[k], LayerNorm)]
    assert norms == ["blocks.0.norm", "blocks.1.norm", "norm"]
    units = [k for k in before if k not in norms]
    K = 1 + max(int(before[k]["core"].max()) for k in units)
    assert K == ctx.reports["placement"]["cores_used"]
    own = ctx.reports["placement"]["cores_own"]          # the LayerNorms' PEs, counted apart and named
    assert own["count"] == 3 and own["nodes"] == {k: K + i for i, k in enumerate(norms)}
    assert f"after the {K} in cores_used" in own["note"] and "no mesh position" in own["note"]
    for i, k in enumerate(norms):
        assert set(before[k]) == {"core", "chip"}            # no rate: no unit of the network model
        assert np.array_equal(before[k]["core"], np.full(8, K + i)) and not before[k]["chip"].any()
    pops = {p.name: p for p in b.program.populations}
    for k, fields in before.items():
        assert np.array_equal(pops[k].pe, fields["core"]), k
        after = graph.ann(k, Placement)
        for f, v in fields.items():
            assert np.array_equal(np.asarray(getattr(after, f)), v), (k, f)
    assert all(pops[k].chip is None for k in norms)         # the program carries no chip for them, as before
    assert all(pops[k].pe is not None for k in pops if pops[k].model != "spike_list")


def test_lowering_refuses_a_population_without_placement(tmp_path, lowered):
    """No sequential fill, EGRU unit fill or LayerNorm PE in lowering any more: a graph no partition
    ran on, or a LayerNorm the pass did not place, is a PassError naming ``partition``."""
    be, spec = get_backend("spinnaker2"), HardwareSpec.load("spinnaker2")
    ctx = PassContext(spec=spec, options=OPTS, target=be.target_model(spec, OPTS))
    g = PassManager(parse_pipeline("normalize,quantize{bits=8}")).run(Graph.from_nir(egru_net(hidden=12)), ctx)
    assert all(g.ann(k, Placement) is None for k in g.nodes)
    with pytest.raises(PassError, match="'partition'") as e:
        be.lower(g, ctx)
    assert e.value.node == "egru" and "--passes" in e.value.hint
    nmc.compile(_ssm_stack(tmp_path / "m.pt"), target="spinnaker2", fidelity_check=False)
    _, graph, ctx = lowered[-1]
    g2 = graph.copy()
    g2.annotations["blocks.1.norm"].pop(Placement.kind)
    with pytest.raises(PassError, match="'partition'") as e:
        be.lower(g2, ctx)
    assert e.value.node == "blocks.1.norm"


@pytest.mark.parametrize("model", ["ff", "egru", "ssm"])
def test_compile_appends_partition_and_places_as_the_explicit_pass(tmp_path, model):
    """A --passes pipeline without ``partition`` gets it appended (a warning); the bundle is the
    one of the same pipeline ending in ``partition``: EGRU units and LayerNorms are placed by the
    pass in both, not by lowering."""
    src = {"ff": lambda: ff_lif(n_in=20, n_hid=300, n_out=10, seed=1), "egru": lambda: egru_net(hidden=40),
           "ssm": lambda: _ssm_stack(tmp_path / "m.pt")}[model]
    short = "normalize,quantize{bits=8}"
    kw = dict(target="spinnaker2", fidelity_check=False, **OPTS)
    a, b = nmc.compile(src(), passes=short, **kw), nmc.compile(src(), passes=short + ",partition", **kw)
    assert a.manifest["pipeline"] == b.manifest["pipeline"] == "normalize,quantize,partition"
    assert any("'partition' added" in w["message"] for w in a.reports["compile"]["warnings"])
    assert not any("'partition' added" in w["message"] for w in b.reports["compile"]["warnings"])
    f1, f2 = a.program_files(), b.program_files()
    assert f1.keys() == f2.keys() and all(f1[k] == f2[k] for k in f1)
    assert a.files["graph.nir"] == b.files["graph.nir"]
    for p in a.program.populations:
        if p.model != "spike_list":
            assert np.array_equal(p.pe, a.graph.ann(p.name, Placement).core), p.name


def test_sys_tick_sets_the_work_a_pe_may_take_per_step():
    """--option sys_tick is the PE's time per step: the partition's work limit is
    clock × sys_tick / cycles_per_synop, so a shorter tick spreads the same network over more PEs."""
    from nmc.backends.spinnaker2.target import target_model

    spec = HardwareSpec.load("spinnaker2")
    t = target_model(spec, {"sys_tick": 2e-7})
    assert t.limits.work_max == pytest.approx(spec.get("core.clock_hz") * 2e-7 / spec.get("core.cycles_per_synop"))
    assert target_model(spec).limits.work_max == pytest.approx(
        spec.get("core.clock_hz") * spec.get("timing.sys_tick_s") / spec.get("core.cycles_per_synop"))
    base = nmc.compile(ff_lif(), target="spinnaker2", fidelity_check=False)
    short = nmc.compile(ff_lif(), target="spinnaker2", fidelity_check=False, sys_tick=2e-7)
    assert base.report("placement")["cores_used"] == 1 < short.report("placement")["cores_used"]
    assert short.program.sys_tick_s == 2e-7
    assert "cores_own" not in base.report("placement")            # no LayerNorm: no extra cores
