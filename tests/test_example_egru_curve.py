"""examples/egru_lm/curve.py without training: the power-law fit of the gap along fine-tuning, the
steps it predicts for a goal, and the summary/table built from pareto.py's point records."""
from __future__ import annotations

import math

import pytest

from script_modules import load_script


def _curve_module():
    return load_script("examples/egru_lm/curve.py", "egru_lm_curve")


def test_power_fit_recovers_an_exact_power_law_and_solves_for_the_goal():
    cv = _curve_module()
    steps = [600, 800, 1000, 1200]
    f = cv.power_fit(steps, [0.9 * s ** -0.5 for s in steps])
    assert f["c"] == pytest.approx(0.9) and f["b"] == pytest.approx(0.5) and f["rms_log_residual"] < 1e-9
    assert cv.steps_to(f, 0.03) == pytest.approx((0.9 / 0.03) ** 2)          # 900 steps
    assert cv.power_fit([1, 2], [0.1, 0.05]) is None                          # too few points
    assert cv.steps_to(cv.power_fit(steps, [0.05, 0.06, 0.07, 0.08]), 0.03) is None   # a rising gap: no answer


def _point(dense, gap, emulator_ppl):
    curve = [{"step": s, "density": max(0.1, 1 - s / 600), "test_ppl": dense * (1 + (5.0 if s < 600 else gap(s)))}
             for s in range(100, 1100, 100)]
    return {"density": 0.1, "measured_density": 0.1, "finetune_steps": 1000, "perplexity": emulator_ppl,
            "perplexity_float": emulator_ppl - 0.01, "activity": 0.3, "macs_per_token": 5000.0,
            "dynamic_energy_per_token_j": 1e-7, "train_seconds": 10.0, "curve": curve}


def test_summary_extrapolates_a_goal_not_met_from_the_points_at_the_target_density():
    cv = _curve_module()
    dense = 6.0
    s = cv.summarize([_point(dense, lambda s: 1.8 * s ** -0.5, 6.4)], dense, {"steps": 800}, prune_end=0.6)
    (d,) = s["densities"]
    f = d["fits"]["all_at_target"]
    # steps 600…1000 only (the earlier ones are still pruning); curve.json rounds perplexities to 4 decimals
    assert f["points"] == 5 and f["b"] == pytest.approx(0.5, rel=1e-3) and d["goal_gap"] == 0.03
    assert f["steps_to_goal"] == pytest.approx((1.8 / 0.03) ** 2, rel=1e-2)
    assert d["goal_met_on_emulator"] is False and d["goal_first_reached_at_step"] is None
    assert d["emulator_gap"] == pytest.approx(6.4 / 6.0 - 1)
    md = cv.table(s).splitlines()
    assert len(md) == 2 + len(d["curve"])
    assert md[-1].startswith("| 1,000 | 0.100 |") and "**6.400**" in md[-1] and "**+6.7 %**" in md[-1]
    assert "– | –" in md[2] and math.isclose(d["curve"][0]["gap"], 5.0)


def test_summary_names_where_a_met_goal_was_first_reached_and_fits_nothing():
    cv = _curve_module()
    s = cv.summarize([_point(6.0, lambda s: 0.8 * s ** -0.5, 6.1)], 6.0, {"steps": 800}, prune_end=0.6)
    (d,) = s["densities"]
    assert d["goal_met_on_emulator"] is True and d["fits"] == {}
    assert d["goal_first_reached_at_step"] == 800          # gap 0.8/√700 = 0.0302, 0.8/√800 = 0.0283


def test_plot_draws_the_curves_the_fit_and_other_runs(tmp_path):
    cv = _curve_module()
    s = cv.summarize([_point(6.0, lambda s: 1.8 * s ** -0.5, 6.4)], 6.0, {"steps": 800}, prune_end=0.6)
    s["other_runs"] = cv.summarize([{**_point(6.0, lambda s: 0.8 * s ** -0.5, 6.1), "finetune_steps": 1000}], 6.0,
                                   {"steps": 800}, prune_end=0.6)["densities"]
    cv.plot(s, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
