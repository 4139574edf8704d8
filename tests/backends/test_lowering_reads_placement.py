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


def test_brainscales2_same_program_and_spikes_as_the_placement_lowering_computed_before():
    """Without ``partition`` lowering places with the same function: program arrays and the
    emulator's spikes are identical, so the pass changed where the decision is made, not it."""
    from nets import spikes

    be, ctx, g = _bss2_placed(ff_lif(n_in=20, n_hid=700, n_out=10, seed=1))
    text = be.default_pipeline(BSS2_OPTS).replace(",partition", "")
    be2, ctx2, g2 = _bss2_placed(ff_lif(n_in=20, n_hid=700, n_out=10, seed=1), text)
    assert g2.ann("lif1", Placement) is None
    p1, p2 = be.lower(g, ctx), be2.lower(g2, ctx2)
    f1, f2 = p1.files(), p2.files()
    assert f1.keys() == f2.keys() and all(f1[k] == f2[k] for k in f1 if not k.endswith("graph.sha256"))
    x = {"input": spikes((20,), T=30, p=0.3, seed=3)}
    o1 = be.device("emulator", p1).run(x, record=["lif1"])
    o2 = be2.device("emulator", p2).run(x, record=["lif1"])
    assert o1.keys() == o2.keys() and all(np.array_equal(o1[k], o2[k]) for k in o1)
    assert np.asarray(o1["lif1.spikes"]).sum() > 0


def test_partition_refuses_block_options_on_brainscales2():
    from nmc.errors import OptionError

    with pytest.raises(OptionError, match="method"):
        _bss2_placed(ff_lif(), "normalize,quantize{bits=7},rewire,partition{method=greedy}")


def test_loihi2_without_partition_counts_cores_with_the_target_model():
    """A pipeline without ``partition``: one core range per layer, counted by the target
    model's limits (CoreLimits.cores_for_neurons), here with 5 neurons per core."""
    be = get_backend("loihi2")
    spec = HardwareSpec.load("loihi2")
    opts = {"dt": 1e-3, "integrator": "euler", "reset": "zero"}
    target = be.target_model(spec, opts).with_limits(neurons_max=5)
    ctx = PassContext(spec=spec, options=opts, target=target)
    g = PassManager(parse_pipeline("normalize,quantize{bits=8}")).run(Graph.from_nir(ff_lif()), ctx)
    prog = be.lower(g, ctx)
    sizes = [gr.n for gr in prog.groups]
    assert prog.meta["placement_source"].startswith("one core range per layer")
    assert prog.meta["cores_used"] == sum(-(-n // 5) for n in sizes) == sum(map(target.limits.cores_for_neurons, sizes))
    assert prog.meta["cores_lower_bound"] == -(-sum(sizes) // 5)
