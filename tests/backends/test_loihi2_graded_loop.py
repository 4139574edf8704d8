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
            # the compiled loop records the integer payloads as float64 (exact below 2^53), the numpy step int64
            assert a[k][f].dtype == np.float64 and b[k][f].dtype == np.int64
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


def test_binary_pair_bound():
    """The binary (s ∈ {0, 1}) pair's K: the power of two above ΣW⁺, packed while ΣW⁺ + K·Σ|W⁻| < 2^24
    (every partial sum a float32 integer), the same rule as the signed pair's with m = 1, not centred."""
    f32 = (1.0, fast_graded.LIMIT_F32, False)
    assert fast_graded.pack_k(3.0, 5.0, *f32) == 4.0
    assert fast_graded.pack_k(4.0, 5.0, *f32) == 8.0
    assert fast_graded.pack_k(4095.0, 4095.0, *f32) == 4096.0           # 4095 + 2^12·4095 = 2^24 − 1
    assert fast_graded.pack_k(4095.0, 4096.0, *f32) == 0.0              # 4095 + 2^24 > 2^24
    assert fast_graded.pack_k(0.0, 2.0 ** 23, *f32) == 0.0               # 2·2^23 reaches 2^24
    assert fast_graded.pack_k(0.0, 2.0 ** 23 - 1, *f32) == 2.0
    assert fast_graded.pack_k(4095.0, 4096.0, 1.0, 2.0 ** 25, False) == 4096.0
    wp = np.array([[3.0, 0.0], [1.0, 2.0]])                               # (n_src, n_dst); column sums 4, 2
    wn = -np.array([[0.0, 1.0], [2.0, 0.0]])
    (lp, _), (ln, _), kk = fast_graded._packable([("neg", wn), ("pos", wp)])
    assert (lp, ln, kk) == ("pos", "neg", 8.0)
    assert fast_graded._packable([("a", wp), ("b", wp)]) is None        # not one sign each
    assert fast_graded._packable([("a", wp)]) is None


def test_signed_pair_packed_and_unpacked():
    """The signed 24-bit C link's W⁺/W⁻ pair: one product W⁺ + K·W⁻ on the steps whose payloads keep every
    partial sum below 2^53, the two products on the others; both equal the numpy step's."""
    from bench.ssm_workload import ssm_s4d

    f64 = (fast_graded.LIMIT_F64, True)
    assert fast_graded.pack_k(208.0, 204.0, 2.0 ** 17, *f64) == 2.0 ** 26
    assert fast_graded.pack_k(208.0, 204.0, 2.0 ** 19, *f64) == 0.0      # 2^28·(204·2^19) > 2^53
    assert fast_graded.pack_k(1.0, 0.0, 0.0, *f64) == 2.0
    b = nmc.compile(ssm_s4d().graph, target="loihi2", dt=1e-3, reset="zero", integrator="euler")
    prog = b.program
    c = [k for k in prog.links if (k.src, k.dst) == ("ssm.x", "ssm.y")]
    for k in c:                                             # 4× the weights: larger sums, packing runs out
        k.weights = np.asarray(k.weights) * 4
    pair = fast_graded._pair64([(k, w) for k, w in LoihiEmulator(prog).links if k in c])
    assert len(c) == 2 and pair is not None
    x = (np.random.default_rng(0).random((25, 4, 32)) < 0.2).astype(np.int64)
    x[:, 2] = 1
    out = _equal(prog, {"input": x}, 27)
    ks = [fast_graded.pack_k(*pair[2], float(v), *f64) for v in np.abs(out["ssm.x"]["s"]).max(axis=(1, 2))]
    assert 0.0 in ks and any(k > 0 for k in ks)              # both ways ran
