"""Corpus splits by work, character vocabulary, and the typed errors when the
corpus is missing (nothing is downloaded at run time)."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.errors import InputFileError, ShapeError
from nmc.lm.corpus import CharVocab, load_works, split_by_work


def _corpus(tmp_path, names):
    for i, n in enumerate(names):
        (tmp_path / f"{n}_gut.txt").write_text(f"{n.upper()}\nline {i} of {n}.\n")
    (tmp_path / "macbeth_gut_f.txt").write_text("folio spelling: not a work of the split\n")
    return tmp_path


def test_split_by_work_keeps_held_out_works_out_of_training(tmp_path):
    d = _corpus(tmp_path, ["hamlet", "tempest", "macbeth", "twelfth_night", "lear", "othello"])
    works = load_works(d)
    assert sorted(works) == ["hamlet", "lear", "macbeth", "othello", "tempest", "twelfth_night"]
    s = split_by_work(works)
    assert "HAMLET" in s["validation"] and "TEMPEST" in s["validation"]
    assert "MACBETH" in s["test"] and "TWELFTH_NIGHT" in s["test"]
    assert "LEAR" in s["train"] and "OTHELLO" in s["train"]
    for held in ("HAMLET", "TEMPEST", "MACBETH", "TWELFTH_NIGHT", "folio"):
        assert held not in s["train"]


def test_missing_corpus_and_missing_held_out_work_are_typed_errors(tmp_path):
    with pytest.raises(InputFileError, match=r"\.ci/setup"):
        load_works(tmp_path / "nowhere")
    works = load_works(_corpus(tmp_path, ["hamlet", "tempest", "lear"]))
    with pytest.raises(InputFileError, match="macbeth"):
        split_by_work(works)


def test_char_vocab_round_trip_and_unknown_characters():
    v = CharVocab.from_text("to be, or not to be\n")
    assert v.chars == "\n ,benort"
    ids = v.encode("not to be")
    assert ids.dtype == np.int64 and v.decode(ids) == "not to be"
    with pytest.raises(ShapeError, match="'Z'"):
        v.encode("Zounds")
    with pytest.raises(ShapeError):
        v.decode([len(v)])
