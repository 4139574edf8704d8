"""The closed form over idle fine steps (:mod:`nmc.backends.brainscales2.fast`): taken exactly
where the docstring says, equal to its formula bit for bit there, within the stated error bound of
the fine-step iteration, and the same spike trains as the iteration on the test and bench networks."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import conv_pool, ff_lif, recurrent_cubalif, spikes
from nmc.backends.brainscales2 import fast

pytestmark = pytest.mark.skipif(not fast.available(), reason="numba not importable")
OPTS = dict(dt=1e-3, integrator="euler", reset="zero")
U = 2.0 ** -53
S = 10


def _layer(rng, n, cuba):
    tm, ts = rng.uniform(2e-6, 2e-5, n), rng.uniform(2e-6, 2e-5, n)
    h = 1e-6 / S
    a, b = np.exp(-h / tm), np.exp(-h / ts)
    P = {"v_leak": rng.uniform(-0.3, 0.2, n), "a": a, "b": b,
         "coef": (ts / (ts - tm) * (b - a)) if cuba else np.zeros(n),
         "v_reset": np.full(n, -0.1), "v_threshold": np.full(n, 1.0), "t_refrac": np.full(n, 3 * h)}
    P["v_leak"][:3] = 1.5   # v_leak above threshold: never in closed form
    return P, h


def _state(rng, B, n):
    v = rng.uniform(-0.5, 1.3, (B, n))     # some start above threshold: iterated
    i = rng.normal(0, 0.4, (B, n))
    ref = np.where(rng.random((B, n)) < 0.1, rng.uniform(0, 1e-6, (B, n)), 0.0)
    d = np.where(rng.random((B, n)) < 0.4, rng.normal(0.3, 0.6, (B, n)), 0.0)
    return v, i, ref, d


def _run(P, h, st, cuba, closed):
    v, i, ref, d = (x.copy() for x in st)
    prm = fast.pack_step(P, v.shape[1], S)
    spk = fast.fine_steps_step(v, i, ref, d, 0 if cuba else S - 1, cuba, prm, h, S, closed=closed)
    return v, i, ref, spk


@pytest.mark.parametrize("cuba", [False, True])
def test_closed_form_where_stated_and_within_bound(cuba):
    rng = np.random.default_rng(11)
    P, h = _layer(rng, 200, cuba)
    st = _state(rng, 32, 200)
    v0, i0, ref0, d = st
    vc, ic, rc, sc = _run(P, h, st, cuba, True)
    vi, ii, ri, si = _run(P, h, st, cuba, False)
    # where the docstring's condition holds: the formula, bit for bit (the numpy expression, same order)
    vl, vth = P["v_leak"], P["v_threshold"]
    aS, bS, xS, xmax = fast.pack_step(P, 200, S)[7:]
    if cuba:
        I0 = i0 + d
        up = vl + np.maximum(v0 - vl, 0) + np.maximum(I0 * P["coef"], 0) * xmax
        take = (ref0 == 0) & (vl <= vth) & (up < vth - fast.CLOSED_MARGIN * (np.abs(vth) + np.abs(vl) + 1))
        np.testing.assert_array_equal(vc[take], (vl + (v0 - vl) * aS + I0 * P["coef"] * xS)[take])
        np.testing.assert_array_equal(ic[take], (I0 * bS)[take])
        assert not sc[take].any()
    else:
        I0 = np.zeros_like(v0)
        take = (ref0 == 0) & (vl <= vth) & (v0 <= vth)
        w = vl + (v0 - vl) * aS + d
        fired = w > vth
        np.testing.assert_array_equal(sc[take], fired[take])
        np.testing.assert_array_equal(vc[take], np.where(fired, P["v_reset"], w)[take])
    assert 0.3 < take.mean() < 0.95     # both branches exercised
    # everywhere else: the fine-step iteration, bit for bit
    for x, y in ((vc, vi), (ic, ii), (rc, ri), (sc, si)):
        np.testing.assert_array_equal(x[~take], y[~take])
    # the error bound against the iteration (no spike of the iteration within it of threshold here)
    M = np.abs(vl) + np.abs(v0 - vl) + np.abs(I0 * P["coef"]) * xmax + np.abs(d)
    same_spike = sc == si
    assert same_spike.all()
    dv = np.abs(vc - vi)[take]
    assert (dv <= 4 * (S + 1) * U * M[take]).all(), dv.max()
    assert (np.abs(ic - ii)[take] <= 2 * (S + 1) * U * np.abs(I0[take] if cuba else 0)).all()
    assert (vc != vi).any()            # the closed form does change bits (else this test shows nothing)


def test_crossing_inside_the_step_is_not_skipped():
    """A current-based neuron that crosses mid-step and decays back below threshold by the step's
    end: the bound sends it to the iteration, which sees the spike."""
    P = {"v_leak": np.zeros(1), "a": np.full(1, 0.9), "b": np.full(1, 0.5), "coef": np.full(1, 0.4),
         "v_reset": np.zeros(1), "v_threshold": np.ones(1), "t_refrac": np.zeros(1)}
    v, i, ref, d = np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.full((1, 1), 3.0)
    # I₀ = 3: v after one fine step 1.2 > 1 (spike), the closed form at the end would be below threshold
    spk = fast.fine_steps_step(v, i, ref, d, 0, True, fast.pack_step(P, 1, S), 0.1, S)
    assert spk[0, 0] == 1.0


@pytest.mark.parametrize("build,shape,layer,opts", [
    (ff_lif, (8,), "lif1", {}), (recurrent_cubalif, (6,), "lif1", {}),
    (lambda: conv_pool(2, 8, 4, 5), (2, 8, 8), "if1", {}),
    (ff_lif, (8,), "lif1", {"t_refrac": 2e-3}), (recurrent_cubalif, (6,), "lif1", {"t_refrac": 2e-3})],
    ids=["ff", "recurrent", "conv", "ff-refrac", "recurrent-refrac"])
def test_same_spikes_as_the_iteration_on_networks(build, shape, layer, opts):
    b = nmc.compile(build(), target="brainscales2", **OPTS, **opts)
    x = spikes(shape, T=60, p=0.3, seed=4, batch=4)
    closed = b.run({"input": x}, record=[layer])               # compiled, closed form
    steps = b.run({"input": x}, record=[layer], compiled=False)  # the numpy fine-step iteration
    assert closed[f"{layer}.spikes"].sum() > 0
    for k in closed:
        if k.endswith(".v"):
            np.testing.assert_allclose(closed[k], steps[k], rtol=0, atol=1e-12 * (1 + np.abs(steps[k]).max()))
        else:
            np.testing.assert_array_equal(closed[k], steps[k], err_msg=k)
