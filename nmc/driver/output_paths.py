"""Checks on where a command writes, before it reads or computes anything.

Every command that writes (``compile -o/--dump-ir``, ``run -o``, ``eval -o``,
``profile -o/--fit``, ``stream -o``) calls :func:`check_output` with the paths it
reads. Refused with :class:`~nmc.errors.InputFileError` naming the path:

* an output that is one of the inputs (the same path, a symlink or hard link to
  it), lies inside an input directory (a bundle), or is a directory containing
  an input — writing it would overwrite or delete what the command reads;
* an output under a path component that is a regular file (``out.npz/x.nmc``);
* for file outputs: a directory, or a parent folder that does not exist.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from nmc.errors import InputFileError


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output, inputs: Iterable = (), *, option: str = "-o", kind: str = "file") -> None:
    """Refuse writing ``output`` (``kind`` ``file`` or ``dir``) where it would clobber one
    of ``inputs`` (paths; None entries ignored) or cannot be created."""
    if output is None:
        return
    out = Path(output)
    ro = _real(out)
    for anc in [ro, *ro.parents]:
        if anc.exists() and not anc.is_dir() and anc != ro:
            raise InputFileError(f"cannot write {option} here: '{anc}' is a file, not a folder", path=out,
                                 hint=f"pass an {option} path whose folders exist")
    for src in inputs:
        if src is None or isinstance(src, dict):
            continue
        s = Path(src)
        rs = _real(s)
        clash = (ro == rs or _same_file(out, s)) and "is the input" \
            or (rs.is_dir() and ro.is_relative_to(rs)) and "lies inside the input" \
            or (kind == "dir" and rs.is_relative_to(ro)) and "is a folder containing the input"
        if clash:
            raise InputFileError(f"{option} {clash} '{s}'; writing it would overwrite what this command reads",
                                 path=out, hint=f"choose another {option} path")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise InputFileError(f"cannot write {option} here: it is a file, expected a folder", path=out,
                             hint=f"choose another {option} path or delete the file")
    if kind == "file":
        if out.is_dir():
            raise InputFileError(f"cannot write {option} here: it is a directory", path=out,
                                 hint="pass a file path like out.npz")
        if not out.parent.is_dir():
            raise InputFileError(f"cannot write {option} here: its folder does not exist", path=out,
                                 hint="create the folder first or pass another path")
