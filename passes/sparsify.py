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
* ``nodes``: ``all`` (default) or the weight nodes to prune, by node name or
  type name (``EGRU``, ``Affine``, ...), several joined with ``+`` — e.g. an
  EGRU language model prunes its recurrent cells (``nodes=EGRU``) and keeps
  the embedding and decoder dense. Unselected nodes keep every weight.
* ``format``: ``auto`` (the smallest of dense / CSR / ELL in bytes), ``csr``,
  ``ell``, ``dense`` (arrays: :mod:`nmc.passes.formats`).

Pruned weights are zeroed in the nodes, so the reference and every backend
see the pruned network; each weight node gets ``Sparsity(density, format,
mask)``. A ``Quant`` annotation written before (``quantize`` runs first in
the default order) follows: its ``w_int`` is zeroed where the weight was
pruned, and sliced (rows, columns, per-channel scales) when units are
removed; a stale ``RowMap`` is dropped. The report (``reports/sparsify.json``) gives per layer the weight
density and storage bytes (dense / CSR / ELL), the measured activation
sparsity, and NeuroBench-style totals: connection sparsity (zero weights /
all weights), activation sparsity (zero outputs / all outputs of the neuron
nodes over the run), effective synaptic operations — for every weight node,
Σ over steps and samples of (non-zero input element × kept weight it reaches),
exact for convolutions (a 0/1 convolution of the input pattern with the kept
kernel pattern), EGRU (w_x on its input, w_h on its own graded events) and
the SSM nodes (B on their input; C on their state, never zero: every kept entry, every step) —
counted as AC when that input is binary (spikes) and MAC otherwise, next to
the dense count (every weight for every step), and the memory footprint
(weights in the chosen format at the quantized bit width, or 32 bits, plus
4 bytes of state per neuron).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np
import torch

from nmc import semantics
from nmc.annotations import Quant, Sparsity, SSMQuant
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.nodes import EGRU, DiagSSM, StochasticSSMNeuron, is_dense, is_neuron
from nmc import reference_steps as _reference_steps  # noqa: F401  (registers the linear_map hooks)
from nmc.semantics import shapes

from .fidelity import activity_key, layer_inputs, simulate
from .formats import storage_bytes
from .manager import Pass, PassContext, register

FORMATS = ("auto", "csr", "ell", "dense")

__all__ = ["Sparsify", "keep_top", "storage_bytes", "remove_units"]


def _weights(node) -> list[tuple[str, np.ndarray]]:
    """The node's synaptic weight fields (its registry entry's ``weights``) as arrays."""
    e = semantics.lookup(node)
    return [(f, np.asarray(getattr(node, f))) for f in (e.weights if e is not None else ())]


def _is_conv(node) -> bool:
    e = semantics.lookup(node)
    return e is not None and e.shape is shapes.conv


def _mask(node) -> np.ndarray:
    """Non-zero pattern as a (rows, cols) matrix (EGRU: [w_x | w_h]; DiagSSM: [B | Cᵀ], one row per mode;
    StochasticSSMNeuron: [B | C], one row per neuron)."""
    if isinstance(node, DiagSSM):
        return np.concatenate([node.b != 0, (node.c != 0).T], axis=1)
    return np.concatenate([(w != 0).reshape(w.shape[0], -1) for _, w in _weights(node)], axis=1)


