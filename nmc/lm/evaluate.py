"""Perplexity of an EGRU language model at every stage of compilation.

A text of N tokens is cut into ``streams`` contiguous pieces of equal length
run side by side as a batch (state starts at 0 in each piece); token t of a
piece is the input at step t and token t + 1 the target, so each piece of
length L scores L − 1 predictions. Perplexity = exp(mean cross-entropy in
nats over all scored tokens), computed in float64 from the logits.

Stages (same tokens, same pieces):

* ``graph``: the reference simulator (float64) on a graph — the float model
  before the passes, or the compiled graph (pruned weights, float);
* ``kernels``: the program's EGRU kernel weights after quantization
  (``w_int · scale`` per gate row, the embedding folded into layer 0) with
  exact float64 sigmoid/tanh — the quantization error alone;
* ``device``: the bundle's device (SpiNNaker 2: the bit-accurate float32
  emulator with the tanh table), the host decoder in float64.
"""
from __future__ import annotations

import numpy as np
import torch

from nmc.errors import ShapeError
from nmc.ir import Graph

from .corpus import CharVocab


def lm_meta(graph: Graph) -> dict:
    m = graph.meta.get("lm")
    if not m:
        raise ShapeError("this model is not an EGRU language model (no 'lm' entry in its graph meta)",
                         hint="compile a model saved with nmc.save(nmc.nn.EGRULanguageModel(...), 'lm.pt')")
    return m


def vocab_of(graph: Graph) -> CharVocab:
    m = lm_meta(graph)
    if not m.get("chars"):
        raise ShapeError("the language model has no character vocabulary",
                         hint="build EGRULanguageModel(..., chars=vocab) before nmc.save, or pass token ids (--tokens)")
    return CharVocab(m["chars"])


def pieces(ids: np.ndarray, streams: int) -> np.ndarray:
    """(L, B) token ids: ``ids`` cut into B = ``streams`` contiguous pieces of equal length."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    B = max(1, min(int(streams), ids.size // 2))
    L = ids.size // B
    if L < 2:
        raise ShapeError(f"text too short to score: {ids.size} token(s)", hint="give at least 2 tokens")
    return ids[: B * L].reshape(B, L).T.copy()


def one_hot(tok: np.ndarray, vocab: int) -> np.ndarray:
    tok = np.asarray(tok, np.int64)
    if tok.size and (tok.min() < 0 or tok.max() >= vocab):
        raise ShapeError(f"token id outside the vocabulary 0..{vocab - 1}")
    return np.eye(vocab, dtype=np.float64)[tok]


def nll(logits: np.ndarray, tok: np.ndarray) -> tuple[float, int]:
    """(Σ cross-entropy in nats, count) of logits (L, B, V) predicting tok[1:]."""
    lg = torch.as_tensor(np.asarray(logits, np.float64)[:-1])
    tgt = torch.as_tensor(np.asarray(tok)[1:])
    ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), reduction="sum")
    return float(ce), int(tgt.numel())


def ppl(logits: np.ndarray, tok: np.ndarray) -> float:
    s, n = nll(logits, tok)
    return float(np.exp(s / n))


def graph_logits(graph: Graph, tok: np.ndarray, record=()) -> dict:
    from nmc.reference import ReferenceSimulator

    V = int(lm_meta(graph)["vocab"])
    return ReferenceSimulator(graph).run({graph.inputs[0]: one_hot(tok, V)}, record=list(record), batched=True)


def device_logits(bundle, tok: np.ndarray, device: str | None = None, record=()) -> dict:
    V = int(lm_meta(bundle.graph)["vocab"])
    return bundle.run({bundle.graph.inputs[0]: one_hot(tok, V).astype(np.float32)}, device=device, record=list(record))


def kernel_logits(program, tok: np.ndarray) -> np.ndarray:
    """float64, exact nonlinearities, the program's (dequantized) kernel weights; (L, B, V)."""
    from nmc import dynamics as D

    pops = [p for p in program.populations if p.model == "egru_kernel"]
    (o, last), = program.outputs.items()
    V = pops[0].kernel["wx"].shape[1]
    x_in = torch.as_tensor(one_hot(tok, V))
    L, B = tok.shape
    W = {}
    for p in pops:
        k = p.kernel
        W[p.name] = [torch.as_tensor(np.asarray(k["wx"], float) * np.asarray(k["sx"], float)[:, None]),
                     torch.as_tensor(np.asarray(k["wh"], float) * np.asarray(k["sh"], float)[:, None]),
                     torch.as_tensor(np.asarray(k["bx"], float)), torch.as_tensor(np.asarray(k["bh"], float)),
                     torch.as_tensor(np.asarray(k["thr"], float))]
    state = {p.name: (torch.zeros(B, p.size, dtype=torch.float64), torch.zeros(B, p.size, dtype=torch.float64))
             for p in pops}
    ys = []
    with torch.no_grad():
        for t in range(L):
            cur = {program.inputs[k]: x_in[t] for k in program.inputs}
            for p in pops:
                c, y = state[p.name]
                y, c, _ = D.egru_step(cur[p.source], c, y, *W[p.name])
                state[p.name] = (c, y)
                cur[p.name] = y
            ys.append(cur[last].numpy())
    return program.read_out(o, np.stack(ys))
