"""Streaming tokens through a compiled EGRU language model, one token at a time.

:class:`TokenStream` keeps the model's state between tokens: ``feed(token)``
returns the logits (V,) predicting the next token; ``generate`` primes with a
prompt and samples (or, with ``temperature=0``, takes the most likely token)
one token at a time, each fed back as the next input.

Engines:

* ``emulator`` (SpiNNaker 2): every EGRU population stepped with the
  emulator's arithmetic (:func:`nmc.backends.spinnaker2.egru.step_batch`),
  layer after layer within a token — bit-equal to ``nmc run``'s aligned
  outputs on the same tokens;
* ``c`` (SpiNNaker 2): the generated per-PE C kernels built with the host
  compiler (:mod:`nmc.backends.spinnaker2.ckernels`) — bit-equal to the
  emulator;
* ``reference``: the float64 reference simulator (any target's graph).

The decoder runs on the host (float64). A chip pipelines layers (token t's
logits leave ``latency`` ticks after it enters); generation feeds back each
sampled token, so on the board it would wait those ticks per token.
"""
from __future__ import annotations

import numpy as np

from nmc.errors import OptionError

from . import evaluate as E

ENGINES = ("emulator", "c", "reference")


class TokenStream:
    def __init__(self, bundle, engine: str | None = None):
        self.b = bundle
        self.meta = E.lm_meta(bundle.graph)
        self.V = int(self.meta["vocab"])
        engine = engine or ("emulator" if bundle.target == "spinnaker2" else "reference")
        if engine not in ENGINES:
            raise OptionError(f"unknown engine {engine!r}", hint=f"engines: {', '.join(ENGINES)}")
        if engine in ("emulator", "c") and bundle.target != "spinnaker2":
            raise OptionError(f"engine '{engine}' needs a spinnaker2 bundle, this one is for '{bundle.target}'",
                              hint="use engine 'reference' or recompile with --target spinnaker2")
        self.engine = engine
        if engine == "c":
            from nmc.backends.spinnaker2.ckernels import CKernels

            self.ck = CKernels(bundle.program)
        self.reset()

    def reset(self) -> None:
        if self.engine == "c":
            self.ck.reset()
        elif self.engine == "emulator":
            prog = self.b.program
            self.pops = [p for p in prog.populations if p.model == "egru_kernel"]
            self.state = {p.name: (np.zeros((1, p.size), np.float32), np.zeros((1, p.size), np.float32))
                          for p in self.pops}
        else:
            from nmc.reference import ReferenceSimulator

            self.sim = ReferenceSimulator(self.b.graph)
            self.sim.reset(1)

    def feed(self, token: int) -> np.ndarray:
        """Advance one step with ``token``; the logits (V,) for the next token (float64)."""
        x = E.one_hot(np.array([int(token)]), self.V)  # (1, V)
        if self.engine == "reference":
            import torch

            outs, _ = self.sim.step({self.b.graph.inputs[0]: torch.as_tensor(x)})
            return np.asarray(outs[self.b.graph.outputs[0]]).reshape(-1).astype(np.float64)
        prog = self.b.program
        (o, last), = prog.outputs.items()
        if self.engine == "c":
            ys = self.ck.step({prog.inputs[k]: x[0].astype(np.float32) for k in prog.inputs})
            return prog.read_out(o, ys[last][None, :])[0]
        from nmc.backends.spinnaker2.egru import step_batch

        cur = {prog.inputs[k]: x.astype(np.float32) for k in prog.inputs}
        for p in self.pops:
            c, y = self.state[p.name]
            y, c = step_batch(p.kernel, c, cur[p.source], y)
            self.state[p.name] = (c, y)
            cur[p.name] = y
        return prog.read_out(o, cur[last])[0]

    def feed_all(self, tokens) -> np.ndarray:
        """Logits (T, V) after each token of ``tokens``."""
        return np.stack([self.feed(t) for t in np.asarray(tokens).reshape(-1)])

    def generate(self, prompt, n: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
        """Prime with ``prompt`` (token ids, at least one) and return ``n`` generated token ids."""
        prompt = [int(t) for t in np.asarray(prompt).reshape(-1)]
        if not prompt:
            raise OptionError("generation needs a prompt of at least one token", hint='e.g. --text "ROMEO."')
        logits = None
        for t in prompt:
            logits = self.feed(t)
        return self.sample(logits, n, temperature, seed)

    def sample(self, logits: np.ndarray, n: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
        """Continue from the current state, ``logits`` being those of the last token fed."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(int(n)):
            if temperature <= 0:
                nxt = int(np.argmax(logits))
            else:
                z = logits / temperature
                p = np.exp(z - z.max())
                nxt = int(rng.choice(self.V, p=p / p.sum()))
            out.append(nxt)
            logits = self.feed(nxt)
        return out
