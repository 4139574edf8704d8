"""quantize: rounding/saturation rules, schemes, per-channel scales, fidelity report."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nmc
from nmc.annotations import Quant
from nmc.cli import main
from nmc.errors import OptionError
from passes_helpers_quant import ff_graph  # noqa: F401  (local helper module below)

GOLDEN = Path(__file__).parent / "golden"


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
              elements=st.floats(-5, 5, allow_nan=False, allow_infinity=False)),
       st.integers(2, 16), st.booleans())
def test_int_quantization_in_range_and_within_half_step(w, bits, per_channel):
    from nmc.passes.quantize import quantize_weights

    w_int, scale = quantize_weights(w, bits=bits, per_channel=per_channel)
    q = 2 ** (bits - 1) - 1
    assert w_int.dtype == np.int32 and np.all(np.abs(w_int) <= q)
    assert np.all(np.abs(w_int * scale - w) <= scale / 2 + 1e-12)  # maxabs: no clipping, error ≤ half a step


def test_rounding_ties_away_from_zero_and_saturation():
    from nmc.passes.quantize import quantize_weights

    w = np.array([[0.5, -0.5, 1.5, -2.5, 7.0]])
    w_int, scale = quantize_weights(w, bits=4, clip=7.0)  # scale 1.0
    assert scale == 1.0 and w_int.tolist() == [[1, -1, 2, -3, 7]]
    w_int, _ = quantize_weights(np.array([[100.0, -100.0, 3.0]]), bits=4, clip=7.0)
    assert w_int.tolist() == [[7, -7, 3]]  # saturated


def test_ternary_and_binary():
    from nmc.passes.quantize import quantize_weights

    w = np.array([[0.9, -1.1, 0.05, 0.0], [2.0, 2.0, -2.0, 0.1]])
    t, a = quantize_weights(w, scheme="ternary", per_channel=True)
    assert set(np.unique(t)) <= {-1, 0, 1} and t[0].tolist() == [1, -1, 0, 0] and a.shape == (2, 1)
    b, a = quantize_weights(w, scheme="binary")
    assert set(np.unique(b)) <= {-1, 1} and a.shape == ()
    with pytest.raises(OptionError):
        quantize_weights(w, bits=1)


def test_golden_dump_and_fidelity_report(tmp_path):
    g = ff_graph()
    b = nmc.compile(g, passes="normalize,quantize{bits=4,per_channel=true}", dt=1e-3, reset="subtract",
                    integrator="euler")
    dump = b.graph.dump()
    f = GOLDEN / "quantize_ff.txt"
    if os.environ.get("NMC_UPDATE_GOLDEN") or not f.exists():
        f.write_text(dump)
    assert dump == f.read_text()
    q = b.graph.ann("fc1", Quant)
    assert q.bits == 4 and np.asarray(q.scale).shape == (16, 1) and np.abs(q.w_int).max() <= 7
    rep = b.report("quantize")
    assert set(rep["layers"]) == {"fc1", "fc2"} and 0 <= rep["neurons"]["lif1"]["agreement"] <= 1
    assert "output" in rep["end_to_end"]


def test_silenced_layer_warns():
    g = ff_graph(w_scale=0.3, thr=0.45)
    b = nmc.compile(g, passes="normalize,quantize{scheme=binary}", dt=1e-3, reset="subtract", integrator="euler")
    rep = b.report("quantize")
    fired = rep["neurons"]["lif2"]["float_events"] > 0
    silent = rep["neurons"]["lif2"]["quantized_events"] == 0
    warned = any(w["node"] == "lif2" for w in b.report("compile")["warnings"])
    assert warned == (fired and silent)


def test_calibrate_needs_data_and_uses_it(tmp_path):
    g = ff_graph()
    with pytest.raises(OptionError):
        nmc.compile(g, passes="normalize,quantize{bits=3,method=calibrate}", dt=1e-3)
    x = (np.random.default_rng(0).random((40, 8, 6)) < 0.3).astype(float)
    b = nmc.compile(g, passes="normalize,quantize{bits=3,method=calibrate}", dt=1e-3, calibrate={"input": x})
    assert b.report("quantize")["input"] == "calibration data"


def test_cli_end_to_end(tmp_path):
    import nir

    nir_path = tmp_path / "ff.nir"
    from nmc import serialize

    serialize.write(nir_path, ff_graph())
    r = CliRunner().invoke(main, ["compile", str(nir_path), "--passes", "normalize,quantize{bits=5}", "--dt", "1e-3",
                                  "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "in.npz", input=(np.random.default_rng(1).random((20, 6)) < 0.4).astype(float))
    r = CliRunner().invoke(main, ["run", str(tmp_path / "b"), "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b" / "reports" / "quantize.json").exists()
    r = CliRunner().invoke(main, ["compile", str(nir_path), "--passes", "normalize,quantize{bitz=5}", "-o",
                                  str(tmp_path / "c")])
    assert r.exit_code == 2 and "bits" in r.output
