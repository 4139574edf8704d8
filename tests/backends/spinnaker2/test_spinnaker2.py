"""SpiNNaker 2 backend: emulator vs reference (within the quantization error)
and vs Brian2 (exact spike trains), the emitted py-spinnaker2 script against a
recording stand-in, multi-chip placement, design rules, inspect."""
from __future__ import annotations

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import conv_pool, ff_lif, recurrent_cubalif, spikes
from s2_script_standin import load_script
from nmc.cli import main
from nmc.errors import DesignRuleError, ShapeError, UnsupportedNodeError

OPTS = dict(dt=1e-3, integrator="euler")
FINE = [{"models": {"lif_no_delay": {"weight_max": 2 ** 20}, "lif_curr_exp_no_delay": {"weight_max": 2 ** 20}}}]
NETS = {"ff": (lambda: ff_lif(), (8,), "zero"), "rec": (lambda: recurrent_cubalif(), (6,), "subtract"),
        "conv": (lambda: conv_pool(), (2, 8, 8), "subtract")}


def _pair(kind, hw=(), passes=None):
    build, shape, reset = NETS[kind]
    s2 = nmc.compile(build(), target="spinnaker2", reset=reset, hw=hw, passes=passes, **OPTS)
    ref = nmc.compile(build(), target="reference", reset=reset, **OPTS)
    return s2, ref, spikes(shape, T=40, p=0.3, seed=1)


@pytest.mark.parametrize("kind", list(NETS))
def test_mapping_is_exact_with_fine_weights(kind):
    """With a 21-bit weight range the only differences left are float32 vs float64 state."""
    s2, ref, x = _pair(kind, hw=FINE, passes="normalize")
    a, b = s2.run({"input": x}), ref.run({"input": x})
    out = next(iter(a))
    if s2.program.output_kind[out] == "spikes":
        assert np.mean(a[out] == b[out]) >= 0.995 and b[out].sum() > 0
    else:
        assert np.allclose(a[out], b[out], atol=1e-4 * (np.abs(b[out]).max() + 1))


@pytest.mark.parametrize("kind", list(NETS))
def test_int8_emulator_within_fidelity_report(kind):
    s2, ref, x = _pair(kind)
    a, b = s2.run({"input": x}), ref.run({"input": x})
    out = next(iter(a))
    rep = s2.report("quantize")
    assert rep is not None and "end_to_end" in rep
    if s2.program.output_kind[out] == "spikes":
        assert np.mean(a[out] == b[out]) >= 0.9
    else:
        rel = np.abs(a[out] - b[out]).max() / (np.abs(b[out]).max() + 1e-9)
        assert rel < 0.35  # the int8 readout, after a few upstream spikes differ


@pytest.mark.parametrize("kind", list(NETS))
def test_brian2_gives_identical_spike_trains(kind):
    pytest.importorskip("brian2")
    s2, _, x = _pair(kind)
    pops = [p.name for p in s2.program.populations if p.model != "spike_list" and p.spiking]
    a = s2.run({"input": x}, record=pops)
    b = s2.run({"input": x}, device="brian2", record=pops)
    total = 0
    for p in pops:
        assert np.array_equal(a[f"{p}.spikes"], b[f"{p}.spikes"]), p
        total += a[f"{p}.spikes"].sum()
    assert total > 0


def test_curr_exp_order_switch_changes_dynamics_and_brian2_follows():
    s2, _, x = _pair("rec")
    chip = s2.run({"input": x}, record=["lif1"])
    br = s2.run({"input": x}, curr_exp_order="brian2", record=["lif1"])
    assert not np.array_equal(chip["lif1.v"], br["lif1.v"])
    b2 = s2.run({"input": x}, device="brian2", curr_exp_order="brian2", record=["lif1"])
    assert np.array_equal(br["lif1.spikes"], b2["lif1.spikes"])


