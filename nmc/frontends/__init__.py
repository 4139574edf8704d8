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
import numpy as np

from nmc.errors import InputFileError, NmcError, UnsupportedNodeError
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


#: largest scipy-sparse parameter accepted from an in-memory graph (made dense: the graph, its
#: files and the simulators keep parameters as dense arrays; zeros stay zeros)
MAX_DENSE_PARAM_BYTES = 2 * 2 ** 30


def _dense_params(g: Graph) -> Graph:
    """scipy-sparse parameters (weights built with scipy.sparse) → dense arrays, or a typed error
    naming the node when the dense array would be too large."""
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return g
    import copy

    for name, node in list(g.nodes.items()):
        for field, v in list(vars(node).items()):
            if not sp.issparse(v):
                continue
            if g.nodes[name] is node:   # never modify the caller's node objects
                node = g.nodes[name] = copy.copy(node)
            need = 8 * int(np.prod(v.shape))
            if need > MAX_DENSE_PARAM_BYTES:
                from nmc.errors import ShapeError

                raise ShapeError(f"scipy-sparse {field} of shape {tuple(v.shape)} would need "
                                 f"{need / 2 ** 30:.1f} GiB as the dense array nmc's graph keeps", node=name,
                                 limit=f"{MAX_DENSE_PARAM_BYTES / 2 ** 30:.0f} GiB",
                                 actual=f"{need / 2 ** 30:.1f} GiB",
                                 hint="split the layer into smaller ones (each target's per-core limits bound "
                                      "it anyway), or give a dense array")
            setattr(node, field, np.asarray(v.toarray(), dtype=np.float64))
    return g


def _check_nir_nodes(g: nir.NIRGraph, prefix: str = "") -> None:
    """Every node of an in-memory NIR graph is a NIR node (exporters leave ``None`` for modules they
    cannot convert: Norse ≤ 1.1.0's to_nir does so for nn.Flatten and pooling layers)."""
    from nmc.errors import GraphError

    for name, node in g.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _check_nir_nodes(node, f"{prefix}{name}.")
        elif not isinstance(node, nir.NIRNode):
            raise GraphError(f"node is {type(node).__name__}, not a NIR node: the exporter could not convert "
                             "that module (Norse <= 1.1.0's to_nir leaves None for nn.Flatten, pooling and any "
                             "module it does not know)", node=f"{prefix}{name}",
                             hint="export without that module (e.g. a strided conv instead of pooling), or "
                                  "compile the PyTorch module itself (nmc's torch frontend reads it)")


def load_model(model: Any, *, trust_pickle: bool = False, input_shape=None, data: dict | None = None,
               options: dict | None = None) -> tuple[Graph, dict]:
    """Load ``model`` into a Graph. ``data`` (calibration inputs) and ``options``
    (compile options) reach frontends that convert with data (ONNX).

    Every loaded graph passes :meth:`Graph.check_loaded` here, whatever the
    frontend: parameters real and finite, shapes whole and bounded, bias and
    per-neuron lengths matching, dt > 0 (typed errors naming the node)."""
    g, source = _load(model, trust_pickle=trust_pickle, input_shape=input_shape, data=data, options=options)
    try:
        g.check_loaded()
    except NmcError as e:
        if e.path is None and source.get("kind") == "file":
            e.path = str(model)
        raise
    return g, source


def _load(model: Any, *, trust_pickle: bool, input_shape, data: dict | None,
          options: dict | None) -> tuple[Graph, dict]:
    if isinstance(model, Graph):
        return _dense_params(model.copy()), {"kind": "graph"}
    if isinstance(model, nir.NIRGraph):
        _check_nir_nodes(model)
        return _dense_params(Graph.from_nir(model)), {"kind": "nir-object"}
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
