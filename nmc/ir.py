"""nmc's graph: NIR nodes and edges plus typed per-node annotations.

:class:`Graph` wraps the content of a ``nir.NIRGraph`` (a flat dict of named
nodes and a list of ``(src, dst)`` edges) and adds

* ``annotations``: ``{node: {kind: Annotation}}`` (see :mod:`nmc.annotations`),
  never needed to read the graph;
* ``meta``: graph-level compile facts NIR does not store (``dt`` in seconds,
  ``integrator`` ∈ {euler, exact}, the default ``reset`` mode, ``name``).

Semantics shared by every simulator and backend:

* several edges into one node are **summed**;
* cycles are allowed. :meth:`Graph.schedule` orders the nodes by a depth-first
  walk from the inputs; an edge that closes a cycle (a *back edge*) carries the
  value its source produced at the **previous** timestep (zero at t = 0). All
  other edges deliver within the same timestep. So a recurrent weight adds
  exactly one step of delay, as in snnTorch's RLeaky and Norse.

Node names are identities: every error, report and dump uses them.
"""
from __future__ import annotations

import copy as _copy
import hashlib
import math
from typing import Any, Iterable

import nir
import numpy as np

from .annotations import Annotation, Reset
from .errors import GraphError, ShapeError, UnsupportedNodeError
from .graph_meta import GraphMeta
from . import semantics
from .nodes import is_dense, is_extension, is_neuron, is_spiking_neuron, type_name
from .semantics import Kind


def shape_of(node: nir.NIRNode, which: str) -> tuple[int, ...] | None:
    t = node.input_type if which == "in" else node.output_type
    if not t:
        return None
    v = next(iter(t.values()))
    if v is None:
        return None
    return tuple(int(x) for x in np.asarray(v).reshape(-1))


