"""A recording stand-in for the py-spinnaker2 package and a loader that runs a program's emitted
run_spinnaker2.py against it (tests only: imported by the spinnaker2 tests, not collected)."""
from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import numpy as np


class Recorder:
    """A recording stand-in for the py-spinnaker2 package: every Population, Projection (and, with
    ``conv=True``, Conv2DProjection) the script makes and every chip run it asks for."""

    def __init__(self, conv: bool = False):
        self.pops, self.projs, self.convs, self.runs = [], [], [], []
        rec = self

        class Population:
            def __init__(self, size, neuron_model, params, name, record=None):
                self.size, self.model, self.params, self.name, self.record = size, neuron_model, params, name, record
                self.atoms = None
                rec.pops.append(self)

            def set_max_atoms_per_core(self, n):
                self.atoms = n

            def get_spikes(self):
                return {}

            def get_voltages(self):
                return {}

        class Projection:
            def __init__(self, pre, post, connections):
                self.pre, self.post, self.conns = pre, post, connections
                rec.projs.append(self)

        class Conv2DProjection:
            def __init__(self, pre, post, weights, params):
                self.pre, self.post, self.weights, self.params = pre, post, weights, params
                rec.convs.append(self)

        class Network:
            def __init__(self, name):
                self.objs = []

            def add(self, *objs):
                self.objs += objs

        class SpiNNaker2Chip:
            def __init__(self, eth_ip):
                self.ip = eth_ip

            def run(self, net, steps, sys_tick_in_s):
                rec.runs.append((self.ip, steps, sys_tick_in_s, len(net.objs)))

        self.snn = types.SimpleNamespace(Population=Population, Projection=Projection, Network=Network)
        if conv:
            self.snn.Conv2DProjection = Conv2DProjection
        self.hardware = types.SimpleNamespace(SpiNNaker2Chip=SpiNNaker2Chip)


def load_script(tmp_path: Path, monkeypatch, program, inputs: dict, rec: Recorder | None = None):
    """The emitted script's ``main`` with ``rec`` (a fresh :class:`Recorder` when None) installed as
    the ``spinnaker2`` package. ``program``: the program's files (name → bytes, written under
    ``tmp_path/prog``) or the folder of a written program; ``inputs`` are saved to
    ``tmp_path/in.npz``. Returns ``(main, rec, input_path)``."""
    if isinstance(program, dict):
        d = tmp_path / "prog"
        for k, v in program.items():
            (d / k).parent.mkdir(parents=True, exist_ok=True)
            (d / k).write_bytes(v)
    else:
        d = Path(program)
    rec = Recorder() if rec is None else rec
    pkg = types.ModuleType("spinnaker2")
    pkg.snn, pkg.hardware = rec.snn, rec.hardware
    monkeypatch.setitem(sys.modules, "spinnaker2", pkg)
    np.savez(tmp_path / "in.npz", **inputs)
    return runpy.run_path(str(d / "run_spinnaker2.py"))["main"], rec, str(tmp_path / "in.npz")
