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
  exact float64 sigmoid/tanh — the quantization error alone; a target
  feature (``quantized_logits`` of :mod:`nmc.lm.target`; SpiNNaker 2:
  :func:`nmc.backends.spinnaker2.lm.kernel_logits`);
* ``device``: the bundle's device (SpiNNaker 2: the bit-accurate float32
  emulator with the tanh table), the host decoder in float64.
"""
from __future__ import annotations

import numpy as np
import torch

from nmc.errors import ShapeError
from nmc.ir import Graph
from nmc.reference import ReferenceSimulator

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
    V = int(lm_meta(graph)["vocab"])
    if "reset" not in graph.meta:   # an LM graph as loaded, before normalize: EGRU cells have no reset mode
        graph = Graph(graph.nodes, graph.edges, graph.annotations, {**graph.meta, "reset": "zero"})
    return ReferenceSimulator(graph).run({graph.inputs[0]: one_hot(tok, V)}, record=list(record), batched=True)


def device_logits(bundle, tok: np.ndarray, device: str | None = None, record=()) -> dict:
    V = int(lm_meta(bundle.graph)["vocab"])
    return bundle.run({bundle.graph.inputs[0]: one_hot(tok, V).astype(np.float32)}, device=device, record=list(record))


def calibration(graph, text: str, chars: int = 2000, streams: int = 4) -> dict:
    """One-hot calibration input (T, B, V) from a text, for the data-driven passes."""
    tok = pieces(vocab_of(graph).encode(text[:chars]), streams)
    return {graph.inputs[0]: one_hot(tok, int(lm_meta(graph)["vocab"]))}
