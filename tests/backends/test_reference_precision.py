"""The reference device's float32 option: explicit, float32 throughout, close to the float64 oracle,
which stays the default."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import conv_pool, ff_lif, spikes
from nmc.errors import OptionError

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")


@pytest.mark.parametrize("build,shape,layer", [(ff_lif, (8,), "lif1"), (lambda: conv_pool(2, 8, 4, 5), (2, 8, 8), "if1")])
def test_float32_option_runs_in_float32_and_tracks_the_oracle(build, shape, layer):
    b = nmc.compile(build(), target="reference", **OPTS)
    x = spikes(shape, T=30, p=0.3, seed=2, batch=4)
    ref = b.run({"input": x}, record=[layer])
    assert ref[f"{layer}.v"].dtype == np.float64                       # the oracle is the default
    np.testing.assert_array_equal(ref["output"], b.run({"input": x}, precision="float64", record=[layer])["output"])
    f32 = b.run({"input": x}, precision="float32", record=[layer])
    assert f32[f"{layer}.v"].dtype == np.float32 and f32["output"].dtype == np.float32
    assert ref[f"{layer}.spikes"].sum() > 0
    # same spikes here; membranes within float32 rounding of the oracle's
    np.testing.assert_array_equal(f32[f"{layer}.spikes"], ref[f"{layer}.spikes"])
    np.testing.assert_allclose(f32[f"{layer}.v"], ref[f"{layer}.v"], rtol=1e-5, atol=1e-5)


def test_float32_streams_like_its_run():
    b = nmc.compile(ff_lif(), target="reference", **OPTS)
    x = spikes((8,), T=10, p=0.3, seed=4, batch=2)
    dev = b.device("reference", precision="float32")
    dev.reset(2)
    rows = np.stack([dev.step({"input": x[t]})["output"] for t in range(10)])
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, b.run({"input": x}, precision="float32")["output"])


def test_unknown_precision_is_refused():
    b = nmc.compile(ff_lif(), target="reference", **OPTS)
    with pytest.raises(OptionError, match="precision"):
        b.run({"input": spikes((8,), T=3)}, precision="float16")
