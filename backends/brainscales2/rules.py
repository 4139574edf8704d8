"""What cannot map onto a BrainScaleS-2-style chip, and why.

Small named rules, each ``rule_x(graph) -> list[(node, reason, where)]``;
:func:`check` runs all of them and raises one :class:`UnsupportedNodeError`
naming every offending node, the reason, and the target that can take it.

* ``rule_graded_events`` — EGRU cells (and any node whose output is a graded,
  value-carrying event): the analog chip's event fabric carries 6-bit
  *addresses* only, no payload, and the neuron circuits have no gates; the
  spinnaker2 target (programmable ARM cores, graded spikes) runs them.
* ``rule_refused_types`` — node types that register a ``brainscales2``
  ``refusal`` hook with the registry (:mod:`nmc.semantics`), each with its
  reason: ``Delay`` (there is no per-synapse delay line; the loihi2 target has
  synaptic delays) and ``Threshold`` (a memoryless comparator: every neuron
  circuit integrates and leaks; use a LIF layer or a digital target).
* ``rule_ssm`` — the state-space nodes, each with its reason: complex modes
  (a rotating mode needs an oscillator; the neuron circuits only leak),
  stochastic spiking SSM neurons (a Bernoulli spike per neuron and tick needs a
  random source per neuron; the chip's only noise is its unstated analog
  variability, not a seeded ξ), real-diagonal SSMs that do not map as a LIF
  layer's synaptic current (:mod:`.ssm`: a graded output — the chip routes
  spikes, not values —, several decays — a neuron has one synaptic time
  constant —, D ≠ 0), LayerNorm (a normalisation across channels). The digital
  targets run them.
* ``rule_unknown_extension`` — any other nmc extension node.

IF/I (no leak) are *not* refused here: :func:`lower._leaky_integrators`
maps them to the longest membrane time constant the DAC reaches, with a warning.
"""
from __future__ import annotations

import nir

from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU, DiagSSM, LayerNorm, StochasticSSMNeuron, is_extension, type_name
from nmc.semantics import lookup, register_hook


def rule_graded_events(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, f"{type_name(n)} emits graded (value-carrying) events and needs a programmable gated cell; "
                "the analog chip routes 6-bit addresses without payload", "spinnaker2")
            for k, n in g.nodes.items() if isinstance(n, EGRU)]


@register_hook("brainscales2", "refusal", nir.Delay)
def _delay_refusal(node) -> tuple[str, str]:
    return "synaptic delays are not configurable per synapse on the analog chip", "loihi2"


@register_hook("brainscales2", "refusal", nir.Threshold)
def _threshold_refusal(node) -> tuple[str, str]:
    return ("no memoryless threshold unit (every neuron circuit integrates and leaks); use a LIF layer",
            "spinnaker2 or loihi2")


def rule_refused_types(g: Graph) -> list[tuple[str, str, str]]:
    """Every node whose type registers a ``brainscales2`` ``refusal`` hook (node → (reason, the
    target that can take it)): the whole type has no analog equivalent."""
    out = []
    for k, n in g.nodes.items():
        e = lookup(n)
        hook = e.hook("refusal", "brainscales2") if e is not None else None
        if hook is not None:
            out.append((k, *hook(n)))
    return out


def _ssm_reason(n) -> str | None:
    if isinstance(n, StochasticSSMNeuron):
        return ("a stochastic spiking SSM neuron fires a Bernoulli spike from a seeded per-neuron random number each "
                "tick; the analog chip has no such random source (its circuit noise is neither seeded nor stated)")
    if isinstance(n, LayerNorm):
        return "LayerNorm normalises across channels each step; no analog circuit computes it"
    return None


def rule_ssm(g: Graph) -> list[tuple[str, str, str]]:
    """The SSM nodes left after :func:`.ssm.as_synaptic_currents` (a real DiagSSM feeding a LIF alone with
    one decay and D = 0 maps as its synaptic current), each with its reason (:func:`.ssm.why_not`)."""
    from .ssm import why_not

    return [(k, why, "spinnaker2") for k, n in g.nodes.items()
            if (why := (why_not(g, k) if isinstance(n, DiagSSM) else _ssm_reason(n))) is not None]


def rule_unknown_extension(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, f"extension node {type_name(n)} has no analog equivalent", "spinnaker2")
            for k, n in g.nodes.items() if is_extension(n) and not isinstance(n, EGRU) and _ssm_reason(n) is None]


RULES = (rule_graded_events, rule_refused_types, rule_ssm, rule_unknown_extension)


def check(g: Graph) -> None:
    """Raise one UnsupportedNodeError listing every node the chip cannot take."""
    bad = [v for rule in RULES for v in rule(g)]
    if not bad:
        return
    node, why, where = bad[0]
    more = "; ".join(f"'{n}': {w} (compile for {t})" for n, w, t in bad[1:])
    raise UnsupportedNodeError(f"cannot be mapped to BrainScaleS-2: {why}" + (f"; also {more}" if more else ""),
                               node=node, hint=f"compile this network for {where} (--target {where.split()[0]})")
