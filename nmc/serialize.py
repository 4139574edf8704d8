"""Read and write nmc graphs as NIR HDF5 files.

Layout: exactly NIR 1.0.8's (``/version``, ``/node`` = the graph with its
``nodes`` and ``edges``), so a pure-NIR graph written here is read by
``nir.read``; plus a ``/nmc`` group NIR ignores::

    /nmc.attrs["format"] = 1
    /nmc/meta            JSON text: graph meta (dt, integrator, reset, ...)
    /nmc/annotations/<node>/<AnnotationClass>/<field>   datasets (arrays) or
                                                        JSON text (scalars, dicts)

Extension nodes are written under ``/node/nodes/<name>`` with type
``nmc.<Class>``; NIR's reader fails on them, nmc's reads them.

Writes are deterministic (no HDF5 timestamps, fixed compression: gzip level 4
with shuffle, none for arrays of :data:`RAW_MIN_ELEMENTS` or more), so the same
graph gives the same bytes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import h5py
import nir
import numpy as np

from . import annotations as _ann
from . import plasticity as _plasticity  # noqa: F401  (registers the Plasticity annotation)
from .errors import GraphError, InputFileError, NmcError, UnsupportedNodeError
from .ir import Graph
from .nodes import NIR_NODES, node_class

FORMAT = 1
#: Seconds (plus 1 s per 20 MB) a damaged file may take to read before it counts as hanging.
PROBE_TIMEOUT_S = 30.0


# ------------------------------------------------------------------- write
#: Arrays of at least this many elements are stored without compression (contiguous): gzip with the
#: shuffle filter costs about 25 ns per element on one core and saves 10 % of random float32 weights
#: (60 % of small integers), so a 10⁸-synapse graph's float and integer weights would take ~20 s to
#: write; the program files of the lowering are stored uncompressed as well. 2²² elements (16 MB of
#: float32, a 2,048² layer); smaller arrays keep gzip level 4 + shuffle, so the bytes of a graph
#: without such an array are as before.
RAW_MIN_ELEMENTS = 1 << 22


def _ds(group: h5py.Group, key: str, value: Any) -> None:
    if isinstance(value, str):
        group.create_dataset(key, data=value, dtype=h5py.string_dtype(), track_times=False)
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.flat)):
        # strings (an empty edge list included: h5py cannot guess the type of an empty object array)
        group.create_dataset(key, data=arr.astype(object), dtype=h5py.string_dtype(), track_times=False)
    elif arr.ndim == 0 or arr.size < 16 or arr.size >= RAW_MIN_ELEMENTS:
        group.create_dataset(key, data=arr, track_times=False)
    else:
        group.create_dataset(key, data=arr, compression="gzip", compression_opts=4, shuffle=True,
                             track_times=False)


def _write_dict(group: h5py.Group, d: dict) -> None:
    for k in d:  # insertion order: NIR's to_dict order, stable
        v = d[k]
        if k == "metadata":
            if v:
                _write_dict(group.create_group(k, track_order=True), {kk: _jsonable_or_array(vv) for kk, vv in v.items()})
            continue
        if v is None:
            continue
        if isinstance(v, dict):
            _write_dict(group.create_group(str(k), track_order=True), v)
        else:
            _ds(group, str(k), v)


def _jsonable_or_array(v):
    if isinstance(v, (np.ndarray, str, int, float, bool, np.generic)):
        return v
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return json.dumps(v, sort_keys=True, default=str)


def _node_dict(node: nir.NIRNode) -> dict:
    d = node.to_dict()
    if isinstance(node, nir.NIRGraph):
        d["nodes"] = {k: _node_dict(n) for k, n in node.nodes.items()}
    return d


def write(path: str | Path, graph: Graph) -> None:
    """Write ``graph`` (nodes, edges, extension nodes, annotations, meta) to ``path``."""
    g = nir.NIRGraph(nodes=dict(graph.nodes), edges=list(graph.edges), type_check=False)
    d = _node_dict(g)
    d["edges"] = np.array(graph.edges, dtype=object).reshape(-1, 2) if graph.edges else np.zeros((0, 2), dtype=object)
    d["edges"] = d["edges"].astype(object)
    with h5py.File(path, "w", track_order=True) as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype(), track_times=False)
        _write_dict(f.create_group("node", track_order=True), d)
        m = f.create_group("nmc", track_order=True)
        m.attrs["format"] = FORMAT
        _ds(m, "meta", json.dumps(graph.meta, sort_keys=True))
        # NIR's dicts do not carry the shapes of every node (e.g. AvgPool2d/SumPool2d have no
        # input_type field): keep them all here so a read graph has the shapes it was written with
        shapes = {k: {w: list(v) for w, v in (("in", graph.shape_in(k)), ("out", graph.shape_out(k))) if v is not None}
                  for k in graph.nodes}
        _ds(m, "shapes", json.dumps({k: v for k, v in shapes.items() if v}, sort_keys=True))
        ag = m.create_group("annotations", track_order=True)
        for node in sorted(graph.annotations):
            ng = ag.create_group(node, track_order=True)
            for kind in sorted(graph.annotations[node]):
                a = graph.annotations[node][kind]
                cg = ng.create_group(type(a).__name__, track_order=True)
                for k, v in a.fields().items():
                    if isinstance(v, np.ndarray):
                        _ds(cg, k, v)
                    else:
                        _ds(cg, k, json.dumps({"v": _to_json(v)}, sort_keys=True))


def _to_json(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return {"__tuple__": [_to_json(x) for x in v]}
    if isinstance(v, list):
        return [_to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _to_json(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return {"__array__": v.tolist(), "dtype": str(v.dtype)}
    return v


_JSON_DTYPES = frozenset("bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split())


def _from_json(v):
    if isinstance(v, dict) and "__tuple__" in v:
        return tuple(_from_json(x) for x in v["__tuple__"])
    if isinstance(v, dict) and "__array__" in v:
        if v.get("dtype") not in _JSON_DTYPES:  # a dtype string from the file: allow-listed
            raise InputFileError(f"unsupported array dtype {str(v.get('dtype'))[:40]!r} in a JSON attribute",
                                 hint=f"dtypes nmc writes: {', '.join(sorted(_JSON_DTYPES))}")
        return np.array(v["__array__"], dtype=v["dtype"])
    if isinstance(v, dict):
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


# -------------------------------------------------------------------- read
def _h5_to_dict(g: h5py.Group) -> dict:
    out = {}
    for k, item in g.items():
        if isinstance(item, h5py.Group):
            out[k] = _h5_to_dict(item)
        else:
            v = item[()]
            out[k] = v.decode("utf8") if isinstance(v, bytes) else v
    return out


def _dict_to_node(d: dict, path: str) -> nir.NIRNode:
    t = d.get("type")
    t = t.decode() if isinstance(t, bytes) else t
    if t is None:
        raise GraphError("node has no 'type' field (not a NIR node)", node=path or "<root>")
    if t == "NIRGraph":
        nodes = {k: _dict_to_node(v, f"{path}.{k}" if path else k) for k, v in d.get("nodes", {}).items()}
        raw = d.get("edges", [])
        edges = [(_s(a), _s(b)) for a, b in np.asarray(raw).reshape(-1, 2)] if len(raw) else []
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    kw = {k: _canon(v) for k, v in d.items() if k != "type"}
    if t in ("Conv1d", "Conv2d"):  # tuple-valued fields come back from HDF5 as arrays
        for f in ("input_shape", "stride", "padding", "dilation"):
            if isinstance(kw.get(f), np.ndarray) and kw[f].ndim == 1:
                kw[f] = tuple(int(x) for x in kw[f])
    if "metadata" in kw:
        kw["metadata"] = {k: v for k, v in kw["metadata"].items()}
    try:
        cls = node_class(t, node=path or None)  # allow-list: a type string never reaches getattr(nir, ...)
        if cls not in NIR_NODES.values():  # an extension node: built from its fields
            return cls(**kw)
        node = cls.from_dict({"type": t, **kw})
        if t in ("Conv1d", "Conv2d") and int(node.groups) != 1 and node.input_type.get("input") is not None:
            # NIR 1.0.8 takes the input channels from weight.shape[1] = C_in / groups
            node.input_type = {"input": np.array([node.weight.shape[1] * int(node.groups),
                                                  *node.input_type["input"][1:]])}
        return node
    except NmcError:
        raise
    except Exception as e:  # NIR's constructors raise bare TypeError/ValueError/AssertionError
        raise GraphError(f"cannot build {t} node from the file: {type(e).__name__}: {e}", node=path,
                         hint="the file may come from an incompatible NIR version or be corrupt") from None


def _canon(v):
    """HDF5 gives numpy scalars for 0-d datasets: ints/bools back to Python (as NIR's
    constructors received them), floats to 0-d arrays (NIR's parameter type)."""
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.floating):
        return np.asarray(v)
    return v


