"""Grid text, results file and Pareto front of nmc.driver.distributed (no Ray started here)."""
from __future__ import annotations

import json
import sys

import pytest

from nmc.driver.distributed import grid as G
from nmc.driver.distributed.report import pareto
from nmc.driver.distributed.results import ResultsFile, read
from nmc.errors import InputFileError, OptionError


def test_grid_parses_typed_values_and_combines_row_major():
    g = G.parse("quantize.bits=8,6,4; sparsify.density=1,0.5")
    assert g == {("quantize", "bits"): [8, 6, 4], ("sparsify", "density"): [1.0, 0.5]}
    pts = G.points(g)
    assert len(pts) == 6 and pts[0] == {"quantize.bits": 8, "sparsify.density": 1.0}
    assert pts[1] == {"quantize.bits": 8, "sparsify.density": 0.5}


@pytest.mark.parametrize("text, words", [
    ("quantize.bitz=8", ["'bitz'", "bits", "per_channel"]),                    # unknown option: valid ones listed
    ("quantise.bits=8", ["names no pass", "quantize", "sparsify"]),            # unknown pass: passes listed
    ("quantize=8", ["has no option", "bits"]),
    ("quantize.bits=eight", ["expects int", "'eight'"]),
    ("quantize.bits=8; quantize.bits=4", ["given twice"]),
    ("quantize.bits=", ["no values"]),
    ("", ["empty grid"]),
])
def test_bad_grid_keys_are_refused_naming_the_valid_ones(text, words):
    with pytest.raises(OptionError) as e:
        G.parse(text)
    for w in words:
        assert w in e.value.one_line()


def test_grid_options_set_on_the_pipeline_or_inserted_in_canonical_order():
    base = "normalize,quantize{bits=8},partition,place,route"
    assert G.apply(base, {"quantize.bits": 4}) == "normalize,quantize{bits=4},partition,place,route"
    # sparsify is not in the base pipeline: it goes after quantize, before partition
    assert G.apply(base, {"sparsify.density": 0.5}) == \
        "normalize,quantize,sparsify{density=0.5},partition,place,route"
    assert G.apply("normalize", {"rewire.fan_in": 16, "quantize.bits": 6}) == \
        "normalize,quantize{bits=6},rewire{fan_in=16}"


def _rec(key, status="ok", **kw):
    return {"key": key, "status": status, **kw}


def test_results_file_appends_whole_lines_and_resumes_after_a_torn_line(tmp_path):
    p = tmp_path / "results.jsonl"
    with ResultsFile(p) as rf:
        rf.append(_rec("a", accuracy=0.9))
        rf.append(_rec("b", "crashed", error="worker died"))
        rf.append(_rec("c", "no_fit", rule="cores"))
    with open(p, "ab") as f:  # a write cut off by a crash / Ctrl-C
        f.write(b'{"key": "d", "status": "o')
    with ResultsFile(p) as rf:
        assert rf.dropped_torn
        assert set(rf.records) == {"a", "b", "c"}
        assert rf.done() == {"a", "c"}           # a crashed point is tried again by a re-run
        rf.append(_rec("b", accuracy=0.5))        # the re-run's record of b replaces the crashed one
    lines = p.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x) for x in lines[:-1])
    assert len(lines) == 5                        # torn bytes gone, b's new record appended after c
    assert {r["key"]: r["status"] for r in read(p)} == {"a": "ok", "b": "ok", "c": "no_fit"}


def test_results_file_with_a_complete_but_garbled_last_line_drops_it(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_bytes(json.dumps(_rec("a")).encode() + b"\n" + b"garbage\n")
    with ResultsFile(p) as rf:
        assert set(rf.records) == {"a"} and rf.dropped_torn
    assert p.read_bytes().count(b"\n") == 1


def test_results_file_corrupt_in_the_middle_is_refused_naming_the_line(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_bytes(json.dumps(_rec("a")).encode() + b"\n[1, 2]\n" + json.dumps(_rec("b")).encode() + b"\n")
    with pytest.raises(InputFileError, match="line 2"):
        ResultsFile(p).open()


def test_pareto_front_keeps_the_non_dominated_points():
    recs = [_rec("hi-acc", accuracy=0.98, energy_per_inference_j=4.0, cores=2),
            _rec("cheap", accuracy=0.90, energy_per_inference_j=1.0, cores=2),
            _rec("dominated", accuracy=0.90, energy_per_inference_j=2.0, cores=2),
            _rec("few-cores", accuracy=0.80, energy_per_inference_j=3.0, cores=1),
            _rec("broken", "no_fit")]
    assert pareto(recs) == {"hi-acc", "cheap", "few-cores"}


def test_without_ray_the_commands_fail_with_one_line_naming_the_extra(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from nmc.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    r = CliRunner().invoke(main, ["sweep", "examples/quickstart/digits_lif.nir", "--target", "spinnaker2",
                                  "--grid", "quantize.bits=8", "--data", "examples/quickstart/digits_test.npz",
                                  "-o", str(tmp_path / "s")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "nmc[distributed]" in lines[0] and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["eval", "x.nmc", "--data", "d.npz", "--workers", "2"])
    assert r.exit_code == 2


def test_fit_chooses_the_cheapest_feasible_point_else_names_the_closest():
    from nmc.driver.distributed.fit import choose

    recs = [_rec("base", accuracy=0.975, energy_per_inference_j=3.0, cores=2, bits=8, index=0),
            _rec("pruned", accuracy=0.970, energy_per_inference_j=2.0, cores=2, bits=8, index=1),
            _rec("too-lossy", accuracy=0.90, energy_per_inference_j=1.0, cores=1, bits=4, index=2),
            _rec("big", "no_fit", rule="cores: node 'lif1': limit 1, actual 2", index=3)]
    assert choose(recs, 0.97, "energy") == (recs[1], None)
    assert choose(recs, 0.97, "cores")[0]["key"] == "pruned"       # equal cores: energy breaks the tie
    assert choose(recs, 0.85, "bits")[0]["key"] == "too-lossy"
    best, closest = choose(recs, 0.99, "energy")                     # nothing meets the floor
    assert best is None and closest["key"] == "base"
    assert choose([recs[3]], 0.5, "energy") == (None, None)          # nothing even fits


def test_cli_refuses_a_bad_grid_and_an_eval_without_data_in_one_line(tmp_path):
    from click.testing import CliRunner

    from nmc.cli import main

    r = CliRunner().invoke(main, ["sweep", "examples/quickstart/digits_lif.nir", "--target", "spinnaker2",
                                  "--grid", "sparsify.densty=0.5", "--data", "examples/quickstart/digits_test.npz",
                                  "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "error: grid key 'sparsify.densty'" in r.output and "density" in r.output
    assert not (tmp_path / "s").exists()
    r = CliRunner().invoke(main, ["eval", "x.nmc"])
    assert r.exit_code == 2 and "--data" in r.output and "--text-file" in r.output
