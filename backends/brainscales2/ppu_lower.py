"""Lowering of plastic projections for the plasticity processor (:mod:`.ppu`).

:func:`layer_synapses` runs inside :func:`.lower.plan` for each neuron layer: a projection whose
weight node carries a :class:`~nmc.plasticity.Plasticity` annotation gets a synapse for every pair
it may learn (every (neuron, source) pair; with rewiring the ``fan_in`` largest |W| of each neuron,
the rest of the row zeroed, all sources in one label group with label = source index), so a weight
at 0 can grow; its zero-weight synapses sit on excitatory rows unless every weight is ≤ 0.
:func:`rules` turns the annotations into the program's :class:`.ppu.PPURule` constants after the
projections are numbered. What the PPU model cannot run is refused here with the node and reason.
"""
from __future__ import annotations

import numpy as np

from nmc.errors import UnsupportedNodeError
from nmc.plasticity import Plasticity, plastic

from . import ppu
from .ppu_format import PPUFormat, default_period


def layer_synapses(graph, layer: str, terms: dict, w6s: dict, gain: np.ndarray, scale: float,
                   weight_node, per_row: int) -> dict:
    """``{source: info}`` of the plastic projections into ``layer``; ``w6s`` is changed in place (a
    rewiring projection keeps its fan_in synapses per neuron). ``info``: node, rule, lsb (model
    weight per code), signs ((post, pre) −1/0/+1: the synapses and their row signs), and for
    rewiring group/label (one group, label = source index)."""
    out = {}
    for s, (m, _) in terms.items():
        p = weight_node(graph, layer, s, m) if m is not None else None
        rule = graph.ann(p, Plasticity) if p is not None else None
        if rule is None:
            continue
        g = np.asarray(gain, float)
        if np.ptp(g) > 1e-9 * abs(float(g[0])):
            raise UnsupportedNodeError("the plasticity processor's rule takes one weight LSB per projection, but the "
                                       f"post neurons of '{layer}' have different input gains (τ or r differ)",
                                       node=p, hint="give the post layer one τ and one r")
        lsb = scale / float(g[0])
        w6 = w6s[s]
        n_post, n_pre = w6.shape
        info = {"node": p, "rule": rule, "lsb": lsb}
        if rule.fan_in:
            w0 = np.asarray(graph.nodes[p].weight, float)
            if np.any(w0 < 0) or rule.w_new < 0:
                raise UnsupportedNodeError("rewiring on BrainScaleS-2 runs on excitatory rows: it needs weights ≥ 0 "
                                           "and w_new ≥ 0", node=p, hint="put inhibitory inputs on a projection of "
                                           "their own without rewiring")
            if n_pre > per_row:
                raise UnsupportedNodeError(f"rewiring relabels synapses within one row's label group: the projection "
                                           f"has {n_pre} sources, a row serves {per_row}", node=p,
                                           limit=f"≤ {per_row} sources", actual=n_pre,
                                           hint="split the inputs over projections of ≤ 64 sources")
            keep = np.argsort(-np.abs(w0), axis=1, kind="stable")[:, :rule.fan_in]
            mask = np.zeros((n_post, n_pre), bool)
            np.put_along_axis(mask, keep, True, axis=1)
            w6s[s] = w6 = np.where(mask, w6, 0)
            info.update(signs=mask.astype(np.int64), group=np.zeros(n_pre, np.int64),
                        label=np.arange(n_pre, dtype=np.int64))
        else:
            zero = -1 if (w6.any() and np.all(w6 <= 0)) else 1
            info["signs"] = np.where(w6 != 0, np.sign(w6), zero).astype(np.int64)
        out[s] = info
    return out


def rules(graph, projs, plastic_of: dict, dt: float, period: int | None, runs: int, spec=None) -> list[dict]:
    """The program's rules (:class:`.ppu.PPURule` as JSON), one per plastic projection, in order;
    refuses an annotated node that no projection carries alone and a network split over runs.
    ``period``: ``--option ppu_period`` (None: the spec's ``plasticity.period``); the rules' format
    is the spec's ``[plasticity]`` (:mod:`.ppu_format`; read only when a projection learns)."""
    found = {info["node"] for info in plastic_of.values()}
    for k in plastic(graph):
        if k not in found:
            raise UnsupportedNodeError("the plastic projection is composed with other linear nodes into one synapse "
                                       "matrix on BrainScaleS-2, so its weights cannot learn on their own", node=k,
                                       hint="feed the plastic Affine/Linear directly from its source into its "
                                            "post neuron layer")
    if found and runs > 1:
        raise UnsupportedNodeError(f"the network needs {runs} sequential runs of the chip, and a learning rule's "
                                   "state cannot carry from one run to the next", node=sorted(found)[0],
                                   hint="make the network fit one chip")
    if not found:
        return []
    fmt = PPUFormat.from_spec(spec)
    period = default_period(spec) if period is None else period
    out = []
    for i, q in enumerate(projs):
        info = plastic_of.get((q.pre, q.post))
        if info is not None:
            out.append(ppu.compile_rule(info["rule"], info["node"], i, info["lsb"], dt, period,
                                        q.w6.shape[1], fmt).to_json())
    return out

