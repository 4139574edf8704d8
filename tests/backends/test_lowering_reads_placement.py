"""Lowering only reads the Placement the passes wrote (issue #18): after Loihi 2's
lowering every annotation is what partition/place wrote, and the program's core
count is read from it. (SpiNNaker 2: tests/backends/spinnaker2/test_target.py.)"""
from __future__ import annotations

import numpy as np

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
