"""The placement passes' activity simulation (:func:`nmc.passes.netmodel.unit_rates`) is shortened
to ``RATE_MAX_SYNOPS`` synaptic operations (fewer steps, then fewer samples, as the fidelity
simulations are), and the network's ``rates_from`` says so; below the budget nothing changes."""
import numpy as np

import nets
from nmc.passes import netmodel
from nmc.passes.fidelity import synapses_per_step
from nmc.reference import ReferenceSimulator
from nmc.target_model import CoreLimits
from placement_helpers import spec


def _data(g, T=100, B=4):
    return {"input": (np.random.default_rng(3).random((T, B, *g.shape_out("input"))) < 0.3).astype(np.float64)}


def _rates(g, data):
    res = ReferenceSimulator(g).run(data, record=["lif1", "lif2"], batched=True)
    return np.concatenate([(np.asarray(x).reshape(-1, x.shape[-1]) != 0).mean(0)
                           for x in (data["input"], res["lif1.out"], res["lif2.out"])])


def test_rates_from_the_shortened_probe(monkeypatch):
    g = nets.normalized(nets.ff_lif(n_hid=40))
    lim = CoreLimits.from_spec(spec(neurons=8, cores=64, mesh=(4, 4)))
    data = _data(g)
    full = netmodel.build_network(g, lim, data)
    assert "shortened" not in full.rates_from
    np.testing.assert_array_equal(full.rate, _rates(g, data))
    syn = synapses_per_step(g)
    monkeypatch.setattr(netmodel, "RATE_MAX_SYNOPS", syn * 20 * 4)   # 20 of the 100 steps, all 4 samples
    short = netmodel.build_network(g, lim, data)
    assert short.rates_from.endswith(f"; shortened to 20 steps × 4 samples (100 steps × 4 samples would cost "
                                     f"{syn * 400:.3g} synaptic ops per simulation ({syn} per step), over "
                                     f"RATE_MAX_SYNOPS={syn * 80:.3g})")
    assert "max_sim_synops" not in short.rates_from      # quantize's option: no limit of the placement probe
    np.testing.assert_array_equal(short.rate, _rates(g, {"input": data["input"][:20]}))
    np.testing.assert_array_equal(short.work, short.A @ short.rate)
    monkeypatch.setattr(netmodel, "RATE_MAX_SYNOPS", syn * 16)   # 16 steps at least, then one sample
    one = netmodel.build_network(g, lim, data)
    assert "shortened to 16 steps × 1 samples" in one.rates_from
    np.testing.assert_array_equal(one.rate, _rates(g, {"input": data["input"][:16, :1]}))
