"""The compiled run loop of Loihi 2 programs of graded units and links (backends/loihi2/fast_graded.py)
equals the numpy step (backends/loihi2/graded.py) bit for bit: every unit's payload at every step,
batched, for the mapped SSM's output stages (graded, relu, delta with its receiver; the D link's
DelayDense ring), graded and binary inputs (the binary W⁺/W⁻ pairs packed), recording a subset. (Against Lava fixed_pt:
test_loihi2_ssm.py, whose emulator runs take this loop.)"""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc.backends.loihi2 import fast_graded
from nmc.backends.loihi2.emulator import LoihiEmulator
from test_loihi2_ssm import program

pytestmark = pytest.mark.skipif(not fast_graded.available(), reason="numba not importable")


def _equal(prog, x, steps, record=None):
    emu = LoihiEmulator(prog)
    assert fast_graded.applies(emu)
    a = emu.run(x, steps, compiled=True, record=record)
    b = LoihiEmulator(prog).run(x, steps, compiled=False, record=record)
    b = b if record is None else {k: v for k, v in b.items() if k in set(record)}
    assert a.keys() == b.keys()
    for k in b:
        for f in ("s", "v"):
            assert a[k][f].dtype == b[k][f].dtype == np.int64
            np.testing.assert_array_equal(a[k][f], b[k][f], err_msg=f"{k}.{f}")
    return a


@pytest.mark.parametrize("seed,complex_,output", [(0, True, "none"), (1, False, "relu"), (2, True, "delta")])
def test_graded_loop_equals_numpy_step(seed, complex_, output):
    prog, _ = program(seed, complex_, output, 0.25)
    x = np.random.default_rng(seed).integers(-128, 128, size=(40, 3, 2)).astype(np.int64)
    x[:, 1, :] = 0                                          # a sample without input
    x[::3, 2, 0] = 0
    out = _equal(prog, {"u": x}, 44)
    assert np.abs(out["ssm.x"]["s"]).max() > 2 ** 12 and out[prog.outputs[0].src]["s"].any()
    _equal(prog, {"u": x[:, :1]}, 44, record=[prog.outputs[0].src])


def test_binary_spike_input_program():
    """The bench's SSM (Affine 32→64 → DiagSSM, spikes in): binary-message links."""
    from bench.ssm_workload import ssm_s4d

    b = nmc.compile(ssm_s4d().graph, target="loihi2", dt=1e-3, reset="zero", integrator="euler")
    assert any(k.num_message_bits == 0 for k in b.program.links)
    x = (np.random.default_rng(0).random((25, 4, 32)) < 0.2).astype(np.int64)
    _equal(b.program, {"input": x}, 27)
    x[:, 2] = 1                                             # every input spiking: the packed sums at their largest
    _equal(b.program, {"input": x}, 27)
    emu = LoihiEmulator(b.program)                          # the input's W⁺/W⁻ pairs run packed in one matrix
    dense = [(k, w) for k, w in emu.links if k.num_message_bits == 0]
    assert fast_graded._packable([(0, dense[0][1]), (1, dense[1][1])]) is not None
