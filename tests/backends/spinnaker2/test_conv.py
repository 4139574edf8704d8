"""SpiNNaker 2 conv projections (Conv2DProjection into lif_conv2d): bit-equal to
the dense lowering, vs the reference and Brian2, the emitted script, files."""
from __future__ import annotations

import nir
import numpy as np
import pytest

import nmc
from nets import spikes
from s2_script_standin import Recorder, load_script

OPTS = dict(dt=1e-3, integrator="euler", reset="subtract")


def conv_conv(pool_cls=nir.SumPool2d, seed=0, stride=1):
    """Input(2,8,8) → Conv2d 3x3 → IF → pool 2 → Conv2d 3x3 (stride) → LIF → Output."""
    rng = np.random.default_rng(seed)
    ho = 4 if stride == 1 else 2
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv1": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0, 1.0, (4, 2, 3, 3)), stride=1, padding=1,
                            dilation=1, groups=1, bias=rng.normal(0, 0.1, 4)),
        "if1": nir.IF(r=np.full((4, 8, 8), 1e3), v_threshold=np.ones((4, 8, 8)), v_reset=np.zeros((4, 8, 8))),
        "pool": pool_cls(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0, 1.0 if pool_cls is nir.SumPool2d else 3.0,
                                                                  (3, 4, 3, 3)),
                            stride=stride, padding=1, dilation=1, groups=1, bias=np.zeros(3)),
        "lif": nir.LIF(tau=np.full((3, ho, ho), 1e-2), r=np.full((3, ho, ho), 10.0), v_leak=np.zeros((3, ho, ho)),
                       v_threshold=np.ones((3, ho, ho)), v_reset=np.zeros((3, ho, ho))),
        "output": nir.Output(output_type={"output": np.array([3, ho, ho])}),
    }
    edges = [("input", "conv1"), ("conv1", "if1"), ("if1", "pool"), ("pool", "conv2"), ("conv2", "lif"),
             ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


X = spikes((2, 8, 8), T=30, p=0.3, seed=3)


@pytest.fixture(scope="module")
def conv_bundle():
    return nmc.compile(conv_conv(), target="spinnaker2", **OPTS)


def test_conv_layers_become_conv_projections(conv_bundle):
    prog = conv_bundle.program
    assert [p.model for p in prog.populations] == ["spike_list", "lif_conv2d", "lif_conv2d"]
    convs = [q for q in prog.projections if q.conv is not None]
    assert len(convs) == 2
    assert convs[0].kernel.shape == (4, 2, 3, 3) and convs[1].conv["pool"] == 2
    assert all(np.abs(q.kernel).max() <= 127 for q in convs)


@pytest.mark.parametrize("pool_cls,stride", [(nir.SumPool2d, 1), (nir.AvgPool2d, 1), (nir.SumPool2d, 2)])
def test_conv_lowering_is_bit_equal_to_the_dense_lowering(pool_cls, stride):
    g = conv_conv(pool_cls, stride=stride)
    a = nmc.compile(g, target="spinnaker2", passes="normalize", **OPTS)
    b = nmc.compile(conv_conv(pool_cls, stride=stride), target="spinnaker2", passes="normalize", conv="false", **OPTS)
    assert any(q.conv is not None for q in a.program.projections)
    assert all(q.conv is None for q in b.program.projections)
    for qa, qb in zip(a.program.projections, b.program.projections):
        assert np.array_equal(qa.weights, qb.weights)  # kernel expansion == composed dense matrix, rounded
    ra = a.run({"input": X}, record=["if1", "lif"])
    rb = b.run({"input": X}, record=["if1", "lif"])
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k
    assert ra["if1.spikes"].sum() > 0 and ra["lif.spikes"].sum() > 0


def test_conv_emulator_vs_reference_and_brian2(conv_bundle):
    ref = nmc.compile(conv_conv(), target="reference", **OPTS)
    a, r = conv_bundle.run({"input": X}), ref.run({"input": X})
    assert r["output"].sum() > 0 and np.mean(a["output"] == r["output"]) >= 0.9
    pytest.importorskip("brian2")
    e = conv_bundle.run({"input": X}, record=["if1", "lif"])
    b = conv_bundle.run({"input": X}, device="brian2", record=["if1", "lif"])
    assert np.array_equal(e["if1.spikes"], b["if1.spikes"]) and np.array_equal(e["lif.spikes"], b["lif.spikes"])


def test_conv_program_files_round_trip(conv_bundle):
    from nmc.backends.spinnaker2.program import load_program

    prog = conv_bundle.program
    files = prog.files()
    back = load_program(files)
    for qa, qb in zip(prog.projections, back.projections):
        assert qa.conv == qb.conv
        assert np.array_equal(qa.weights, qb.weights)
    assert back.files() == files
    assert "proj0/weights" not in str(sorted(files))  # the kernel only, not a dense matrix
    assert b"proj0__kernel" in files["s2_arrays.npz"]


def _run_script(tmp_path, monkeypatch, files):
    main, rec, inp = load_script(tmp_path, monkeypatch, files, {"input": X}, Recorder(conv=True))
    main(["--board", "10.0.0.9", "--input", inp, "-o", str(tmp_path / "o.npz")])
    return rec, rec.convs


def test_emitted_script_makes_conv2d_projections(tmp_path, monkeypatch):
    # sequential placement: contiguous PE blocks, which py-spinnaker2 makes itself (no explicit split)
    b = nmc.compile(conv_conv(), target="spinnaker2", passes="normalize,partition{method=sequential},place,route",
                    **OPTS)
    prog = b.program
    rec, convs = _run_script(tmp_path, monkeypatch, prog.files())
    assert [(p.name, p.model) for p in rec.pops] == [(p.name, p.model) for p in prog.populations]
    want = [q for q in prog.projections if q.conv is not None]
    assert len(convs) == len(want) and not rec.projs
    for got, q in zip(convs, want):
        assert (got.pre.name, got.post.name) == (q.pre, q.post)
        assert got.weights.dtype == np.int8 and np.array_equal(got.weights.swapaxes(0, 1), q.kernel)
        C, H, W = q.conv["in_shape"]
        assert got.params["in_height"] == H and got.params["in_width"] == W
        assert got.params["stride_x"] == got.params["stride_y"] == q.conv["stride"]
        assert got.params["pool_x"] == got.params["pool_y"] == q.conv["pool"]
        assert [got.params[k] for k in ("pad_top", "pad_bottom", "pad_left", "pad_right")] == q.conv["padding"]


def test_emitted_script_expands_a_conv_split_over_explicit_pes(tmp_path, monkeypatch, conv_bundle):
    prog = conv_bundle.program
    pop, first = prog.pop("lif"), prog.pop("if1")
    old = pop.pe, first.pe
    try:
        pop.pe = (np.arange(pop.size) % 2).astype(np.int32)  # interleaved: explicit PE assignment
        first.pe = (np.arange(first.size) // first.max_atoms_per_core).astype(np.int32)  # contiguous blocks
        rec, convs = _run_script(tmp_path, monkeypatch, prog.files())
    finally:
        pop.pe, first.pe = old
    assert len(convs) == 1  # input → if1 stays a conv projection
    subs = [p for p in rec.pops if p.name.startswith("lif#pe")]
    assert len(subs) == 2 and all(p.model == "lif_no_delay" for p in subs)
    q = next(q for q in prog.projections if q.post == "lif")
    w = np.zeros_like(q.weights)
    for r in rec.projs:
        post_i = np.flatnonzero((np.arange(pop.size) % 2) == int(r.post.name[-1]))
        for a, b, weight, delay in r.conns:
            w[post_i[b], a] = weight
    assert np.array_equal(w, q.weights)


def test_cost_model_counts_the_kernel_once_per_pe_and_macs():
    # sequential fill: py-spinnaker2's uniform contiguous split, which emits the conv projection
    # whole (one kernel per PE; the default partition's pixel tiles expand it to rows)
    seq = "normalize,partition{method=sequential}"
    a = nmc.compile(conv_conv(), target="spinnaker2", passes=seq, **OPTS).program.report
    b = nmc.compile(conv_conv(), target="spinnaker2", passes=seq, conv="false", **OPTS).program.report
    pa, pb = a["per_pe"], b["per_pe"]
    assert sum(d["synapse_bytes"] for d in pa.values()) < sum(d["synapse_bytes"] for d in pb.values())
    assert sum(d.get("macs", 0) for d in pa.values()) == sum(d["synaptic_events"] for d in pb.values())
    assert a["time_per_tick_max_s"] < b["time_per_tick_max_s"]


@pytest.mark.parametrize("pool,stride,pad,C,O,H", [(1, 1, 1, 2, 4, 8), (2, 1, 0, 3, 5, 8), (1, 2, 1, 2, 3, 9),
                                                   (2, 2, 2, 1, 2, 12)])
@pytest.mark.parametrize("p_spike", [0.02, 0.2, 0.9])
def test_event_scatter_equals_im2col_bit_for_bit(pool, stride, pad, C, O, H, p_spike):
    from nmc.backends.spinnaker2 import conv as CV

    rng = np.random.default_rng(pool * 100 + stride * 10 + pad)
    k = rng.integers(-127, 128, (O, C, 3, 3)).astype(np.float32)
    Hp = H // pool
    Ho = (Hp + 2 * pad - 3) // stride + 1
    geo = {"in_shape": [C, H, H], "out_shape": [O, Ho, Ho], "pool": pool, "stride": stride,
           "padding": [pad, pad, pad, pad]}
    s = (rng.random((3, C * H * H)) < p_spike).astype(np.float32)
    a = CV.apply(k, geo, s, events=True)
    b = CV.apply(k, geo, s, events=False)
    assert a.shape == b.shape == (3, O * Ho * Ho) and a.dtype == b.dtype == np.float32
    assert np.array_equal(a, b) and np.count_nonzero(b) > 0
