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


# ---------------------------------------------------------------- extensions
@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
              elements=st.floats(-5, 5, allow_nan=False, allow_infinity=False)),
       st.sampled_from(["int", "ternary", "binary"]), st.booleans(), st.integers(0, 10 ** 6))
def test_every_scheme_in_range_and_masked(w, scheme, per_channel, seed):
    from nmc.passes.quantize import quantize_weights

    mask = np.random.default_rng(seed).random(w.shape) < 0.6
    w_int, scale = quantize_weights(w, bits=4, scheme=scheme, per_channel=per_channel, mask=mask)
    allowed = {"int": set(range(-7, 8)), "ternary": {-1, 0, 1}, "binary": {-1, 1}}[scheme]
    assert set(np.unique(w_int[mask]).tolist()) <= allowed and np.all(w_int[~mask] == 0)
    assert np.all(scale > 0) and scale.shape == ((w.shape[0], 1) if per_channel else ())
    if scheme == "int":
        assert np.all(np.abs(w_int * scale - w)[mask] <= np.broadcast_to(scale, w.shape)[mask] / 2 + 1e-12)
    p_int, p_scale = quantize_weights(w, bits=4, method="percentile", percentile=50, per_channel=per_channel)
    assert np.all(p_scale <= quantize_weights(w, bits=4, per_channel=per_channel)[1] + 1e-15)  # clip ≤ max


def test_subnormal_percentile_clip_falls_back_to_the_max():
    """Found by hypothesis: a median of |w| that is subnormal made clip/q underflow to 0 and the
    scale fall back to 1.0, above the max-based scale (every weight clipped to ±q)."""
    from nmc.passes.quantize import quantize_weights

    w = np.array([[1.0, 5e-324, 5e-324]])
    w_int, scale = quantize_weights(w, bits=4, method="percentile", percentile=50)
    assert scale == quantize_weights(w, bits=4)[1] == 1.0 / 7 and w_int.tolist() == [[7, 0, 0]]


def _recurrent_graph(seed=2, H=10):
    import nir

    from nmc.ir import Graph

    rng = np.random.default_rng(seed)
    lif = nir.LIF(tau=np.full(H, 5e-3), r=np.full(H, 5.0), v_leak=np.zeros(H), v_threshold=np.ones(H),
                  v_reset=np.zeros(H))
    return Graph.from_nir(nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(weight=rng.normal(0, 2, (H, 4)), bias=rng.normal(0, .1, H)),
        "lif": lif, "rec": nir.Linear(weight=rng.normal(0, .3, (H, H))), "dec": nir.Linear(weight=rng.normal(0, 1, (3, H))),
        "li": nir.LI(tau=np.full(3, 5e-3), r=np.ones(3), v_leak=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "dec"), ("dec", "li"),
               ("li", "output")], type_check=False))


@pytest.mark.parametrize("opts", ["bits=4", "bits=8,per_channel=true", "scheme=ternary", "scheme=binary,per_channel=true"])
def test_integer_domain_rescaling_is_exact(opts):
    """The rescaling rule: integer weights + voltages/scale give the same spikes
    as the dequantized float network (recurrent neuron with one joint scale)."""
    from nmc.passes.fidelity import dequantized, integer_graph, simulate

    x = (np.random.default_rng(5).random((40, 3, 4)) < 0.5).astype(float)
    b = nmc.compile(_recurrent_graph(), passes=f"normalize,quantize{{{opts}}}", calibrate={"input": x},
                    dt=1e-3, reset="subtract", integrator="euler")
    g = b.graph
    rep = b.report("quantize")
    assert rep["joint_units"] == [["fc", "rec"]]
    qf, qr = g.ann("fc", Quant), g.ann("rec", Quant)
    assert np.array_equal(qf.scale, qr.scale)  # one scale per neuron over both inputs
    ig, info = integer_graph(g)
    assert info["lif"]["converted"] and info["li"]["converted"]
    s = info["lif"]["scale"]
    assert np.allclose(ig.nodes["lif"].v_threshold, 1.0 / s)  # α (or the LSB) folded into the threshold
    assert np.array_equal(ig.nodes["rec"].weight, qr.w_int) and np.all(ig.nodes["fc"].weight == qf.w_int)
    assert np.allclose(ig.nodes["fc"].bias, g.nodes["fc"].bias / s)
    a = simulate(dequantized(g), {"input": x}, ["lif"])
    c = simulate(ig, {"input": x}, ["lif"])
    assert a["lif.spikes"].sum() > 0 and np.array_equal(a["lif.spikes"], c["lif.spikes"])
    assert np.allclose(c["output"] * info["li"]["scale"], a["output"], rtol=1e-9, atol=1e-12)  # graded: ÷ s
    assert rep["neurons"]["lif"]["integer_agreement"] == 1.0


