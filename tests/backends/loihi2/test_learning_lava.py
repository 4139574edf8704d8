"""Pair STDP in Lava's fixed_pt simulator (LearningDense with a Loihi2FLearningRule, its model tagged
bit-approximate) against nmc's emulator of the same engine (backends/loihi2/learning.py): Lava draws
its stochastic rounding from seeded numpy generators, so it is deterministic and the emulator matches
it bit for bit — post spikes, voltages and the weights at every step. One run: 4 Lava processes."""
from __future__ import annotations

import numpy as np
import pytest
from test_learning import ERROR, REWARD, lowered, pre_spikes

from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2.devices.lava_device import lava_available
from nmc.plasticity import Plasticity

_why = lava_available()
pytestmark = [pytest.mark.lava, pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")]


@pytest.mark.parametrize("rule", [
    Plasticity(tau_plus=10e-3, tau_minus=12e-3, a_plus=0.02, a_minus=0.024, w_min=-1.0, w_max=1.0, seed=5),
    Plasticity(tau_plus=15e-3, tau_minus=8e-3, a_plus=0.01, a_minus=0.006, w_min=0.0, w_max=1.0, seed=11,
               decay=0.01),
], ids=["mixed", "excitatory-decay"])
def test_lava_learning_bit_exact_with_emulator(rule):
    _, prog = lowered(rule)
    x = pre_spikes(T=100)
    emu = BACKEND.device("emulator", prog, align=False).run({"in": x}, record=["n", "w"])
    lava = BACKEND.device("lava", prog, align=False, timeout=240).run({"in": x}, record=["n", "w"])
    assert set(emu) == set(lava)
    for k in emu:
        assert np.array_equal(emu[k], lava[k]), k
    assert emu["n.spikes"].sum() > 5                                   # the post neurons fire
    assert not np.array_equal(emu["w.w_int"][-1], emu["w.w_int"][0])  # and the weights learned


@pytest.mark.parametrize("reward", [1.0, -0.5])
def test_lava_reward_modulated_learning_bit_exact_with_emulator(reward):
    """Loihi3FLearningRule (tag = eligibility, dw = tag × (y2 − 64)) with nmc's learning post LIF sending
    spikes, y1 and the reward as y2: spikes, voltages and weights equal at every step."""
    _, prog = lowered(REWARD)
    x = pre_spikes(T=100)
    out = {}
    for name in ("emulator", "lava"):
        dev = BACKEND.device(name, prog, align=False, **({"timeout": 240} if name == "lava" else {}))
        dev.modulate(reward)
        out[name] = dev.run({"in": x}, record=["n", "w"])
    assert set(out["emulator"]) == set(out["lava"])
    for k in out["emulator"]:
        assert np.array_equal(out["emulator"][k], out["lava"][k]), k
    assert not np.array_equal(out["lava"]["w.w_int"][-1], out["lava"]["w.w_int"][0])


def test_lava_error_modulated_learning_bit_exact_with_emulator():
    """dw = c·x1·(y2 − 64) with the error per post neuron as y2: spikes, voltages and weights equal."""
    _, prog = lowered(ERROR)
    x = pre_spikes(T=80)
    out = {}
    for name in ("emulator", "lava"):
        dev = BACKEND.device(name, prog, align=False, **({"timeout": 240} if name == "lava" else {}))
        dev.modulate([1.0, -0.5, 0.25])
        out[name] = dev.run({"in": x}, record=["n", "w"])
    for k in out["emulator"]:
        assert np.array_equal(out["emulator"][k], out["lava"][k]), k
    assert not np.array_equal(out["lava"]["w.w_int"][-1], out["lava"]["w.w_int"][0])


def test_lava_batch_of_independent_learners_with_a_reward_baseline():
    """Excitatory weights (w_min = 0), a running reward baseline, a batch of two (Lava runs each
    element as a fresh network; the emulator keeps weights per element), latency-aligned rows."""
    rule = Plasticity(tau_plus=10e-3, tau_minus=12e-3, a_plus=0.02, a_minus=0.024, w_min=0.0, w_max=1.0, seed=4,
                      third_factor="reward", tau_e=40e-3, lr=0.05, tau_baseline=0.03)
    _, prog = lowered(rule)
    x = np.stack([pre_spikes(T=60, seed=1), pre_spikes(T=60, seed=2)], axis=1)
    out = {}
    for name in ("emulator", "lava"):
        dev = BACKEND.device(name, prog, **({"timeout": 240} if name == "lava" else {}))
        dev.modulate([1.0, -1.0])
        out[name] = dev.run({"in": x}, record=["n", "w"])
    for k in out["emulator"]:
        assert np.array_equal(out["emulator"][k], out["lava"][k]), k
    w = out["lava"]["w.w_int"]
    assert w.shape == (60, 2, 3, 6) and not np.array_equal(w[-1, 0], w[-1, 1]) and w.min() >= 0
