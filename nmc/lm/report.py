"""The language-model report of a compiled EGRU LM (``reports/lm.json``).

For one held-out text (``--option eval_text=FILE``; its sha256 is recorded):

* perplexity of the float model (before the passes), after pruning (the
  compiled graph, float64), after quantization (the kernels' dequantized
  weights, exact nonlinearities; SpiNNaker 2 only) and on the device
  (SpiNNaker 2: the bit-accurate emulator), and the emulator's gap to float;
* activity per layer: fraction of units emitting an event per step (float
  model and device);
* MACs per token: dense (every weight of every EGRU layer at every step:
  3H·(in + H), ``in`` the embedding size), effective on chip (for each input
  or recurrent event, the kept weights of its column — activity × weight
  sparsity, counted from the run's events), the host decoder's (dense V·H);
* placement: where the embedding and decoder run, PEs used, and the
  predicted time per token per tick: per PE, cycles = kept-weight MACs of the
  events it received × ``core.cycles_per_synop`` + units ×
  ``core.cycles_per_neuron_update``, over ``core.clock_hz`` — mean and worst
  step of the run, max over PEs — against ``sys_tick``. One token enters per
  tick; its logits leave ``latency`` ticks later.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nmc.errors import InputFileError

from . import evaluate as E


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


def placement_only(program) -> dict:
    """The report's placement part when no evaluation text was given."""
    return {"placement": _placement(program, [p for p in getattr(program, "populations", [])
                                              if p.model == "egru_kernel"], None, None, None),
            "perplexity": "not measured: compile with --option eval_text=FILE, or run `nmc eval BUNDLE --text-file FILE`"}


def lm_report(float_graph, graph, program, bundle_device, text: str, *, streams: int = 4, max_chars: int = 4000,
              spec=None, source: str = "", s2_report: dict | None = None) -> dict:
    """See the module docstring. ``bundle_device(tok, record) -> results`` runs the compiled program;
    ``float_graph`` None leaves out the float stage."""
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
    egru_pops = [p for p in getattr(program, "populations", []) if p.model == "egru_kernel"]
    if egru_pops:
        pp["quantized"] = E.ppl(E.kernel_logits(program, tok), tok)
    pp["device"] = E.ppl(rd["output"], tok)
    rep["perplexity"] = pp
    if "float" in pp:
        rep["device_vs_float"] = pp["device"] / pp["float"] - 1
    act["device"] = {k: _activity(rd[f"{k}.out"]) for k in layers if f"{k}.out" in rd}
    rep["activity"] = act
    rep["macs_per_token"] = _macs(float_graph if float_graph is not None else graph, meta, program, egru_pops, rd, tok)
    rep["placement"] = _placement(program, egru_pops, rd, tok, spec, s2_report)
    return rep


def _macs(float_graph, meta, program, pops, rd, tok) -> dict:
    dense = {}
    for k in [k for k in meta["layers"] if k in float_graph.nodes]:
        n = float_graph.nodes[k]
        H, n_in = n.hidden_size, n.w_x.shape[1]
        dense[k] = 3 * H * (n_in + H)
    out = {"dense": dense, "dense_total": int(sum(dense.values())),
           "decoder_host": int(np.size(float_graph.nodes[meta["decoder"]].weight))}
    if not pops:
        return out
    eff = {}
    steps = tok.shape[0] * tok.shape[1]
    V = pops[0].kernel["wx"].shape[1]
    for p in pops:
        kx = np.count_nonzero(p.kernel["wx"], axis=0)
        kh = np.count_nonzero(p.kernel["wh"], axis=0)
        xin = np.eye(V)[tok].reshape(-1, V) if p.source in program.inputs.values() else \
            np.asarray(rd[f"{p.source}.out"]).reshape(-1, kx.size)
        y = np.asarray(rd[f"{p.name}.out"]).reshape(tok.shape[0], tok.shape[1], -1)
        yprev = np.concatenate([np.zeros_like(y[:1]), y[:-1]]).reshape(-1, kh.size)
        eff[p.name] = float(((xin != 0) @ kx).sum() + ((yprev != 0) @ kh).sum()) / steps
    out["effective_chip"] = eff
    out["effective_total"] = float(sum(eff.values()))
    out["reduction_vs_dense"] = out["dense_total"] / max(out["effective_total"], 1e-9)
    return out


def _placement(program, pops, rd, tok, spec, s2_report=None) -> dict:
    if not pops:
        return {"embedding": "reference simulator (no chip)", "decoder": "reference simulator (no chip)"}
    out = {"embedding": "on chip: folded into egru0's input weights (one event per token, its one-hot index)",
           "decoder": "host (float64 readout of the last layer's events)"}
    rep = s2_report or program.report or {}
    out["pes_used"] = rep.get("pes_used")
    out["sram_bytes_max"] = rep.get("sram_bytes_max")
    out["sram_bytes_limit"] = rep.get("sram_bytes_limit")
    out["latency_ticks"] = max(p.latency for p in program.populations)
    if spec is None or rd is None:
        return out
    clock = float(spec.get("core.clock_hz"))
    cyc_syn = float(spec.get("core.cycles_per_synop"))
    cyc_neu = float(spec.get("core.cycles_per_neuron_update"))
    V = pops[0].kernel["wx"].shape[1]
    steps = tok.shape[0] * tok.shape[1]
    pe_ids = sorted({int(x) for p in pops for x in np.unique(p.pe)})
    col = {pe: i for i, pe in enumerate(pe_ids)}
    cyc = np.zeros((steps, len(pe_ids)))
    for p in pops:
        H = p.size
        xin = np.eye(V)[tok].reshape(steps, V) if p.source in program.inputs.values() else \
            np.asarray(rd[f"{p.source}.out"]).reshape(steps, -1)
        y = np.asarray(rd[f"{p.name}.out"]).reshape(tok.shape[0], tok.shape[1], -1)
        yprev = np.concatenate([np.zeros_like(y[:1]), y[:-1]]).reshape(steps, -1)
        # kept weights per (column, unit) over the unit's 3 gate rows; units summed per PE
        onto = np.zeros((H, len(pe_ids)))
        onto[np.arange(H), [col[int(x)] for x in p.pe]] = 1
        kx = np.count_nonzero(np.asarray(p.kernel["wx"]).reshape(3, H, -1), axis=0).T @ onto  # (n_in, PEs)
        kh = np.count_nonzero(np.asarray(p.kernel["wh"]).reshape(3, H, H), axis=0).T @ onto
        cyc += ((xin != 0) @ kx + (yprev != 0) @ kh) * cyc_syn + onto.sum(0) * cyc_neu
    mean = float(cyc.mean(0).max()) / clock
    worst = float(cyc.max()) / clock
    tick = float(program.sys_tick_s)
    out["time_per_token_per_tick_s"] = {"mean_step_max_pe": mean, "worst_step_max_pe": worst, "sys_tick": tick,
                                        "fits_tick": bool(worst <= tick)}
    return out
