"""The sparsity Pareto front of the EGRU LM against a dense-activity GRU of equal size.

For each weight density (default 1, 0.5, 0.2, 0.1, 0.05) and each cell:

* **EGRU**: start from one shared dense EGRU (the teacher), fine-tune
  ``--finetune`` steps with gradual magnitude pruning to the density and
  distillation from the teacher (train.py ``--init --prune gradual
  --distill``), compile for SpiNNaker 2 (``density=`` at compile time, int8),
  and score the held-out test plays on the emulator (the LM report's
  ``device`` perplexity);
* **GRU**: the same with a standard ``torch.nn.GRU`` (same embedding, hidden
  size and decoder, its own dense teacher); perplexity of the float model
  (nmc compiles EGRU cells, not torch GRUs).

Cost per token, from nmc's profiler (:func:`nmc.runtime.energy.profile`, what
``nmc profile`` runs) on the compiled bundle, streaming ``--profile-chars`` of
the test text through the emulator: effective MACs (synaptic events on graded
values: an EGRU unit's event reaches the nonzero weights of its column) and
energy on SpiNNaker 2 (dynamic, and total in the chip's real-time 1 ms tick
mode, static power included). The GRU's cost is the profiler's count on a
bundle compiled from the GRU's own pruned weights (mapped gate by gate onto an
EGRU cell of the same shape) with every unit active every step — what a GRU
does: it sends every unit's value every step.

Why not ``nmc sweep``: it sweeps compile options over one fixed model and
scores label accuracy; here every point is a differently trained model scored
by perplexity, so this is a plain loop. Each finished point is written to
``points/<cell>_<density>.json`` and skipped on a re-run.

    .venv/bin/python examples/egru_lm/pareto.py --out out/egru_lm/pareto
    .venv/bin/python examples/egru_lm/pareto.py --teacher out/egru_lm/lm_dense.pt   # reuse a dense model
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nmc  # noqa: E402
import train  # noqa: E402
from nmc import nn as nnn  # noqa: E402
from nmc.lm import evaluate as E  # noqa: E402
from nmc.runtime.energy import profile  # noqa: E402


class AllUnitsActive:
    """A bundle whose recorded EGRU layers report every unit active every step: the profiler's
    count for a dense-activity cell (a GRU sends every unit's value every step)."""

    def __init__(self, bundle, layers):
        self._b, self._layers = bundle, list(layers)

    def __getattr__(self, name):
        return getattr(self._b, name)

    def run(self, inputs, **kw):
        res = dict(self._b.run(inputs, **kw))
        for k in self._layers:
            for var in ("spikes", "out"):
                if f"{k}.{var}" in res:
                    res[f"{k}.{var}"] = np.ones_like(np.asarray(res[f"{k}.{var}"]))
        return res


def gru_as_egru(gru_lm) -> nnn.EGRULanguageModel:
    """The GRU LM's weights in an EGRU LM of the same shape (gates r, z, n → z, r, g), for counting."""
    lm = nnn.EGRULanguageModel(gru_lm.vocab, gru_lm.embed_size, gru_lm.hidden, chars=gru_lm.chars)
    with torch.no_grad():
        lm.embed.weight.copy_(gru_lm.embed.weight)
        lm.decoder.weight.copy_(gru_lm.decoder.weight)
        lm.decoder.bias.copy_(gru_lm.decoder.bias)
        for cell, g in zip(lm.layers, gru_lm.layers):
            for dst, src in ((cell.w_x, g.weight_ih_l0), (cell.w_h, g.weight_hh_l0)):
                r, z, n = src.chunk(3)
                dst.copy_(torch.cat([z, r, n]))
    return lm


def cost(bundle, test: str, chars: int, streams: int, dense_activity: bool) -> dict:
    """Effective MACs and SpiNNaker 2 energy per token from the profiler on ``chars`` of ``test``."""
    vocab = E.vocab_of(bundle.graph)
    tok = E.pieces(vocab.encode(test[:chars]), streams)
    layers = [k for k in E.lm_meta(bundle.graph)["layers"] if k in bundle.graph.nodes]
    b = AllUnitsActive(bundle, layers) if dense_activity else bundle
    rep, act = profile(b, {bundle.graph.inputs[0]: E.one_hot(tok, len(vocab)).astype(np.float32)}, baselines=False)
    n = tok.size
    return {"tokens": int(n), "macs_per_token": rep["counts"]["macs"] / n,
            "synaptic_ops_per_token": rep["counts"]["synaptic_ops"] / n,
            "energy_per_token_j": rep["total_j"] / n, "dynamic_energy_per_token_j": rep["dynamic_j"] / n,
            "energy_mode": rep["mode"], "activity": 1.0 if dense_activity else
            float(np.mean([np.mean(np.asarray(a) != 0) for k, a in act.spikes.items() if k in layers]))}


def point(cell: str, d: float, teacher: Path, args, out: Path) -> dict:
    f = out / "points" / f"{cell}_{d:g}.json"
    if f.exists():
        return json.loads(f.read_text())
    run = out / f"{cell}_{d:g}"
    t0 = time.time()
    tr = train.main(["--out", str(run), "--init", str(teacher), "--cell", cell, "--density", str(d),
                     "--prune", "gradual", "--distill", "--finetune", str(args.finetune), *args.train_args])
    t_train = time.time() - t0
    test = (run / "test.txt").read_text()
    if cell == "egru":
        b = nmc.compile(run / "lm.pt", target="spinnaker2", output=run / "lm.nmc", calibrate=run / "validation.txt",
                        eval_text=run / "test.txt", eval_chars=args.eval_chars, eval_streams=8, density=d)
        rep = b.report("lm")
        res = {"perplexity": rep["perplexity"]["device"], "perplexity_float": rep["perplexity"]["float"],
               "perplexity_stage": "SpiNNaker 2 emulator (int8)", "lm_report_macs_per_token":
               rep["macs_per_token"].get("effective_total")}
    else:
        gru = train.load_lm(run / "lm_gru.pt", gru=True)
        nmc.save(gru_as_egru(gru), run / "lm_gru_as_egru.pt")
        b = nmc.compile(run / "lm_gru_as_egru.pt", target="spinnaker2", output=run / "lm.nmc",
                        calibrate=run / "validation.txt", density=d)
        res = {"perplexity": tr["pruned_finetuned"]["test"]["ppl"], "perplexity_float": tr["pruned_finetuned"]["test"]["ppl"],
               "perplexity_stage": "float (torch)"}
    res.update(cost(b, test, args.profile_chars, args.profile_streams, dense_activity=cell == "gru"))
    res.update({"cell": cell, "density": d, "measured_density": tr["density"], "finetune_steps": args.finetune,
                "dense_teacher_test_ppl": tr["dense"]["test"]["ppl"], "train_seconds": t_train,
                "seconds": time.time() - t0, "curve": tr["curve"]})
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(res, indent=2) + "\n")
    print(f"== {cell} density {d:g}: test ppl {res['perplexity']:.3f}  MACs/token {res['macs_per_token']:.0f}  "
          f"energy/token {res['energy_per_token_j'] * 1e9:.1f} nJ ({res['seconds']:.0f} s)", flush=True)
    return res


