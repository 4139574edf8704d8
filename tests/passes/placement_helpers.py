"""Helpers shared by the placement tests: a spec as a nested dict (the form
HardwareSpec.to_dict() gives) and independent re-computations of per-core
loads from the graph's annotations (no reuse of the partitioner's tallies)."""
from __future__ import annotations

import numpy as np

from nmc.annotations import Placement
from nmc.nodes import is_neuron


def spec(neurons=8, mem=None, axons=None, cores=16, mesh=(2, 2), per_node=4, entries=None, chips=1, wbits=8):
    core = {"neurons_max": neurons, "weight_bits": wbits}
    if mem is not None:
        core["synapse_memory_bytes"] = mem
    if axons is not None:
        core["input_axons_max"] = axons
    chip = {"cores": cores, "mesh": list(mesh), "cores_per_router": per_node}
    if entries is not None:
        chip["router_entries_max"] = entries
    return {"name": "test-spec", "core": core, "chip": chip, "board": {"chips": chips}}


def neuron_nodes(g):
    return [k for k, n in g.nodes.items() if is_neuron(n)]


def unit_cores(g, net):
    """Core per unit of ``net`` read back from the Placement annotations (-1 = host)."""
    out = np.full(net.n_units, -1)
    for k, name in enumerate(net.pop_names):
        out[net.pop_slice(k)] = g.ann(name, Placement).core
    return out


def brute_axons(net, ucore):
    """Distinct sources per core by plain set union over every synapse."""
    A = net.A.tocoo()
    per = {}
    for t, s in zip(A.row, A.col):
        per.setdefault(int(ucore[t]), set()).add(int(s))
    return {c: len(v) for c, v in per.items()}


def brute_traffic(net, ucore):
    """Multicast traffic by definition: per source, distinct target cores minus own."""
    AT = net.AT
    tot = 0.0
    for s in range(net.n_units):
        tg = AT.indices[AT.indptr[s]:AT.indptr[s + 1]]
        cores = set(ucore[tg].tolist())
        tot += net.rate[s] * (len(cores) - (1 if ucore[s] >= 0 and ucore[s] in cores else 0))
    return tot
