"""A real-diagonal ``nmc.DiagSSM`` with a spiking output on BrainScaleS-2: the SSM as the neurons' synaptic current.

A DiagSSM (tick mode, real modes, output ``none``) whose only consumer is a LIF layer fed by it
alone (what :class:`nmc.nn.DiagSSM` with ``output="lif"`` exports: ``<name>`` → ``<name>.lif``)
computes, per channel h and tick t (ρ = 1 for real modes)::

    x_t = Λ̄ ⊙ x_{t−1} + B̄·u_t,    y_t = C·x_t + D ⊙ u_t,    v_t = LIF(v_{t−1}, y_t)

When every mode that reaches the output (B̄ row and C column both non-zero) has the same
one-tick decay Λ̄ = λ and D = 0, ``I_t = y_t`` obeys ``I_t = λ·I_{t−1} + (C·B̄)·u_t``: one leaky
integrator per channel, which is a current-based neuron's synaptic current. So the pair
becomes ``Linear(W = C·B̄ / a)`` → ``CubaLIF`` with the LIF's membrane parameters, ``w_in = 1``
and τ_syn with 1 − a = λ (a = dt/τ_syn under Euler, 1 − e^{−dt/τ_syn} exact), exactly (the
reference's CubaLIF updates I first and v uses I_t, as the LIF uses y_t; tests compare the two
graphs). The analog lowering then maps τ_syn, τ_mem and the 6-bit weights W onto the circuits
and refuses with its own reason what the DAC ranges cannot hold.

What is not rewritten stays a DiagSSM, and :func:`why_not` gives :mod:`.rules` the reason:
complex modes (they rotate; the circuits only leak), per-event Δt, a graded (non-spiking)
output (the chip routes spikes, not values), several distinct decays (a neuron has one
synaptic time constant), D ≠ 0 (an input that bypasses the synaptic low-pass).
"""
from __future__ import annotations

import nir
import numpy as np

from nmc import ssm_math as M
from nmc.ir import Graph
from nmc.nodes_ssm import DiagSSM
from nmc.semantics import hook_of, register_hook

#: relative spread of the active modes' decays below which they are one time constant
SAME_DECAY_RTOL = 1e-9


def _active(node: DiagSSM) -> np.ndarray:
    """Modes that reach the output: a non-zero B̄ row and C column."""
    return np.any(np.asarray(node.b) != 0, axis=1) & np.any(np.asarray(node.c) != 0, axis=0)


def why_not(graph: Graph, name: str) -> str | None:
    """None when DiagSSM ``name`` maps as a synaptic current (module docstring), else the reason."""
    node = graph.nodes[name]
    if node.complex:
        return (f"its {node.modes} complex modes rotate (oscillate) as they decay; the neuron circuits only leak, "
                "they cannot oscillate")
    if node.time != "tick":
        return "it integrates with a per-event Δt; the analog circuits decay in continuous time at fixed τ"
    succ = graph.succs(name)
    if node.output != "none" or len(succ) != 1 or graph.preds(succ[0]) != [name] \
            or hook_of(graph.nodes[succ[0]], "with_current", "brainscales2") is None:
        return ("its graded output y is read every step; the analog chip routes spikes (addresses), not values — "
                "it maps only as the synaptic current of the LIF layer it alone feeds (nmc.nn.DiagSSM output='lif')")
    lam_bar, _ = M.discretize(node.lam, node.step, node.method)
    act = _active(node)
    lb = np.real(lam_bar[act])
    if lb.size and (np.ptp(lb) > SAME_DECAY_RTOL * np.abs(lb).max()):
        return (f"its {int(act.sum())} real modes decay with {len(np.unique(np.round(lb, 9)))} different time "
                f"constants (one-tick decays {lb.min():.4g} … {lb.max():.4g}); a neuron has one synaptic time "
                "constant (train with one shared decay, e.g. a fixed Λ and Δ per layer)")
    if np.any(np.asarray(node.d) != 0):
        return ("its D·u term reaches the output without the modes' decay; every input of an analog neuron passes "
                "its synaptic low-pass (train with D = 0)")
    return None


@register_hook("brainscales2", "with_current", nir.LIF)
def _lif_with_current(lif: nir.LIF, H: int, tau_syn: float) -> nir.CubaLIF:
    """The neuron a DiagSSM's current feeds as its synaptic current (a node type with this hook is one
    :func:`why_not` accepts after the SSM): a LIF of ``H`` neurons becomes the CubaLIF with its membrane
    parameters (float64, broadcast to ``H``), τ_syn = ``tau_syn`` and w_in = 1."""
    return nir.CubaLIF(
        tau_syn=np.full(H, tau_syn), tau_mem=np.broadcast_to(lif.tau, (H,)).astype(float).copy(),
        r=np.broadcast_to(lif.r, (H,)).astype(float).copy(),
        v_leak=np.broadcast_to(lif.v_leak, (H,)).astype(float).copy(),
        v_threshold=np.broadcast_to(lif.v_threshold, (H,)).astype(float).copy(),
        v_reset=None if lif.v_reset is None else np.broadcast_to(lif.v_reset, (H,)).astype(float).copy(),
        w_in=np.ones(H))


def as_synaptic_currents(graph: Graph, dt: float, integrator: str) -> tuple[Graph, dict]:
    """The graph with every mappable DiagSSM → LIF pair rewritten (module docstring); ``{ssm: {"lif",
    "decay", "tau_syn"}}`` of those rewritten. Nodes that do not map are left for :mod:`.rules`."""
    todo = [k for k, n in graph.nodes.items() if isinstance(n, DiagSSM) and why_not(graph, k) is None]
    if not todo:
        return graph, {}
    g = graph.copy()
    done = {}
    for k in todo:
        node, lif_name = g.nodes[k], g.succs(k)[0]
        lif = g.nodes[lif_name]
        lam_bar, gamma = M.discretize(node.lam, node.step, node.method)
        act = _active(node)
        lam = float(np.real(lam_bar[act]).max()) if act.any() else 0.5
        a = 1.0 - lam
        tau_syn = dt / a if integrator == "euler" else -dt / np.log(lam)
        w = np.real(np.asarray(node.c)[:, act] @ (gamma[act, None] * np.asarray(node.b)[act]))   # C·B̄ (H, H_in)
        H = w.shape[0]
        g.replace_node(k, nir.Linear(weight=w / a))
        g.annotations.get(k, {}).pop("ssm_quant", None)   # the quantize pass's SSM words: not this Linear's
        g.replace_node(lif_name, hook_of(lif, "with_current", "brainscales2")(lif, H, tau_syn))
        done[k] = {"lif": lif_name, "decay": lam, "tau_syn": float(tau_syn), "modes": int(act.sum())}
    return g, done
