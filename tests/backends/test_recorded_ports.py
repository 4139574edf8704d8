"""Recorded layers are ports of the IO map (nmc/iomap.py ``recorded``), filled by each lowering for
the layers it places: the devices read a recorded layer's shape from there, not from the graph, and
refuse a name the map does not hold, naming the recordable layers. The map is rebuilt when a bundle
loads (it is not in the bundle's files)."""
from __future__ import annotations

import numpy as np
import pytest
from nets import ff_lif, spikes

import nmc
from nmc.errors import OptionError
from nmc.iomap import IOMap, Port


@pytest.mark.parametrize("target", ["brainscales2", "spinnaker2"])
def test_recorded_ports_come_from_the_lowering_and_devices_read_them(tmp_path, target):
    b = nmc.compile(ff_lif(), target=target, dt=1e-3, fidelity_check=False, output=tmp_path / "b.nmc")
    io = b.program.io
    rec = {p.name: p for p in io.recorded}
    assert {"lif1", "lif2"} <= set(rec)
    assert rec["lif1"].shape == (16,) and rec["lif2"].shape == (4,)
    assert rec["lif1"].kind == "spikes" and rec["lif2"].kind == "spikes"
    if target == "spinnaker2":           # a population's trace lags by its latency on the chip
        assert rec["lif2"].latency == b.program.pop("lif2").latency > rec["lif1"].latency
    assert io.as_dict()["recorded"][0]["name"] == io.recorded[0].name
    loaded = nmc.load(tmp_path / "b.nmc")
    assert loaded.program.io.recorded == io.recorded
    x = spikes(8, T=25, p=0.3, seed=2)
    # the device reshapes a recorded layer to its port's shape: a port of another shape shows it
    dev = loaded.device("emulator")
    out = dev.run({"input": x}, record=["lif1"])
    assert out["lif1.spikes"].shape == (25, 16) and out["lif1.v"].shape == (25, 16)
    with pytest.raises(OptionError) as e:
        dev.run({"input": x}, record=["fc9"])
    assert e.value.node == "fc9" and "lif1" in e.value.hint


def test_a_device_takes_the_shape_from_the_port(tmp_path):
    b = nmc.compile(ff_lif(), target="brainscales2", dt=1e-3, fidelity_check=False)
    io = b.program.io
    reshaped = IOMap(io.inputs, io.outputs, tuple(Port(p.name, (4, 4), p.kind) if p.name == "lif1" else p
                                                  for p in io.recorded))
    import dataclasses

    prog = dataclasses.replace(b.program, io=reshaped)
    from nmc.backends.brainscales2 import BACKEND

    out = BACKEND.device("emulator", prog).run({"input": spikes(8, T=10, seed=3)}, record=["lif1"])
    assert out["lif1.spikes"].shape == (10, 4, 4)


def test_loihi2_records_its_groups_with_their_latency():
    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, fidelity_check=False)
    rec = {p.name: p for p in b.program.io.recorded}
    groups = {g.name: g for g in b.program.groups}
    assert set(groups) <= set(rec)
    for name, g in groups.items():
        assert rec[name].shape == tuple(g.shape) and rec[name].latency == g.latency
        assert rec[name].kind == ("spikes" if g.spiking else "voltage")


def test_iomap_without_recorded_ports_is_as_before():
    io = IOMap((Port("a", (2,)),), (Port("b", (3,)),))
    assert io.recorded == () and "recorded" not in io.as_dict()
    with pytest.raises(OptionError, match="records no layers"):
        io.record("a")
