"""Ternary (1.58-bit) spiking EGRU language model: quantisation-aware training from the
dense model with distillation, compiled to packed 2-bit SpiNNaker 2 kernels.

1. The dense float model (``train.py``'s ``lm_dense.pt``) is the teacher. The student is
   a copy with the embedding folded into layer 0's input weights (what the chip stores:
   one event per token selects a column of w_x·Eᵀ; :func:`nmc.nn.ternary.fold_embedding`)
   and every EGRU weight matrix ternary in the forward pass: per row s = mean|w|,
   t = round(clip(w/s, −1, 1)) (:mod:`nmc.nn.ternary`, the rule of
   ``quantize{scheme=ternary}``), trained through the straight-through estimator.
2. ``--steps`` steps of truncated BPTT (train.py's contiguous streams) on
   ``nmc.nn.distill.distillation_loss`` (α·T²·KL(teacher ‖ student) + (1 − α)·CE)
   + ``--penalty`` × activity; the thresholds, biases and decoder stay float.
3. The latent weights are baked to s·t (exactly ternary × one scale per row) and saved
   as ``lm_ternary.pt``; ``nmc.compile(..., egru_weights="ternary")`` quantizes nothing
   away (the rule keeps such rows) and packs the kernels 4 weights per byte.
4. Perplexity on the test plays at each stage (dense float, ternary without QAT, QAT
   float, compiled, emulator), the same dense model compiled with int8 kernels for
   comparison, the C kernels checked bit for bit against the emulator on a token
   stream, and streaming throughput/latency per token of both engines.

    .venv/bin/python examples/egru_lm/train.py --out out/egru_lm     # (or run.py) for lm_dense.pt
    .venv/bin/python examples/egru_lm/ternary.py --out out/egru_lm   # writes lm_ternary.pt, lm_ternary.nmc, ternary.json
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nmc  # noqa: E402
from nmc import nn as nnn  # noqa: E402
from nmc.errors import DeviceError  # noqa: E402
from nmc.lm import evaluate as E  # noqa: E402
from nmc.lm.corpus import CharVocab, shakespeare_splits  # noqa: E402
from nmc.lm.host import TokenStream  # noqa: E402
from nmc.nn import ternary as T  # noqa: E402
from nmc.nn.distill import distillation_loss  # noqa: E402
from train import batches, detach_state, evaluate  # noqa: E402


def qat(student, teacher, ids: np.ndarray, args, rng) -> list[dict]:
    """Distillation + activity penalty, teacher and student on the same windows with carried state."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(args.steps, 1), eta_min=args.lr * 0.1)
    it = batches(ids, args.batch, args.seq, rng)
    student.reset_state()
    teacher.reset_state()
    log, t0 = [], time.time()
    for step in range(args.steps):
        w = next(it)
        if w is None:
            student.reset_state()
            teacher.reset_state()
            w = next(it)
        with torch.no_grad():
            t_logits = teacher(w[:-1])
        s_logits = student(w[:-1])
        kd = distillation_loss(s_logits, t_logits, w[1:], temperature=args.temperature, alpha=args.alpha)
        act = torch.stack([layer.activity for layer in student.layers]).mean()
        opt.zero_grad()
        (kd + args.penalty * act).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        detach_state(student)
        detach_state(teacher)
        if step % 100 == 0 or step == args.steps - 1:
            ce = torch.nn.functional.cross_entropy(s_logits.reshape(-1, student.vocab), w[1:].reshape(-1)).item()
            log.append({"step": step, "bits_per_char": ce / math.log(2), "activity": act.item(),
                        "seconds": time.time() - t0})
            print(f"[qat] step {step:5d}  {ce / math.log(2):.3f} bits/char  activity {act.item():.3f}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    student.reset_state()
    return log


def stream_figures(bundle, tokens, engine: str) -> dict:
    """Stream ``tokens`` one at a time through ``engine``; the logits and TokenStream's timing."""
    s = TokenStream(bundle, engine)
    logits = s.feed_all(tokens)
    return {"logits": logits, **s.timing()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm"))
    ap.add_argument("--dense", type=Path, default=None, help="the dense model (default: OUT/lm_dense.pt)")
    ap.add_argument("--steps", type=int, default=400, help="QAT steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term")
    ap.add_argument("--penalty", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-chars", type=int, default=20000)
    ap.add_argument("--stream-tokens", type=int, default=300, help="tokens streamed through each engine")
    ap.add_argument("--data", type=Path, default=None, help="corpus directory (default: the one .ci/setup fills)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    dense_path = args.dense or args.out / "lm_dense.pt"
    if not dense_path.is_file():
        sys.exit(f"error: no dense model at {dense_path}: run examples/egru_lm/train.py --out {args.out} first")
    args.out.mkdir(parents=True, exist_ok=True)
    splits = shakespeare_splits(args.data)
    vocab = CharVocab.from_text("".join(splits.values()))
    teacher = nnn.load(dense_path)
    if teacher.chars != vocab.chars:
        sys.exit(f"error: {dense_path} was trained on another vocabulary than this corpus")
    for p in teacher.parameters():
        p.requires_grad_(False)
    ids = {k: vocab.encode(v) for k, v in splits.items()}
    for k in ("validation", "test"):
        (args.out / f"{k}.txt").write_text(splits[k])
    t0 = time.time()
    ev = lambda m: evaluate(m, ids["test"], 8, args.eval_chars)[0]   # noqa: E731
    pp = {"dense float": ev(teacher)}
    student = T.ternarize(T.fold_embedding(teacher))
    pp["ternary, no QAT"] = ev(student)
    print(f"dense float {pp['dense float']:.3f}; ternary without QAT {pp['ternary, no QAT']:.3f}")
    log = qat(student, teacher, ids["train"], args, rng)
    t_qat = time.time() - t0
    T.bake(student)
    pp["ternary QAT float"] = ev(student)
    nmc.save(student, args.out / "lm_ternary.pt")
    compile_kw = dict(target="spinnaker2", calibrate=args.out / "validation.txt", eval_text=args.out / "test.txt",
                      eval_chars=args.eval_chars, eval_streams=8)
    b = nmc.compile(args.out / "lm_ternary.pt", output=args.out / "lm_ternary.nmc", egru_weights="ternary",
                    **compile_kw)
    rep = b.report("lm")
    pp["ternary compiled (exact nonlinearities)"] = rep["perplexity"]["quantized"]
    pp["ternary SpiNNaker 2 emulator"] = rep["perplexity"]["device"]
    exact = all(np.array_equal(np.asarray(p.kernel[k], np.float64) * np.asarray(p.kernel[s], np.float64)[:, None],
                               np.asarray(getattr(b.graph.nodes[p.name], n), np.float64))
                for p in b.program.populations if p.model == "egru_kernel"
                for k, s, n in (("wx", "sx", "w_x"), ("wh", "sh", "w_h")))
    i8 = nmc.compile(dense_path, density=1.0, **compile_kw).report("lm")
    pp["dense int8 SpiNNaker 2 emulator"] = i8["perplexity"]["device"]
    # streaming: the emulator and the C kernels on the same tokens, bit for bit, with timing
    stream = vocab.encode(splits["test"][:args.stream_tokens])
    torch.set_num_threads(1)
    emu = stream_figures(b, stream, "emulator")
    try:
        ck = stream_figures(b, stream, "c")
        c_ok = bool(np.array_equal(ck["logits"], emu["logits"]))
    except DeviceError as e:   # no host C compiler
        ck, c_ok = None, None
        print(f"C kernels not checked: {e.one_line()}")
    strip = lambda d: None if d is None else {k: v for k, v in d.items() if k != "logits"}   # noqa: E731
    res = {"perplexity": pp, "kernels_exactly_the_saved_weights": exact,
           "vs_dense_int8": pp["ternary SpiNNaker 2 emulator"] / pp["dense int8 SpiNNaker 2 emulator"] - 1,
           "vs_dense_float": pp["ternary SpiNNaker 2 emulator"] / pp["dense float"] - 1,
           "activity": rep["activity"], "macs_per_token": rep["macs_per_token"], "placement": rep["placement"],
           "placement_dense_int8": i8["placement"], "c_kernels_bit_exact": c_ok,
           "streaming": {"tokens": len(stream), "emulator": strip(emu), "c": strip(ck)},
           "qat": {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "seconds": t_qat, "log": log},
           "seconds_total": time.time() - t0, "text": rep["text"]}
    (args.out / "ternary.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n== ternary EGRU LM on SpiNNaker 2 (test: {rep['text']['scored_tokens']} predictions) ==")
    for k, v in pp.items():
        print(f"  perplexity {k:42s} {v:8.3f}")
    print(f"  kernels hold exactly the saved ternary×scale weights: {exact}; C bit-exact with the emulator: {c_ok}")
    pl, pl8 = rep["placement"], i8["placement"]
    print(f"  PEs used {pl['pes_used']} (dense int8: {pl8['pes_used']}), SRAM max {pl['sram_bytes_max']} B "
          f"(dense int8: {pl8['sram_bytes_max']} B)")
    for name, f in (("emulator", emu), ("c", ck)):
        if f is not None:
            print(f"  streaming {name:8s}: {f['tokens_per_s']:.0f} tokens/s, latency per token p50 "
                  f"{f['latency_p50_s'] * 1e3:.3f} ms, p99 {f['latency_p99_s'] * 1e3:.3f} ms")
    print(f"  {time.time() - t0:.0f} s in all; wrote {args.out / 'ternary.json'}")
    return res


if __name__ == "__main__":
    main()
