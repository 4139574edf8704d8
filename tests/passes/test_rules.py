import numpy as np

import nets
from nmc.annotations import Quant, Sparsity
from nmc.passes import rules
from nmc.passes.netmodel import build_network
from nmc.target_model import CoreLimits, synapse_bytes


def net_of(model, lim, anns=()):
    g = nets.normalized(model)
    for node, a in anns:
        g.annotate(node, a)
    return build_network(g, lim)


def test_synapse_bytes_formula():
    lim = CoreLimits()
    assert synapse_bytes([10], 8, False, 10, lim).tolist() == [10.0]
    assert synapse_bytes([10], 4, False, 10, lim).tolist() == [5.0]
    # CSR: 10 nnz of 300 inputs -> 16-bit indices: ceil(10*(8+16)/8) + 4 row pointer
    assert synapse_bytes([10], 8, True, 300, lim).tolist() == [34.0]


def test_quant_and_sparsity_change_bytes():
    lim = CoreLimits(neurons_max=100)
    dense = net_of(nets.ff_lif(), lim)
    q4 = net_of(nets.ff_lif(), lim, [("fc1", Quant(bits=4))])
    s = dense.pop_slice(0)
    assert np.all(dense.bytes_[s] == 8) and np.all(q4.bytes_[s] == 4)
    m = nets.normalized(nets.ff_lif())
    m.nodes["fc1"].weight[:, 4:] = 0
    m.annotate("fc1", Sparsity(density=0.5, format="csr"))
    sp_net = build_network(m, lim)
    assert np.all(sp_net.bytes_[s] == 4 * 2 + 4)   # 4 nnz × (8+8 bits) + 4


def test_each_rule_alone():
    lim = CoreLimits(neurons_max=4, memory_bytes=12, fan_in_max=10, work_max=12.0, cores_per_chip=2)
    net = net_of(nets.ff_lif(), lim)   # lif1: fan-in 8, lif2: fan-in 16, 16 bytes, work 16/step
    assert [v.node for v in rules.rule_neuron_fan_in(net, lim)] == ["lif2"]
    assert [v.node for v in rules.rule_neuron_memory(net, lim)] == ["lif2"]
    assert [v.node for v in rules.rule_neuron_work(net, lim)] == ["lif2"]
    tot = rules.rule_total_cores(net, lim)
    assert len(tot) == 1 and tot[0].limit == 2 and tot[0].actual >= 5 and "spinnaker2-48chip" in tot[0].hint
    assert rules.check(net, CoreLimits(neurons_max=4)) == []


def test_lower_bound_terms():
    lim = CoreLimits(neurons_max=5, memory_bytes=100, fan_in_max=6)
    net = net_of(nets.ff_lif(), lim)
    lb = rules.cores_lower_bound(net, lim)
    # neurons 20/5 = 4; bytes 16·8 + 4·16 = 192 / 100 -> 2; inputs: each of the 8 inputs feeds all 16 lif1
    # neurons, at most 5 per core -> 4 cores each; each of the 16 lif1 neurons feeds the 4 lif2 neurons,
    # one core -> 1 each: (8·4 + 16·1) / 6 = 8 axons' worth of cores
    assert rules.source_cores_min(net, lim).tolist() == [4] * 8 + [1] * 16 + [0] * 4
    assert lb["terms"] == {"neurons": 4, "bytes": 2, "inputs": 8} and lb["value"] == 8
    from nmc.passes.partition import run_partition   # the bound holds: no packing needs fewer cores
    fit = CoreLimits(neurons_max=2, fan_in_max=16)   # lif2's 16 inputs fit: (8·8 + 16·2) / 16 = 6 < 20/2
    for m in ("sequential", "greedy", "metis"):
        pt, rep = run_partition(nets.normalized(nets.ff_lif()), fit, method=m, baselines=())
        assert rep["cores_lower_bound_terms"]["inputs"] == 6 and rep["cores_used"] >= rep["cores_lower_bound"] == 10


def test_limits_from_spec_dict_and_overrides():
    d = {"core": {"neurons_max": {"value": 250, "unit": "neurons"}, "synapse_memory_bytes": 98304},
         "chip": {"cores_usable": 148, "router_entries_max": 16384}, "board": {"chips": 48}}
    lim = CoreLimits.from_spec(d, neurons_max=100)
    assert lim.neurons_max == 100 and lim.memory_bytes == 98304 and lim.router_entries_max == 16384
    assert lim.chips == 48 and lim.cores_total == 148 * 48
    assert lim.mesh_x * lim.mesh_y * lim.cores_per_node >= 148


def test_limits_read_only_the_canonical_keys():
    """The target model reads each limit from one key (nmc.target_model's table); an alias
    such as core.data_bytes or chip.cores is not a second way to say it."""
    from nmc.hw import HardwareSpec

    d = {"core": {"data_bytes": 98304, "max_neurons": 7}, "chip": {"cores": 148}}
    lim = CoreLimits.from_spec(d)
    assert lim.memory_bytes is None and lim.neurons_max is None and lim.cores_per_chip is None
    spec = HardwareSpec.load("spinnaker2")
    lim = CoreLimits.from_spec(spec)
    assert lim.memory_bytes == spec.get("core.synapse_memory_bytes")
    assert lim.cores_per_chip == spec.get("chip.cores_usable") and lim.target == "spinnaker2"
    assert lim.work_max == spec.get("core.clock_hz") * spec.get("timing.sys_tick_s") / spec.get("core.cycles_per_synop")
    assert CoreLimits.from_spec(spec.to_dict()) == lim   # the dict form reads the same
