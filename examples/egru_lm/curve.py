"""Test perplexity of the pruned EGRU LM along fine-tuning: how the gap to the dense model
closes with training steps, and the compiled model on the SpiNNaker 2 emulator at the end.

The recipe is ``pareto.py``'s (one dense teacher, ``train.py`` defaults; per density a copy
fine-tuned with gradual magnitude pruning and distillation from the teacher, compiled for
SpiNNaker 2 with int8 kernels and scored on the emulator) with a longer ``--finetune`` and
``--curve K``: test perplexity of the float model every K fine-tuning steps. The points are
pareto's ``points/egru_<density>.json`` (a re-run skips the finished ones). Density 1 is the
control: the teacher given the same fine-tuning steps without pruning (the goal is stated
against the teacher, which had ``--steps`` of training, the pruned models that plus
``--finetune``).

Each density writes one curve of a single ``--finetune``-step run (cosine learning-rate decay
over the whole run, the density reaching its target at ``--prune-end`` of it), so a point at
step s is *not* what an s-step run would reach. The extrapolation (:func:`power_fit`) fits the
gap to the dense model, g(s) = ppl(s) / ppl_dense − 1, on the points at the target density
as a power law g = c · s^(−b) (least squares on log g vs log s) and solves g(s*) = goal; it
describes this schedule's tail, one seed, and says nothing certain beyond the steps measured.

    .venv/bin/python examples/egru_lm/curve.py --out out/egru_lm/curve --densities 1 0.1 0.05 --finetune 1000
    .venv/bin/python examples/egru_lm/curve.py --out out/egru_lm/curve --densities 1 0.1 0.05 --report-only \
        --other-runs examples/egru_lm/results/density0.05_1400steps.json   # another run's point, drawn too

Writes ``curve.json`` (the points, the final float and emulator perplexities, the CPU budget,
the fits; ``other_runs``: the ``--other-runs`` points summarized alike), ``curve.png`` and
``curve.md`` (the README's table) in ``--results``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pareto  # noqa: E402

GOALS = {0.1: 0.03, 0.05: 0.05}   # the goal: gap to the dense float model at each density


def power_fit(steps, gaps) -> dict | None:
    """Least-squares fit of log g = log c − b · log s over the points with g > 0; None with < 3 points."""
    s, g = np.asarray(steps, float), np.asarray(gaps, float)
    keep = (g > 0) & (s > 0)
    if keep.sum() < 3:
        return None
    x, y = np.log(s[keep]), np.log(g[keep])
    slope, icept = np.polyfit(x, y, 1)
    resid = y - (icept + slope * x)
    return {"c": float(math.exp(icept)), "b": float(-slope), "points": int(keep.sum()),
            "rms_log_residual": float(np.sqrt(np.mean(resid ** 2)))}


def steps_to(fit: dict | None, goal: float) -> float | None:
    """s* with c · s*^(−b) = goal (None when the fit does not decrease)."""
    if fit is None or fit["b"] <= 0:
        return None
    return float((fit["c"] / goal) ** (1.0 / fit["b"]))


def summarize(points: list[dict], dense_ppl: float, teacher: dict, prune_end: float) -> dict:
    """curve.json: per density the curve, the final float / emulator perplexities, whether the goal
    is met on the emulator and the first curve point (float, at the target density) within it; for a
    goal not met, two fits (all points at the target density; the last half of them) with the steps
    they predict for it."""
    out = {"dense_float_test_ppl": dense_ppl, "teacher": teacher, "densities": []}
    for p in sorted(points, key=lambda p: -p["density"]):
        n = p["finetune_steps"]
        curve = [{"step": c["step"], "density": round(c["density"], 5), "test_ppl": round(c["test_ppl"], 4),
                  "gap": round(c["test_ppl"] / dense_ppl - 1, 5)} for c in p["curve"]]
        tail = [c for c in curve if c["step"] >= prune_end * n]
        goal = GOALS.get(p["density"])
        reached = next((c["step"] for c in tail if goal is not None and c["gap"] <= goal), None)
        met = goal is not None and p["perplexity"] / dense_ppl - 1 <= goal
        fits = {}   # extrapolate only a goal the run did not meet
        for name, pts in (("all_at_target", tail), ("last_half", tail[len(tail) // 2:])) if goal and not met else ():
            f = power_fit([c["step"] for c in pts], [c["gap"] for c in pts])
            if f is not None:
                f["steps_to_goal"] = steps_to(f, goal)
            fits[name] = f
        out["densities"].append({
            "density": p["density"], "measured_density": p["measured_density"], "finetune_steps": n,
            "goal_gap": goal, "goal_met_on_emulator": met if goal is not None else None,
            "goal_first_reached_at_step": reached, "float_test_ppl": p["perplexity_float"], "emulator_test_ppl": p["perplexity"],
            "emulator_gap": p["perplexity"] / dense_ppl - 1, "emulator_vs_float": p["perplexity"] / p["perplexity_float"] - 1,
            "activity": p["activity"], "macs_per_token": p["macs_per_token"],
            "dynamic_energy_per_token_j": p["dynamic_energy_per_token_j"],
            "train_seconds": p["train_seconds"], "curve": curve, "fits": fits})
    return out


def table(summary: dict) -> str:
    """Markdown: one row per curve point, the final row of each density with its emulator perplexity."""
    d0 = summary["dense_float_test_ppl"]
    rows = [f"| fine-tune steps | density | test ppl (float) | gap vs dense ({d0:.3f}) | emulator ppl (int8) "
            "| emulator gap |", "|---|---|---|---|---|---|"]
    for d in summary["densities"]:
        for c in d["curve"]:
            last = c["step"] == d["finetune_steps"]
            emu = (f"**{d['emulator_test_ppl']:.3f}** | **{100 * d['emulator_gap']:+.1f} %**" if last else "– | –")
            rows.append(f"| {c['step']:,} | {c['density']:.3f} | {c['test_ppl']:.3f} | {100 * c['gap']:+.1f} % | {emu} |")
    return "\n".join(rows)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d0 = summary["dense_float_test_ppl"]
    fig, ax = plt.subplots(figsize=(11, 4.6))
    for d, color in zip(summary["densities"], ("tab:green", "tab:blue", "tab:red", "tab:purple")):
        s = [c["step"] for c in d["curve"]]
        what = "dense, same fine-tuning without pruning" if d["density"] >= 1 else f"density {d['density']:g}"
        ax.plot(s, [c["test_ppl"] for c in d["curve"]], "o-", ms=3, color=color, label=f"{what} (float)")
        ax.plot([d["finetune_steps"]], [d["emulator_test_ppl"]], "*", ms=12, color=color,
                label=f"{what}: int8 on the SpiNNaker 2 emulator")
        f = d["fits"].get("all_at_target")
        if f is not None:   # drawn on to the steps it predicts for the goal
            xs = np.linspace(min(c["step"] for c in d["curve"] if c["density"] <= d["density"] + 1e-9),
                             max(d["finetune_steps"], f.get("steps_to_goal") or 0), 50)
            ax.plot(xs, d0 * (1 + f["c"] * xs ** -f["b"]), ":", color=color, lw=1)
    for d in summary.get("other_runs", []):
        what = f"density {d['density']:g}, a {d['finetune_steps']:,}-step run"
        ax.plot([c["step"] for c in d["curve"]], [c["test_ppl"] for c in d["curve"]], "s--", ms=3, color="tab:orange",
                label=f"{what} (float)")
        ax.plot([d["finetune_steps"]], [d["emulator_test_ppl"]], "*", ms=12, color="tab:orange",
                label=f"{what}: int8 on the emulator")
    ax.axhline(d0, color="k", lw=1, label=f"dense float model, the teacher ({d0:.3f})")
    for goal, ls in ((0.03, "--"), (0.05, "-.")):
        ax.axhline(d0 * (1 + goal), color="gray", lw=1, ls=ls, label=f"dense + {goal:.0%}")
    ys = [c["test_ppl"] for d in summary["densities"] + summary.get("other_runs", []) for c in d["curve"]] + [d0]
    ax.set_ylim(min(ys) * 0.98, max(max(ys), d0 * 1.06) * 1.02)
    ax.set_xlabel("fine-tuning steps (gradual pruning + distillation; batch 32 × 64 characters)")
    ax.set_ylabel("test perplexity (Macbeth + Twelfth Night)")
    ax.set_title("Pruned EGRU LM: perplexity along fine-tuning (dotted: power-law fit at target density)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm/curve"), help="pareto.py's output folder")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="where curve.json/.png/.md go")
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.05])
    ap.add_argument("--finetune", type=int, default=1000)
    ap.add_argument("--curve", type=int, default=100, help="test perplexity every K fine-tuning steps")
    ap.add_argument("--prune-end", type=float, default=0.6, help="train.py's --prune-end (the fits start there)")
    ap.add_argument("--report-only", action="store_true", help="only summarize the finished points")
    ap.add_argument("--other-runs", type=Path, nargs="*", default=[],
                    help="point JSONs of other runs of the recipe (pareto.py's points/…) drawn in the figure too")
    args, rest = ap.parse_known_args(argv)
    if not args.report_only:
        pareto.main(["--out", str(args.out), "--cells", "egru", "--densities", *map(str, args.densities),
                     "--finetune", str(args.finetune), "--curve", str(args.curve),
                     "--prune-end", str(args.prune_end), *rest])
    points = [json.loads((args.out / "points" / f"egru_{d:g}.json").read_text()) for d in args.densities]
    tj = json.loads((args.out / "dense_egru" / "train.json").read_text())
    teacher = {"steps": tj["config"]["steps"], "train_seconds": tj["train_seconds"],
               "test_ppl": tj["dense"]["test"]["ppl"], "activity": tj["dense"]["test"]["activity"]}
    summary = summarize(points, tj["dense"]["test"]["ppl"], teacher, args.prune_end)
    if args.other_runs:
        others = [json.loads(f.read_text()) for f in args.other_runs]
        summary["other_runs"] = summarize(others, tj["dense"]["test"]["ppl"], teacher, args.prune_end)["densities"]
    summary["config"] = {"finetune": args.finetune, "curve_every": args.curve, "prune_end": args.prune_end,
                         "threads": tj["config"]["threads"], "recipe": "train.py --init lm_dense.pt --prune gradual --distill "
                         "(lr 1e-2 cosine, T 2, alpha 0.5, masks every 50 steps)"}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "curve.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = table(summary)
    (args.results / "curve.md").write_text(md + "\n")
    plot(summary, args.results / "curve.png")
    print(md)
    for d in summary["densities"]:
        for name, f in d["fits"].items():
            if f is not None:
                print(f"density {d['density']:g} fit {name}: gap = {f['c']:.3g} · s^-{f['b']:.3f} "
                      f"(rms log residual {f['rms_log_residual']:.3f}); goal {d['goal_gap']:.0%} at "
                      f"{f.get('steps_to_goal') or float('nan'):,.0f} steps")
    return summary


if __name__ == "__main__":
    main()
