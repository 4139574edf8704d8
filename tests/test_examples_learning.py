"""The learning examples (examples/rewiring_digits, examples/spore_loop) run a short version end to end."""
from __future__ import annotations

import pytest

from script_modules import load_script


def _example(name: str):
    """examples/<name>/run.py as a module of its own name (other tests import other examples'
    run.py: a plain ``import run`` would return whichever came first)."""
    return load_script(f"examples/{name}/run.py", f"example_{name}_run")


@pytest.mark.slow
def test_rewiring_digits_beats_the_frozen_topology_with_the_same_fan_in(tmp_path):
    res = _example("rewiring_digits").main(["--epochs", "4", "--out", str(tmp_path)])
    rw, frozen = res["rewiring"], res["frozen random topology"]
    assert rw["fan_in"] == [8] and frozen["fan_in"] == [8] and rw["synapses"] == frozen["synapses"] == 80
    assert rw["rewired"] > 0 and frozen["rewired"] == 0
    assert rw["accuracy"] > frozen["accuracy"] + 0.05
    assert (tmp_path / "result.json").exists()


@pytest.mark.slow
def test_spore_loop_learns_cartpole_above_a_random_policy(tmp_path):
    # 30 episodes of the regulated schedule, one seed (the README's figures: 150 episodes × 3 seeds)
    res = _example("spore_loop").main(["--episodes", "30", "--seeds", "1", "--schedules", "regulated",
                                       "--out", str(tmp_path)])
    s = res["schedules"]
    learned, rand = sum(s["regulated"]["curve"]) / 30, sum(s["random policy"]["curve"]) / 30
    assert learned > rand + 5, (learned, rand)
    assert s["regulated"]["last"] > s["random policy"]["last"]
    assert res["latency_per_step_ms"]["p99"] >= res["latency_per_step_ms"]["p50"] > 0
    assert (tmp_path / "reward.png").stat().st_size > 1000
