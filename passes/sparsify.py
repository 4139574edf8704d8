"""``sparsify``: weight pruning, activity-based unit pruning, sparse storage.

Options:

* ``density`` (0, 1]: fraction of weights kept by magnitude pruning; ``scope``
  ``global`` (one threshold over all weight nodes) or ``layer`` (each node
  keeps ``density`` of its own weights). Exactly ⌈density·n⌉ weights are kept
  (ties broken by position, deterministically).
* ``structured``: ``none`` (unstructured), ``units`` (zero whole output rows of
  Affine/Linear weights and EGRU gate rows, smallest L2 norm first) or
  ``channels`` (whole Conv output channels).
* ``prune_units`` [0, 1): per neuron node, remove that fraction of its units,
  the least active on ``ctx.data`` (or a seeded synthetic input) — real graph
  surgery: the neuron parameters, the rows of the Affine/Linear weights into
  the node, both dimensions of its recurrent weights and the columns of the
  weights out of it shrink (the recipe that let an EGRU language model fit one
  SpiNNaker 2 chip). Nodes feeding an Output, or fed by conv/pool layers, keep
  their units (the report says why).
* ``format``: ``auto`` (CSR below 50 % density, else dense), ``csr``, ``ell``,
  ``dense``.

Pruned weights are zeroed in the nodes, so the reference and every backend
see the pruned network; each weight node gets ``Sparsity(density, format,
mask)``. The report (``reports/sparsify.json``) gives per layer the weight
density and storage bytes (dense / CSR / ELL), the measured activation
sparsity, and NeuroBench-style totals: connection sparsity, activation
sparsity, effective synaptic operations (AC for binary sources, MAC for
graded ones: Σ over steps of active sources × their kept fan-out) and memory
footprint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np

from nmc.annotations import Quant, Sparsity
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import EGRU, is_neuron, is_spiking

from .manager import Pass, PassContext, register

WEIGHTED = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, EGRU)
FORMATS = ("auto", "csr", "ell", "dense")


def _weights(node) -> list[tuple[str, np.ndarray]]:
    if isinstance(node, EGRU):
        return [("w_x", np.asarray(node.w_x)), ("w_h", np.asarray(node.w_h))]
    if isinstance(node, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)):
        return [("weight", np.asarray(node.weight))]
    return []


def keep_top(mag: np.ndarray, density: float) -> np.ndarray:
    """Boolean mask keeping exactly ⌈density·n⌉ entries of largest magnitude (stable ties)."""
    n = mag.size
    k = min(n, math.ceil(density * n))
    flat = np.zeros(n, dtype=bool)
    if k > 0:
        order = np.argsort(-mag.reshape(-1), kind="stable")
        flat[order[:k]] = True
    return flat.reshape(mag.shape)


def storage_bytes(mask: np.ndarray, weight_bits: int, index_bits: int = 16, ptr_bytes: int = 4) -> dict:
    """Bytes of a (rows × cols) weight matrix stored dense, CSR (row pointers +
    column indices + values) and ELL (rows × max-row-nnz, index + value)."""
    m = mask.reshape(mask.shape[0], -1)
    nnz = int(m.sum())
    wb = weight_bits / 8
    ib = index_bits / 8
    return {"dense": int(math.ceil(m.size * wb)),
            "csr": int(math.ceil(nnz * (wb + ib) + (m.shape[0] + 1) * ptr_bytes)),
            "ell": int(math.ceil(m.shape[0] * int(m.sum(1).max(initial=0)) * (wb + ib)))}


@register
@dataclass(frozen=True)
class Sparsify(Pass):
    name = "sparsify"
    summary = "magnitude / structured / activity-based unit pruning, CSR/ELL storage, NeuroBench sparsity report"
    provides = ("sparsity",)
    density: float = 1.0
    scope: str = "global"
    structured: str = "none"
    prune_units: float = 0.0
    format: str = "auto"
    steps: int = 64

    def apply(self, g: Graph, ctx: PassContext) -> Graph:
        if not 0 < self.density <= 1:
            raise OptionError(f"density must be in (0, 1], got {self.density}")
        if not 0 <= self.prune_units < 1:
            raise OptionError(f"prune_units must be in [0, 1), got {self.prune_units}")
        if self.scope not in ("global", "layer"):
            raise OptionError(f"scope must be 'global' or 'layer', not {self.scope!r}")
        if self.structured not in ("none", "units", "channels"):
            raise OptionError(f"structured must be none, units or channels, not {self.structured!r}")
        if self.format not in FORMATS:
            raise OptionError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        report: dict = {"density_target": self.density, "scope": self.scope, "structured": self.structured,
                        "units_removed": {}, "units_kept_reason": {}, "layers": {}}
        inputs, source = self._inputs(g, ctx)
        report["activity_input"] = source
        if self.prune_units > 0:
            self._prune_units(g, inputs, report)
        if self.density < 1:
            if self.structured == "none":
                self._magnitude(g)
            else:
                self._structured(g)
        for name, node in g.nodes.items():
            ws = _weights(node)
            if not ws:
                continue
            mask = np.concatenate([(w != 0).reshape(w.shape[0], -1) for _, w in ws], axis=1)
            dens = float(mask.mean()) if mask.size else 1.0
            fmt = self.format if self.format != "auto" else ("csr" if dens < 0.5 else "dense")
            q = g.ann(name, Quant)
            bits = int(q.bits) if q is not None else 32
            g.annotate(name, Sparsity(density=dens, format=fmt, mask=mask))
            report["layers"][name] = {"density": dens, "format": fmt, "weights": int(mask.size),
                                      "nonzero": int(mask.sum()), "bytes": storage_bytes(mask, bits)}
        report.update(self._activity(g, inputs))
        state = sum(4 * int(np.prod(g.shape_out(n))) for n, node in g.nodes.items() if is_neuron(node))
        report["neurobench"]["footprint_bytes"] = state + sum(
            v["bytes"][v["format"]] for v in report["layers"].values())
        ctx.reports["sparsify"] = report
        return g

    # ------------------------------------------------------------ pruning
    def _magnitude(self, g: Graph) -> None:
        items = [(n, k, w) for n, node in g.nodes.items() for k, w in _weights(node)]
        if self.scope == "global":
            allmag = np.concatenate([np.abs(w).reshape(-1) for _, _, w in items]) if items else np.zeros(0)
            keep = keep_top(allmag, self.density)
            off = 0
            for n, k, w in items:
                m = keep[off:off + w.size].reshape(w.shape)
                off += w.size
                setattr(g.nodes[n], k, np.where(m, w, 0.0))
        else:
            for n, k, w in items:
                setattr(g.nodes[n], k, np.where(keep_top(np.abs(w), self.density), w, 0.0))

    def _structured(self, g: Graph) -> None:
        for n, node in g.nodes.items():
            if self.structured == "channels" and not isinstance(node, (nir.Conv1d, nir.Conv2d)):
                continue
            if self.structured == "units" and isinstance(node, (nir.Conv1d, nir.Conv2d)):
                continue
            for k, w in _weights(node):
                norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
                rows = keep_top(norms, self.density)
                setattr(node, k, w * rows.reshape(-1, *([1] * (w.ndim - 1))))

    def _inputs(self, g: Graph, ctx: PassContext):
        from .quantize import _layer_inputs

        return _layer_inputs(g, ctx.data, self.steps, ctx.seed)

    def _prune_units(self, g: Graph, inputs: dict, report: dict) -> None:
        from .quantize import _simulate

        neurons = [n for n, node in g.nodes.items() if is_neuron(node)]
        res = _simulate(g, inputs, neurons)
        for n in neurons:
            node = g.nodes[n]
            why = self._why_not(g, n)
            if why:
                report["units_kept_reason"][n] = why
                continue
            key = f"{n}.spikes" if f"{n}.spikes" in res else f"{n}.out"
            act = np.abs(res[key]).reshape(res[key].shape[0], -1) if res[key].ndim == 2 else \
                np.abs(res[key]).reshape(-1, int(np.prod(g.shape_out(n))))
            rate = (act != 0).mean(0)
            H = rate.size
            drop = int(math.floor(self.prune_units * H))
            if drop == 0 or drop >= H:
                continue
            order = np.argsort(rate, kind="stable")  # least active first
            keep = np.ones(H, dtype=bool)
            keep[order[:drop]] = False
            _remove_units(g, n, keep)
            report["units_removed"][n] = {"removed": drop, "kept": int(keep.sum()),
                                          "removed_max_rate": float(rate[order[drop - 1]])}

    @staticmethod
    def _why_not(g: Graph, n: str) -> str | None:
        node = g.nodes[n]
        if len(g.shape_out(n)) != 1:
            return "multi-dimensional (conv) layer: prune channels with structured=channels"
        for s in g.succs(n):
            if isinstance(g.nodes[s], nir.Output):
                return "feeds a graph output (its units are the model's outputs)"
            if not isinstance(g.nodes[s], (nir.Affine, nir.Linear, EGRU)):
                return f"feeds a {type(g.nodes[s]).__name__} node"
        if isinstance(node, EGRU):
            return None
        for p in g.preds(n):
            if not isinstance(g.nodes[p], (nir.Affine, nir.Linear)):
                return f"is fed by a {type(g.nodes[p]).__name__} node"
        return None

    def _activity(self, g: Graph, inputs: dict) -> dict:
        from .quantize import _simulate

        neurons = [n for n, node in g.nodes.items() if is_neuron(node)]
        res = _simulate(g, inputs, neurons)
        out = {"activation_sparsity": {}, "effective_synops": {}}
        tot_act = tot_n = 0
        ac = mac = 0.0
        for n in neurons:
            key = f"{n}.spikes" if f"{n}.spikes" in res else f"{n}.out"
            a = np.asarray(res[key])
            nz = int(np.count_nonzero(a))
            out["activation_sparsity"][n] = 1 - nz / max(a.size, 1)
            tot_act += nz
            tot_n += a.size
        for name, node in g.nodes.items():
            ws = _weights(node)
            if not ws or isinstance(node, EGRU):
                continue
            srcs = g.preds(name)
            for s in srcs:
                a = inputs[s] if s in inputs else res.get(f"{s}.spikes", res.get(f"{s}.out"))
                if a is None:
                    continue
                a = np.asarray(a)
                w = ws[0][1]
                if w.ndim == 2 and a.reshape(a.shape[0], -1).shape[-1] % w.shape[1] == 0:
                    fan = (w != 0).sum(0)  # kept fan-out of each source
                    flat = (a.reshape(-1, w.shape[1]) != 0)
                    ops = float((flat * fan).sum())
                else:
                    ops = float(np.count_nonzero(a)) * float((w != 0).sum()) / max(w.shape[0], 1)
                binary = s in g.nodes and (is_spiking(g.nodes[s]) or (isinstance(g.nodes[s], nir.Input)
                                                                       and np.all(np.isin(a, (0.0, 1.0)))))
                out["effective_synops"][name] = out["effective_synops"].get(name, 0.0) + ops
                if binary:
                    ac += ops
                else:
                    mac += ops
        total_w = sum(w.size for node in g.nodes.values() for _, w in _weights(node))
        zero_w = sum(int((w == 0).sum()) for node in g.nodes.values() for _, w in _weights(node))
        out["neurobench"] = {"connection_sparsity": zero_w / max(total_w, 1),
                             "activation_sparsity": 1 - tot_act / max(tot_n, 1),
                             "effective_ac": ac, "effective_mac": mac}
        return out


def _remove_units(g: Graph, n: str, keep: np.ndarray) -> None:
    """Shrink neuron node ``n`` to the units in ``keep`` and every weight around it."""
    node = g.nodes[n]
    k = np.flatnonzero(keep)
    H = keep.size
    if isinstance(node, EGRU):
        rows = np.concatenate([k, H + k, 2 * H + k])
        g.nodes[n] = EGRU(w_x=node.w_x[rows], w_h=node.w_h[rows][:, k], b_x=node.b_x[rows], b_h=node.b_h[rows],
                          thr=node.thr[k])
    else:
        for f, v in list(vars(node).items()):
            if f in ("input_type", "output_type", "metadata"):
                continue
            if isinstance(v, np.ndarray) and v.shape[:1] == (H,):
                setattr(node, f, v[k])
        node.input_type = {"input": np.array([k.size])}
        node.output_type = {"output": np.array([k.size])}
        for p in g.preds(n):
            w = g.nodes[p]
            recurrent = n in g.preds(p)
            W = np.asarray(w.weight)[k]
            if recurrent:
                W = W[:, k]
            g.nodes[p] = nir.Affine(weight=W, bias=np.asarray(w.bias)[k]) if isinstance(w, nir.Affine) else \
                nir.Linear(weight=W)
    for s in g.succs(n):
        w = g.nodes[s]
        if isinstance(w, EGRU):
            g.nodes[s] = EGRU(w_x=w.w_x[:, k], w_h=w.w_h, b_x=w.b_x, b_h=w.b_h, thr=w.thr)
        elif n in g.succs(s) and not isinstance(node, EGRU):
            continue  # recurrent weight: already sliced on both sides
        else:
            W = np.asarray(w.weight)[:, k]
            g.nodes[s] = nir.Affine(weight=W, bias=w.bias) if isinstance(w, nir.Affine) else nir.Linear(weight=W)
    for name in [n, *g.preds(n), *g.succs(n)]:
        g.annotations.get(name, {}).pop("quant", None)  # shapes changed: re-quantize after sparsify
        g.annotations.get(name, {}).pop("sparsity", None)