def _s(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _crash_signal(path: Path) -> int | None:
    """Read every object of the HDF5 file in a forked child process; return the
    signal that killed it, else None. libhdf5 can segfault on a damaged file (e.g.
    a corrupt variable-length string heap), which no Python ``except`` can catch,
    or loop forever (the child is killed after PROBE_TIMEOUT_S + 1 s per 20 MB: signal 9).
    Costs a few ms; a no-op where ``os.fork`` does not exist."""
    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            import faulthandler

            faulthandler.disable()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

            def walk(g):
                for k in list(g.keys()):
                    try:
                        item = g[k]
                        if isinstance(item, h5py.Group):
                            walk(item)
                        else:
                            item[()]
                    except Exception:
                        pass

            with h5py.File(path, "r") as f:
                walk(f)
        except BaseException:
            pass
        os._exit(0)
    import time

    deadline = time.monotonic() + PROBE_TIMEOUT_S + path.stat().st_size / 20e6
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if time.monotonic() > deadline:  # libhdf5 loops forever on some damaged files
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return 9
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def read(path: str | Path) -> Graph:
    """Read an nmc or plain NIR HDF5 file into a :class:`Graph` (no normalisation)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError("file not found", path=p, hint="check the path")
    if p.is_dir():
        raise InputFileError("is a directory, expected a NIR HDF5 file", path=p)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputFileError(f"not a readable HDF5 file ({str(e).split('(')[0].strip()})", path=p,
                             hint="the file is corrupt or truncated; re-export it") from None
    sig = _crash_signal(p)
    if sig is not None:
        f.close()
        what = "does not finish reading it" if sig == 9 else f"crashed with signal {sig} reading it"
        raise InputFileError(f"corrupt HDF5 file (the HDF5 library {what})", path=p,
                             hint="the file is damaged; re-export it")
    try:
        with f:
            if "node" not in f:
                raise InputFileError("HDF5 file has no '/node' group: not a NIR graph", path=p)
            try:
                d = _h5_to_dict(f["node"])
            except (OSError, KeyError, ValueError) as e:
                raise InputFileError(f"cannot read the graph data ({e})", path=p,
                                     hint="the file is corrupt or truncated; re-export it") from None
            node = _dict_to_node(d, "")
            if not isinstance(node, nir.NIRGraph):
                node = nir.NIRGraph(nodes={"input": nir.Input(node.input_type), "node": node,
                                           "output": nir.Output(node.output_type)},
                                    edges=[("input", "node"), ("node", "output")], type_check=False)
            meta, anns, shapes = {}, {}, {}
            if "nmc" in f:
                m = f["nmc"]
                meta = json.loads(_s(m["meta"][()])) if "meta" in m else {}
                shapes = json.loads(_s(m["shapes"][()])) if "shapes" in m else {}
                for what, v in (("nmc/meta", meta), ("nmc/shapes", shapes)):
                    if not isinstance(v, dict):
                        raise InputFileError(f"'{what}' is a JSON {type(v).__name__}, not an object", path=p,
                                             hint="the file is corrupt; re-export it")
                for nname, ng in m.get("annotations", {}).items():
                    if not isinstance(ng, h5py.Group):
                        raise InputFileError(f"damaged annotations of node '{nname}'", path=p,
                                             hint="the file is corrupt; re-export it")
                    for cname, cg in ng.items():
                        if not isinstance(cg, h5py.Group):
                            raise InputFileError(f"damaged annotation '{cname}' on node '{nname}'", path=p,
                                                 hint="the file is corrupt; re-export it")
                        cls = _ann.REGISTRY.get(cname)
                        if cls is None:
                            raise InputFileError(f"unknown annotation '{cname}' on node '{nname}'", path=p,
                                                 hint="the file was written by a newer nmc")
                        kw = {}
                        for k, ds in cg.items():
                            v = ds[()]
                            if isinstance(v, bytes):
                                kw[k] = _from_json(json.loads(v.decode()))["v"]
                            else:  # written from an ndarray: keep 0-d ones arrays too
                                kw[k] = np.asarray(v)
                        a = cls(**kw)
                        anns.setdefault(nname, {})[a.kind] = a
    except (InputFileError, GraphError, UnsupportedNodeError):
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:  # h5py on damaged structures
        raise InputFileError(f"cannot read ({type(e).__name__}: {e})", path=p,
                             hint="the file is corrupt or truncated; re-export it") from None
    try:
        g = Graph.from_nir(node, meta=meta)
        g.annotations = anns
        _restore_shapes(g, shapes, p)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:  # a node's fields hold junk
        raise InputFileError(f"malformed graph ({type(e).__name__}: {str(e)[:120]})", path=p,
                             hint="the file is corrupt or was edited; re-export it") from None
    return g


def _restore_shapes(g: Graph, shapes: dict, path) -> None:
    """Give nodes whose NIR fields lost their shapes (pooling) the shapes written in /nmc/shapes."""
    if not isinstance(shapes, dict):
        raise InputFileError("damaged /nmc/shapes", path=path, hint="the file is corrupt; re-export it")
    for name, sh in shapes.items():
        node = g.nodes.get(name)
        if node is None or not isinstance(sh, dict):
            continue
        for which, attr, key in (("in", "input_type", "input"), ("out", "output_type", "output")):
            # a Conv's written input shape wins over the one NIR's constructor derives (the reader corrects
            # grouped convs of plain NIR files; a graph written by nmc reads back exactly as written)
            conv = isinstance(node, (nir.Conv1d, nir.Conv2d))
            if which in sh and (which == "in" and (conv or g.shape_in(name) is None)
                                or which == "out" and g.shape_out(name) is None):
                try:
                    setattr(node, attr, {key: np.array([int(x) for x in sh[which]])})
                except (TypeError, ValueError):
                    raise InputFileError(f"damaged shape of node '{name}' in /nmc/shapes", path=path,
                                         hint="the file is corrupt; re-export it") from None


def read_bytes(data: bytes) -> Graph:
    """Read a graph from the bytes of an nmc/NIR HDF5 file (e.g. inside a bundle)."""
    import io
    import tempfile

    try:
        with h5py.File(io.BytesIO(data), "r"):
            pass
    except OSError:
        raise InputFileError("graph data is not a readable HDF5 file", path="graph.nir") from None
    with tempfile.NamedTemporaryFile(suffix=".nir") as tf:
        tf.write(data)
        tf.flush()
        return read(tf.name)


# -------------------------------------------------------------- plain data
# The same graph as nested plain data (dicts, lists, numbers, strings and arrays): the form a
# model file of nmc.save holds inside a weights-only ``torch.save`` archive. ``array`` encodes
# (to_data) or decodes (from_data) each array, e.g. to and from torch tensors; type strings are
# resolved through the node-type registry (:func:`nmc.nodes.node_class`), annotation names through
# the annotation registry: both allow-lists.
def to_data(g: Graph, array: Callable[[np.ndarray], Any] = lambda a: a) -> dict:
    """``g`` as plain data: ``{"nodes": {name: {"type", field: value}}, "edges", "meta", "annotations"}``."""
    def conv(v):
        if isinstance(v, np.ndarray):
            return array(np.ascontiguousarray(v))
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    nodes = {}
    for k, n in g.nodes.items():
        d = {"type": getattr(n, "nmc_type", type(n).__name__)}
        for f, v in vars(n).items():
            if f in ("metadata",):
                continue
            if f in ("input_type", "output_type"):
                d[f] = {kk: conv(np.asarray(vv)) for kk, vv in v.items()} if v else None
                continue
            d[f] = conv(v)
        nodes[k] = d
    anns = {k: {type(a).__name__: {f: conv(v) for f, v in a.fields().items()} for a in v.values()}
            for k, v in g.annotations.items()}
    return {"nodes": nodes, "edges": [list(e) for e in g.edges], "meta": dict(g.meta), "annotations": anns}


def from_data(d: dict, path, array: Callable[[Any], Any] = lambda a: a) -> Graph:
    """The graph :func:`to_data` wrote (``array`` decodes each stored array); a malformed one is an
    :class:`InputFileError` naming ``path``."""
    def un(v):
        if isinstance(v, list):
            return tuple(un(x) for x in v)
        return array(v)

    g = Graph(meta=dict(d.get("meta", {})))
    try:
        for k, nd in d["nodes"].items():
            t = nd["type"]
            cls = node_class(t, node=k, path=path)  # allow-list: a type string never reaches getattr(nir, ...)
            kw = {f: un(v) for f, v in nd.items() if f not in ("type", "input_type", "output_type")}
            if t in ("Input", "Output"):
                key = "input_type" if t == "Input" else "output_type"
                node = cls(**{key: {("input" if t == "Input" else "output"): un(next(iter(nd[key].values())))}})
            elif t == "Flatten":
                node = nir.Flatten(input_type={"input": un(next(iter(nd["input_type"].values())))},
                                   start_dim=kw["start_dim"], end_dim=kw["end_dim"])
            else:
                node = cls(**kw)
                if t in ("AvgPool2d", "SumPool2d", "Delay", "Scale", "Threshold") and nd.get("input_type"):
                    node.input_type = {"input": un(next(iter(nd["input_type"].values())))}
                    node.output_type = {"output": un(next(iter(nd["output_type"].values())))}
            g.add_node(k, node)
        for a, b in d["edges"]:
            g.add_edge(a, b)
        for k, anns in d.get("annotations", {}).items():
            for cname, fields in anns.items():
                g.annotate(k, _ann.REGISTRY[cname](**{f: un(v) if not isinstance(v, list) else un(v) for f, v in fields.items()}))
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as e:
        raise InputFileError(f"malformed nmc model file ({type(e).__name__}: {e})", path=path,
                             hint="re-save the model with nmc.save") from None
    return g
