"""EGRU language model on SpiNNaker 2, end to end: train (train.py), compile,
evaluate on held-out Shakespeare, stream tokens through the emulator and the
generated C kernels.

    .ci/setup && .venv/bin/python examples/egru_lm/run.py            # a few minutes on 2 cores
    .venv/bin/python examples/egru_lm/run.py --quick                 # smaller, for tests

Writes out/egru_lm/: lm_dense.pt, lm.pt (pruned + fine-tuned), lm.nmc (the
bundle, reports/lm.json), results.json, validation.txt and test.txt.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nmc  # noqa: E402
import train  # noqa: E402
from nmc.errors import DeviceError  # noqa: E402
from nmc.frontends import load_model  # noqa: E402
from nmc.lm import evaluate as E  # noqa: E402
from nmc.lm.host import TokenStream  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/egru_lm"))
    ap.add_argument("--quick", action="store_true", help="a small model and few steps (tests)")
    ap.add_argument("--eval-chars", type=int, default=20000, help="characters of the test text scored")
    args, rest = ap.parse_known_args(argv)
    t0 = time.time()
    targs = ["--out", str(args.out), *rest]
    if args.quick:
        targs = ["--hidden", "64", "--steps", "120", "--finetune", "60", "--prune-every", "10", "--batch", "16",
                 "--seq", "48", *targs]
    tr = train.main(targs)
    t_train = time.time() - t0
    b = nmc.compile(args.out / "lm.pt", target="spinnaker2", output=args.out / "lm.nmc",
                    calibrate=args.out / "validation.txt", eval_text=args.out / "test.txt",
                    eval_chars=args.eval_chars, eval_streams=8, density=tr["config"]["density"])
    t_compile = time.time() - t0 - t_train
    rep = b.report("lm")
    # the dense model (before pruning) on the same pieces of the same text
    test = (args.out / "test.txt").read_text()
    vocab = E.vocab_of(b.graph)
    tok = E.pieces(vocab.encode(test[:args.eval_chars]), 8)
    dense_g, _ = load_model(args.out / "lm_dense.pt")
    pp = {"dense float": E.ppl(E.graph_logits(dense_g, tok)["output"], tok),
          **{k: rep["perplexity"][k] for k in ("float", "pruned", "quantized", "device")}}
    # stream tokens: emulator vs the generated C kernels, bit for bit
    stream = vocab.encode(test[:300])
    emu = TokenStream(b, "emulator").feed_all(stream)
    c_ok = None
    try:
        c_ok = bool(np.array_equal(TokenStream(b, "c").feed_all(stream), emu))
    except DeviceError as e:  # no host C compiler
        print(f"C kernels not checked: {e.one_line()}")
    prompt = "MACBETH.\n"
    gen = vocab.decode(TokenStream(b).generate(vocab.encode(prompt), 200, temperature=0.7, seed=1))
    res = {"perplexity": pp, "device_vs_float": rep["device_vs_float"],
           "device_vs_dense_float": pp["device"] / pp["dense float"] - 1, "activity": rep["activity"],
           "macs_per_token": rep["macs_per_token"], "placement": rep["placement"], "c_kernels_bit_exact": c_ok,
           "seconds": {"train": t_train, "compile_and_report": t_compile, "total": time.time() - t0},
           "train": tr, "sample": prompt + gen, "text": rep["text"]}
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n== EGRU LM on SpiNNaker 2 (test: Macbeth + Twelfth Night, {rep['text']['scored_tokens']} "
          f"predictions) ==")
    for k, v in pp.items():
        print(f"  perplexity {k:12s} {v:8.3f}")
    print(f"  emulator vs float model: {100 * res['device_vs_float']:+.2f} %  (vs the dense model "
          f"{100 * res['device_vs_dense_float']:+.2f} %)")
    print(f"  activity per layer (emulator): {rep['activity']['device']}")
    m = rep["macs_per_token"]
    print(f"  MACs per token: {m['effective_total']:.0f} on chip vs {m['dense_total']} dense "
          f"({m['reduction_vs_dense']:.1f}x fewer); decoder on host: {m['decoder_host']}")
    pl = rep["placement"]
    tt = pl["time_per_token_per_tick_s"]
    print(f"  PEs used {pl['pes_used']}; predicted time per token per tick {tt['mean_step_max_pe'] * 1e6:.1f} us mean, "
          f"{tt['worst_step_max_pe'] * 1e6:.1f} us worst (tick {tt['sys_tick'] * 1e3:g} ms)")
    print(f"  embedding: {pl['embedding']}; decoder: {pl['decoder']}")
    print(f"  C kernels bit-exact with the emulator on a 300-token stream: {c_ok}")
    print(f"  sample: {(prompt + gen)!r}")
    print(f"  {time.time() - t0:.0f} s in all; wrote {args.out / 'results.json'}")
    return res


if __name__ == "__main__":
    main()
