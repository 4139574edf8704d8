"""SpiNNaker 2 synaptic delays: skip paths of different lengths and NIR Delay
nodes become py-spinnaker2 delays (``lif`` / ``lif_curr_exp`` models); the
emulator vs the reference (exact with a fine weight range, within the ±15
quantization otherwise) and vs Brian2 (identical spike trains); the emitted
script's connection delays; refusals."""
from __future__ import annotations

import nir
import numpy as np
import pytest

import nmc
from nets import spikes
from nmc.errors import UnsupportedNodeError
from s2_script_standin import load_script

OPTS = dict(dt=1e-3, integrator="euler", reset="subtract", passes="normalize")
FINE = [{"models": {m: {"weight_max": 2 ** 20} for m in ("lif", "lif_curr_exp", "lif_no_delay",
                                                         "lif_curr_exp_no_delay")}}]


def _lif(n, tau=1e-2):
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / 1e-3), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def skip_net(seed=0):
    """input → fc1 → lif1 → fc2 → lif2, plus the skip input → fc_skip → lif2."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Affine(weight=rng.normal(0, 0.8, (10, 6)), bias=np.zeros(10)),
             "lif1": _lif(10),
             "fc2": nir.Affine(weight=rng.normal(0, 0.6, (4, 10)), bias=np.zeros(4)),
             "fc_skip": nir.Linear(weight=rng.normal(0, 0.6, (4, 6))),
             "lif2": _lif(4),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("input", "fc_skip"),
             ("fc_skip", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def delay_net(seed=0, steps=(0, 1, 2, 3, 1, 2), rec_delay=2):
    """input → Delay (per input neuron) → fc → lif ⟲ (lif → Delay → Linear → lif) → fc_out → lif_out."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "dly": nir.Delay(delay=np.asarray(steps, float) * 1e-3),
             "fc": nir.Affine(weight=rng.normal(0, 0.8, (8, 6)), bias=np.zeros(8)),
             "lif": _lif(8),
             "dly_rec": nir.Delay(delay=np.full(8, rec_delay * 1e-3)),
             "rec": nir.Linear(weight=rng.normal(0, 0.4, (8, 8))),
             "fc_out": nir.Affine(weight=rng.normal(0, 0.8, (3, 8)), bias=np.zeros(3)),
             "lif_out": _lif(3),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "dly"), ("dly", "fc"), ("fc", "lif"), ("lif", "dly_rec"), ("dly_rec", "rec"), ("rec", "lif"),
             ("lif", "fc_out"), ("fc_out", "lif_out"), ("lif_out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def feedback_net(seed=0, delay_steps=None):
    """lif2 → (Delay →) Linear → lif1: feedback from a deeper layer."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Affine(weight=rng.normal(0, 0.8, (8, 6)), bias=np.zeros(8)),
             "lif1": _lif(8),
             "fc2": nir.Affine(weight=rng.normal(0, 0.8, (4, 8)), bias=np.zeros(4)),
             "lif2": _lif(4),
             "fb": nir.Linear(weight=rng.normal(0, 0.8, (8, 4))),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    if delay_steps is None:
        edges += [("lif2", "fb"), ("fb", "lif1")]
    else:
        nodes["dly"] = nir.Delay(delay=np.full(4, delay_steps * 1e-3))
        edges += [("lif2", "dly"), ("dly", "fb"), ("fb", "lif1")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


X = spikes((6,), T=60, p=0.3, seed=5)


def _check(build, hw, min_agree):
    s2 = nmc.compile(build(), target="spinnaker2", hw=hw, **OPTS)
    ref = nmc.compile(build(), target="reference", **{k: v for k, v in OPTS.items() if k != "passes"})
    layers = [p.name for p in s2.program.populations if p.model != "spike_list"]
    a, r = s2.run({"input": X}, record=layers), ref.run({"input": X}, record=layers)
    for k in layers:
        assert r[f"{k}.spikes"].sum() > 0, k
        assert np.mean(a[f"{k}.spikes"] == r[f"{k}.spikes"]) >= min_agree, k
    return s2


def test_skip_path_becomes_a_synaptic_delay():
    s2 = _check(skip_net, FINE, 0.995)
    prog = s2.program
    assert prog.pop("lif2").model == "lif" and prog.pop("lif2").latency == 2
    assert prog.pop("lif1").model == "lif_no_delay"
    skip = next(q for q in prog.projections if q.pre == "input" and q.post == "lif2")
    assert skip.delay is not None and set(np.unique(skip.delay[skip.weights != 0])) == {1}
    deep = next(q for q in prog.projections if q.pre == "lif1" and q.post == "lif2")
    assert deep.delay is None


def test_skip_path_with_the_lif_weight_range():
    s2 = _check(skip_net, (), 0.85)
    assert np.abs(s2.program.projections[-1].weights).max() <= 15


def test_delay_nodes_on_inputs_and_on_a_recurrent_loop():
    s2 = _check(delay_net, FINE, 0.995)
    prog = s2.program
    q_in = next(q for q in prog.projections if q.pre == "input")
    q_rec = next(q for q in prog.projections if q.pre == "lif" and q.post == "lif")
    lat = prog.pop("lif").latency
    assert lat == 1  # min delay 0: L = 0 + 1 − 0
    np.testing.assert_array_equal(q_in.delay.max(axis=0), [0, 1, 2, 3, 1, 2])  # d = L − 0 − 1 + D
    assert set(np.unique(q_rec.delay[q_rec.weights != 0])) == {2}  # d = L − L + D (the back edge's step)
    assert prog.pop("lif").model == "lif" and prog.pop("lif_out").model == "lif_no_delay"


def test_a_delay_absorbs_the_pipeline_latency():
    s2 = _check(lambda: delay_net(steps=(2, 3, 2, 4, 2, 2)), FINE, 0.995)
    assert s2.program.pop("lif").latency == 0  # every input delayed ≥ 2: L = max(0, 0 + 1 − 2)


def test_feedback_from_a_deeper_layer():
    with pytest.raises(UnsupportedNodeError) as e:  # needs d = L1 − L2 = −1: never a silent misalignment
        nmc.compile(feedback_net(), target="spinnaker2", **OPTS)
    assert "lif2" in str(e.value)
    s2 = _check(lambda: feedback_net(delay_steps=1), FINE, 0.995)
    fb = next(q for q in s2.program.projections if q.pre == "lif2" and q.post == "lif1")
    assert fb.delay is None  # recurrent: d = L1 − L2 + D = 1 − 2 + 1 = 0 → lif_no_delay suffices
    assert s2.program.pop("lif1").model == "lif_no_delay"


def test_too_long_a_delay_is_refused_with_the_limit():
    with pytest.raises(UnsupportedNodeError) as e:
        nmc.compile(delay_net(steps=(0, 0, 0, 9, 0, 0)), target="spinnaker2", **OPTS)
    assert e.value.limit == 7 and e.value.actual == 9


def test_a_delay_after_weights_is_refused():
    g = skip_net()
    g.nodes["dly"] = nir.Delay(delay=np.full(4, 1e-3))
    g.edges = [e for e in g.edges if e != ("fc2", "lif2")] + [("fc2", "dly"), ("dly", "lif2")]
    with pytest.raises(UnsupportedNodeError) as e:
        nmc.compile(g, target="spinnaker2", **OPTS)
    assert "dly" in str(e.value) and e.value.hint


@pytest.mark.parametrize("build", [skip_net, delay_net])
def test_brian2_gives_identical_spike_trains_with_delays(build):
    pytest.importorskip("brian2")
    s2 = nmc.compile(build(), target="spinnaker2", **OPTS)
    layers = [p.name for p in s2.program.populations if p.model != "spike_list"]
    a = s2.run({"input": X}, record=layers)
    b = s2.run({"input": X}, device="brian2", record=layers)
    for k in layers:
        assert np.array_equal(a[f"{k}.spikes"], b[f"{k}.spikes"]), k
    assert sum(a[f"{k}.spikes"].sum() for k in layers) > 0


def test_program_files_and_script_carry_the_delays(tmp_path, monkeypatch):
    from nmc.backends.spinnaker2.program import load_program

    s2 = nmc.compile(delay_net(), target="spinnaker2", **OPTS)
    prog = s2.program
    files = prog.files()
    back = load_program(files)
    for qa, qb in zip(prog.projections, back.projections):
        assert (qa.delay is None) == (qb.delay is None)
        if qa.delay is not None:
            assert np.array_equal(qa.delay, qb.delay)
    main, rec, inp = load_script(tmp_path, monkeypatch, files, {"input": X})
    main(["--board", "10.0.0.7", "--input", inp, "-o", str(tmp_path / "o.npz")])
    assert {p.name: p.model for p in rec.pops}["lif"] == "lif"
    for q in prog.projections:
        got = [r for r in rec.projs if (r.pre.name.split("#")[0], r.post.name.split("#")[0]) == (q.pre, q.post)]
        dl = np.zeros_like(q.weights)
        for r in got:
            for a, b, w, delay in r.conns:
                dl[b, a] = delay
        want = q.delay if q.delay is not None else np.zeros_like(q.weights)
        if all(r.pre.name == q.pre and r.post.name == q.post for r in got):  # unsplit populations
            assert np.array_equal(dl, want)
