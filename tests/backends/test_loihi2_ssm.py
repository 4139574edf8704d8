"""Diagonal SSMs on Loihi 2 (backends/loihi2/ssm.py): nmc's emulator bit-exact with Lava's fixed_pt
simulator on random small SSMs (every unit's payload at every step), the fixed-point output within the
derived error bound of the float ``nmc.ssm_math.simulate``, and Lava's floating-point S4d model against
the same float equations. Each Lava run: ≤ 10 processes, ≤ 40 steps."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nmc import ssm_math as M
from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2.devices.lava_device import lava_available
from nmc.backends.loihi2.program import load_program
from nmc.backends.loihi2.ssm import error_bound, map_diag_ssm, single_ssm_program
from nmc.errors import UnsupportedNodeError

_why = lava_available()
IN_SCALE, BITS = 64.0, 8          # u = u_int / 64, |u_int| <= 128


def random_ssm(seed: int, complex_: bool, P: int = 3, H: int = 2):
    """A stable random SSM (S4D-like Λ, ZOH, Δ in [0.05, 0.3]) → (Λ, step, B, C, D, Λ̄, γ)."""
    rng = np.random.default_rng(seed)
    lam = -np.exp(rng.uniform(-1.0, 0.5, P))
    if complex_:
        lam = lam + 1j * rng.uniform(0.0, 3.0, P)
    step = np.exp(rng.uniform(np.log(0.05), np.log(0.3), P))
    cz = (lambda s: rng.normal(size=s) + 1j * rng.normal(size=s)) if complex_ else (lambda s: rng.normal(size=s))
    b, c, d = cz((P, H)) / 2, cz((H, P)) / 2, rng.normal(size=H)
    lam_bar, gamma = M.discretize(lam, step)
    return lam, step, b, c, d, lam_bar, gamma


def program(seed, complex_, output="none", theta=0.0):
    lam, step, b, c, d, lb, g = random_ssm(seed, complex_)
    m = map_diag_ssm("ssm", "u", lam_bar=lb, gamma=g, b=b, c=c, d=d, in_scale=IN_SCALE, input_bits=BITS,
                     output=output, theta=theta)
    return single_ssm_program(m, "u", 2, BITS), m


def inputs(seed, T=40, H=2):
    return np.random.default_rng(100 + seed).integers(-128, 128, size=(T, H)).astype(np.float64)


@pytest.mark.parametrize("complex_", [True, False])
def test_fixed_point_within_derived_bound_of_float(complex_):
    """|y_emulator − y_float| ≤ error_bound (derived in ssm.error_bound's docstring: parameter rounding
    propagated through the recurrence + one LSB per flooring link per step), and the bound is tight
    enough to mean something: < 10 % of the worst-case output range it holds over (every input at
    |u| = u_max in phase: Y = Σ_p |C_p|ρ·G_p/(1 − |Λ̄_p|) + |D|·u_max)."""
    for seed in range(4):
        prog, m = program(seed, complex_)
        lam, step, b, c, d, lb, g = random_ssm(seed, complex_)
        u = inputs(seed, T=200)
        y = BACKEND.device("emulator", prog).run({"u": u})["y"]
        y_f, _ = M.simulate(u / IN_SCALE, lam, b, c, d, step)
        bound = error_bound(m, lb, g, b, c, d, 128 / IN_SCALE)
        assert np.all(np.abs(y - y_f) <= bound), (seed, np.abs(y - y_f).max(0), bound)
        G = np.abs(g[:, None] * b).sum(1) * (128 / IN_SCALE)
        Y = (2 if complex_ else 1) * np.abs(c) @ (G / (1 - np.abs(lb))) + np.abs(d) * 128 / IN_SCALE
        assert np.all(bound < 0.1 * Y), (seed, bound, Y)


def test_relu_and_delta_stages_are_the_integer_rules():
    """relu = max(y_int, 0); delta = ssm_math.delta_encode on the integer y with θ_int = ⌊θ·S_y⌋, its
    receiver holding the sum of the events (what nmc.nn's delta stage outputs)."""
    u = inputs(1)
    lin, m0 = program(1, True)
    y_int = np.rint(BACKEND.device("emulator", lin).run({"u": u})["y"] * m0.s_y)
    relu, m1 = program(1, True, "relu")
    assert np.array_equal(BACKEND.device("emulator", relu).run({"u": u})["y"] * m1.s_y, np.maximum(y_int, 0))
    theta = 0.3
    dlt, m2 = program(1, True, "delta", theta)
    held = BACKEND.device("emulator", dlt).run({"u": u})["y"] * m2.s_y
    ref, h = [], np.zeros(2)
    for t in range(len(u)):
        _, h, _ = M.delta_encode(y_int[t], h, np.floor(theta * m2.s_y))
        ref.append(h)
    assert np.array_equal(held, np.array(ref))
    assert 0 < np.mean(np.diff(held, axis=0) != 0) < 1


def test_program_round_trips_and_lif_programs_keep_their_bytes():
    prog, _ = program(0, True, "delta", 0.2)
    files = prog.files()
    back = load_program(files)
    assert back.files() == files
    u = inputs(0)
    assert np.array_equal(BACKEND.device("emulator", back).run({"u": u})["y"],
                          BACKEND.device("emulator", prog).run({"u": u})["y"])
    from nmc.backends.loihi2.emit import emit_lava_net
    assert "Sigma" not in emit_lava_net() and "Sigma" in files["lava_net.py"].decode()


def test_refusals_name_the_node_and_reason():
    lam, step, b, c, d, lb, g = random_ssm(0, True)
    for out in ("gelu", "lif"):
        with pytest.raises(UnsupportedNodeError, match="output stage") as e:
            map_diag_ssm("blk", "u", lam_bar=lb, gamma=g, b=b, c=c, d=d, in_scale=64, input_bits=8, output=out)
        assert e.value.node == "blk"
    slow = np.exp(-1e-4 * np.ones(3))                    # 1 − |Λ̄| = 1e-4: below 8-bit weights' 2^-9
    with pytest.raises(UnsupportedNodeError, match="would not decay"):
        map_diag_ssm("blk", "u", lam_bar=slow, gamma=np.ones(3), b=b.real, c=c.real, d=d, in_scale=64, input_bits=8)


@pytest.mark.parametrize("case", [(0, True, "none"), (1, False, "relu"), (2, True, "delta")])
@pytest.mark.lava
@pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")
def test_lava_bit_exact_with_emulator(case):
    """Every unit's payload at every Lava step (unaligned), emulator == Lava fixed_pt."""
    seed, complex_, out = case
    prog, _m = program(seed, complex_, out, 0.25)
    u = inputs(seed)
    names = [x.name for x in prog.units]
    emu = BACKEND.device("emulator", prog, align=False).run({"u": u}, record=names)
    lava = BACKEND.device("lava", prog, align=False, timeout=240).run({"u": u}, record=names)
    assert set(emu) == set(lava)
    for k in emu:
        assert np.array_equal(emu[k], lava[k]), k
    assert np.abs(emu["ssm.x.v_int"]).max() > 2 ** 16          # the state uses the 24-bit range


S4D_SCRIPT = textwrap.dedent('''
    import sys, numpy as np
    from lava.proc.s4d.process import S4d
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    f = np.load(sys.argv[1])
    a, b, c, u = f["a"], f["b"], f["c"], f["u"]
    T, n = u.shape[0], a.shape[0]
    src = Source(data=np.repeat(u[None, :], n, axis=0))
    s4 = S4d(shape=(n,), a=a, b=b, c=c)
    snk = Sink(shape=(n,), buffer=T)
    src.s_out.connect(s4.a_in)
    s4.s_out.connect(snk.a_in)
    s4.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
    out = snk.data.get().T.copy()
    s4.stop()
    np.save(sys.argv[2], out)
''')


@pytest.mark.lava
@pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")
def test_lava_float_s4d_agrees_with_ssm_math(tmp_path):
    """Lava's S4d (floating_pt only) on a one-channel S4D: its per-mode outputs summed equal
    ssm_math.simulate within float64 rounding (relative 1e-9: both are the same recurrence in double
    precision; the difference is summation order only)."""
    lam, step, b, c, d, lb, g = random_ssm(3, True, P=4, H=1)
    u = inputs(3, T=30, H=1)[:, 0] / IN_SCALE
    np.savez(tmp_path / "in.npz", a=lb, b=g * b[:, 0], c=c[0], u=u)
    subprocess.run([sys.executable, "-c", S4D_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                   check=True, timeout=240, capture_output=True, start_new_session=True)
    y_lava = np.load(tmp_path / "out.npy").sum(1)
    y_f, _ = M.simulate(u[:, None], lam, b, c, np.zeros(1), step)
    assert np.allclose(y_lava, y_f[:, 0], rtol=1e-9, atol=1e-12 * np.abs(y_f).max())