def keep_top(mag: np.ndarray, density: float) -> np.ndarray:
    """Boolean mask keeping exactly ⌈density·n⌉ entries of largest magnitude (stable ties)."""
    n = mag.size
    k = min(n, math.ceil(density * n - 1e-9))
    flat = np.zeros(n, dtype=bool)
    if k > 0:
        order = np.argsort(-mag.reshape(-1), kind="stable")
        flat[order[:k]] = True
    return flat.reshape(mag.shape)


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
    nodes: str = "all"
    bounds = {"steps": (1, None)}

    def _selected(self, name: str, node) -> bool:
        if self.nodes == "all":
            return True
        from nmc.nodes import type_name

        want = {w.strip() for w in self.nodes.split("+") if w.strip()}
        return bool({name, type(node).__name__, type_name(node)} & want)

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
        if self.nodes != "all" and not any(self._selected(n, node) for n, node in g.nodes.items() if _weights(node)):
            raise OptionError(f"sparsify nodes={self.nodes!r} selects no weight node",
                              hint="name weight nodes or types (EGRU, Affine, Linear, Conv2d), joined with '+'")
        report: dict = {"density_target": self.density, "scope": self.scope, "structured": self.structured,
                        "nodes": self.nodes,
                        "units_removed": {}, "units_kept_reason": {}, "layers": {}}
        inputs, source = layer_inputs(g, ctx.data, self.steps, ctx.seed)
        report["activity_input"] = source
        if self.prune_units > 0:
            self._prune_units(g, inputs, report)
        if self.density < 1:
            if self.structured == "none":
                self._magnitude(g)
            else:
                self._structured(g)
        for name, node in g.nodes.items():
            if not _weights(node):
                continue
            mask = _mask(node)
            q = g.ann(name, Quant)
            if q is not None and q.w_int is not None:  # pruned weights leave the integer weights too
                w_int = np.asarray(q.w_int)
                g.annotate(name, Quant(bits=q.bits, scheme=q.scheme, scale=q.scale, method=q.method,
                                       w_int=np.where(mask.reshape(w_int.shape), w_int, 0).astype(w_int.dtype)))
            sq = g.ann(name, SSMQuant)
            if sq is not None:   # an SSM's fixed-point B̄, C̄ lose the pruned entries too
                g.annotate(name, _prune_ssm_quant(node, sq))
            g.annotations.get(name, {}).pop("rowmap", None)
            dens = float(mask.mean()) if mask.size else 1.0
            size = storage_bytes(mask, int(q.bits) if q is not None else 32)
            fmt = self.format if self.format != "auto" else min(("dense", "csr", "ell"), key=lambda f: size[f])
            g.annotate(name, Sparsity(density=dens, format=fmt, mask=mask))
            report["layers"][name] = {"density": dens, "format": fmt, "weights": int(mask.size),
                                      "nonzero": int(mask.sum()), "bytes": size}
        report.update(self._activity(g, inputs))
        state = sum(4 * int(np.prod(g.shape_out(n))) for n, node in g.nodes.items() if is_neuron(node))
        report["neurobench"]["footprint_bytes"] = state + sum(
            v["bytes"][v["format"]] for v in report["layers"].values())
        ctx.reports["sparsify"] = report
        return g

    # ------------------------------------------------------------ pruning
    def _magnitude(self, g: Graph) -> None:
        items = [(n, k, w) for n, node in g.nodes.items() if self._selected(n, node) for k, w in _weights(node)]
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
            if self.structured == "channels" and not _is_conv(node):
                continue
            if self.structured == "units" and _is_conv(node):
                continue
            if not self._selected(n, node):
                continue
            for k, w in _weights(node):
                norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
                rows = keep_top(norms, self.density)
                setattr(node, k, w * rows.reshape(-1, *([1] * (w.ndim - 1))))

    def _prune_units(self, g: Graph, inputs: dict, report: dict) -> None:
        neurons = [n for n, node in g.nodes.items() if is_neuron(node)]
        res = simulate(g, inputs, neurons)
        for n in neurons:
            why = self._why_not(g, n)
            if why:
                report["units_kept_reason"][n] = why
                continue
            a = np.asarray(res[activity_key(res, n)])
            rate = (a.reshape(-1, int(np.prod(g.shape_out(n)))) != 0).mean(0)
            H = rate.size
            drop = int(math.floor(self.prune_units * H))
            if drop == 0 or drop >= H:
                report["units_kept_reason"][n] = f"prune_units={self.prune_units} of {H} units removes none"
                continue
            order = np.argsort(rate, kind="stable")  # least active first
            keep = np.ones(H, dtype=bool)
            keep[order[:drop]] = False
            remove_units(g, n, keep)
            report["units_removed"][n] = {"removed": drop, "kept": int(keep.sum()),
                                          "removed_max_rate": float(rate[order[drop - 1]]),
                                          "kept_min_rate": float(rate[order[drop]])}

    @staticmethod
    def _why_not(g: Graph, n: str) -> str | None:
        node = g.nodes[n]
        if len(g.shape_out(n)) != 1:
            return "multi-dimensional (conv) layer: prune channels with structured=channels"
        for s in g.succs(n):
            if isinstance(g.nodes[s], nir.Output):
                return "feeds a graph output (its units are the model's outputs)"
            if not (is_dense(g.nodes[s]) or isinstance(g.nodes[s], EGRU)):
                return f"feeds a {type(g.nodes[s]).__name__} node"
            if g.preds(s) != [n]:
                return f"'{s}' also sums the input of another node"
        if isinstance(node, EGRU):
            return None
        if isinstance(node, DiagSSM):
            return "a DiagSSM's channels are shared by B, C, D and the residual stream (prune its weights instead)"
        for p in g.preds(n):
            if not is_dense(g.nodes[p]):
                return f"is fed by a {type(g.nodes[p]).__name__} node"
            if g.succs(p) != [n]:
                return f"its input weight '{p}' also feeds another node"
        return None

    # ----------------------------------------------------------- activity
    def _activity(self, g: Graph, inputs: dict) -> dict:
        neurons = [n for n, node in g.nodes.items() if is_neuron(node)]
        feeders = {p for n, node in g.nodes.items() if _weights(node) for p in g.preds(n)}
        res = simulate(g, inputs, sorted(set(neurons) | (feeders - set(g.inputs))))
        out: dict = {"activation_sparsity": {}, "effective_synops": {}, "dense_synops": {}}
        tot_act = tot_n = 0
        ac = mac = dense = 0.0
        for n in neurons:
            a = np.asarray(res[activity_key(res, n)])
            nz = int(np.count_nonzero(a))
            out["activation_sparsity"][n] = 1 - nz / max(a.size, 1)
            tot_act += nz
            tot_n += a.size
        for name, node in g.nodes.items():
            if not _weights(node):
                continue
            srcs = [inputs[p] if p in inputs else res[f"{p}.out"] for p in g.preds(name)]
            x = np.asarray(sum(srcs)).reshape(-1, *g.shape_in(name))
            ws = _weights(node)  # [input weight] or EGRU's [w_x, w_h]: w_h acts on the node's own output
            terms = [(x, ws[0][1])]
            if isinstance(node, DiagSSM):   # C reads the state x, which is never zero: every kept weight, every step
                terms.append((np.ones((x.shape[0], node.modes)), ws[1][1]))
            elif isinstance(node, StochasticSSMNeuron):   # per neuron: B ⊙ u, then C over its own N states
                terms = [(x, (ws[0][1] != 0).T), (np.ones((x.shape[0], ws[1][1].size)), (ws[1][1] != 0).reshape(1, -1))]
            elif len(ws) > 1:
                terms.append((np.asarray(res[f"{name}.out"]).reshape(-1, node.hidden_size), ws[1][1]))
            eff = dns = 0.0
            for a, w in terms:
                e, d = _synops(node, a, np.asarray(w))
                eff += e
                dns += d
                if np.all(np.isin(a, (0.0, 1.0))):
                    ac += e
                else:
                    mac += e
            out["effective_synops"][name] = eff
            out["dense_synops"][name] = dns
            dense += dns
        total_w = sum(w.size for node in g.nodes.values() for _, w in _weights(node))
        zero_w = sum(int((w == 0).sum()) for node in g.nodes.values() for _, w in _weights(node))
        out["neurobench"] = {"connection_sparsity": zero_w / max(total_w, 1),
                             "activation_sparsity": 1 - tot_act / max(tot_n, 1),
                             "effective_ac": ac, "effective_mac": mac, "dense_synops": dense}
        return out


