"""ONNX → nmc graph, the walk: :class:`_Converter` holds one conversion — the
graph being built and, per ANN tensor, its representation as a sum of graph
node outputs — visits the ONNX nodes in order, dispatches each to its
``op_<OpType>`` method (:mod:`.onnx_ops`, only for operators in the allow-list
:data:`~.onnx_ops.OPERATORS`), aligns paths of unequal depth with relay IF
neurons and ends in the integrating readout. The conversion rules are in
:mod:`nmc.frontends.onnx`.
"""
from __future__ import annotations

import copy

import nir
import numpy as np

from nmc import semantics
from nmc.annotations import Reset
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.semantics import Kind, kind_of

from .onnx_eval import Op as _Op
from .onnx_ops import OPERATORS, RESHAPES, OpConverters, _merge


def _passes_through(node) -> bool:
    """A node a factor cannot be folded into, so a term from it reaches a neuron through a Scale: its
    output is spikes, or it holds no values of its own (the input, pooling, a reshape). Weight maps,
    a Scale and a graded neuron feed directly (their factor is 1)."""
    e = semantics.of(node)
    return e.spiking or not (e.weights or e.params)


class _Converter(OpConverters):
    """One conversion: the graph being built and, per ANN tensor, its representation."""

    def __init__(self, ops, inits, in_name, in_shape, out_name, env, lam, dt, percentile, maxpool, const):
        self.ops, self.inits, self.env, self.lam, self.dt = ops, inits, env, lam, dt
        self.percentile, self.maxpool, self.const, self.out_name = percentile, maxpool, const, out_name
        self.g = Graph(meta={"dt": dt, "integrator": "euler", "reset": "subtract"})
        self.g.add_node("input", nir.Input(input_type={"input": np.array(in_shape)}))
        # tensor → [(graph node, factor)]: the ANN tensor ≈ Σ factor · node output (spiking nodes: factor = λ)
        self.rep: dict[str, list[tuple[str, float]]] = {in_name: [("input", 1.0)]}
        self.shapes: dict[str, tuple] = {in_name: tuple(in_shape)}
        self.fresh: dict[str, list[str]] = {}  # tensor → the weight nodes whose sum it is (BN/bias/Mul folding)
        self.flat_view: set[str] = set()       # transposed tensors held as flat vectors (only a flatten may follow)
        self.notes: list[dict] = []
        self.depth: dict[str, int] = {"input": 0}            # neuron → neuron layers from the input
        self.relays: dict[tuple[str, int], str] = {}         # (neuron, layers) → its relay chain's last node
        self._used: set[str] = set()

    # ---------------------------------------------------------------- helpers
    def uniq(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c in "_" else "_" for c in base).strip("_") or "n"
        name, i = base, 1
        while name in self.g.nodes or name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def add(self, base: str, node, src: str | None = None) -> str:
        name = self.uniq(base)
        self.g.add_node(name, node)
        if src is not None:
            self.g.add_edge(src, name)
        return name

    def root(self, node: str) -> tuple[str, str | None]:
        """(the neuron or Input a term's chain of linear nodes starts from, the chain's first node)."""
        first = None
        while kind_of(self.g.nodes[node]) not in (Kind.NEURON, Kind.IO):
            first, node = node, self.g.preds(node)[0]
        return node, first

    def align(self, terms) -> tuple[list[tuple[str, float]], int]:
        """Pad shallower terms with relay IF neurons so that every term arrives through the
        same number of neuron layers (chips deliver one neuron layer per step; Loihi 2 refuses
        misaligned paths). A relay (threshold 1, reset by subtraction) repeats 0/1 spikes
        exactly, one layer later. Returns (terms, depth)."""
        roots = [self.root(src) for src, _ in terms]
        depth = max((self.depth.get(r, 0) for r, _ in roots), default=0)
        out = []
        for (src, fac), (r, first) in zip(terms, roots):
            k = depth - self.depth.get(r, 0)
            if k > 0:
                key = (r, k)
                if key not in self.relays:
                    last = r
                    shape = self.g.shape_out(r)
                    for j in range(k):
                        nxt = self.if_node(f"{r}_relay{j + 1}", shape, 1.0)
                        self.depth[nxt] = self.depth.get(r, 0) + j + 1
                        sc = self.add(f"{nxt}_in", nir.Scale(scale=np.ones(shape)), last)
                        self.g.add_edge(sc, nxt)
                        last = nxt
                    self.relays[key] = last
                last = self.relays[key]
                if first is None:
                    src = last
                elif (src, k) in self.relays:
                    src = self.relays[(src, k)]
                else:  # a copy of the term's linear chain reads the relay (the original may have other readers)
                    chain = [src]
                    while chain[-1] != first:
                        chain.append(self.g.preds(chain[-1])[0])
                    prev = last
                    for n in reversed(chain):
                        prev = self.add(f"{n}_d{k}", copy.deepcopy(self.g.nodes[n]), prev)
                    self.relays[(src, k)] = prev
                    src = prev
            out.append((src, fac))
        return out, depth

    def feed(self, dst: str, terms, shape) -> None:
        """Edges from every term into ``dst`` (a neuron): through a Scale where the factor is not 1
        or the source is itself a spiking/pass-through node (:func:`_passes_through`). Paths are
        aligned first (:meth:`align`)."""
        terms, depth = self.align(_merge(terms))
        self.depth[dst] = depth + 1
        for src, fac in _merge(terms):
            if _passes_through(self.g.nodes[src]) or fac != 1.0:
                sc = self.add(f"{dst}_skip", nir.Scale(scale=np.full(shape, fac)), src)
                self.g.add_edge(sc, dst)
            else:
                self.g.add_edge(src, dst)

    def per_term(self, o: _Op, x: str, make) -> list[str]:
        """One node per term of tensor x: ``make(factor, first)``; returns their names."""
        return [self.add(o.name if i == 0 else f"{o.name}_{src}", make(fac, i == 0), src)
                for i, (src, fac) in enumerate(self.rep[x])]

    def fresh_nodes(self, x: str) -> list[str] | None:
        names = self.fresh.get(x)
        return names if names and not any(self.g.succs(n) for n in names) else None

    def if_node(self, base: str, shape, lam: float) -> str:
        name = self.add(base, nir.IF(r=np.full(shape, 1.0 / self.dt), v_threshold=np.full(shape, lam),
                                     v_reset=np.zeros(shape)))
        self.g.annotate(name, Reset("subtract"))
        return name

    def note(self, message: str, node: str) -> None:
        self.notes.append({"node": node, "message": message})

    # ------------------------------------------------------------------ run
    def run(self) -> Graph:
        for o in self.ops:
            if o.outputs[0] in self.const:
                continue
            acts = [i for i in o.inputs if i and i not in self.const]
            if any(i in self.flat_view for i in acts) and o.op not in RESHAPES + ("Identity", "Dropout"):
                raise UnsupportedNodeError("a Transpose of an activation is supported only right before a "
                                           "Flatten/Reshape to (N, -1)", node=o.name)
            out_shape = tuple(self.env[o.outputs[0]].shape[1:])
            if o.op not in OPERATORS:  # allow-list: an op_type string from the file selects a method only from it
                raise UnsupportedNodeError(f"unsupported ONNX op {o.op}", node=o.name,
                                           hint="supported: " + ", ".join(sorted(OPERATORS)))
            getattr(self, "op_" + o.op)(o, out_shape)
            self.shapes.setdefault(o.outputs[0], out_shape)
        self.readout()
        self.g.verify()
        return self.g

    def passthrough(self, o: _Op, x: str) -> None:
        y = o.outputs[0]
        self.rep[y], self.shapes[y] = self.rep[x], self.shapes[x]
        for d in (self.fresh,):
            if x in d:
                d[y] = d[x]
        if x in self.flat_view:
            self.flat_view.add(y)

    # -------------------------------------------------------------- readout
    def readout(self) -> None:
        oshape = self.shapes[self.out_name]
        if self.out_name in self.flat_view:
            oshape = (int(np.prod(oshape)),)
        self.g.add_node("readout", nir.I(r=np.full(oshape, 1.0 / self.dt)))
        self.feed("readout", self.rep[self.out_name], oshape)
        self.g.add_node("output", nir.Output(output_type={"output": np.array(oshape)}))
        self.g.add_edge("readout", "output")
