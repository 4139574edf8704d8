"""What ``nmc.compile`` does per kind of model: asked of the graph, not branched on in :mod:`.api`.

:func:`model_kind` returns the first kind in :data:`KINDS` that claims the
loaded graph, else :data:`NETWORK`. A kind answers four questions of the
compile:

* ``text_calibration(graph, path)``: calibration data from a ``.txt`` file
  (a language model's text; any other model refuses it);
* ``keep(graph)``: what to keep of the graph before the passes (a language
  model keeps the float graph for its report);
* ``default_pipeline(backend, options)``: the pipeline when ``--passes`` is
  not given; a language model's comes from the target's language-model
  feature (:mod:`nmc.lm.target`);
* ``reports(...)``: the reports after lowering: the fidelity check
  (:mod:`.fidelity_check`) for a network, ``reports/lm.json`` for a language
  model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nmc.errors import OptionError
from nmc.lm import evaluate as E
from nmc.lm.report import lm_report, placement_only, read_text
from nmc.lm.target import language_model

from . import fidelity_check as F


class Network:
    """Any spiking / event-driven network: .npz calibration, the target's pipeline, the fidelity check."""

    name = "network"

    def claims(self, graph) -> bool:
        return True

    def text_calibration(self, graph, path) -> dict:
        raise OptionError("a .txt calibration file is for language models", path=str(path),
                          hint="pass an .npz of input arrays")

    def keep(self, graph):
        return None

    def default_pipeline(self, backend, options: dict) -> str:
        return backend.default_pipeline(options)

    def reports(self, kept, graph, program, backend, *, spec, target: str, data, seed: int, options: dict,
                fidelity_check: bool, strict: bool, warnings, progress) -> dict:
        if not fidelity_check:
            return {}
        if progress:
            progress("fidelity check")
        report, findings = F.check(graph, program, backend, target, data, seed)
        F.enforce(findings, strict, warnings)
        return {"fidelity": report}


class LanguageModel(Network):
    """An EGRU language model (``lm`` in the graph's meta, set by ``nmc.nn.EGRULanguageModel``)."""

    name = "language model"

    def claims(self, graph) -> bool:
        return "lm" in graph.meta

    def text_calibration(self, graph, path) -> dict:
        return E.calibration(graph, read_text(path))

    def keep(self, graph):
        return graph.copy()  # the float model, for the report's float stage (nmc.lm.evaluate.graph_logits)

    def default_pipeline(self, backend, options: dict) -> str:
        return language_model(backend).default_pipeline(backend, options)

    def reports(self, kept, graph, program, backend, *, spec, target: str, data, seed: int, options: dict,
                fidelity_check: bool, strict: bool, warnings, progress) -> dict:
        lmt = language_model(backend)
        if not options.get("eval_text"):
            return {"lm": placement_only(program, lmt)}
        if progress:
            progress("lm report")
        path = Path(str(options["eval_text"]))
        options["eval_text"] = path.name

        def run(tok, record):
            V = int(E.lm_meta(graph)["vocab"])
            return backend.device(backend.default_device, program).run(
                {graph.inputs[0]: E.one_hot(tok, V).astype(np.float32)}, record=record)

        return {"lm": lm_report(kept, graph, program, run, read_text(path), spec=spec, source=path.name,
                                max_chars=int(options.get("eval_chars") or 4000),
                                streams=int(options.get("eval_streams") or 4), target=lmt)}


NETWORK = Network()
#: the kinds tried in order before :data:`NETWORK`
KINDS = (LanguageModel(),)


def model_kind(graph) -> Network:
    return next((k for k in KINDS if k.claims(graph)), NETWORK)
