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

Integrity (see SECURITY.md): the manifest lists every file with its sha256
and size; ``files`` entries are relative paths inside the bundle (no ``..``,
no absolute path, nothing resolving outside it). The program records the
digest of the graph it was lowered from (``program/graph.sha256``, and
``graph_sha256`` in the manifest); :meth:`Bundle.load` checks both against
the sha256 of ``graph.nir``, so a swapped graph is refused. These are
consistency checks, not signatures: whoever can rewrite every file can forge
a bundle.

Writing (:meth:`Bundle.write`) goes to a temporary sibling directory that is
renamed into place, so a failed compile leaves nothing behind. An existing
path is replaced only when it is an empty directory or verifiably an nmc
bundle: its manifest has this format and lists exactly the files present. A
bundle holding any other file (a user's notes, a web app with its own
``manifest.json``) is refused, never deleted.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from nmc import __version__, serialize
from nmc.backends import get_backend
from nmc.errors import InputFileError
from nmc.filebytes import dumps_json
from nmc.ir import Graph

MANIFEST = "manifest.json"
FORMAT = 2          # 2: graph digest recorded by the program (program/graph.sha256, manifest graph_sha256)
GRAPH = "graph.nir"
GRAPH_DIGEST = "program/graph.sha256"


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
        buf = io.BytesIO()
        serialize.write(buf, graph)
        files: dict[str, bytes] = {GRAPH: buf.getvalue()}
        graph_sha = hashlib.sha256(files[GRAPH]).hexdigest()
        if hw is not None:
            files["hw.json"] = dumps_json(hw)
        for k, v in program_files.items():
            files[f"program/{k}"] = v
        files[GRAPH_DIGEST] = (graph_sha + "\n").encode()   # the graph this program was lowered from
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
            "graph_sha256": graph_sha,
            "inputs": {k: list(graph.shape_out(k)) for k in graph.inputs},
            "outputs": {k: list(graph.shape_in(k)) for k in graph.outputs},
            # graph.nir's digest once (it is the largest file at 10⁸ synapses): the one computed above
            "files": {k: {"sha256": graph_sha if k == GRAPH else hashlib.sha256(v).hexdigest(), "bytes": len(v)}
                      for k, v in sorted(files.items())},
        }
        b = cls(files, manifest)
        b._graph = graph
        return b

    def write(self, path: str | Path) -> Path:
        """Write the bundle to ``path`` atomically (temporary sibling, then rename).

        ``path`` may be absent, an empty directory or an nmc bundle that holds
        exactly its manifest's files; anything else raises :class:`InputFileError`
        and is left untouched."""
        p = Path(path)
        _check_replaceable(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
        except OSError as e:
            raise InputFileError(f"cannot create the output's directory ({e.strerror or e})", path=p.parent,
                                 hint="choose an -o path whose parent is a writable directory") from None
        old = None
        try:
            for rel, data in self.files.items():
                f = tmp / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            (tmp / MANIFEST).write_bytes(dumps_json(self.manifest))
            os.chmod(tmp, 0o777 & ~_umask())      # mkdtemp makes it 0700; a bundle is an ordinary directory
            if p.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
                os.rename(p, old / "b")
            os.rename(tmp, p)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and (old / "b").exists() and not p.exists():
                os.rename(old / "b", p)           # put the previous bundle back
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self.path = p
        return p

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        p = Path(path)
        mf = p / MANIFEST
        if not p.exists():
            raise InputFileError("bundle not found", path=p, hint="compile one with `nmc compile MODEL -o BUNDLE`")
        if not p.is_dir() or not mf.is_file():
            raise InputFileError("not an nmc bundle (no manifest.json)", path=p,
                                 hint="pass the directory written by `nmc compile -o`")
        manifest = read_manifest(mf)
        files = {}
        for rel, info in manifest["files"].items():
            f = p / rel
            if not _inside(p, rel):
                raise InputFileError(f"bundle file '{rel}' resolves outside the bundle (a symlink?)", path=f,
                                     hint="recompile the bundle")
            if not f.is_file():
                raise InputFileError("bundle file missing", path=f, hint="recompile the bundle")
            if verify and f.stat().st_size != info["bytes"]:
                raise InputFileError("bundle file size does not match manifest.json (modified or corrupt)", path=f,
                                     limit=info["bytes"], actual=f.stat().st_size, hint="recompile the bundle")
            data = f.read_bytes()
            if verify and hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise InputFileError("bundle file does not match its sha256 in manifest.json (modified or corrupt)",
                                     path=f, hint="recompile the bundle")
            files[rel] = data
        if verify:
            _check_graph_digest(p, manifest, files)
        return cls(files, manifest, p)

    # ------------------------------------------------------------ access
    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = serialize.read_bytes(self.files[GRAPH])
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
        Returns :class:`nmc.driver.distributed.evaluate.Evaluation` (outputs, predictions, accuracy)."""
        from .distributed.evaluate import evaluate  # the one import up: nmc.driver.distributed sits on the bundle

        return evaluate(self, data, labels, workers=workers, address=address, device=device, samples=samples)



# ------------------------------------------------------------ integrity
def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _bad_manifest(mf, what: str):
    return InputFileError(f"manifest.json {what}", path=mf, hint="recompile the bundle")


def read_manifest(mf: Path) -> dict:
    """Parse and check a manifest: an object whose ``files`` is a non-empty map of
    safe relative paths (:func:`safe_relpath`) to ``{"sha256": hex, "bytes": int}``,
    including ``graph.nir``."""
    try:
        manifest = json.loads(mf.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputFileError(f"manifest.json is corrupt ({type(e).__name__}: {str(e)[:80]})", path=mf,
                             hint="recompile the bundle") from None
    if not isinstance(manifest, dict):
        raise _bad_manifest(mf, "is not a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _bad_manifest(mf, f"has no 'files' map (found {type(files).__name__}"
                                f"{' (empty)' if isinstance(files, dict) else ''})")
    for rel, info in files.items():
        safe_relpath(rel, mf)
        if (not isinstance(info, dict) or not isinstance(info.get("sha256"), str)
                or type(info.get("bytes")) is not int or info["bytes"] < 0):
            raise _bad_manifest(mf, f"entry for '{rel[:80]}' is not {{\"sha256\": hex, \"bytes\": size}}")
    if GRAPH not in files:
        raise _bad_manifest(mf, f"does not list {GRAPH}")
    if not isinstance(manifest.get("target"), str):
        raise _bad_manifest(mf, "has no 'target' string")
    return manifest


def safe_relpath(rel, where) -> str:
    """A manifest's file name: a relative POSIX path of plain components inside the bundle."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if (not parts or rel.startswith("/") or "\\" in rel or ":" in rel or "\0" in rel
            or any(c in ("", ".", "..") for c in parts) or rel == MANIFEST):
        raise InputFileError(f"manifest.json names the file {str(rel)[:80]!r}, which is not a plain relative path "
                             "inside the bundle", path=where, hint="recompile the bundle")
    return rel