def test_emitted_script_rebuilds_the_program(tmp_path, monkeypatch):
    s2, _, x = _pair("rec")
    s2.write(tmp_path / "b.nmc")
    main, rec, inp = load_script(tmp_path, monkeypatch, tmp_path / "b.nmc" / "program", {"input": x})
    main(["--board", "10.0.0.7", "--input", inp, "-o", str(tmp_path / "o.npz")])
    prog = s2.program
    assert [p.name for p in rec.pops] == [p.name for p in prog.populations]
    for got, want in zip(rec.pops, prog.populations):
        assert got.model == want.model and got.size == want.size
        if want.model == "spike_list":
            t, n = np.nonzero(x)
            assert sum(len(v) for v in got.params.values()) == len(t)
            continue
        assert got.params["reset"] == want.reset and got.atoms == want.max_atoms_per_core
        for k, v in want.params.items():
            assert np.array_equal(np.asarray(got.params[k], np.float32), v), k
    for got, want in zip(rec.projs, prog.projections):
        assert (got.pre.name, got.post.name) == (want.pre, want.post)
        w = np.zeros_like(want.weights)
        for pre, post, weight, delay in got.conns:
            assert delay == 0
            w[post, pre] = weight
        assert np.array_equal(w, want.weights)
    ip, steps, tick, _ = rec.runs[0]
    assert ip == "10.0.0.7" and steps == 40 + max(p.latency for p in prog.populations) + 1 and tick == prog.sys_tick_s


def _wide(n_hidden):
    rng = np.random.default_rng(0)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([16])}),
        "fc": nir.Linear(weight=rng.normal(0, 1, (n_hidden, 16))),
        "lif": nir.LIF(tau=np.full(n_hidden, 5e-3), r=np.full(n_hidden, 5.0), v_leak=np.zeros(n_hidden),
                       v_threshold=np.ones(n_hidden), v_reset=np.zeros(n_hidden)),
        "output": nir.Output(output_type={"output": np.array([n_hidden])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


@pytest.mark.slow
def test_too_big_for_one_chip_places_on_the_48_chip_board():
    g = _wide(40000)  # > 148 PEs × 256 neurons of one chip
    with pytest.raises(DesignRuleError) as e:
        nmc.compile(g, target="spinnaker2", passes="normalize,partition,place,route", **OPTS)
    assert any("spinnaker2-48chip" in v.hint for v in e.value.violations)
    b = nmc.compile(g, target="spinnaker2", hw=["spinnaker2-48chip"], passes="normalize,partition,place,route", **OPTS)
    assert b.report("placement")["chips_used"] >= 2
    assert b.report("spinnaker2")["pes_used"] > 148


def test_nothing_fits_gives_a_design_rule_report():
    g = _wide(300)
    with pytest.raises(DesignRuleError) as e:
        nmc.compile(g, target="spinnaker2", hw=[{"core": {"neurons_max": 1}, "chip": {"cores_usable": 2}}],
                    passes="normalize,partition,place,route", **OPTS)
    assert e.value.violations and all(v.hint for v in e.value.violations)


def test_errors_and_inspect(tmp_path):
    s2, _, x = _pair("ff")
    with pytest.raises(ShapeError):
        s2.run({"input": x * 0.5})  # spike_list takes 0/1 only
    from nets import egru_net

    with pytest.raises(UnsupportedNodeError) as e:  # no py-spinnaker2 model for a bare Threshold
        nmc.compile(nir.NIRGraph.from_list(nir.Threshold(threshold=np.full(3, 0.5))), target="spinnaker2", **OPTS)
    assert "Threshold" in e.value.one_line()
    eg = nmc.compile(egru_net(), target="spinnaker2", reset="subtract", **OPTS)
    from nmc.errors import DeviceError

    with pytest.raises(DeviceError):
        eg.run({"input": spikes((5,), T=5)}, device="brian2")
    s2.write(tmp_path / "b.nmc")
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "b.nmc")])
    assert r.exit_code == 0 and "pes_used" in r.output and "time_per_tick_max_s" in r.output
    assert "sram_bytes_max" in r.output