class Graph:
    def __init__(self, nodes: dict | None = None, edges: Iterable | None = None,
                 annotations: dict | None = None, meta: dict | None = None):
        self.nodes: dict[str, nir.NIRNode] = dict(nodes or {})
        self.edges: list[tuple[str, str]] = [(str(a), str(b)) for a, b in (edges or [])]
        self.annotations: dict[str, dict[str, Annotation]] = {
            k: dict(v) for k, v in (annotations or {}).items()}
        self.meta: dict[str, Any] = dict(meta or {})

    # ------------------------------------------------------------------ build
    @classmethod
    def from_nir(cls, g: nir.NIRGraph, meta: dict | None = None) -> "Graph":
        """Wrap a NIR graph; nested sub-graphs are flattened with dotted names."""
        nodes, edges = _flatten(g.nodes, g.edges, prefix="")
        return cls(nodes, edges, meta=meta)

    def to_nir(self, strict: bool = True) -> nir.NIRGraph:
        """Export as a plain ``nir.NIRGraph``.

        With ``strict`` (default), a node NIR cannot express (an extension node,
        or a spiking node with reset-by-subtraction) raises
        :class:`UnsupportedNodeError` naming it; annotations are dropped. A
        real-diagonal ``nmc.DiagSSM`` is written as NIR primitives
        (:mod:`nmc.nir_ssm`: Linear B → LI per mode → Linear C, + Scale D).
        """
        from .nir_ssm import expand

        g = expand(self)
        for name, node in g.nodes.items():
            if is_extension(node):
                raise UnsupportedNodeError(
                    f"{type_name(node)} is an nmc extension node and has no NIR equivalent",
                    node=name, hint="write the graph with nmc.serialize.write (nmc's NIR+extensions file) instead")
            if strict and is_spiking_neuron(node) and g._stated_reset(name) == "subtract":
                raise UnsupportedNodeError(
                    "reset by subtraction cannot be expressed in NIR (NIR only resets to v_reset)",
                    node=name, hint="compile with --reset zero, or export with strict=False to drop the reset mode")
        return nir.NIRGraph(nodes=dict(g.nodes), edges=list(g.edges), type_check=False)

    def copy(self) -> "Graph":
        """An independent copy. Read-only node arrays (see :meth:`freeze_arrays`)
        are shared, not copied: nobody can change them in place, and a pass that
        changes a parameter assigns a new array."""
        shared = {id(v): v for node in self.nodes.values() for v in vars(node).values()
                  if isinstance(v, np.ndarray) and not v.flags.writeable}
        return Graph(_copy.deepcopy(self.nodes, shared), list(self.edges),
                     {k: dict(v) for k, v in self.annotations.items()}, _copy.deepcopy(self.meta))

    def freeze_arrays(self) -> list[np.ndarray]:
        """Make every node parameter array read-only, so later :meth:`copy` calls
        share it (the pass manager does this between passes: big weight matrices
        are then not copied once per pass; writing into one raises ValueError).
        Returns the arrays this call changed (for :meth:`thaw_arrays`)."""
        changed = []
        for node in self.nodes.values():
            for v in vars(node).values():
                if isinstance(v, np.ndarray) and v.flags.writeable:
                    v.flags.writeable = False
                    changed.append(v)
        return changed

    def thaw_arrays(self, frozen: Iterable[np.ndarray]) -> None:
        """Make the node arrays among ``frozen`` writable again."""
        ids = {id(v) for v in frozen}
        for node in self.nodes.values():
            for v in vars(node).values():
                if isinstance(v, np.ndarray) and id(v) in ids and not v.flags.writeable:
                    try:
                        v.flags.writeable = True
                    except ValueError:  # a view of read-only memory: leave it read-only
                        pass

    # ------------------------------------------------------------- structure
    def add_node(self, name: str, node: nir.NIRNode) -> None:
        if name in self.nodes:
            raise GraphError("a node with this name already exists", node=name)
        self.nodes[name] = node

    def replace_node(self, name: str, node: nir.NIRNode) -> None:
        if name not in self.nodes:
            raise GraphError("no such node", node=name)
        self.nodes[name] = node

    def remove_node(self, name: str) -> None:
        self.nodes.pop(name)
        self.edges = [e for e in self.edges if name not in e]
        self.annotations.pop(name, None)

    def add_edge(self, src: str, dst: str) -> None:
        self.edges.append((src, dst))

    def remove_edge(self, src: str, dst: str) -> None:
        self.edges.remove((src, dst))

    def preds(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def succs(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    @property
    def inputs(self) -> list[str]:
        return [k for k, n in self.nodes.items() if isinstance(n, nir.Input)]

    @property
    def outputs(self) -> list[str]:
        return [k for k, n in self.nodes.items() if isinstance(n, nir.Output)]

    def shape_in(self, name: str) -> tuple[int, ...] | None:
        return shape_of(self.nodes[name], "in")

    def shape_out(self, name: str) -> tuple[int, ...] | None:
        return shape_of(self.nodes[name], "out")

    # ------------------------------------------------------------ annotations
    def annotate(self, name: str, ann: Annotation) -> None:
        if name not in self.nodes:
            raise GraphError("cannot annotate a node that does not exist", node=name)
        self.annotations.setdefault(name, {})[ann.kind] = ann

    def ann(self, name: str, cls: type[Annotation]):
        return self.annotations.get(name, {}).get(cls.kind)

    def _stated_reset(self, name: str) -> str | None:
        """The reset mode the graph states for ``name`` (annotation, else meta), None when
        it states none: export checks what is there and needs no normalized graph."""
        a = self.ann(name, Reset)
        return a.mode if a is not None else self.meta.get("reset")

    def reset_mode(self, name: str) -> str:
        """Reset mode of a spiking node: its Reset annotation, else the graph's
        :class:`~nmc.graph_meta.GraphMeta` reset (set by normalize; before it, a
        :class:`GraphError` — no default here)."""
        a = self.ann(name, Reset)
        return a.mode if a is not None else GraphMeta.of(self).reset

    # ---------------------------------------------------------------- order
    def schedule(self) -> tuple[list[str], set[tuple[str, str]]]:
        """Evaluation order and the set of back edges (one-step-delayed edges).

        Depth-first from the inputs (in node order), visiting successors in edge
        order; an edge to a node still on the DFS stack is a back edge. Nodes not
        reachable from an input are scheduled after, the same way. The order is a
        topological order of the graph without its back edges.
        """
        succ: dict[str, list[str]] = {k: [] for k in self.nodes}
        for a, b in self.edges:
            succ[a].append(b)
        state: dict[str, int] = {}
        post: list[str] = []
        back: set[tuple[str, str]] = set()
        roots = self.inputs + [k for k in self.nodes if k not in self.inputs]
        for r in roots:
            if r in state:
                continue
            stack = [(r, iter(succ[r]))]
            state[r] = 1
            while stack:
                n, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    state[n] = 2
                    post.append(n)
                    continue
                s = state.get(nxt, 0)
                if s == 1:
                    back.add((n, nxt))
                elif s == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
        return post[::-1], back

    # ---------------------------------------------------------------- verify
    def check_edges(self) -> None:
        """Every edge joins two existing nodes (GraphError naming the missing one)."""
        names = set(self.nodes)
        for a, b in self.edges:
            for end in (a, b):
                if end not in names:
                    raise GraphError(f"edge {a} -> {b} refers to a node that does not exist",
                                     node=end, hint="remove the edge or add the node")

    def check_loaded(self) -> None:
        """What a graph read from a file or handed over must satisfy before any pass
        runs (the frontends' common intake calls this): edges join existing nodes, a
        graph with several nodes has edges, the meta's ``dt`` is a finite number > 0,
        every parameter is real and finite, declared shapes are whole numbers >= 1
        within the memory bound, and per-neuron / bias lengths match their node.
        Raises a typed error naming the node and parameter."""
        self.check_edges()
        if len(self.nodes) > 1 and not self.edges:
            raise GraphError("graph has no edges: no node would receive input",
                             hint="the file's edge list is empty; re-export the model")
        check_meta(self.meta)
        for name, node in self.nodes.items():
            _check_values(name, node)

    def verify(self) -> None:
        """Check structure, shapes and parameters; raise naming node/edge."""
        self.check_edges()
        check_meta(self.meta)
        if len(set(self.edges)) != len(self.edges):
            dup = next(e for e in self.edges if self.edges.count(e) > 1)
            raise GraphError(f"duplicate edge {dup[0]} -> {dup[1]}", node=dup[1])
        if not self.inputs:
            raise GraphError("graph has no Input node", hint="add a nir.Input node feeding the first layer")
        if not self.outputs:
            raise GraphError("graph has no Output node", hint="add a nir.Output node after the last layer")
        for name, node in self.nodes.items():
            semantics.of(node, name=name)  # UnsupportedNodeError for an unregistered node type
            p, s = self.preds(name), self.succs(name)
            if isinstance(node, nir.Input) and p:
                raise GraphError(f"Input node has incoming edge from '{p[0]}'", node=name)
            if isinstance(node, nir.Output) and s:
                raise GraphError(f"Output node has outgoing edge to '{s[0]}'", node=name)
            if not isinstance(node, nir.Input) and not p:
                raise GraphError("node has no incoming edge (it would never receive input)", node=name,
                                 hint="connect it or remove it")
            if self.shape_in(name) is None or self.shape_out(name) is None:
                raise ShapeError("node has no known input/output shape", node=name,
                                 hint="give Conv/Flatten nodes their input shape (input_shape / input_type)")
            _check_params(name, node)
        for a, b in self.edges:
            so, si = self.shape_out(a), self.shape_in(b)
            if so != si:
                raise ShapeError(f"edge {a} -> {b}: '{a}' produces shape {so} but '{b}' expects {si}",
                                 node=b, hint="fix the layer sizes or insert a Flatten")
        from .plasticity import check_graph

        check_graph(self)  # learning rules: parameters, projection and post neurons (PlasticityError)

    # ------------------------------------------------------------------ dump
    def dump(self) -> str:
        """Stable, human-readable text of the whole graph (used by golden tests)."""
        lines = ["graph " + " ".join(f"{k}={self.meta[k]!r}" for k in sorted(self.meta))]
        for name, node in self.nodes.items():
            lines.append(f"node {name}: {type_name(node)} in={self.shape_in(name)} out={self.shape_out(name)}"
                         + "".join(f" {k}={v}" for k, v in _param_summary(node)))
            for kind in sorted(self.annotations.get(name, {})):
                lines.append(f"  @{kind} {self.annotations[name][kind].summary()}")
        lines.append("edges")
        lines += [f"  {a} -> {b}" for a, b in self.edges]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"

    def param_count(self, name: str) -> int:
        return sum(int(np.asarray(v).size) for k, v in _params(self.nodes[name]).items())


# ---------------------------------------------------------------- helpers
_SKIP = {"input_type", "output_type", "metadata"}


def _params(node: nir.NIRNode) -> dict[str, Any]:
    d = {}
    for k, v in vars(node).items():
        if k in _SKIP or isinstance(v, (nir.NIRNode, dict)):
            continue
        d[k] = v
    return d


def array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:10]


def _param_summary(node: nir.NIRNode):
    for k, v in sorted(_params(node).items()):
        if isinstance(v, np.ndarray) and v.size > 4:
            yield k, f"{v.dtype}{list(v.shape)}#{array_digest(v)}"
        elif isinstance(v, np.ndarray):
            yield k, np.array2string(v, precision=6, separator=",").replace("\n", "")
        else:
            yield k, repr(v)


def check_meta(meta: dict) -> None:
    """The graph meta's ``dt``, when set, is a finite number of seconds > 0 (a model
    file's meta may say dt = -1, 0, NaN or inf)."""
    if "dt" not in meta:
        return
    dt = meta["dt"]
    try:
        ok = not isinstance(dt, (bool, complex)) and math.isfinite(float(dt)) and float(dt) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise GraphError(f"the model's time step dt = {dt!r} is not a finite number of seconds > 0",
                         hint="the file is corrupt or was edited: re-save the model (nmc.save) with a positive dt")


def _as_array(v):
    """A parameter as a numpy array (torch tensors included), or None for non-numeric fields."""
    if hasattr(v, "detach") and hasattr(v, "numpy"):
        v = v.detach().cpu()
        return v.numpy() if not v.is_complex() else v.resolve_conj().numpy()
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, complex, np.number)):
        return np.asarray(v)
    return None


