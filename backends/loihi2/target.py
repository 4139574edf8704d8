"""Loihi 2's target model: neurocore limits and the generic byte and work
models (:mod:`nmc.target_model`), read from ``hw_configs/loihi2.toml``.

Bytes per neuron: its synapses at the Dense weight bits (``core.weight_bits``,
or the ``Quant`` bits), CSR for sparse weights (Lava's Sparse process), plus
``core.neuron_state_bytes`` (24-bit u and v); a convolution is stored
expanded, one synapse per connection, as Lava stores it. Work per step: the
expected synaptic events (the energy and timing models count the same events).
Lowering reads the cores from the Placement the partition pass wrote.
"""
from __future__ import annotations

from nmc.target_model import TargetModel


class Loihi2Target(TargetModel):
    """Loihi 2 neurocores (module docstring)."""


def target_model(spec, options=None) -> Loihi2Target:
    return Loihi2Target(spec)
