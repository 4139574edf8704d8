"""Recording stand-in for ``pynn_brainscales.brainscales2`` (tests only).

Implements the PyNN calls the emitted script makes — setup, Population
(SpikeSourceArray / HXNeuron cells), Projection (FromListConnector,
StaticSynapse or PlasticSynapse with a PlasticityRule subclass on a Timer,
receptor type), record, run, get_data, end — and records
every call in :data:`LOG` so a test can compare the built network with the
Program. ``run`` produces no spikes (there is no chip behind it).
"""
from types import SimpleNamespace

LOG = {"setup": 0, "populations": [], "projections": [], "run": [], "end": 0}


def reset_log():
    LOG.update(setup=0, populations=[], projections=[], run=[], end=0)


def setup(**kw):
    LOG["setup"] += 1


def run(duration):
    LOG["run"].append(float(duration))


def end():
    LOG["end"] += 1


class _Cell:
    def __init__(self, kind, **params):
        self.kind, self.params = kind, params


cells = SimpleNamespace(SpikeSourceArray=lambda spike_times: _Cell("SpikeSourceArray", spike_times=spike_times),
                        HXNeuron=lambda **kw: _Cell("HXNeuron", **kw))


class Population:
    def __init__(self, size, cell, label=None):
        self.size, self.celltype, self.label, self.recorded = size, cell, label, []
        LOG["populations"].append(self)

    def record(self, what):
        self.recorded = list(what)

    def get_data(self, what):
        trains = [SimpleNamespace(magnitude=[]) for _ in range(self.size)]
        return SimpleNamespace(segments=[SimpleNamespace(spiketrains=trains)])


class FromListConnector:
    def __init__(self, conn_list):
        self.conn_list = list(conn_list)


class _StaticSynapse:
    pass


class Timer:
    def __init__(self, start, period, num_periods):
        self.start, self.period, self.num_periods = start, period, num_periods


class PlasticityRule:
    """Subclassed by the script; ``generate_kernel`` returns the PPU kernel's source."""

    def __init__(self, timer, observables=None):
        self.timer, self.observables = timer, observables

    def generate_kernel(self):
        raise NotImplementedError


class _PlasticSynapse:
    def __init__(self, plasticity_rule, weight=0):
        self.plasticity_rule, self.weight = plasticity_rule, weight


standardmodels = SimpleNamespace(synapses=SimpleNamespace(StaticSynapse=_StaticSynapse,
                                                          PlasticSynapse=_PlasticSynapse))


class Projection:
    def __init__(self, presynaptic, postsynaptic, connector, synapse_type=None, receptor_type="excitatory"):
        self.pre, self.post, self.connector = presynaptic, postsynaptic, connector
        self.synapse_type, self.receptor_type = synapse_type, receptor_type
        LOG["projections"].append(self)
