"""Deterministic bytes of the files nmc writes: sorted JSON (:func:`dumps_json`)
and .npz archives (:func:`npz_bytes`, read back by :func:`npz_load`).

Foundation layer: bundles (:mod:`nmc.driver.bundle`), the backends' program
files and the runtime's output arrays all write through these, so the same
values give the same bytes everywhere.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def dumps_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Deterministic .npz bytes: sorted keys, fixed zip timestamps, no compression,
    no pickles. A '/' in a key is stored as '__' (zip member names stay flat)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for k in sorted(arrays):
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asarray(arrays[k]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(k.replace("/", "__") + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), b.getvalue())
    return buf.getvalue()


def npz_load(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`npz_bytes` ('__' back to '/')."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k.replace("__", "/"): z[k] for k in z.files}
