"""A learnable synthetic text for the language-model tests (nothing downloads)."""
from __future__ import annotations

import numpy as np

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question"]


def corpus(n_words: int, seed: int) -> str:
    """Words from a small lexicon, a likely successor per word (p = 0.7), seeded."""
    rng = np.random.default_rng(seed)
    out, w = [], 0
    for _ in range(n_words):
        w = (w + 1) % len(WORDS) if rng.random() < 0.7 else int(rng.integers(len(WORDS)))
        out.append(WORDS[w] + ("\n" if rng.random() < 0.15 else " "))
    return "".join(out)