def dense_teacher(cell: str, path: Path | None, args, out: Path) -> Path:
    if path is not None:
        return path
    p = out / f"dense_{cell}" / ("lm_gru_dense.pt" if cell == "gru" else "lm_dense.pt")
    if not p.exists():
        train.main(["--out", str(p.parent), "--cell", cell, "--steps", str(args.steps), "--finetune", "0",
                    "--density", "1", *args.train_args])
    return p


def table(points: list[dict]) -> str:
    rows = ["| cell | density | fine-tune steps | test perplexity | vs its dense teacher | vs dense EGRU | MACs / token "
            "| energy / token (dynamic) | energy / token (1 ms tick, static incl.) | activity |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    ref = next((p["dense_teacher_test_ppl"] for p in points if p["cell"] == "egru"), None)
    for p in points:
        vs = f"{100 * (p['perplexity'] / ref - 1):+.1f} %" if ref else "–"
        own = f"{100 * (p['perplexity'] / p['dense_teacher_test_ppl'] - 1):+.1f} %"
        rows.append(f"| {p['cell'].upper()} | {p['density']:g} | {p['finetune_steps']:,} "
                    f"| {p['perplexity']:.3f} ({p['perplexity_stage']}) | {own} | {vs} "
                    f"| {p['macs_per_token']:,.0f} | {p['dynamic_energy_per_token_j'] * 1e6:.2f} µJ "
                    f"| {p['energy_per_token_j'] * 1e6:.3f} µJ | {p['activity']:.3f} |")
    return "\n".join(rows)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "macs_per_token", "effective MACs per token (profiler)"),
                           (axes[1], "dynamic_energy_per_token_j", "dynamic energy per token on SpiNNaker 2 (J)")):
        for cell, style in (("egru", "o-"), ("gru", "s--")):
            ps = sorted((p for p in points if p["cell"] == cell), key=lambda p: p[key])
            if not ps:
                continue
            ax.plot([p[key] for p in ps], [p["perplexity"] for p in ps], style, label=cell.upper())
            for p in ps:
                ax.annotate(f"{p['density']:g}", (p[key], p["perplexity"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test perplexity (Macbeth + Twelfth Night)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("EGRU LM vs dense-activity GRU: weight density (labels) × activity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm/pareto"))
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1, 0.05])
    ap.add_argument("--cells", nargs="+", choices=("egru", "gru"), default=["egru", "gru"])
    ap.add_argument("--teacher", type=Path, default=None, help="dense EGRU LM to start from (else trained here)")
    ap.add_argument("--gru-teacher", type=Path, default=None, help="dense GRU LM to start from (else trained here)")
    ap.add_argument("--steps", type=int, default=800, help="dense training steps of a teacher trained here")
    ap.add_argument("--finetune", type=int, default=300, help="pruning + distillation steps per point")
    ap.add_argument("--eval-chars", type=int, default=20000, help="test characters scored on the emulator")
    ap.add_argument("--profile-chars", type=int, default=2000, help="test characters the profiler streams")
    ap.add_argument("--profile-streams", type=int, default=4)
    args, args.train_args = ap.parse_known_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    points = []
    for cell in args.cells:
        teacher = dense_teacher(cell, args.teacher if cell == "egru" else args.gru_teacher, args, out)
        for d in args.densities:
            points.append(point(cell, d, teacher, args, out))
    (out / "pareto.json").write_text(json.dumps(points, indent=2) + "\n")
    md = table(points)
    (out / "pareto.md").write_text(md + "\n")
    plot(points, out / "pareto.png")
    print(md)
    print(f"wrote {out / 'pareto.png'}, {out / 'pareto.md'} ({time.time() - t0:.0f} s)")
    return {"points": points, "table": md}


if __name__ == "__main__":
    main()
