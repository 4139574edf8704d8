"""What a target does for language models: a feature a backend declares, never a branch on its name.

A backend object may carry ``language_model``, a :class:`LanguageModelTarget`
(SpiNNaker 2's is :class:`nmc.backends.spinnaker2.lm.S2LanguageModels`). The
driver asks :func:`language_model` for it and calls its hooks:

* ``default_pipeline(backend, options)``: the pass pipeline an EGRU language
  model compiles with when ``--passes`` is not given;
* ``engines`` / ``engine(name, bundle)``: the host engines ``nmc run LM.nmc
  --text ...`` streams tokens through (:mod:`nmc.lm.host`), first the default;
* ``quantized_logits``, ``chip_macs``, ``placement``: the target's parts of
  the LM report (:mod:`nmc.lm.report`).

A target without its own (this base class) compiles a language model with its
ordinary pipeline, streams tokens through the float64 reference simulator, and
reports no quantized stage and no chip placement.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from nmc.errors import OptionError
from nmc.reference import ReferenceSimulator


class TokenEngine:
    """Steps a compiled language model one token at a time, its state kept between tokens.
    An engine keeps its bundle (graph and program) and starts from :meth:`reset`."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.reset()

    @property
    def graph(self):
        return self.bundle.graph

    @property
    def prog(self):
        return self.bundle.program

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def feed(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """One step on the one-hot input ``x`` (1, V); the logits (V,) in float64."""
        raise NotImplementedError


class ReferenceEngine(TokenEngine):
    """The float64 reference simulator on the bundle's graph (any target)."""

    def reset(self) -> None:
        self.sim = ReferenceSimulator(self.graph)
        self.sim.reset(1)

    def feed(self, x: np.ndarray) -> np.ndarray:
        outs, _ = self.sim.step({self.graph.inputs[0]: torch.as_tensor(x)})
        return np.asarray(outs[self.graph.outputs[0]]).reshape(-1).astype(np.float64)


class LanguageModelTarget:
    """The language-model hooks of a target; this base is what any target does without its own."""

    #: host engines, the default first
    engines: tuple[str, ...] = ("reference",)

    def default_pipeline(self, backend, options: dict) -> str:
        return backend.default_pipeline(options)

    def engine(self, name: str, bundle) -> TokenEngine:
        if name not in self.engines:
            raise OptionError(f"engine '{name}' is not available for target '{bundle.target}'",
                              hint=f"engines for {bundle.target}: {', '.join(self.engines)}")
        return self._engine(name, bundle)

    def _engine(self, name: str, bundle) -> TokenEngine:
        return ReferenceEngine(bundle)

    def quantized_logits(self, program, tok: np.ndarray) -> np.ndarray | None:
        """Logits (L, B, V) of the program's quantized weights with exact nonlinearities, or None
        when the target has no such stage."""
        return None

    def chip_macs(self, program, rd: dict, tok: np.ndarray) -> dict[str, float]:
        """{layer: effective MACs per token on chip} counted from the device run ``rd``; {} without a chip."""
        return {}

    def placement(self, program, rd: dict | None, tok: np.ndarray | None, spec,
                  reports: Mapping[str, dict] | None = None) -> dict:
        """Where the embedding and the decoder run, and the chip's resources and time per token
        (``rd``/``tok``/``spec`` None: what is known without a run)."""
        return {"embedding": "reference simulator (no chip)", "decoder": "reference simulator (no chip)"}


GENERIC = LanguageModelTarget()


def language_model(backend) -> LanguageModelTarget:
    """The backend's language-model support: its ``language_model`` attribute, or :data:`GENERIC`."""
    return getattr(backend, "language_model", None) or GENERIC
