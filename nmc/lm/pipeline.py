"""Compiling an EGRU language model: its default pass pipeline per target and
calibration text.

SpiNNaker 2 (the published recipe): ``sparsify`` keeps ``density`` (default
0.05: 95 % of the weights pruned) of each EGRU layer's input and recurrent
weights by magnitude (the embedding and decoder stay dense), optionally
removes the ``prune_units`` least active fraction of units of every layer on
the calibration text, and stores CSR; ``quantize{bits=8}`` (the lowering
quantizes the kernels to int8 with one scale per gate row; ``--option
egru_weights=float32`` keeps float32 weights and drops this pass);
``partition`` splits units across PEs by output unit under the per-PE SRAM and
per-tick work budgets (rates from the calibration text); then place, route and
the per-PE EGRU kernels. Other targets use their own default pipeline (and
refuse EGRU cells with the reason).
"""
from __future__ import annotations

import numpy as np

from nmc.errors import OptionError

from . import evaluate as E

DEFAULT_DENSITY = 0.05


def default_pipeline(target: str, backend, options: dict) -> str:
    if target != "spinnaker2":
        return backend.default_pipeline(options)
    d = float(options.get("density") if options.get("density") is not None else DEFAULT_DENSITY)
    pu = float(options.get("prune_units") or 0.0)
    if not 0 < d <= 1:
        raise OptionError(f"density must be in (0, 1], got {d}", hint="e.g. --option density=0.05 (95 % pruned)")
    if not 0 <= pu < 1:
        raise OptionError(f"prune_units must be in [0, 1), got {pu}")
    w = str(options.get("egru_weights") or "int8")
    if w not in ("int8", "float32"):
        raise OptionError(f"egru_weights must be int8 or float32, not {w!r}")
    sp = f"sparsify{{density={d},scope=layer,nodes=EGRU,format=csr" + (f",prune_units={pu}" if pu else "") + "}"
    return "normalize," + sp + (",quantize{bits=8}" if w == "int8" else "") + ",partition,place,route"


def calibration(graph, text: str, chars: int = 2000, streams: int = 4) -> dict:
    """One-hot calibration input (T, B, V) from a text, for the data-driven passes."""
    tok = E.pieces(E.vocab_of(graph).encode(text[:chars]), streams)
    return {graph.inputs[0]: E.one_hot(tok, int(E.lm_meta(graph)["vocab"]))}