def _synops(node, a: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(effective, dense) synaptic operations of weight ``w`` on inputs ``a``
    (N, *in_shape): non-zero input × kept weight reached, and every weight."""
    nz = (a != 0)
    if _is_conv(node):  # the node's own convolution (its entry's linear_map) on the 0/1 patterns
        k = torch.as_tensor((w != 0).astype(np.float64))
        conv = semantics.of(node).hook("linear_map")
        with torch.no_grad():
            eff = float(conv(node, torch.as_tensor(nz.astype(np.float64)), None, k).sum())
            dense = float(conv(node, torch.ones(1, *a.shape[1:], dtype=torch.float64), None, torch.ones_like(k)).sum())
        return eff, dense * a.shape[0]
    fan = (w.reshape(w.shape[0], -1) != 0).sum(0)  # kept fan-out of each input element
    return float((nz.reshape(a.shape[0], -1) * fan).sum()), float(a.shape[0] * w.size)


def _prune_ssm_quant(node, q: SSMQuant) -> SSMQuant:
    """``q`` with B̄, C̄ zero where the node's B, C were pruned."""
    import dataclasses

    b = np.asarray(q.b_int) * (np.asarray(node.b) != 0)[..., None]
    c = np.asarray(q.c_int) * (np.asarray(node.c) != 0)[..., None]
    return dataclasses.replace(q, b_int=b.astype(np.int32), c_int=c.astype(np.int32))


def _slice_quant(g: Graph, name: str, rows=None, cols=None) -> None:
    q = g.ann(name, Quant)
    if q is None or q.w_int is None:
        return
    w_int, scale = np.asarray(q.w_int), np.asarray(q.scale)
    if rows is not None:
        if scale.ndim and scale.shape[0] == w_int.shape[0]:
            scale = scale[rows]
        w_int = w_int[rows]
    if cols is not None:
        w_int = w_int[:, cols]
    g.annotate(name, Quant(bits=q.bits, scheme=q.scheme, scale=scale, w_int=w_int, method=q.method))


def remove_units(g: Graph, n: str, keep: np.ndarray) -> None:
    """Shrink neuron node ``n`` to the units in ``keep`` and every weight around
    it: rows of the weights into it (and of EGRU's gates), both dimensions of
    its recurrent weights, columns of the weights out of it; ``Quant``
    annotations are sliced the same way."""
    node = g.nodes[n]
    k = np.flatnonzero(keep)
    H = keep.size
    if isinstance(node, EGRU):
        rows = np.concatenate([k, H + k, 2 * H + k])
        n_in = node.w_x.shape[1]
        g.nodes[n] = EGRU(w_x=node.w_x[rows], w_h=node.w_h[rows][:, k], b_x=node.b_x[rows], b_h=node.b_h[rows],
                          thr=node.thr[k])
        _slice_quant(g, n, rows=rows, cols=np.concatenate([np.arange(n_in), n_in + k]))
    else:
        for f, v in list(vars(node).items()):
            if f in ("input_type", "output_type", "metadata"):
                continue
            if isinstance(v, np.ndarray) and v.shape[:1] == (H,):
                setattr(node, f, v[k])
        node.input_type = {"input": np.array([k.size])}
        node.output_type = {"output": np.array([k.size])}
        sq = g.ann(n, SSMQuant)
        if sq is not None:   # a stochastic SSM neuron's fixed-point arrays: one row per neuron
            import dataclasses

            g.annotate(n, dataclasses.replace(sq, **{f: np.asarray(getattr(sq, f))[k]
                                                     for f in ("lam_int", "b_int", "c_int", "d_int")}))
        for p in g.preds(n):
            w = g.nodes[p]
            recurrent = n in g.preds(p)
            W = np.asarray(w.weight)[k]
            if recurrent:
                W = W[:, k]
            g.nodes[p] = nir.Affine(weight=W, bias=np.asarray(w.bias)[k]) if isinstance(w, nir.Affine) else \
                nir.Linear(weight=W)
            _slice_quant(g, p, rows=k, cols=k if recurrent else None)
    for s in g.succs(n):
        w = g.nodes[s]
        if isinstance(w, EGRU):
            g.nodes[s] = EGRU(w_x=w.w_x[:, k], w_h=w.w_h, b_x=w.b_x, b_h=w.b_h, thr=w.thr)
            _slice_quant(g, s, cols=np.concatenate([k, H + np.arange(w.w_h.shape[1])]))
        elif n in g.succs(s) and not isinstance(node, EGRU):
            continue  # recurrent weight: already sliced on both sides
        else:
            W = np.asarray(w.weight)[:, k]
            g.nodes[s] = nir.Affine(weight=W, bias=w.bias) if isinstance(w, nir.Affine) else nir.Linear(weight=W)
            _slice_quant(g, s, cols=k)
    for name in [n, *g.preds(n), *g.succs(n)]:
        g.annotations.get(name, {}).pop("sparsity", None)
        g.annotations.get(name, {}).pop("rowmap", None)