def test_emitted_script_makes_explicit_pe_assignments(tmp_path, monkeypatch):
    """A non-uniform placement becomes one population per PE, connections remapped."""
    s2, _, x = _pair("ff")
    prog = s2.program
    pop = prog.pop("lif1")
    pop.pe = (np.arange(pop.size) % 3).astype(np.int32)  # interleaved: py-spinnaker2 can't split it itself
    main, rec, inp = load_script(tmp_path, monkeypatch, prog.files(), {"input": x})
    main(["--board", "10.0.0.7", "--input", inp, "-o", str(tmp_path / "o.npz")])
    subs = [p for p in rec.pops if p.name.startswith("lif1#pe")]
    assert len(subs) == 3 and sum(p.size for p in subs) == pop.size
    idx = {p.name: np.flatnonzero(pop.pe == int(p.name[-1])) for p in subs}
    for p in subs:
        assert p.atoms == p.size
        assert np.array_equal(np.asarray(p.params["threshold"], np.float32), pop.params["threshold"][idx[p.name]])
    for q in prog.projections:  # every weight lands in exactly one sub-projection
        w = np.zeros_like(q.weights)
        for r in rec.projs:
            pre_name, post_name = r.pre.name.split("#")[0], r.post.name.split("#")[0]
            if (pre_name, post_name) != (q.pre, q.post):
                continue
            post_i = idx.get(r.post.name, np.arange(q.weights.shape[0]))
            pre_i = idx.get(r.pre.name, np.arange(q.weights.shape[1]))
            for a, b, weight, _ in r.conns:
                w[post_i[b], pre_i[a]] = weight
        assert np.array_equal(w, q.weights)


def test_multi_chip_program_records_chips_and_the_board_script_refuses_it(tmp_path, monkeypatch):
    """A placement over several chips (small cores on the 48-chip spec) keeps the chip per
    neuron; the one-chip board script says so instead of running a wrong network."""
    from nmc.backends.spinnaker2.program import load_program

    hw = ["spinnaker2-48chip", {"chip": {"cores_usable": 2}, "core": {"neurons_max": 16}}]
    b = nmc.compile(_wide(100), target="spinnaker2", hw=hw, passes="normalize,partition,place,route", **OPTS)
    prog = b.program
    assert prog.chips_used == b.report("placement")["chips_used"] >= 2
    assert prog.summary()["chips_used"] == prog.chips_used
    files = prog.files()
    assert load_program(files).chips_used == prog.chips_used
    main, rec, inp = load_script(tmp_path, monkeypatch, files, {"input": spikes((16,), T=5)})
    with pytest.raises(SystemExit) as e:
        main(["--board", "10.0.0.7", "--input", inp])
    assert "chips" in str(e.value) and not rec.runs


def test_linear_readout_runs_on_the_host():
    """LIF → Affine → Output: the Affine is no population; the emulator (and Brian2) apply it
    to the layer's spikes on the host in float64, and a readout of two layers is refused."""
    import nir

    from nets import ff_lif, spikes

    g = ff_lif()
    g.nodes.pop("lif2")
    g.edges = [e for e in g.edges if "lif2" not in e] + [("fc2", "output")]
    b = nmc.compile(g, target="spinnaker2", dt=1e-3, integrator="euler", reset="zero")
    assert [p.name for p in b.program.populations] == ["input", "lif1"]
    assert b.report("spinnaker2")["host_readout"]["output"]["source"] == "lif1"
    x = spikes((8,), T=30, seed=3)
    res = b.run({"input": x}, record=["lif1"])
    w, bias = np.asarray(g.nodes["fc2"].weight), np.asarray(g.nodes["fc2"].bias)
    assert np.allclose(res["output"], res["lif1.spikes"] @ w.T + bias, rtol=0, atol=1e-12)
    assert res["lif1.spikes"].sum() > 0
    ref = nmc.compile(g, target="reference", dt=1e-3, integrator="euler", reset="zero").run({"input": x})
    assert np.abs(res["output"] - ref["output"]).max() <= np.abs(w).sum(1).max()  # a few spikes may differ
    from nmc.backends.spinnaker2.program import load_program

    loaded = load_program(b.program.files())  # the readout travels in the program files
    assert set(loaded.readout) == {"output"} and np.array_equal(loaded.readout["output"]["w"], w.T)
    pytest.importorskip("brian2")
    br = b.run({"input": x}, device="brian2")
    assert np.allclose(br["output"], res["output"], rtol=0, atol=1e-12)  # same spikes, same readout
    two = ff_lif()
    two.nodes["fc3"] = nir.Affine(weight=np.ones((4, 8)), bias=np.zeros(4))
    two.edges = [e for e in two.edges if e != ("lif2", "output")] + [("input", "fc3"), ("fc3", "output"),
                                                                     ("lif2", "output")]
    with pytest.raises(nmc.errors.NmcError):
        nmc.compile(two, target="spinnaker2", dt=1e-3, integrator="euler", reset="zero")
