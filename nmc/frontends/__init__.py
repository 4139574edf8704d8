"""Frontends: turn a user's model (file or object) into an nmc :class:`Graph`.

``load_model(model, **opts) -> (Graph, source)`` dispatches on the file suffix
or object type; ``source`` describes what was read (kind, path, sha256) for the
bundle manifest. Untrusted pickles are refused unless ``trust_pickle``.

| input                         | frontend                         |
|-------------------------------|----------------------------------|
| ``.nir`` ``.h5`` ``.hdf5``    | :mod:`nmc.frontends.nir_file`    |
| ``.pt`` ``.pth`` ``.pt2``     | :mod:`nmc.frontends.torch`       |
| ``.onnx``                     | :mod:`nmc.frontends.onnx`        |
| Graph / nir.NIRGraph / nn.Module | in-memory                     |
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nir

from nmc.errors import InputFileError, UnsupportedNodeError
from nmc.ir import Graph

NIR_SUFFIXES = (".nir", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
ONNX_SUFFIXES = (".onnx",)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(model: Any, *, trust_pickle: bool = False, input_shape=None, data: dict | None = None,
               options: dict | None = None) -> tuple[Graph, dict]:
    """Load ``model`` into a Graph. ``data`` (calibration inputs) and ``options``
    (compile options) reach frontends that convert with data (ONNX)."""
    if isinstance(model, Graph):
        return model.copy(), {"kind": "graph"}
    if isinstance(model, nir.NIRGraph):
        return Graph.from_nir(model), {"kind": "nir-object"}
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.exists():
            raise InputFileError("model file not found", path=p, hint="check the path")
        if p.is_dir():
            raise InputFileError("is a directory, expected a model file (.nir, .pt, .pt2, .onnx)", path=p)
        src = {"kind": "file", "path": p.name, "sha256": sha256_file(p)}
        suf = p.suffix.lower()
        if suf in NIR_SUFFIXES:
            from nmc import serialize

            return serialize.read(p), {**src, "format": "nir"}
        if suf in TORCH_SUFFIXES:
            from . import torch as tfront

            g = tfront.load_file(p, trust_pickle=trust_pickle, input_shape=input_shape)
            return g, {**src, "format": "torch"}
        if suf in ONNX_SUFFIXES:
            try:
                from . import onnx as ofront
            except ImportError:
                raise UnsupportedNodeError("ONNX models are not supported by this version of nmc", path=p,
                                           hint="export the model to NIR, or save it with nmc.save") from None
            g, report = ofront.load_file(p, data=data, options=options)
            return g, {**src, "format": "onnx", "conversion": report}
        raise InputFileError(f"unknown model file type '{p.suffix}'", path=p,
                             hint="use a .nir/.h5 NIR file, a .pt/.pt2 PyTorch file or an .onnx file")
    try:
        import torch.nn as tnn
    except ImportError:  # pragma: no cover
        tnn = None
    if tnn is not None and isinstance(model, tnn.Module):
        from . import torch as tfront

        return tfront.from_module(model, input_shape=input_shape), {"kind": "module", "class": type(model).__name__}
    raise InputFileError(f"cannot compile an object of type {type(model).__name__}",
                         hint="pass a file path, an nmc Graph, a nir.NIRGraph or a torch.nn.Module")
