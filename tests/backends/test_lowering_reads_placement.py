"""Lowering only reads the Placement the passes wrote (issue #18): after Loihi 2's
lowering every annotation is what partition/place wrote, and the program's core
count is read from it. (SpiNNaker 2: tests/backends/spinnaker2/test_target.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from nets import ff_lif
from nmc.annotations import Placement
from nmc.backends import get_backend
from nmc.hw import HardwareSpec
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline


def test_loihi2_lowering_reads_and_keeps_the_placement():
    be = get_backend("loihi2")
    spec = HardwareSpec.load("loihi2")
    opts = {"dt": 1e-3, "integrator": "euler", "reset": "zero"}
    ctx = PassContext(spec=spec, options=opts, target=be.target_model(spec, opts))
    # 5 neurons per core: the partition's choice, not the spec's 8192, sets the core count
    text = be.default_pipeline(opts).replace("partition", "partition{max_neurons_per_core=5}")
    g = PassManager(parse_pipeline(text)).run(Graph.from_nir(ff_lif()), ctx)
    snap = {k: np.array(g.ann(k, Placement).core) for k in g.nodes if g.ann(k, Placement) is not None}
    assert snap
    prog = be.lower(g, ctx)
    for k, core in snap.items():
        assert np.array_equal(np.asarray(g.ann(k, Placement).core), core)
    cores = np.unique(np.concatenate(list(snap.values())))
    assert prog.meta["cores_used"] == cores.size == ctx.reports["placement"]["cores_used"]
    assert prog.meta["placement_source"] == "Placement annotations"


# ------------------------------------------------------------------ BrainScaleS-2
BSS2_OPTS = {"dt": 1e-3, "integrator": "euler", "reset": "zero"}


def _bss2_placed(net, pipeline=None):
    be = get_backend("brainscales2")
    spec = HardwareSpec.load("brainscales2")
    ctx = PassContext(spec=spec, options=BSS2_OPTS, target=be.target_model(spec, BSS2_OPTS))
    g = PassManager(parse_pipeline(pipeline or be.default_pipeline(BSS2_OPTS))).run(Graph.from_nir(net), ctx)
    return be, ctx, g


def test_brainscales2_partition_writes_the_placement_lowering_reads_and_keeps():
    from nets import ff_lif as net

    be, ctx, g = _bss2_placed(net(n_in=20, n_hid=700, n_out=10, seed=1))   # two runs of the chip
    snap = {k: {f: np.array(getattr(g.ann(k, Placement), f)) for f in ("core", "chip", "slot")}
            for k in ("lif1", "lif2")}
    hemis = ctx.target.hemisphere_limits()["hemispheres"]
    assert set(snap["lif1"]["chip"]) == {0, 1}      # the pass chose the sequential runs
    prog = be.lower(g, ctx)
    for k, s in snap.items():
        a = g.ann(k, Placement)
        for f, v in s.items():
            assert np.array_equal(np.asarray(getattr(a, f)), v)   # lowering changed nothing
        p = prog.layer(k).params
        assert np.array_equal(p["run"], s["chip"]) and np.array_equal(p["first_circuit"], s["slot"])
        assert np.array_equal(p["hemisphere"], s["core"] - s["chip"] * hemis)
    assert ctx.reports["mapping"]["runs_used"] == 2


def test_brainscales2_lowering_follows_the_pass_placement_and_checks_it():
    from dataclasses import replace

    from nmc.errors import DesignRuleError

    be, ctx, g = _bss2_placed(ff_lif())
    cpc = ctx.target.hemisphere_limits()["circuits_per_hemisphere"]
    a = g.ann("lif2", Placement)
    assert set(np.asarray(a.core)) == {0}
    # move lif2 to the chip's second hemisphere: lowering takes it from the annotation
    g.annotate("lif2", replace(a, core=np.ones_like(a.core), slot=np.asarray(a.slot) - a.slot[0] + cpc))
    prog = be.lower(g, ctx)
    assert set(prog.layer("lif2").hemisphere) == {1} and prog.layer("lif2").params["first_circuit"][0] == cpc
    # a Placement that uses one circuit twice is refused, naming the layer
    g.annotate("lif2", replace(a, slot=np.zeros_like(a.slot)))
    with pytest.raises(DesignRuleError) as e:
        be.lower(g, ctx)
    assert e.value.violations[0].rule == "placement"


def test_brainscales2_lowering_refuses_a_graph_without_placement_and_compile_adds_partition():
    """The passes are the Placement's only writer: lowering a graph that no ``partition`` ran on
    is a PassError naming the pass, and ``nmc.compile`` appends ``partition`` to a pipeline that
    lacks it (warned), giving the same program and graph as the default pipeline."""
    import nmc
    from nmc.errors import PassError

    net = ff_lif(n_in=20, n_hid=700, n_out=10, seed=1)
    text = get_backend("brainscales2").default_pipeline(BSS2_OPTS).replace(",partition", "")
    be, ctx, g = _bss2_placed(net, text)
    assert g.ann("lif1", Placement) is None
    with pytest.raises(PassError, match="'partition'") as e:
        be.lower(g, ctx)
    assert e.value.node == "lif1" and "--passes" in e.value.hint
    kw = dict(target="brainscales2", fidelity_check=False, **BSS2_OPTS)
    full, short = nmc.compile(net, **kw), nmc.compile(net, passes=text, **kw)
    assert short.manifest["pipeline"] == full.manifest["pipeline"] == text + ",partition"
    assert any("'partition' added" in w["message"] for w in short.reports["compile"]["warnings"])
    f1, f2 = full.program_files(), short.program_files()
    assert f1.keys() == f2.keys() and all(f1[k] == f2[k] for k in f1)
    assert full.files["graph.nir"] == short.files["graph.nir"]


def test_partition_refuses_block_options_on_brainscales2():
    from nmc.errors import OptionError

    with pytest.raises(OptionError, match="method"):
        _bss2_placed(ff_lif(), "normalize,quantize{bits=7},rewire,partition{method=greedy}")


def test_loihi2_without_partition_refused_by_lowering_and_added_by_compile():
    """A pipeline without ``partition``: lowering does not count cores itself (a PassError naming
    the pass); ``nmc.compile`` appends ``partition`` and the core count is read from its Placement."""
    import nmc
    from nmc.errors import PassError

    be = get_backend("loihi2")
    spec = HardwareSpec.load("loihi2")
    opts = {"dt": 1e-3, "integrator": "euler", "reset": "zero"}
    ctx = PassContext(spec=spec, options=opts, target=be.target_model(spec, opts))
    g = PassManager(parse_pipeline("normalize,quantize{bits=8}")).run(Graph.from_nir(ff_lif()), ctx)
    with pytest.raises(PassError, match="'partition'") as e:
        be.lower(g, ctx)
    assert e.value.node == "lif1"
    b = nmc.compile(ff_lif(), target="loihi2", passes="normalize,quantize{bits=8}", fidelity_check=False, **opts)
    assert b.manifest["pipeline"] == "normalize,quantize,partition"   # bits=8 is the default
    assert any("'partition' added" in w["message"] for w in b.reports["compile"]["warnings"])
    assert b.program.meta["placement_source"] == "Placement annotations"
    assert b.reports["loihi2"]["cores_used"] == b.reports["placement"]["cores_used"]
