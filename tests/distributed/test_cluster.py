"""Sweeps, fits and sharded evaluation on a two-node local Ray cluster, checked against serial runs.

One cluster (``ray.cluster_utils.Cluster``: a head and a second node, one CPU
each, on this machine) serves every test of this module; the nmc entry points
find Ray initialised and use it (engine.session) instead of starting their own.
Points: the quick-start model on spinnaker2, 40 samples, energy over 8.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nmc.cli import main
from nmc.driver.distributed.point import run_point
from nmc.driver.distributed.sweep import comparable, make_job, plan, serial

ROOT = Path(__file__).resolve().parents[2]
Q = ROOT / "examples" / "quickstart"
MODEL, DATA, LABELS = Q / "digits_lif.nir", Q / "digits_test.npz", Q / "digits_labels.npy"
OPTS = dict(dt=1e-3, reset="zero", integrator="euler")
KW = dict(samples=40, energy_samples=8, **OPTS)
GRID = "quantize.bits=8,5"
CLI_OPTS = ["--dt", "1e-3", "--reset", "zero", "--integrator", "euler", "--data", str(DATA), "--labels", str(LABELS),
            "--samples", "40", "--energy-samples", "8"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    small = 100 * 1024 * 1024
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": small})
    c.add_node(num_cpus=1, object_store_memory=small)
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def serial_records():
    """The grid's points run one after another in this process (no Ray)."""
    job, _ = make_job(MODEL, DATA, LABELS, **{k: v for k, v in KW.items() if k != "samples"}, samples=40)
    return serial(plan(job, ["spinnaker2"], GRID), job)


def _by_bits(records):
    return {r["params"]["quantize.bits"]: r for r in comparable(records)}


def test_sweep_on_two_nodes_equals_the_serial_run_and_resumes(cluster, serial_records, tmp_path):
    seen = []
    res = nmc.sweep(MODEL, "spinnaker2", GRID, DATA, LABELS, tmp_path / "s", on_result=seen.append, **KW)
    assert res.computed == 2 and res.reused == 0 and len(seen) == 2
    assert [r["status"] for r in res.records] == ["ok", "ok"]
    assert comparable(res.records) == comparable(serial_records)   # exactly: accuracy, energy, cores, ...
    r8 = _by_bits(res.records)[8]
    assert r8["accuracy"] >= 0.9 and r8["agreement"] >= 0.9 and r8["energy_per_inference_j"] > 0 and r8["cores"] >= 1
    lines = (tmp_path / "s" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["status"] == "ok" for x in lines)
    assert (tmp_path / "s" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pareto front" in (tmp_path / "s" / "report.html").read_text()
    again = nmc.sweep(MODEL, "spinnaker2", GRID, DATA, LABELS, tmp_path / "s", **KW)
    assert again.computed == 0 and again.reused == 2                # resumed: nothing recomputed
    assert comparable(again.records) == comparable(res.records)


def test_a_worker_killed_mid_point_has_the_point_retried_and_nothing_lost(cluster, serial_records, tmp_path):
    marker = tmp_path / "killed-once"

    def dies_once_after_computing(point, job):
        rec = run_point(point, job)
        if point["params"]["quantize.bits"] == 5 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)   # the worker process dies with the finished point's result unsent
        return rec

    res = nmc.sweep(MODEL, "spinnaker2", GRID, DATA, LABELS, tmp_path / "s", task=dies_once_after_computing,
                    retries=2, **KW)
    assert marker.exists()                                           # the first attempt did die
    assert [r["status"] for r in res.records] == ["ok", "ok"]
    assert comparable(res.records) == comparable(serial_records)
    assert len((tmp_path / "s" / "results.jsonl").read_text().splitlines()) == 2


