"""Streaming tokens through a compiled EGRU language model, one token at a time.

:class:`TokenStream` keeps the model's state between tokens: ``feed(token)``
returns the logits (V,) predicting the next token; ``generate`` primes with a
prompt and samples (or, with ``temperature=0``, takes the most likely token)
one token at a time, each fed back as the next input.

Engines are a target feature (``engines`` and ``engine(name, bundle)`` of
:mod:`nmc.lm.target`): any target has ``reference`` (the float64 reference
simulator on the bundle's graph); SpiNNaker 2 adds ``emulator`` (its default:
the emulator's arithmetic, bit-equal to ``nmc run``'s aligned outputs on the
same tokens) and ``c`` (the generated per-PE C kernels built with the host
compiler, bit-equal to the emulator), see :mod:`nmc.backends.spinnaker2.lm`.

Timing: every :meth:`TokenStream.feed` is timed on the host's monotonic clock
(``time.perf_counter``); :meth:`TokenStream.timing` gives tokens per second and the
latency per token (p50/p99) of the engine since the last :meth:`reset` —
``nmc run --text`` prints it. These are host figures of the engine, not of a chip.

The decoder runs on the host (float64). A chip pipelines layers (token t's
logits leave ``latency`` ticks after it enters); generation feeds back each
sampled token, so on the board it would wait those ticks per token.
"""
from __future__ import annotations

import time

import numpy as np

from nmc.errors import OptionError

from . import evaluate as E
from .target import language_model


class TokenStream:
    def __init__(self, bundle, engine: str | None = None):
        self.b = bundle
        self.meta = E.lm_meta(bundle.graph)
        self.V = int(self.meta["vocab"])
        target = language_model(bundle.backend)
        self.engine = engine or target.engines[0]
        self.runner = target.engine(self.engine, bundle)
        self.latencies: list[float] = []

    def reset(self) -> None:
        self.runner.reset()
        self.latencies = []

    def feed(self, token: int) -> np.ndarray:
        """Advance one step with ``token``; the logits (V,) for the next token (float64)."""
        x = E.one_hot(np.array([int(token)]), self.V)  # (1, V) in
        t0 = time.perf_counter()
        out = self.runner.feed(x)
        self.latencies.append(time.perf_counter() - t0)
        return out

    def timing(self) -> dict:
        """Tokens fed since :meth:`reset` (or creation), their total engine time, tokens per second
        and the latency per token (one :meth:`feed`: the engine's step and the host decoder) at
        the 50th and 99th percentiles (``np.percentile``, linear interpolation), in seconds."""
        lat = np.asarray(self.latencies, float)
        total = float(lat.sum())
        return {"engine": self.engine, "tokens": int(lat.size), "seconds": total,
                "tokens_per_s": float(lat.size / total) if total > 0 else float("nan"),
                "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                "latency_p99_s": float(np.percentile(lat, 99)) if lat.size else float("nan")}

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
