"""What cannot map onto a BrainScaleS-2-style chip, and why.

Small named rules, each ``rule_x(graph) -> list[(node, reason, where)]``;
:func:`check` runs all of them and raises one :class:`UnsupportedNodeError`
naming every offending node, the reason, and the target that can take it.

* ``rule_graded_events`` — EGRU cells (and any node whose output is a graded,
  value-carrying event): the analog chip's event fabric carries 6-bit
  *addresses* only, no payload, and the neuron circuits have no gates; the
  spinnaker2 target (programmable ARM cores, graded spikes) runs them.
* ``rule_delays`` — ``Delay``: there is no per-synapse delay line; the loihi2
  target has synaptic delays.
* ``rule_stateless_threshold`` — ``Threshold`` (a memoryless comparator): every
  neuron circuit integrates and leaks; use a LIF layer (or a digital target).
* ``rule_unknown_extension`` — any other nmc extension node.

IF/I (no leak) are *not* refused here: :func:`lower._leaky_integrators`
maps them to the longest membrane time constant the DAC reaches, with a warning.
"""
from __future__ import annotations

import nir

from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU, is_extension, type_name


def rule_graded_events(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, f"{type_name(n)} emits graded (value-carrying) events and needs a programmable gated cell; "
                "the analog chip routes 6-bit addresses without payload", "spinnaker2")
            for k, n in g.nodes.items() if isinstance(n, EGRU)]


def rule_delays(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, "synaptic delays are not configurable per synapse on the analog chip", "loihi2")
            for k, n in g.nodes.items() if isinstance(n, nir.Delay)]


def rule_stateless_threshold(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, "no memoryless threshold unit (every neuron circuit integrates and leaks); use a LIF layer",
             "spinnaker2 or loihi2") for k, n in g.nodes.items() if isinstance(n, nir.Threshold)]


def rule_unknown_extension(g: Graph) -> list[tuple[str, str, str]]:
    return [(k, f"extension node {type_name(n)} has no analog equivalent", "spinnaker2")
            for k, n in g.nodes.items() if is_extension(n) and not isinstance(n, EGRU)]


RULES = (rule_graded_events, rule_delays, rule_stateless_threshold, rule_unknown_extension)


def check(g: Graph) -> None:
    """Raise one UnsupportedNodeError listing every node the chip cannot take."""
    bad = [v for rule in RULES for v in rule(g)]
    if not bad:
        return
    node, why, where = bad[0]
    more = "; ".join(f"'{n}': {w} (compile for {t})" for n, w, t in bad[1:])
    raise UnsupportedNodeError(f"cannot be mapped to BrainScaleS-2: {why}" + (f"; also {more}" if more else ""),
                               node=node, hint=f"compile this network for {where} (--target {where.split()[0]})")