def test_a_point_that_keeps_crashing_is_recorded_and_a_rerun_completes_it(cluster, serial_records, tmp_path):
    def always_dies(point, job):
        os._exit(1)

    res = nmc.sweep(MODEL, "spinnaker2", "quantize.bits=5", DATA, LABELS, tmp_path / "s", task=always_dies,
                    retries=1, **KW)
    (r,) = res.records
    assert r["status"] == "crashed" and "2 attempts" in r["error"]    # recorded with its error, not missing
    again = nmc.sweep(MODEL, "spinnaker2", "quantize.bits=5", DATA, LABELS, tmp_path / "s", **KW)
    assert again.computed == 1
    (got,) = comparable(again.records)
    assert got == dict(_by_bits(serial_records)[5], index=0)        # index: its place in this one-point grid


def test_ctrl_c_leaves_a_consistent_results_file_that_resumes(cluster, serial_records, tmp_path):
    out = tmp_path / "s"

    def interrupt(rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nmc.sweep(MODEL, "spinnaker2", GRID, DATA, LABELS, out, on_result=interrupt, **KW)
    data = (out / "results.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == 1 and json.loads(data)["status"] == "ok"
    with open(out / "results.jsonl", "ab") as f:   # and a torn line, as a kill during a write leaves
        f.write(b'{"key": "x", "sta')
    res = nmc.sweep(MODEL, "spinnaker2", GRID, DATA, LABELS, out, **KW)
    assert res.computed == 1 and res.reused == 1
    assert comparable(res.records) == comparable(serial_records)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_sharded_evaluation_on_two_nodes_equals_one_process_bit_for_bit(cluster, tmp_path):
    b = nmc.compile(str(MODEL), target="spinnaker2", output=tmp_path / "d.nmc", **OPTS)
    x = np.load(DATA)["input"][:, :40]
    whole = b.run({"input": x})
    ev = b.evaluate({"input": x}, np.load(LABELS)[:40], workers=2)
    assert ev.shards == 2 and ev.samples == 40
    assert set(ev.outputs) == set(whole)
    for k in whole:
        assert ev.outputs[k].dtype == whole[k].dtype and np.array_equal(ev.outputs[k], whole[k]), k
    assert ev.accuracy == float(np.mean(whole["output"].sum(0).argmax(1) == np.load(LABELS)[:40]))
    # the command line joins the cluster by its address (as `--address` / RAY_ADDRESS would from another
    # shell): three uneven shards (14, 13, 13 samples); it disconnects when done
    import ray

    ray.shutdown()
    try:
        r = CliRunner().invoke(main, ["eval", str(tmp_path / "d.nmc"), "--data", str(DATA), "--labels",
                                      str(LABELS), "--samples", "40", "--workers", "3", "--address", cluster.address,
                                      "-o", str(tmp_path / "out.npz")])
        assert not ray.is_initialized()
    finally:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    assert r.exit_code == 0, r.output
    assert "3 shard(s)" in r.output and f"accuracy {ev.accuracy:.4f}" in r.output
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["output"], whole["output"])


def test_fit_says_when_nothing_meets_the_floor_then_finds_the_cheapest_that_does(cluster, tmp_path):
    out = tmp_path / "fit"
    args = ["fit", str(MODEL), "--target", "spinnaker2", "--space", "sparsify.density=0.9", *CLI_OPTS, "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--min-accuracy", "1.0"])
    assert r.exit_code == 1, r.output
    assert "no configuration met the accuracy floor 1" in r.output and "closest:" in r.output
    assert not (out / "best.nmc").exists()
    log = [json.loads(x) for x in (out / "search.jsonl").read_text().splitlines()]
    assert len(log) == 2 and log[0]["role"] == "baseline" and log[1]["params"] == {"sparsify.density": 0.9}
    # the same search with a reachable floor: both points come from search.jsonl, not recompiled
    res = nmc.fit(MODEL, "spinnaker2", DATA, LABELS, out, min_accuracy=0.9, space="sparsify.density=0.9", **KW)
    assert {r["key"] for r in res.records} == {x["key"] for x in log}
    assert res.best is not None and res.best["accuracy"] >= 0.9
    assert res.best["energy_per_inference_j"] <= res.baseline["energy_per_inference_j"]
    best = nmc.load(out / "best.nmc")
    assert best.manifest["pipeline"] == res.best["passes"]
    assert json.loads((out / "fit.json").read_text())["best"]["key"] == res.best["key"]
