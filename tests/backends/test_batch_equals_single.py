"""A batched run of a chip emulator equals the same samples run one at a time, bit for bit:
the batch only vectorises, no sample's arithmetic depends on the others or on the batch size
(synaptic input sums are exact integers, or accumulated in a fixed order)."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import conv_pool, ff_lif, recurrent_cubalif, spikes

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")
B = 64


@pytest.mark.parametrize("target", ["brainscales2", "loihi2", "spinnaker2"])
@pytest.mark.parametrize("build,shape,layer", [(ff_lif, (8,), "lif1"), (recurrent_cubalif, (6,), "lif1"),
                                               (lambda: conv_pool(2, 8, 4, 5), (2, 8, 8), "if1")],
                         ids=["ff", "recurrent", "conv"])
def test_batch_64_equals_64_single_runs(target, build, shape, layer):
    b = nmc.compile(build(), target=target, **OPTS)
    x = spikes(shape, T=12, p=0.3, seed=7, batch=B)
    full = b.run({"input": x}, record=[layer])
    assert full[f"{layer}.spikes"].sum() > 0
    for r in range(B):
        one = b.run({"input": x[:, r]}, record=[layer])
        assert one.keys() == full.keys()
        for k in one:
            np.testing.assert_array_equal(full[k][:, r], one[k], err_msg=f"{k}, sample {r}")