def test_state_bits_from_spec_warn_when_the_state_would_saturate():
    from nmc.hw import HardwareSpec
    from nmc.passes import PassContext, PassManager, parse_pipeline

    for bits, warn in ((24, False), (4, True)):
        spec = HardwareSpec.load("loihi2").with_overrides([{"numerics": {"state_bits": bits}}])
        ctx = PassContext(spec=spec, options={"dt": 1e-3, "reset": "subtract", "integrator": "euler"})
        PassManager(parse_pipeline("normalize,quantize{bits=8}")).run(ff_graph(), ctx)
        rep = ctx.reports["quantize"]
        assert rep["state_bits_available"] == bits
        need = rep["neurons"]["lif1"]["state_bits_needed"]
        assert need == int(np.ceil(np.log2(rep["neurons"]["lif1"]["state_peak_lsb"] + 1))) + 1 + 6  # + activation_shift
        named = {w["node"] for w in ctx.warnings.items if "saturate" in w["message"]}
        assert ("lif1" in named) == warn


def test_calibrated_ternary_through_cli(tmp_path):
    from nmc import serialize

    serialize.write(tmp_path / "ff.nir", ff_graph())
    np.savez(tmp_path / "cal.npz", input=(np.random.default_rng(4).random((30, 4, 6)) < 0.4).astype(float))
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "ff.nir"), "--passes",
                                  "normalize,quantize{scheme=ternary,method=calibrate}", "--dt", "1e-3",
                                  "--calibrate", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "b" / "reports" / "quantize.json").read_text())
    assert rep["input"] == "calibration data" and set(rep["calibration"]) == {"fc1", "fc2"}
    for c in rep["calibration"].values():  # the chosen gain has the least output error of the candidates
        errs = c["output_count_error"]
        assert errs[str(c["alpha_gain"])] == min(errs.values())


def test_fidelity_simulation_shortened_for_huge_networks_and_says_so():
    g = ff_graph()                                   # 6·16 + 16·4 = 160 synapses per step
    b = nmc.compile(g, passes="normalize,quantize{bits=4}", dt=1e-3, reset="subtract", integrator="euler")
    sim = b.report("quantize")["simulated"]
    assert sim == {"steps": 64, "samples": 4, "synaptic_ops": 160 * 64 * 4}     # under budget: not shortened
    b = nmc.compile(g, passes="normalize,quantize{bits=4,max_sim_synops=5000}", dt=1e-3, reset="subtract",
                    integrator="euler")
    rep = b.report("quantize")
    sim = rep["simulated"]
    assert sim["steps"] == 31 and sim["samples"] == 1 and sim["synaptic_ops"] == 160 * 31 <= 5000
    assert "64 steps × 4 samples" in sim["shortened"] and "max_sim_synops" in sim["shortened"]
    assert 0 <= rep["neurons"]["lif1"]["agreement"] <= 1          # the report is still complete
    b = nmc.compile(g, passes="normalize,quantize{bits=4,max_sim_synops=100}", dt=1e-3, reset="subtract",
                    integrator="euler")
    assert b.report("quantize")["simulated"]["steps"] == 16      # never below 16 steps × 1 sample


def test_synapses_per_step_counts_conv_positions():
    import nets
    from nmc.passes.fidelity import synapses_per_step

    g = nets.normalized(nets.conv_pool(2, 16, 8, 10))
    conv = [n for n, node in g.nodes.items() if type(node).__name__ == "Conv2d"]
    dense = [n for n, node in g.nodes.items() if type(node).__name__ in ("Affine", "Linear")]
    want = sum(np.size(g.nodes[c].weight) * int(np.prod(g.shape_out(c)[1:])) for c in conv) + \
        sum(np.size(g.nodes[d].weight) for d in dense)
    assert synapses_per_step(g) == want and want > 0
