"""``results.jsonl``: one JSON object per line, appended as points finish.

Every record is written as one whole line and fsync'd before the next, so a
crash or Ctrl-C leaves at most one torn line at the end. :meth:`ResultsFile.open`
reads what is there, cuts a torn last line off (the bytes after the last
newline, or a last line that is not JSON) and appends after it; a bad line in
the middle is corruption and refused, naming the line.

A record: ``key`` (the point's identity, a sha256), ``status`` (``ok``: compiled
and evaluated; ``no_fit``: a design rule failed, named in ``rule``; ``failed``: the
compile or run raised, ``error`` says what; ``crashed``: its worker died on every
attempt). ``ok``, ``no_fit`` and ``failed`` points are done (they would end the
same again); a ``crashed`` point is tried again by a re-run. A later record of a
key replaces an earlier one.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from nmc.errors import InputFileError

STATUSES = ("ok", "no_fit", "failed", "crashed")
DONE = ("ok", "no_fit", "failed")


class ResultsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}   # key -> latest record
        self.dropped_torn = False
        self._fh = None

    def open(self) -> "ResultsFile":
        """Read the existing records (cutting a torn last line), then open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            if not self.path.is_file():
                raise InputFileError("results path is not a file", path=self.path)
            data = self.path.read_bytes()
            keep = self._parse(data)
            if keep != len(data):
                self.dropped_torn = True
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
                    f.flush()
                    os.fsync(f.fileno())
        self._fh = open(self.path, "ab")
        return self

    def _parse(self, data: bytes) -> int:
        """Load records; return the byte length of the valid prefix."""
        pos, n = 0, 0
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last:  # bytes after the final newline: a torn write (or nothing)
                break
            rec = _record(line)
            if rec is None:
                if i == len(lines) - 2 and not lines[-1]:  # the final complete line is garbage: torn too
                    break
                raise InputFileError(f"line {i + 1} is not a results record (corrupt file)", path=self.path,
                                     hint="delete the bad line, or sweep into a new -o folder")
            self.records[rec["key"]] = rec
            pos += len(line) + 1
            n += 1
        return pos

    def append(self, record: dict) -> None:
        line = json.dumps(_clean(record), sort_keys=True, allow_nan=False) + "\n"
        self._fh.write(line.encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[record["key"]] = record

    def done(self) -> set[str]:
        return {k for k, r in self.records.items() if r.get("status") in DONE}

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


def _record(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or rec.get("status") not in STATUSES:
        return None
    return rec


def _clean(o):
    """NaN/inf become null (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def read(path: str | Path) -> list[dict]:
    """The latest record of every key in a results file (read-only; a torn last line is skipped)."""
    rf = ResultsFile(path)
    if rf.path.exists():
        rf._parse(rf.path.read_bytes())
    return list(rf.records.values())
