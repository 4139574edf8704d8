"""Bundles: the compiled artefact, a directory.

::

    model.nmc/
      manifest.json     nmc version, target, options, pipeline, source model sha256,
                        sha256 and size of every other file
      graph.nir         the compiled graph (nmc NIR HDF5, annotations included)
      hw.json           the hardware spec used (with overrides), when the target has one
      program/...       the backend's program files (native scripts, arrays, kernels)
      reports/*.json    one report per pass/lowering step, plus compile.json (warnings);
                        a ``ctx.reports`` value that is ``bytes`` is written as-is under its
                        key as file name (binary reports, e.g. ``placement.png``)

Bundles are deterministic: the same model, options and seed give the same
bytes (sorted JSON, HDF5 without timestamps, no wall-clock times in files).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import __version__
from .errors import InputFileError
from .ir import Graph

MANIFEST = "manifest.json"
FORMAT = 1


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


class Bundle:
    def __init__(self, files: dict[str, bytes], manifest: dict, path: Path | None = None):
        self.files = files
        self.manifest = manifest
        self.path = path
        self._graph: Graph | None = None
        self._program = None

    # ---------------------------------------------------------- creation
    @classmethod
    def create(cls, *, graph: Graph, target: str, options: dict, pipeline: str, source: dict,
               program_files: dict[str, bytes], reports: dict[str, Any], hw: dict | None) -> "Bundle":
        from . import serialize

        buf = io.BytesIO()
        serialize.write(buf, graph)
        files: dict[str, bytes] = {"graph.nir": buf.getvalue()}
        if hw is not None:
            files["hw.json"] = dumps_json(hw)
        for k, v in program_files.items():
            files[f"program/{k}"] = v
        for k, v in reports.items():
            if isinstance(v, (bytes, bytearray)):   # binary report (e.g. a PNG plot): its key is the file name
                files[f"reports/{k}"] = bytes(v)
            else:
                files[f"reports/{k}.json"] = dumps_json(v)
        manifest = {
            "format": FORMAT,
            "nmc_version": __version__,
            "target": target,
            "options": {k: v for k, v in sorted(options.items()) if v is not None},
            "pipeline": pipeline,
            "source": source,
            "inputs": {k: list(graph.shape_out(k)) for k in graph.inputs},
            "outputs": {k: list(graph.shape_in(k)) for k in graph.outputs},
            "files": {k: {"sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in sorted(files.items())},
        }
        b = cls(files, manifest)
        b._graph = graph
        return b

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        if p.exists():
            if not p.is_dir() or (any(p.iterdir()) and not (p / MANIFEST).exists()):
                raise InputFileError("output exists and is not an nmc bundle; refusing to overwrite", path=p,
                                     hint="choose another -o path or delete it")
            shutil.rmtree(p)
        for rel, data in self.files.items():
            f = p / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        (p / MANIFEST).write_bytes(dumps_json(self.manifest))
        self.path = p
        return p

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        p = Path(path)
        mf = p / MANIFEST
        if not p.exists():
            raise InputFileError("bundle not found", path=p, hint="compile one with `nmc compile MODEL -o BUNDLE`")
        if not p.is_dir() or not mf.exists():
            raise InputFileError("not an nmc bundle (no manifest.json)", path=p,
                                 hint="pass the directory written by `nmc compile -o`")
        try:
            manifest = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputFileError(f"manifest.json is corrupt ({e})", path=mf) from None
        files = {}
        for rel, info in manifest.get("files", {}).items():
            f = p / rel
            if not f.exists():
                raise InputFileError("bundle file missing", path=f, hint="recompile the bundle")
            data = f.read_bytes()
            if verify and hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise InputFileError("bundle file does not match its sha256 in manifest.json (modified or corrupt)",
                                     path=f, hint="recompile the bundle")
            files[rel] = data
        return cls(files, manifest, p)

    # ------------------------------------------------------------ access
    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            from . import serialize

            self._graph = serialize.read_bytes(self.files["graph.nir"])
        return self._graph

    def report(self, name: str) -> dict | None:
        data = self.files.get(f"reports/{name}.json")
        return json.loads(data) if data is not None else None

    @property
    def reports(self) -> dict[str, dict]:
        return {k[len("reports/"):-5]: json.loads(v) for k, v in self.files.items()
                if k.startswith("reports/") and k.endswith(".json")}

    @property
    def hw(self) -> dict | None:
        data = self.files.get("hw.json")
        return json.loads(data) if data is not None else None

    def program_files(self) -> dict[str, bytes]:
        return {k[len("program/"):]: v for k, v in self.files.items() if k.startswith("program/")}

    @property
    def backend(self):
        from nmc.backends import get_backend

        return get_backend(self.target)

    @property
    def program(self):
        if self._program is None:
            self._program = self.backend.load_program(self.program_files(), self.graph)
        return self._program

    def device(self, name: str | None = None, **opts):
        be = self.backend
        return be.device(name or be.default_device, self.program, **opts)

    def run(self, inputs, steps: int | None = None, device: str | None = None, record: Iterable[str] = (),
            **device_opts) -> dict[str, np.ndarray]:
        """Run on a device (default: the target's emulator). ``inputs``:
        ``{input node: (T[, B], *shape)}``; returns ``{output node: ...}`` plus
        ``<node>.<var>`` arrays for recorded nodes."""
        return self.device(device, **device_opts).run(inputs, steps=steps, record=record)

    def evaluate(self, data, labels=None, *, workers: int = 1, address: str | None = None,
                 device: str | None = None, samples: int | None = None):
        """Run on a data set (``{input: (T, B, *shape)}`` or an .npz path), the samples sharded
        across ``workers`` Ray workers (1: in this process); outputs equal a single-process run.
        Returns :class:`nmc.distributed.evaluate.Evaluation` (outputs, predictions, accuracy)."""
        from .distributed.evaluate import evaluate

        return evaluate(self, data, labels, workers=workers, address=address, device=device, samples=samples)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Deterministic .npz bytes: sorted keys, fixed zip timestamps, no compression,
    no pickles. A '/' in a key is stored as '__' (zip member names stay flat)."""
    import zipfile

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
