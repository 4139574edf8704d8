"""Energy profiling: parts sum to totals, counts are exact on a hand-checkable
net, the fit recovers known constants from a synthetic measured trace, the
CLI writes JSON and a self-contained HTML page."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nmc.cli import main
from nmc.errors import OptionError
from nmc.runtime import energy, power
from nmc.runtime.events import save_npz

RNG = np.random.default_rng(3)


def _net(n_in=12, n_h=20, n_out=4):
    w1 = RNG.normal(0, 1.5, (n_h, n_in))
    w1[RNG.random(w1.shape) < 0.5] = 0  # sparse: synapse counts must follow the nonzeros
    w2 = RNG.normal(0, 1.0, (n_out, n_h))
    lif = lambda n: nir.LIF(tau=np.full(n, 5e-3), r=np.full(n, 5.0), v_leak=np.zeros(n),  # noqa: E731
                            v_threshold=np.ones(n), v_reset=np.zeros(n))
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
                               "fc1": nir.Linear(weight=w1), "lif1": lif(n_h),
                               "fc2": nir.Linear(weight=w2), "lif2": lif(n_out),
                               "output": nir.Output(output_type={"output": np.array([n_out])})},
                        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])


@pytest.fixture(scope="module")
def placed_bundle(tmp_path_factory):
    from nmc.annotations import Sparsity
    from nmc.ir import Graph

    g = Graph.from_nir(_net())
    g.annotate("fc1", Sparsity(density=0.5, format="csr"))  # fc1 stored sparse, fc2 dense
    b = nmc.compile(g, target="loihi2", dt=1e-3, reset="zero", integrator="euler",
                    passes="normalize,partition{max_neurons_per_core=8},place,route",
                    output=tmp_path_factory.mktemp("e") / "b.nmc")
    x = (RNG.random((30, 12)) < 0.3).astype(np.float64)
    return b, g, x


def test_counts_are_exact_and_parts_sum_to_totals(placed_bundle):
    b, g, x = placed_bundle
    rep, act = energy.profile(b, {"input": x})
    res = b.run({"input": x}, record=["lif1", "lif2"])
    s1 = res["lif1.spikes"]
    w1, w2 = g.nodes["fc1"].weight, g.nodes["fc2"].weight
    # sparse storage: one event per nonzero synapse; dense storage: every stored synapse
    expected_syn = (x @ (w1 != 0).T).sum() + s1.sum() * w2.shape[0]
    assert act.per_step["synaptic_ops"].sum() == expected_syn
    s2 = res["lif2.spikes"]
    assert act.per_step["neuron_updates"].sum() + act.per_step["neuron_updates_inactive"].sum() == 30 * (20 + 4)
    # active = received an event or emitted one this step (fc2 is stored dense: any lif1 spike reaches all of lif2)
    busy1 = ((x @ (w1 != 0).T) > 0) | (s1 > 0)
    busy2 = (s1.sum(1, keepdims=True) > 0) | (s2 > 0)
    assert act.per_step["neuron_updates"].sum() == busy1.sum() + np.broadcast_to(busy2, s2.shape).sum()
    assert act.per_step["packets"].sum() == x.sum() + s1.sum() + res["lif2.spikes"].sum()
    assert rep["total_j"] == pytest.approx(sum(rep["by_kind_j"].values()), rel=1e-12)
    assert rep["total_j"] == pytest.approx(rep["check"]["sum_of_nodes_plus_static_j"], rel=1e-12)
    per_core_dyn = sum(e["total"] - e["static"] for e in rep["per_core_j"].values())
    placed_dyn = sum(rep["per_node_j"][n]["total"] for n in ("lif1", "lif2"))
    assert per_core_dyn == pytest.approx(placed_dyn, rel=1e-9)
    assert rep["cores_used"] >= 3  # 24 neurons, 8 per core
    assert rep["counts"]["hops"] > 0  # several cores: packets travel
    c = rep["constants"]
    assert rep["by_kind_j"]["synaptic_ops"] == pytest.approx(expected_syn * c["synaptic_ops"])


def test_reference_target_needs_a_spec():
    b = nmc.compile(_net(), dt=1e-3, reset="zero", integrator="euler")
    x = (RNG.random((10, 12)) < 0.3).astype(np.float64)
    with pytest.raises(OptionError):
        energy.profile(b, {"input": x})
    rep, _ = energy.profile(b, {"input": x}, spec="spinnaker2")
    assert rep["spec"] == "spinnaker2" and rep["total_j"] > 0


def test_fit_recovers_known_constants_from_synthetic_trace(placed_bundle):
    b, _, _ = placed_bundle
    x = (RNG.random((60, 12)) < np.linspace(0.05, 0.9, 60)[:, None]).astype(np.float64)  # activity varies
    rep, act = energy.profile(b, {"input": x})
    true = {"synaptic_ops": 7e-11, "packets": 3e-10, "hops": 5e-11}
    static_w = 0.05
    per_step = static_w * act.tick_s + sum(act.per_step[k] * v for k, v in true.items())
    # a measured trace: piecewise-constant power per step (two samples per step, 1 ns inside its edges),
    # preceded by 3 ms of static power
    eps = 1e-9
    k = np.arange(act.steps)
    t = np.concatenate([[-3e-3, -eps], np.stack([k * act.tick_s + eps, (k + 1) * act.tick_s - eps], 1).reshape(-1),
                        [act.steps * act.tick_s + eps, act.steps * act.tick_s + 2e-3]])
    p = np.concatenate([[static_w, static_w], np.repeat(per_step / act.tick_s, 2), [static_w, static_w]])
    meas = power.align(t, p, act.steps, act.tick_s, 1, offset_s=0.0)
    assert meas.sum() == pytest.approx(per_step.sum(), rel=1e-4)
    f = power.fit(act, meas.sum(0))
    assert f["r2"] > 0.99
    for k, v in true.items():
        assert f["values"][k] == pytest.approx(v, rel=0.05), k
    # time-driven: active + inactive updates are constant, so the inactive count folds into static power
    assert "neuron_updates_inactive" in f["folded_into_static"]
    assert f["values"]["neuron_updates"] == pytest.approx(0.0, abs=1e-12)
    toml = power.override_toml(f, rep["cores_used"], rep["chips_used"], "synthetic")
    from nmc.hw import HardwareSpec
    import tomllib

    s = HardwareSpec.load("loihi2", overrides=[tomllib.loads(toml)])
    assert s.get("energy.synaptic_op_j") == pytest.approx(true["synaptic_ops"], rel=0.05)


def test_trace_must_cover_the_run(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("time_s,power_w\n0,1\n0.005,1\n")
    t, w = power.load_trace(f)
    with pytest.raises(OptionError):
        power.align(t, w, steps=10, tick_s=1e-3)
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,power_w\n0,1\n0,2\n")
    from nmc.errors import InputFileError

    with pytest.raises(InputFileError):
        power.load_trace(bad)


def test_cli_profile_json_html_and_fit(placed_bundle, tmp_path):
    b, _, x = placed_bundle
    save_npz(tmp_path / "in.npz", {"input": x})
    rep, act = energy.profile(b, {"input": x})
    t = np.linspace(0, act.steps * act.tick_s, 400)
    np.savetxt(tmp_path / "p.csv", np.stack([t, np.full_like(t, 0.2)], 1), delimiter=",", header="time_s,power_w",
               comments="")
    r = CliRunner().invoke(main, ["profile", str(b.path), "--input", str(tmp_path / "in.npz"),
                                  "--measured", str(tmp_path / "p.csv"), "--fit", str(tmp_path / "fit.toml"),
                                  "-o", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "energy per layer" in r.output and "per inference" in r.output
    j = json.loads((tmp_path / "r.json").read_text())
    assert j["measured"]["per_inference_j"] == pytest.approx(0.2 * act.steps * act.tick_s, rel=1e-6)
    assert j["total_j"] == pytest.approx(sum(j["by_kind_j"].values()))
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "<table>" in page
    assert "[energy]" in (tmp_path / "fit.toml").read_text()


@pytest.mark.parametrize("target", ["spinnaker2", "loihi2", "brainscales2"])
def test_profiles_on_every_target_sum_to_totals(target):
    from pathlib import Path

    qs = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
    x = np.load(qs / "digits_test.npz")["input"][:, :5]
    b = nmc.compile(qs / "digits_lif.nir", target=target, dt=1e-3, reset="zero", integrator="euler")
    rep, act = energy.profile(b, {"input": x})
    assert rep["spec"].startswith(target) and rep["per_inference_j"] > 0
    assert rep["total_j"] == pytest.approx(sum(rep["by_kind_j"].values()), rel=1e-12)
    assert rep["total_j"] == pytest.approx(rep["check"]["sum_of_nodes_plus_static_j"], rel=1e-12)
    assert rep["counts"]["synaptic_ops"] > 0 and 0 < rep["neurobench"]["activation_sparsity"] < 1
