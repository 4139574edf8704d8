"""Pure-NIR form of a real-diagonal SSM (:class:`nmc.nodes_ssm.DiagSSM`), for :meth:`nmc.ir.Graph.to_nir`.

A real-diagonal SSM is P leaky integrators between two weight matrices, plus
the direct path. Node ``s`` becomes::

    preds ─→ s.b  Linear(B)   (P, H)
              └→ s.modes  LI(τ_p, R_p, v_leak = 0)     (P modes)
                   └→ s.c  Linear(C)   (H, P)  ─→ succs
    preds ─→ s.d  Scale(D)                     ─→ succs      (summed with s.c at each successor)

with, for the discrete Λ̄_p, γ_p of the node's method and Δ (:func:`nmc.ssm_math.discretize`) and
the graph's dt::

    τ_p = −dt / ln Λ̄_p        R_p = γ_p / (1 − Λ̄_p)        (ZOH: τ_p = −dt/(Δ_p·Λ_p), R_p = −1/Λ_p)

This is NIR's continuous-time LI ``τ v' = −v + R·I`` whose exact solution over a
tick of piecewise-constant input is ``v_k = Λ̄ v_{k−1} + (1 − Λ̄)·R·I_k = Λ̄ v_{k−1} + γ·I_k``:
the SSM's own step. Read the file back with the exact integrator (``--integrator
exact``) and the same ``--dt`` to get the same numbers (the Euler integrator's
``1 − dt/τ`` is another decay).

Refused, naming the node (:class:`~nmc.errors.UnsupportedNodeError`): complex Λ
(a rotation: NIR has no oscillator), the gelu/relu/delta output stages (NIR has
no such nonlinearity or graded-event threshold), the per-event Δt mode (NIR
has no per-event step), a bilinear Λ̄ ≤ 0 (no decay a leaky integrator can
make), and the other SSM nodes (StochasticSSMNeuron: a Bernoulli spike;
LayerNorm).
"""
from __future__ import annotations

import nir
import numpy as np

from . import ssm_math as M
from .errors import GraphError, UnsupportedNodeError
from .nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron

_HINT = "keep the model in nmc's file (nmc.serialize.write / nmc.save), which holds the SSM node itself"


def refusal(node) -> str | None:
    """Why ``node`` has no pure-NIR form (None for a real-diagonal DiagSSM NIR can express)."""
    if isinstance(node, StochasticSSMNeuron):
        return "a stochastic spiking SSM neuron fires Bernoulli spikes, which NIR cannot express"
    if isinstance(node, LayerNorm):
        return "NIR has no layer normalisation"
    if not isinstance(node, DiagSSM):
        return None
    if node.complex:
        return "complex eigenvalues Λ (rotating modes) have no NIR equivalent; only a real-diagonal SSM exports"
    if node.output != "none":
        return f"the {node.output} output stage has no NIR equivalent (export output='none', or a LIF after it)"
    if node.time != "tick":
        return "the per-event Δt mode has no NIR equivalent (NIR steps by a fixed dt)"
    lam_bar, _ = M.discretize(node.lam, node.step, node.method)
    if np.any(lam_bar <= 0):
        return "its bilinear Λ̄ ≤ 0 for some mode (Δ·|Λ| ≥ 2): no leaky integrator decays like that"
    return None


def expand(graph):
    """A copy of ``graph`` with every DiagSSM node written as NIR primitives (module docstring);
    the graph itself when it has none. Raises for SSM nodes NIR cannot express."""
    names = [n for n, node in graph.nodes.items() if isinstance(node, (DiagSSM, StochasticSSMNeuron, LayerNorm))]
    if not names:
        return graph
    for n in names:
        why = refusal(graph.nodes[n])
        if why is not None:
            raise UnsupportedNodeError(f"cannot export {graph.nodes[n].nmc_type} to NIR: {why}", node=n, hint=_HINT)
    dt = graph.meta.get("dt")
    if dt is None:
        raise GraphError("exporting an SSM to NIR needs the graph's dt (its leaky integrators' τ are in seconds)",
                         node=names[0], hint="normalize the graph (nmc.compile) or set meta['dt']")
    g = graph.copy()
    for n in names:
        node = g.nodes[n]
        preds, succs = g.preds(n), g.succs(n)
        g.remove_node(n)
        lam_bar, gamma = M.discretize(node.lam, node.step, node.method)
        tau = -float(dt) / np.log(lam_bar)
        g.add_node(f"{n}.b", nir.Linear(weight=node.b.copy()))
        g.add_node(f"{n}.modes", nir.LI(tau=tau, r=gamma / (1 - lam_bar), v_leak=np.zeros(node.modes)))
        g.add_node(f"{n}.c", nir.Linear(weight=node.c.copy()))
        g.add_node(f"{n}.d", nir.Scale(scale=node.d.copy()))
        for p in preds:
            g.add_edge(p, f"{n}.b")
            g.add_edge(p, f"{n}.d")
        g.add_edge(f"{n}.b", f"{n}.modes")
        g.add_edge(f"{n}.modes", f"{n}.c")
        for s in succs:
            g.add_edge(f"{n}.c", s)
            g.add_edge(f"{n}.d", s)
    return g
