"""The language-model report of a compiled EGRU LM (``reports/lm.json``).

For one held-out text (``--option eval_text=FILE``; its sha256 is recorded):

* perplexity of the float model (before the passes), after pruning (the
  compiled graph, float64), after quantization (where the target has such a
  stage: SpiNNaker 2's kernels' dequantized weights, exact nonlinearities) and
  on the device (SpiNNaker 2: the bit-accurate emulator), and the emulator's
  gap to float;
* activity per layer: fraction of units emitting an event per step (float
  model and device);
* MACs per token: dense (every weight of every EGRU layer at every step:
  3H·(in + H), ``in`` the embedding size), effective on chip (the target's
  count from the run's events), the host decoder's (dense V·H);
* placement: where the embedding and decoder run, and the target's resources
  and predicted time per token per tick.

The target's parts come from its language-model feature (:mod:`nmc.lm.target`;
SpiNNaker 2: :mod:`nmc.backends.spinnaker2.lm`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np

from nmc.errors import InputFileError

from . import evaluate as E
from .target import GENERIC, LanguageModelTarget


def read_text(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputFileError("text file not found", path=p, hint="pass a UTF-8 text file")
    try:
        return p.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise InputFileError(f"not UTF-8 text ({e.reason})", path=p) from None


def _activity(y: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) != 0))


def placement_only(program, target: LanguageModelTarget = GENERIC) -> dict:
    """The report's placement part when no evaluation text was given."""
    return {"placement": target.placement(program, None, None, None),
            "perplexity": "not measured: compile with --option eval_text=FILE, or run `nmc eval BUNDLE --text-file FILE`"}


def lm_report(float_graph, graph, program, bundle_device, text: str, *, streams: int = 4, max_chars: int = 4000,
              spec=None, source: str = "", target: LanguageModelTarget = GENERIC,
              reports: Mapping[str, dict] | None = None) -> dict:
    """See the module docstring. ``bundle_device(tok, record) -> results`` runs the compiled program;
    ``float_graph`` None leaves out the float stage; ``target`` is the target's language-model feature,
    ``reports`` the bundle's reports (its lowering report, when the program does not hold it)."""
    vocab = E.vocab_of(graph)
    ids = vocab.encode(text[:max_chars])
    tok = E.pieces(ids, streams)
    meta = E.lm_meta(graph)
    layers = [k for k in meta["layers"] if k in graph.nodes]
    rep: dict = {"text": {"source": source, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                          "chars_used": int(tok.size), "streams": int(tok.shape[1]),
                          "scored_tokens": int((tok.shape[0] - 1) * tok.shape[1])}}
    pp, act = {}, {}
    if float_graph is not None:
        rf = E.graph_logits(float_graph, tok, record=[k for k in meta["layers"] if k in float_graph.nodes])
        pp["float"] = E.ppl(rf["output"], tok)
        act["float"] = {k: _activity(rf[f"{k}.out"]) for k in meta["layers"] if f"{k}.out" in rf}
    rc = E.graph_logits(graph, tok, record=layers)
    pp["pruned"] = E.ppl(rc["output"], tok)
    act["compiled_graph"] = {k: _activity(rc[f"{k}.out"]) for k in layers}
    rd = bundle_device(tok, layers)
    quantized = target.quantized_logits(program, tok)
    if quantized is not None:
        pp["quantized"] = E.ppl(quantized, tok)
    pp["device"] = E.ppl(rd["output"], tok)
    rep["perplexity"] = pp
    if "float" in pp:
        rep["device_vs_float"] = pp["device"] / pp["float"] - 1
    act["device"] = {k: _activity(rd[f"{k}.out"]) for k in layers if f"{k}.out" in rd}
    rep["activity"] = act
    rep["macs_per_token"] = _macs(float_graph if float_graph is not None else graph, meta,
                                  target.chip_macs(program, rd, tok))
    rep["placement"] = target.placement(program, rd, tok, spec, reports)
    return rep


def _macs(float_graph, meta, effective: dict[str, float]) -> dict:
    dense = {}
    for k in [k for k in meta["layers"] if k in float_graph.nodes]:
        n = float_graph.nodes[k]
        H, n_in = n.hidden_size, n.w_x.shape[1]
        dense[k] = 3 * H * (n_in + H)
    out = {"dense": dense, "dense_total": int(sum(dense.values())),
           "decoder_host": int(np.size(float_graph.nodes[meta["decoder"]].weight))}
    if not effective:
        return out
    out["effective_chip"] = effective
    out["effective_total"] = float(sum(effective.values()))
    out["reduction_vs_dense"] = out["dense_total"] / max(out["effective_total"], 1e-9)
    return out
