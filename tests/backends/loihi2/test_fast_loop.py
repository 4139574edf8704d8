"""The compiled run loop equals the numpy emulator bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from nets import conv_pool, ff_lif, normalized, recurrent_cubalif, spikes
from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2 import fast
from nmc.backends.loihi2.emulator import LoihiEmulator
from nmc.passes import PassContext

pytestmark = pytest.mark.skipif(not fast.available(), reason="numba not installed")


@pytest.mark.parametrize("build,shape,reset", [(ff_lif, (8,), "zero"), (recurrent_cubalif, (6,), "subtract"),
                                               (conv_pool, (2, 8, 8), "subtract")])
def test_compiled_equals_numpy(build, shape, reset):
    prog = BACKEND.lower(normalized(build(), reset=reset), PassContext(options={}))
    emu = LoihiEmulator(prog)
    x = spikes(shape, T=30, p=0.4, seed=3, batch=3)
    payload = {prog.inputs[0].name if hasattr(prog.inputs[0], "name") else "input": x.reshape(30, 3, -1).astype(np.int64)}
    a = emu.run(payload, 33, compiled=True)
    b = emu.run_numpy(payload, 33)
    spikes_total = 0
    for k in b:
        for var in ("s", "v", "u"):
            assert np.array_equal(a[k][var], b[k][var]), (k, var)
        spikes_total += b[k]["s"].sum()
    assert spikes_total > 0


@pytest.mark.parametrize("density", [-1.0, 1.0])
def test_event_driven_and_matmul_accumulation_equal_numpy(monkeypatch, density):
    """Every synapse block through the per-source CSR walk (density 1) or through the matmul (−1):
    both bit-equal to the numpy emulator, on dense, recurrent and conv blocks."""
    monkeypatch.setattr(fast, "CSR_DENSITY", density)
    for build, shape in ((ff_lif, (8,)), (recurrent_cubalif, (6,)), (conv_pool, (2, 8, 8))):
        prog = BACKEND.lower(normalized(build(), reset="subtract"), PassContext(options={}))
        emu = LoihiEmulator(prog)
        x = spikes(shape, T=25, p=0.4, seed=7, batch=2).reshape(25, 2, -1).astype(np.int64)
        a, b = emu.run({"input": x}, 28, compiled=True), emu.run_numpy({"input": x}, 28)
        assert sum(b[k]["s"].sum() for k in b) > 0
        for k in b:
            for var in ("s", "v", "u"):
                assert np.array_equal(a[k][var], b[k][var]), (build.__name__, k, var)


@pytest.mark.parametrize("pull_min", [0, 1 << 62])
def test_target_major_walk_equals_numpy(monkeypatch, pull_min):
    """Walked blocks summed target by target (PULL_MIN 0: whenever most rows are active) or always
    source by source: bit-equal to the numpy emulator, on conv blocks (512 targets), batch 1 and 5."""
    monkeypatch.setattr(fast, "PULL_MIN", pull_min)
    monkeypatch.setattr(fast, "CSR_DENSITY", 1.0)
    for build, shape in ((conv_pool, (2, 8, 8)),):
        prog = BACKEND.lower(normalized(build(), reset="subtract"), PassContext(options={}))
        assert any(s.weights.shape[0] >= 64 for s in prog.synapses)
        for batch in (1, 5):
            x = spikes(shape, T=25, p=0.6, seed=9, batch=batch).reshape(25, batch, -1).astype(np.int64)
            a = _equal_numpy(LoihiEmulator(prog), x, 28)
            assert sum(a[k]["s"].sum() for k in a) > 0


def test_recording_a_subset_equals_the_full_recording():
    prog = BACKEND.lower(normalized(recurrent_cubalif(), reset="subtract"), PassContext(options={}))
    emu = LoihiEmulator(prog)
    x = spikes((6,), T=20, p=0.4, seed=2, batch=2).reshape(20, 2, -1).astype(np.int64)
    full = emu.run({"input": x}, 22, compiled=True)
    last = list(full)[-1]
    part = emu.run({"input": x}, 22, compiled=True, record=[last])
    assert list(part) == [last]
    for var in ("s", "v", "u"):
        assert np.array_equal(part[last][var], full[last][var])
    assert list(emu.run({"input": x}, 22, compiled=False, record=[last])) == [last]


def _counting(monkeypatch):
    built = []
    build = fast._build
    monkeypatch.setattr(fast, "_build", lambda emu, integral: built.append(1) or build(emu, integral))
    return built


def _equal_numpy(emu, x, steps):
    a, b = emu.run({"input": x}, steps, compiled=True), emu.run_numpy({"input": x}, steps)
    for k in b:
        for var in ("s", "v", "u"):
            assert np.array_equal(a[k][var], b[k][var]), (k, var)
    return a


def test_tables_are_built_once_per_program_and_never_stale(monkeypatch):
    """Runs of one program (new emulators each time, as the device makes them) reuse its tables; its
    weights are read-only, so a write in place raises instead of leaving the tables stale; a weight
    array replaced (as learning.attach re-quantizes a plastic projection's weights) rebuilds them;
    every run stays bit-equal to the numpy emulator."""
    built = _counting(monkeypatch)
    prog = BACKEND.lower(normalized(conv_pool(), reset="subtract"), PassContext(options={}))
    x = spikes((2, 8, 8), T=20, p=0.4, seed=11, batch=3).reshape(20, 3, -1).astype(np.int64)
    first = _equal_numpy(LoihiEmulator(prog), x, 23)
    _equal_numpy(LoihiEmulator(prog), x, 23)
    assert len(built) == 1
    s = prog.synapses[0]
    j = np.unravel_index(np.flatnonzero(s.weights)[0], s.weights.shape)
    with pytest.raises(ValueError, match="read-only"):
        s.weights[j] = -s.weights[j] + 2                               # in place: refused
    w = s.weights.copy()
    w[j] = -w[j] + 2
    s.weights = w                                                      # replaced
    changed = _equal_numpy(LoihiEmulator(prog), x, 23)
    assert len(built) == 2
    assert any(not np.array_equal(changed[k]["v"], first[k]["v"]) for k in first)
    _equal_numpy(LoihiEmulator(prog), x, 23)
    assert len(built) == 2
    s.weights = np.zeros_like(s.weights)                               # replaced (learning.attach)
    silent = _equal_numpy(LoihiEmulator(prog), x, 23)
    assert len(built) == 3 and all(silent[k]["s"].sum() == 0 for k in silent)


def test_tables_follow_numerics_parameters_and_csr_setting(monkeypatch):
    from dataclasses import replace

    from nmc.backends.loihi2.numerics import LoihiNumerics

    built = _counting(monkeypatch)
    prog = BACKEND.lower(normalized(ff_lif(), reset="zero"), PassContext(options={}))
    x = spikes((8,), T=10, p=0.4, seed=1, batch=2).reshape(10, 2, -1).astype(np.int64)
    _equal_numpy(LoihiEmulator(prog), x, 12)
    _equal_numpy(LoihiEmulator(prog), x, 12)
    assert len(built) == 1
    assert fast.table_inputs(prog) is not fast.table_inputs(prog)      # built per run, compared by value
    n = prog.numerics
    wider = replace(prog, numerics=LoihiNumerics(n.decay_bits, n.activation_shift, n.threshold_shift,
                                                 n.state_bits + 2, n.weight_bits))
    _equal_numpy(LoihiEmulator(wider), x, 12)
    assert len(built) == 2
    prog.groups[0].vth += 1
    _equal_numpy(LoihiEmulator(prog), x, 12)
    assert len(built) == 3
    monkeypatch.setattr(fast, "CSR_DENSITY", 0.5)
    _equal_numpy(LoihiEmulator(prog), x, 12)
    assert len(built) == 4


@pytest.mark.parametrize("both_max", [0, 1 << 22])
def test_dense_blocks_walked_in_sparse_steps_equal_numpy(monkeypatch, both_max):
    """A block denser than CSR_DENSITY keeps its row tables too (up to CSR_BOTH_MAX nonzeros) and is
    walked in steps where few sources are active, by matmul in the others: bit-equal to numpy either way."""
    monkeypatch.setattr(fast, "CSR_BOTH_MAX", both_max)
    prog = BACKEND.lower(normalized(ff_lif(), reset="zero"), PassContext(options={}))
    assert all(np.count_nonzero(s.weights) > fast.CSR_DENSITY * s.weights.size for s in prog.synapses)
    x = np.concatenate([spikes((8,), T=15, p=0.02, seed=4, batch=3), spikes((8,), T=15, p=0.7, seed=5, batch=3)])
    a = _equal_numpy(LoihiEmulator(prog), x.reshape(30, 3, -1).astype(np.int64), 33)
    assert sum(a[k]["s"].sum() for k in a) > 0


def test_mixed_sign_halves_run_as_one_block_and_negative_exponents_alone():
    """merged_blocks: same source, target and message kind with weight_exp ≥ 0 summed as W·2^e (exp 0);
    a synapse with weight_exp < 0 keeps its own block (its own rounding toward −∞)."""
    from nmc.backends.loihi2.program import Synapse

    w1, w2, w3 = (np.arange(6.0).reshape(3, 2) * k for k in (1, -1, 3))
    syn = [(Synapse("a", "in", "g", w1.T, weight_exp=1), w1), (Synapse("b", "in", "g", w2.T, weight_exp=2), w2),
           (Synapse("c", "in", "g", w3.T, weight_exp=-1), w3), (Synapse("d", "g", "g", w1.T), w1)]
    blocks = fast.merged_blocks(syn)
    assert [(s, d, e) for s, d, e, _, _ in blocks] == [("in", "g", 0), ("in", "g", -1), ("g", "g", 0)]
    assert np.array_equal(blocks[0][4], 2 * w1 + 4 * w2) and blocks[1][4] is w3 and blocks[2][4] is w1


def test_merged_blocks_sum_in_place_without_touching_the_inputs():
    """Three or more synapses into one block: summed into one array made by merged_blocks (in place),
    bit for bit the left-to-right sum, the callers' arrays unchanged (they are the emulator's weights)."""
    from nmc.backends.loihi2.program import Synapse

    rng = np.random.default_rng(3)
    ws = [rng.integers(-255, 256, (5, 4)).astype(np.float64) for _ in range(4)]
    keep = [w.copy() for w in ws]
    for exps in ([0, 1, 0, 2], [2, 0, 1, 0], [0, 0, 0, 0]):
        syn = [(Synapse(f"s{k}", "in", "g", w.T, weight_exp=e), w) for k, (w, e) in enumerate(zip(ws, exps))]
        (block,) = fast.merged_blocks(syn)
        want = ws[0] * 2.0 ** exps[0]
        for w, e in zip(ws[1:], exps[1:]):
            want = want + w * 2.0 ** e
        assert np.array_equal(block[4], want) and block[2] == 0
        assert all(np.array_equal(w, k) for w, k in zip(ws, keep))