def _neuron_fields(node) -> tuple[str, ...]:
    """Per-neuron parameters of a neuron node (one value per neuron, or one for all): its registry entry's."""
    e = semantics.lookup(node)
    return e.params if e is not None and e.kind is Kind.NEURON else ()


def _check_values(name: str, node: nir.NIRNode) -> None:
    """Parameters real and finite, declared shapes whole and bounded, bias lengths right."""
    from .limits import check_dims, check_shape_alloc

    entry = semantics.lookup(node)
    complex_ok = entry.complex_fields if entry is not None else ()
    for k, v in _params(node).items():
        a = _as_array(v)
        if a is None:
            continue
        if a.dtype.kind == "c" and k in complex_ok:
            a = a.view(a.real.dtype)   # real and imaginary parts: both must be finite
        if a.dtype.kind == "c":
            raise GraphError(f"parameter '{k}' is complex-valued ({a.dtype}); nmc's targets compute with real "
                             "numbers and would drop the imaginary part", node=name,
                             hint="export real-valued parameters (take .real only if the imaginary part is zero)")
        if a.dtype.kind not in "biuf":
            raise GraphError(f"parameter '{k}' holds {a.dtype} values, expected numbers", node=name,
                             hint="the file may be corrupt; re-export the model")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise GraphError(f"parameter '{k}' has non-finite values (NaN or inf)", node=name,
                             hint="check the trained model for NaN/inf weights")
    for which in ("input_type", "output_type"):
        t = getattr(node, which, None)
        for port, shp in (t or {}).items():
            if shp is None or np.size(shp) == 0:
                continue
            dims = check_dims(np.asarray(shp).reshape(-1), f"{which.split('_')[0]} shape {_shape_text(shp)}",
                              node=name)
            check_shape_alloc(dims, 8, f"shape {dims}", node=name)
    sizes = {k: a.size for k in _neuron_fields(node) if (a := _as_array(getattr(node, k, None))) is not None}
    per_neuron = {k: n for k, n in sizes.items() if n > 1}
    if len(set(per_neuron.values())) > 1:
        (k0, n0), (k1, n1) = sorted(per_neuron.items(), key=lambda kv: -kv[1])[0], min(per_neuron.items(), key=lambda kv: kv[1])
        raise ShapeError(f"parameter '{k1}' has {n1} values but '{k0}' has {n0}: every per-neuron parameter needs "
                         "one value per neuron (or a single value for all)", node=name, limit=n0, actual=n1,
                         hint=f"give '{k1}' {n0} values")
    w, b = getattr(node, "weight", None), getattr(node, "bias", None)
    weighted = semantics.kind_of(node) is Kind.WEIGHT
    if weighted and w is not None and b is not None:
        w, b = _as_array(w), _as_array(b)
        if w is not None and b is not None and w.ndim >= 1 and b.ndim > 0 and b.size != w.shape[0]:
            raise ShapeError(f"bias has {b.size} values for {w.shape[0]} outputs (weight shape {tuple(w.shape)})",
                             node=name, limit=w.shape[0], actual=b.size,
                             hint="give one bias value per output (row of the weight)")
    if is_dense(node) and w is not None:
        w = _as_array(w)
        if w is not None and w.ndim != 2:
            raise ShapeError(f"weight has shape {tuple(w.shape)}, expected 2-D (outputs, inputs)", node=name)


