"""The numba-fused fine-step loop of the analog emulator is bit-identical to
the numpy array version, with every analog effect on (the default step-timing
path's closed form over idle fine steps: test_closed_form_step.py)."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import ff_lif, recurrent_cubalif, spikes
from nmc.backends.brainscales2 import fast

OPTS = dict(dt=1e-3, integrator="euler", reset="zero")


@pytest.mark.skipif(not fast.available(), reason="numba not importable")
@pytest.mark.parametrize("build,n_in,layer", [(ff_lif, 8, "lif1"), (recurrent_cubalif, 6, "lif1")])
@pytest.mark.parametrize("opts", [dict(mismatch="calibrated", noise=True, seed=3),
                                  dict(mismatch="uncalibrated", event_timing="real")])
def test_compiled_fine_steps_equal_numpy(build, n_in, layer, opts):
    b = nmc.compile(build(), target="brainscales2", t_refrac=2e-3, **OPTS)
    x = spikes((n_in,), T=30, p=0.4, seed=5, batch=3)
    a = b.run({"input": x}, record=[layer], compiled=True, **opts)
    c = b.run({"input": x}, record=[layer], compiled=False, **opts)
    assert a.keys() == c.keys()
    assert a[f"{layer}.spikes"].sum() > 0  # the comparison covers spiking, reset and refractoriness
    for k in a:
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)


@pytest.mark.skipif(not fast.available(), reason="numba not importable")
@pytest.mark.parametrize("cuba", [False, True])
def test_step_kernel_iterating_equals_fine_steps(cuba):
    """``fine_steps_step(closed=False)``: the fine-step iteration of :func:`fine_steps` on a drive
    that is zero outside fine step k_in, bit for bit (spikes, reset and refractoriness included)."""
    rng = np.random.default_rng(2)
    B, n, S, h = 5, 40, 10, 1e-7
    P = {"v_leak": rng.uniform(-0.2, 0.2, n), "a": rng.uniform(0.8, 0.99, n), "b": rng.uniform(0.6, 0.95, n),
         "coef": rng.uniform(0.01, 0.2, n) if cuba else np.zeros(n), "v_reset": np.full(n, -0.1),
         "v_threshold": np.ones(n), "t_refrac": np.full(n, 2.5 * h)}
    v, i = rng.uniform(-0.5, 1.0, (B, n)), rng.normal(0, 1, (B, n))
    ref = np.where(rng.random((B, n)) < 0.2, 4 * h, 0.0)
    d = rng.normal(0.5, 1.0, (B, n))
    k_in = 0 if cuba else S - 1
    drive = np.zeros((S, B, n))
    drive[k_in] = d
    want = fast.fine_steps(v.copy(), i.copy(), ref.copy(), drive, None, cuba, P, h)
    got = [v.copy(), i.copy(), ref.copy()]
    spk = fast.fine_steps_step(*got, d, k_in, cuba, fast.pack_step(P, n, S), h, S, closed=False)
    assert spk.sum() > 0 and (ref > 0).any()
    for x, y in zip(got + [spk], want[:4]):
        np.testing.assert_array_equal(x, y)


def test_kernel_refractory_and_noise_by_hand():
    """One neuron, two fine steps, hand-computed: fires in step 0, held at v_reset in step 1."""
    P = {"v_leak": 0.0, "a": 0.5, "coef": 0.0, "b": 0.0, "v_reset": -1.0, "v_threshold": 1.0, "t_refrac": 0.25}
    drive = np.array([[[3.0]], [[5.0]]])
    noise = np.array([[[0.5]], [[0.0]]])
    for f in ([fast.fine_steps_numpy] + ([fast.fine_steps] if fast.available() else [])):
        v, i, ref, spk, fired = f(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), drive, noise, False, P, 0.1)
        # k=0: v = 0 + 3 + 0.5 = 3.5 > 1 → fired, v = −1, ref = 0.25; k=1: v → ref>0 → v = −1, ref = 0.15
        assert fired[:, 0, 0].tolist() == [1.0, 0.0] and spk[0, 0] == 1.0
        assert v[0, 0] == -1.0 and ref[0, 0] == pytest.approx(0.15)


# below CSR_DENSITY: walked per event by source; above: dense rows walked (≥ ROWS_MIN_POST targets) or one matmul
@pytest.mark.parametrize("density,n_post", [(0.1, 30), (0.9, 30), (0.9, 70)])
def test_projection_sums_integers_then_scales_once(density, n_post):
    """Input rule: Σ of the integer weights of the active sources (exact), × the LSB once;
    ``add_to`` adds exactly that to the drive it is given."""
    rng = np.random.default_rng(1)
    w = np.where(rng.random((n_post, 40)) < density, rng.integers(-63, 64, (n_post, 40)), 0)
    scale = 0.1234567
    p = fast.Projection(w, scale)
    assert p.csr == (fast.available() and density < fast.CSR_DENSITY)
    if p.csr:   # unsigned indices, as the fused layer inputs' (the scatter needs no wraparound test)
        assert p.ptr.dtype == p.idx.dtype == np.uint64
    x = (rng.random((3, 5, 40)) < 0.3).astype(float)
    exact = np.einsum("...i,ji->...j", x.astype(np.int64), w)          # integer sums
    np.testing.assert_array_equal(p(x), exact * scale)
    d0 = rng.normal(0, 1, (15, n_post))
    np.testing.assert_array_equal(p.add_to(x.reshape(15, 40), d0.copy()), d0 + exact.reshape(15, n_post) * scale)
    # one event of source 0 with w = 1 and w = 2 on two neurons: scale·1, scale·2 (one rounding each)
    q = fast.Projection(np.array([[1, 0], [2, 0]]), scale)
    np.testing.assert_array_equal(q(np.array([[1.0, 0.0]])), [[scale, 2 * scale]])


def test_input_kernels_built_once_per_program():
    """Every device of a bundle shares the program's input kernels; a copy of the program
    (new projection objects) gets its own, with the same integer weights."""
    import copy

    from nmc.backends.brainscales2.emulator import input_kernels

    b = nmc.compile(ff_lif(), target="brainscales2", **OPTS)
    k1 = b.device()._proj
    assert b.device()._proj is k1 and input_kernels(b.program) is k1
    p2 = copy.deepcopy(b.program)
    k2 = input_kernels(p2)
    assert k2 is not k1 and set(k2) == {id(q) for q in p2.projections}
    x = spikes((8,), T=1, p=0.5, seed=1, batch=4)[0]
    q1, q2 = b.program.projections[0], p2.projections[0]
    np.testing.assert_array_equal(k1[id(q1)](x), k2[id(q2)](x))