def _inside(p: Path, rel: str) -> bool:
    root = p.resolve()
    return (p / rel).resolve().is_relative_to(root)


def _check_graph_digest(p: Path, manifest: dict, files: dict[str, bytes]) -> None:
    if manifest.get("format") != FORMAT:
        raise InputFileError(f"bundle format {str(manifest.get('format'))[:20]} is not this nmc's ({FORMAT})",
                             path=p / MANIFEST, hint="recompile the bundle with this nmc")
    sha = hashlib.sha256(files[GRAPH]).hexdigest()
    recorded = files.get(GRAPH_DIGEST, b"").decode("ascii", "replace").strip()
    if recorded != sha or manifest.get("graph_sha256") != sha:
        raise InputFileError(f"{GRAPH} is not the graph the program was lowered from (its sha256 {sha[:16]}… differs "
                             f"from the program's recorded {recorded[:16] or 'nothing'}…)", path=p / GRAPH,
                             hint="the graph was swapped or the bundle mixed up; recompile the bundle")


def _check_replaceable(p: Path) -> None:
    """May ``Bundle.write`` replace ``p``? Absent, an empty directory, or an nmc bundle
    whose manifest lists exactly the files present (nothing a user added)."""
    if not p.exists() and not p.is_symlink():
        return
    hint = "choose another -o path, or move the directory away"
    if p.is_symlink() or not p.is_dir():
        raise InputFileError("output exists and is not an nmc bundle directory; refusing to overwrite", path=p,
                             hint=hint)
    try:
        present = {f.relative_to(p).as_posix() for f in p.rglob("*") if not f.is_dir() or f.is_symlink()}
    except OSError as e:
        raise InputFileError(f"cannot list the existing output ({e.strerror or e})", path=p, hint=hint) from None
    if not present:
        return
    mf = p / MANIFEST
    try:
        manifest = read_manifest(mf) if mf.is_file() and not mf.is_symlink() else None
    except InputFileError:
        manifest = None
    if manifest is None or manifest.get("format") not in (1, FORMAT) or "nmc_version" not in manifest:
        raise InputFileError("output exists and is not an nmc bundle (no nmc manifest.json); refusing to "
                             "overwrite", path=p, hint=hint)
    listed = set(manifest["files"]) | {MANIFEST}
    extra = sorted(present - listed)
    if extra:
        raise InputFileError(f"output is an nmc bundle but also holds {len(extra)} file(s) it did not write "
                             f"(e.g. '{extra[0]}'); refusing to delete them", path=p,
                             hint="move those files out of the bundle, or choose another -o path")
    missing = sorted(listed - present)
    if missing:
        raise InputFileError(f"output looks like an nmc bundle but lacks '{missing[0]}' from its manifest; "
                             "refusing to overwrite what may not be a bundle", path=p, hint=hint)