def _shape_text(shp) -> str:
    return "(" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x)
                           for x in np.asarray(shp).reshape(-1).tolist()) + ")"


def _check_params(name: str, node: nir.NIRNode) -> None:
    _check_values(name, node)
    if is_neuron(node):
        for tk in ("tau", "tau_mem", "tau_syn"):
            tau = getattr(node, tk, None)
            if tau is not None and np.any(np.asarray(tau) <= 0):
                raise GraphError(f"time constant '{tk}' must be > 0", node=name, actual=float(np.min(tau)))
        n = int(np.prod(node.output_type["output"]))
        own = semantics.of(node, name=name).arrays
        for k, v in _params(node).items():
            if k in own:
                continue
            if isinstance(v, np.ndarray) and v.ndim > 0 and v.size not in (1, n) and not k.startswith(("w_x", "w_h", "b_x", "b_h")):
                raise ShapeError(f"parameter '{k}' has {v.size} values for {n} neurons", node=name)
    if getattr(node, "nmc_type", "") == "nmc.EGRU":
        h = node.hidden_size
        nin = int(node.input_type["input"][0])
        want = {"w_x": (3 * h, nin), "w_h": (3 * h, h), "b_x": (3 * h,), "b_h": (3 * h,), "thr": (h,)}
        for k, shp in want.items():
            if tuple(getattr(node, k).shape) != shp:
                raise ShapeError(f"EGRU parameter '{k}' has shape {tuple(getattr(node, k).shape)}, expected {shp}",
                                 node=name)
        if np.any(node.thr <= 0):
            raise GraphError("EGRU threshold must be > 0 (with ϑ ≤ 0 the subtractive reset adds to the state)",
                             node=name, actual=float(np.min(node.thr)), hint="clamp thr to a positive minimum when training")


def _flatten(nodes: dict, edges: list, prefix: str) -> tuple[dict, list]:
    """Inline nested NIRGraphs: sub-node names become 'parent.child'; edges into a
    sub-graph go to its Input nodes' successors, edges out come from its Output's
    predecessors."""
    out_nodes: dict[str, nir.NIRNode] = {}
    out_edges: list[tuple[str, str]] = []
    entry: dict[str, list[str]] = {}
    exit_: dict[str, list[str]] = {}
    for name, node in nodes.items():
        full = prefix + str(name)
        if isinstance(node, nir.NIRGraph):
            sn, se = _flatten(node.nodes, node.edges, full + ".")
            ins = [full + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [full + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            entry[full] = [b for a, b in se if a in ins]
            exit_[full] = [a for a, b in se if b in outs]
            drop = set(ins) | set(outs)
            out_nodes.update({k: v for k, v in sn.items() if k not in drop})
            out_edges += [(a, b) for a, b in se if a not in drop and b not in drop]
        else:
            out_nodes[full] = node
    for a, b in edges:
        a, b = prefix + str(a), prefix + str(b)
        for s in exit_.get(a, [a]):
            for d in entry.get(b, [b]):
                out_edges.append((s, d))
    return out_nodes, out_edges
