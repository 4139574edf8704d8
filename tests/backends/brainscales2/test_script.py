"""The bundle's program/run_brainscales2.py, executed against the recording
stand-in of pynn_brainscales (tests/backends/brainscales2/standin): it must
build exactly the Program — populations with every DAC code, the 6-bit
weights as excitatory/inhibitory projections, the input spike times in
hardware time — and the hardware device must refuse cleanly without the
vendor package."""
from __future__ import annotations

import importlib
import runpy

import numpy as np
import pytest

import nmc
from nets import ff_lif, recurrent_cubalif, spikes
from nmc.errors import DeviceError

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")


@pytest.mark.parametrize("build", [ff_lif, recurrent_cubalif])
def test_script_main_builds_exactly_the_program(tmp_path, pynn, build):
    b = nmc.compile(build(), target="brainscales2", **OPTS)
    b.write(tmp_path / "b.nmc")
    prog = b.program
    n_in = prog.inputs["input"]
    x = spikes((n_in,), T=12, p=0.4, seed=3)
    np.savez(tmp_path / "in.npz", input=x)
    mod = runpy.run_path(str(tmp_path / "b.nmc" / "program" / "run_brainscales2.py"))
    mod["main"](["--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")])
    log = pynn.LOG
    assert log["setup"] == 1 and log["end"] == 1
    assert log["run"] == [pytest.approx(12 * prog.dt / prog.speedup * 1e3)]  # ms of hardware time
    pops = {p.label: p for p in log["populations"]}
    assert set(pops) == {"input"} | set(prog.constant_inputs) | {l.name for l in prog.layers}
    src = pops["input"].celltype
    dt_hw = prog.dt / prog.speedup * 1e3
    for i in range(n_in):  # one spike time per input event, in hardware ms
        assert src.params["spike_times"][i] == pytest.approx(list(np.flatnonzero(x[:, i]) * dt_hw))
    for c in prog.constant_inputs:  # the bias source: one spike every step
        assert pops[c].celltype.params["spike_times"] == [pytest.approx(list(np.arange(12) * dt_hw))]
    names = mod["CODE_PARAMS"]
    for l in prog.layers:
        p = pops[l.name]
        assert p.size == l.size and p.celltype.kind == "HXNeuron" and p.recorded == ["spikes"]
        for key, hx in names.items():
            assert p.celltype.params[hx] == l.codes[key].tolist(), (l.name, key)
    for q in prog.projections:
        w = np.zeros_like(q.w6)
        seen = 0
        for pj in log["projections"]:
            if (pj.pre.label, pj.post.label) != (q.pre, q.post):
                continue
            sign = {"excitatory": 1, "inhibitory": -1}[pj.receptor_type]
            for a, c, weight, delay in pj.connector.conn_list:
                assert 0 < weight <= 63 and delay == 0.0
                assert w[c, a] == 0  # each synapse once
                w[c, a] = sign * weight
                seen += 1
        assert np.array_equal(w, q.w6) and seen == np.count_nonzero(q.w6)
    with np.load(tmp_path / "out.npz") as z:
        assert set(z.files) == set(prog.outputs) and z["output"].shape == (12, prog.layer(prog.outputs["output"]).size)


def test_hardware_device_needs_the_vendor_package(tmp_path):
    if importlib.util.find_spec("pynn_brainscales") is not None:
        pytest.skip("a pynn_brainscales is importable here")
    b = nmc.compile(ff_lif(), target="brainscales2", **OPTS)
    with pytest.raises(DeviceError) as e:
        b.run({"input": spikes((8,), T=5)}, device="hardware")
    assert "pynn_brainscales" in e.value.one_line() and "emulator" in e.value.one_line()


def test_hardware_device_runs_the_script_through_the_standin(pynn):
    b = nmc.compile(ff_lif(), target="brainscales2", **OPTS)
    out = b.run({"input": spikes((8,), T=5, batch=3)}, device="hardware")
    assert out["output"].shape == (5, 3, 4) and len(pynn.LOG["run"]) == 3  # one hardware run per sample
