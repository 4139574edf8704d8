"""The hardware path of a learning rule: the bundle's run_brainscales2.py, executed against the
recording stand-in of pynn_brainscales, attaches the generated PPU kernel to the plastic projection
(every synapse that may learn, weight 0 included) as a PlasticityRule on a Timer with the rule's
cadence, and writes the host's 8-bit reward; the hardware device passes its reward to the script."""
from __future__ import annotations

import importlib
import runpy

import numpy as np
import pytest

from nmc.backends.brainscales2 import ppu
from test_ppu_emulator import W, compile_, inputs, net
from nmc.plasticity import Plasticity

RULE = Plasticity(tau_plus=10e-3, a_plus=0.03, a_minus=0.02, w_min=0.0, w_max=1.0, third_factor="reward")


def test_script_attaches_the_kernel_to_the_plastic_projection(tmp_path, pynn):
    w = [[0.2, 0.0, 0.2, 1.0], [1.0, 0.2, 0.0, 0.2]]              # zeros: synapses at weight 0
    b = compile_(net(w, RULE), ppu_period=7, output=tmp_path / "b")
    prog = b.program
    T = 30
    np.savez(tmp_path / "in.npz", **{"in": inputs(T=T)})
    mod = runpy.run_path(str(tmp_path / "b" / "program" / "run_brainscales2.py"))
    mod["main"](["--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--reward", "0.5"])
    plastic = [pj for pj in pynn.LOG["projections"] if (pj.pre.label, pj.post.label) == ("in", "n")]
    assert len(plastic) == 1 and plastic[0].receptor_type == "excitatory"
    pj = plastic[0]
    conns = {(a, c): wt for a, c, wt, _ in pj.connector.conn_list}
    assert len(conns) == 8                                       # every pair, the two weight-0 ones too
    q = prog.projections[0]
    assert all(conns[(a, c)] == abs(q.w6[c, a]) for (a, c) in conns) and conns[(1, 0)] == 0
    rule = pj.synapse_type.plasticity_rule
    dt_hw = prog.dt / prog.speedup * 1e3
    assert rule.timer.start == pytest.approx(7 * dt_hw) and rule.timer.period == pytest.approx(7 * dt_hw)
    assert rule.timer.num_periods == T // 7
    src = (tmp_path / "b" / "program" / "ppu_rule_0.cpp").read_text()
    assert rule.generate_kernel() == f"#define NMC_SIGN 1\n#define NMC_REWARD_INIT {ppu.reward_code(0.5)}\n" + src
    r = ppu.PPURule.from_json(prog.plasticity[0])
    assert f"#define NMC_KP {r.kp}\n" in src and f"#define NMC_DE {r.de}\n" in src
    for x in (0.5, -0.013, 1 / 64, -1 / 64, 7.0, -9.0, 0.0):     # the script's reward code is the model's
        assert mod["reward_code"](x) == ppu.reward_code(x)
    frozen = [pj for pj in pynn.LOG["projections"] if pj is not plastic[0]]
    assert all(type(p.synapse_type).__name__ == "_StaticSynapse" for p in frozen)


def test_hardware_device_writes_the_reward(pynn, monkeypatch):
    b = compile_(net(W, RULE))
    seen = []
    real = importlib.import_module("nmc.backends.brainscales2.devices.hardware").runpy.run_path

    def spy(path):
        mod = real(path)
        main = mod["main"]
        mod["main"] = lambda argv: (seen.append(argv[argv.index("--reward") + 1]), main(argv))
        return mod

    monkeypatch.setattr("nmc.backends.brainscales2.devices.hardware.runpy.run_path", spy)
    from nmc.backends.brainscales2.devices.hardware import BSS2Hardware

    dev = BSS2Hardware(b.program.files())
    assert dev.takes_modulator
    dev.modulate(0.25)
    dev.run({"in": inputs(T=12)})
    assert [float(s) for s in seen] == [0.25]
    kernels = [pj.synapse_type.plasticity_rule.generate_kernel() for pj in pynn.LOG["projections"]
               if hasattr(pj.synapse_type, "plasticity_rule")]
    assert kernels and all(f"#define NMC_REWARD_INIT {ppu.reward_code(0.25)}\n" in k for k in kernels)


def test_script_attaches_a_spore_kernel(tmp_path, pynn):
    rule = Plasticity(rule="spore", third_factor="reward", beta=1.0, temperature=0.1, theta0=3.0)
    b = compile_(net(W, rule), output=tmp_path / "b")
    np.savez(tmp_path / "in.npz", **{"in": inputs(T=20)})
    mod = runpy.run_path(str(tmp_path / "b" / "program" / "run_brainscales2.py"))
    mod["main"](["--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--reward", "-1"])
    (pj,) = [p for p in pynn.LOG["projections"] if hasattr(p.synapse_type, "plasticity_rule")]
    k = pj.synapse_type.plasticity_rule.generate_kernel()
    assert k.startswith("#define NMC_SIGN 1\n#define NMC_REWARD_INIT -32\n") and "#define NMC_SPORE 1\n" in k
    assert pj.synapse_type.plasticity_rule.timer.num_periods == 2
