"""nmc.nn diagonal SSM layers and the framework-free equations of nmc.ssm_math.

Error bound used below (float32 against a float64 recurrence on the *same*
float32 parameters Λ̄, γ, B, C, D, so only the arithmetic differs). With
u = 2⁻²⁴, a complex product rounds with relative error ≤ √5·u and a complex
sum with ≤ √2·u. The state x_k = Σ_{j≤k} (Π_{i=j+1..k} Λ̄_i)·γ_j·(B·u_j) is a sum
of k terms, each a product of ≤ k + 1 factors (|Λ̄| < 1) and one H-term dot
product B·u_j (error ≤ H·u·Σ|B||u_j|). The step loop and the scan both compute
exactly these terms (in another order), so for either path
    |x̂_k − x_k| ≤ (H + 4·(k + 2))·u·S_k,    S_k = Σ_{j≤k} |γ|·(|B|·|u_j|)
(4 > √5 + √2 covers the products and the k additions; |Π Λ̄| ≤ 1 keeps every
term ≤ its γ|B||u| size). The readout ρ·Re(C·x) + D·u adds
ρ·Σ_p |C_p|·|x̂_p − x_p| plus (2P + 2)·u·(ρ·Σ|C||x| + |D||u|). Scan against
step is at most twice that. T·(H + P)·u stays ≪ 1 in these tests, so a real
difference (a step of delay, a wrong coefficient) is far above the bound.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmc import nn as nnn
from nmc import ssm_math as M

U32 = 2.0 ** -24


def _params64(layer):
    """The layer's float32 parameters (Λ̄ and γ at one tick) as float64/complex128 numpy arrays."""
    with torch.no_grad():
        cast = (lambda t: t.detach().numpy().astype(np.complex128 if t.is_complex() else np.float64))
        return (cast(layer.eigenvalues()), cast(layer._matrix("b")), cast(layer._matrix("c")), cast(layer.d),
                cast(layer.step_size()))


def _state_bound(layer, u, tau=None):
    """Per (k, b, p) bound on the float32 state error of either path (module docstring)."""
    with torch.no_grad():
        _, gamma = layer.discretized(tau)
        g = np.abs(gamma.numpy().astype(np.complex128))
        bu = np.abs(u.numpy()).astype(np.float64) @ np.abs(layer._matrix("b").numpy()).T   # Σ|B||u| (T, B, P)
        S = np.cumsum(g * bu, axis=0)
        k = np.arange(1, u.shape[0] + 1, dtype=np.float64).reshape(-1, 1, 1)
        return (u.shape[-1] + 4 * (k + 2)) * U32 * S


def _output_bound(layer, u, x_ref, tau=None):
    """Bound on |ŷ − y| of one path against the float64 recurrence (output 'none')."""
    rho = 2.0 if layer.complex else 1.0
    C = np.abs(layer._matrix("c").detach().numpy())
    D = np.abs(layer.d.detach().numpy())
    eb = _state_bound(layer, u, tau)
    P = layer.state_size
    ua = np.abs(u.numpy()).astype(np.float64)
    return rho * eb @ C.T + (2 * P + 2) * U32 * (rho * np.abs(x_ref) @ C.T + D * ua)


def _reference(layer, u, tau=None):
    """float64 step-by-step run (nmc.ssm_math.simulate) on the layer's parameters."""
    lam, b, c, d, step = _params64(layer)
    return M.simulate(u.numpy(), lam, b, c, d, step, layer.method, None if tau is None else np.asarray(tau))


def _all_states(layer, u, tau=None):
    lam, b, c, d, step = _params64(layer)
    x = np.zeros(u.shape[1:2] + lam.shape, dtype=lam.dtype)
    xs = []
    for k in range(u.shape[0]):
        dk = step if tau is None else step * np.asarray(tau, np.float64)[k][..., None]
        lb, g = M.discretize(lam, dk, layer.method)
        x = M.ssm_step(x, M.project(u.numpy()[k].astype(np.float64), b), lb, g)
        xs.append(x)
    return np.stack(xs)


def _step_loop(layer, u, tau=None):
    ys, st = [], None
    for t in range(u.shape[0]):
        y, st = layer.step(u[t], st, None if tau is None else tau[t])
        ys.append(y)
    return torch.stack(ys), st


# -- initialisation -----------------------------------------------------------

def test_s4d_lin_inv_real_eigenvalues_as_published():
    np.testing.assert_allclose(M.s4d_lin(4), [-0.5, -0.5 + 1j * math.pi, -0.5 + 2j * math.pi, -0.5 + 3j * math.pi])
    # S4D-Inv with N = 2P = 4: Im Λ_n = (4/π)(4/(2n+1) − 1) = 12/π, 4/(3π)
    np.testing.assert_allclose(M.s4d_inv(2), [-0.5 + 12j / math.pi, -0.5 + 4j / (3 * math.pi)])
    np.testing.assert_allclose(M.s4d_real(3), [-1.0, -2.0, -3.0])
    for init, cplx in (("lin", True), ("inv", True), ("real", False)):
        layer = nnn.DiagSSM(3, 8, complex=cplx, init=init)
        # float32 storage of log(−Re Λ) and Im Λ: relative error ≤ a few u
        np.testing.assert_allclose(layer.eigenvalues().detach().numpy(), M.init_eigenvalues(init, 8), rtol=8 * U32)
        step = layer.step_size().detach().numpy()
        assert step.shape == (8,) and np.all(step >= 1e-3 * (1 - 1e-6)) and np.all(step <= 1e-1 * (1 + 1e-6))


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="complex=True"):
        nnn.DiagSSM(3, 4, complex=False, init="lin")
    with pytest.raises(ValueError, match="output"):
        nnn.DiagSSM(3, 4, output="tanh")
    with pytest.raises(ValueError, match="discretisation"):
        nnn.DiagSSM(3, 4, method="euler")
    with pytest.raises(ValueError, match="gradient"):
        nnn.StochasticSpikingSSM(3, gradient="none")
    with pytest.raises(ValueError, match="tau"):
        nnn.DiagSSM(3, 4)(torch.zeros(5, 2, 3), tau=torch.ones(4))
    with pytest.raises(ValueError, match="tau"):
        nnn.DiagSSM(3, 4)(torch.zeros(5, 2, 3), tau=-torch.ones(5))


# -- shapes -------------------------------------------------------------------

@pytest.mark.parametrize("output", nnn.ssm.OUTPUTS)
@pytest.mark.parametrize("cplx", [True, False])
def test_shapes_of_both_paths_and_state(output, cplx):
    torch.manual_seed(0)
    layer = nnn.DiagSSM(5, 6, complex=cplx, output=output)
    u = torch.randn(7, 3, 5)
    y, st = layer.scan(u)
    assert y.shape == (7, 3, 5) and st["x"].shape == (3, 6) and st["x"].is_complex() == cplx
    y1, st1 = layer.step(u[0])
    assert y1.shape == (3, 5) and set(st1) == set(st)
    stack = nnn.DiagSSMStack(4, 8, 3, n_layers=2, state_size=6)
    assert stack(torch.randn(7, 3, 4)).shape == (7, 3, 3)
    neu = nnn.StochasticSpikingSSM(5, 3, complex=cplx)
    s, sst = neu.scan(u)
    assert s.shape == (7, 3, 5) and sst["x"].shape == (3, 5, 3) and set(torch.unique(s).tolist()) <= {0.0, 1.0}


# -- discretisation against the continuous solution ---------------------------

def _continuous_constant_input(lam, b, c, d, u, t):
    """x(t) = (e^{Λt} − 1)/Λ ⊙ B·u for x(0) = 0 and constant u; y = ρ·Re(C·x) + D·u."""
    x = (np.exp(lam * t) - 1) / lam * (b @ u)
    return M.readout(x, c, d, u)


def test_zoh_is_exact_and_bilinear_second_order_for_constant_input():
    rng = np.random.default_rng(0)
    lam = M.s4d_lin(3)                       # |Λ| ≤ 2π: Δ·|Λ| ≤ 0.13 at T = 100, the asymptotic regime
    b = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    c = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    d = rng.normal(size=3)
    u = rng.normal(size=3)
    t_end = 2.0
    exact = _continuous_constant_input(lam, b, c, d, u, t_end)
    scale = np.abs(c) @ (np.abs(b) @ np.abs(u)) * 2 / 0.5 + np.abs(d * u)   # |x| ≤ |B u|/|Re Λ|
    errs = {}
    for T in (100, 200):
        U = np.broadcast_to(u, (T, 3))
        y_zoh, _ = M.simulate(U, lam, b, c, d, t_end / T, "zoh")
        # ZOH is the exact solution for piecewise-constant input: only float64 rounding, ≤ T·8·eps64 relative
        assert np.all(np.abs(y_zoh[-1] - exact) <= 8 * T * np.finfo(np.float64).eps * scale)
        y_bil, _ = M.simulate(U, lam, b, c, d, t_end / T, "bilinear")
        errs[T] = np.max(np.abs(y_bil[-1] - exact))
    # bilinear (Tustin) has local error O(Δ³), global O(Δ²): halving Δ divides the error by ≈ 4
    assert errs[100] > 1e-6 and 3.6 < errs[100] / errs[200] < 4.4


def test_torch_discretisation_matches_numpy_equations():
    for method in M.METHODS:
        layer = nnn.DiagSSM(3, 8, method=method)
        lam, b, c, d, step = _params64(layer)
        lb64, g64 = M.discretize(lam, step, method)
        lb32, g32 = (t.detach().numpy() for t in layer.discretized())
        # float32 exp/expm1/division of z = Δ·Λ: relative error ≤ (|z| + 4)·u and (2|z| + 8)·u
        # (the rounding of z moves exp(z) by |z|·u; expm1 has no cancellation)
        z = np.abs(step * lam)
        assert np.all(np.abs(lb32 - lb64) <= (z + 4) * U32 * np.abs(lb64) + 1e-30)
        assert np.all(np.abs(g32 - g64) <= (2 * z + 8) * U32 * np.abs(g64))


# -- parallel scan == step loop == float64 recurrence -------------------------

@pytest.mark.parametrize("method", M.METHODS)
@pytest.mark.parametrize("cplx", [True, False])
def test_scan_equals_step_within_the_float32_bound(method, cplx):
    torch.manual_seed(1)
    layer = nnn.DiagSSM(4, 16, complex=cplx, method=method, output="none", dt_min=0.01, dt_max=0.5)
    u = torch.randn(64, 3, 4)
    with torch.no_grad():
        y_scan, st_scan = layer.scan(u)
        y_step, st_step = _step_loop(layer, u)
    y_ref, _ = _reference(layer, u)
    bound = _output_bound(layer, u, _all_states(layer, u))
    assert np.all(np.abs(y_scan.numpy() - y_ref) <= bound)
    assert np.all(np.abs(y_step.numpy() - y_ref) <= bound)
    assert np.all(np.abs(y_scan.numpy() - y_step.numpy()) <= 2 * bound)
    assert bound.max() < 1e-3 * np.abs(y_ref).max()     # the bound is tight enough to catch a real difference
    # a continued run: scan from a state == scan of the whole sequence
    with torch.no_grad():
        y_a, st_a = layer.scan(u[:40])
        y_b, _ = layer.scan(u[40:], st_a)
    assert np.all(np.abs(torch.cat([y_a, y_b]).numpy() - y_ref) <= bound)


def test_scan_equals_step_for_delta_and_lif_outputs():
    torch.manual_seed(2)
    lin = nnn.DiagSSM(4, 16, output="none", dt_min=0.01, dt_max=0.5)
    u = torch.randn(48, 2, 4)
    y_ref, _ = _reference(lin, u)
    bound = 2 * _output_bound(lin, u, _all_states(lin, u))
    theta = 0.3
    # Delta output on the float64 y: the fire decision is stable under an error ≤ bound of y and of the
    # held value when |y − held| stays ≥ 2·bound away from θ (checked, so identity below is implied).
    held, margin = np.zeros_like(y_ref[0]), np.inf
    for k in range(y_ref.shape[0]):
        margin = min(margin, np.min(np.abs(np.abs(y_ref[k] - held) - theta) - 2 * bound[k]))
        _, held, _ = M.delta_encode(y_ref[k], held, theta)
    assert margin > 0
    delta = nnn.DiagSSM(4, 16, output="delta", theta=theta, dt_min=0.01, dt_max=0.5)
    delta.load_state_dict(lin.state_dict())
    with torch.no_grad():
        y_scan, _ = delta.scan(u)
        y_step, _ = _step_loop(delta, u)
    assert torch.equal(y_scan != 0, y_step != 0)
    assert np.all(np.abs(y_scan.numpy() - y_step.numpy()) <= np.max(bound))
    assert 0 < float(delta.activity) < 1
    # LIF output: spike trains compared for identity (tests/float_bounds.py: a flip needs the membrane
    # within the bound of the threshold, which these inputs do not produce)
    spk = nnn.DiagSSM(4, 16, output="lif", lif={"beta": 0.8}, dt_min=0.01, dt_max=0.5)
    spk.load_state_dict(lin.state_dict(), strict=False)
    with torch.no_grad():
        s_scan, _ = spk.scan(u)
        s_step, _ = _step_loop(spk, u)
    assert torch.equal(s_scan, s_step) and 0 < float(s_scan.mean()) < 1


def test_delta_encode_fires_only_on_change():
    y = np.array([0.0, 0.05, 0.2, 0.25, 0.25, -0.1])
    held, out = np.zeros(1), []
    for v in y:
        ev, held, fired = M.delta_encode(np.array([v]), held, 0.1)
        out.append((float(ev[0]), float(held[0]), bool(fired[0])))
    assert out == [(0.0, 0.0, False), (0.0, 0.0, False), (0.2, 0.2, True), (0.0, 0.2, False),
                   (0.0, 0.2, False), (pytest.approx(-0.3), -0.1, True)]


# -- per-event Δt -------------------------------------------------------------

def test_per_event_dt_equals_fixed_tick_when_all_intervals_are_one_tick():
    torch.manual_seed(3)
    for cplx in (True, False):
        layer = nnn.DiagSSM(4, 8, complex=cplx, output="gelu")
        u = torch.randn(30, 2, 4)
        with torch.no_grad():
            fixed = layer(u)
            assert torch.equal(layer(u, tau=torch.ones(30, 2)), fixed)          # Δ·1 rounds to Δ: same numbers
            assert torch.equal(layer(u, tau=torch.ones(30)), fixed)
            y_step, _ = _step_loop(layer, u, torch.ones(30, 2))
            fixed_step, _ = _step_loop(layer, u)
            assert torch.equal(y_step, fixed_step)


def test_per_event_dt_matches_reference_and_zoh_composes_intervals():
    torch.manual_seed(4)
    layer = nnn.DiagSSM(3, 8, output="none", dt_min=0.05, dt_max=0.5)
    u = torch.randn(40, 2, 3)
    tau = torch.rand(40, 2) * 3                     # asynchronous: each event its own interval
    with torch.no_grad():
        y = layer(u, tau=tau)
        y_step, _ = _step_loop(layer, u, tau)
    y_ref, _ = _reference(layer, u, tau.numpy())
    bound = _output_bound(layer, u, _all_states(layer, u, tau.numpy()), tau)
    assert np.all(np.abs(y.numpy() - y_ref) <= bound) and np.all(np.abs(y_step.numpy() - y_ref) <= bound)
    # ZOH: holding an input over τ₁ then τ₂ is the same as holding it over τ₁ + τ₂ (float64 equations)
    lam, b, c, d, step = _params64(layer)
    v = np.random.default_rng(0).normal(size=(1, 1, 3))
    two, _ = M.simulate(np.concatenate([v, v]), lam, b, c, d, step, "zoh", tau=np.array([[0.7], [1.6]]))
    one, _ = M.simulate(v, lam, b, c, d, step, "zoh", tau=np.array([[2.3]]))
    np.testing.assert_allclose(two[-1], one[-1], rtol=1e-12, atol=1e-12)


# -- stochastic spiking SSM neuron --------------------------------------------

@pytest.mark.parametrize("cplx", [True, False])
def test_stochastic_spikes_seeded_and_scan_equals_step(cplx):
    torch.manual_seed(5)
    neu = nnn.StochasticSpikingSSM(6, 4, complex=cplx, seed=11)
    u = torch.randn(50, 3, 6)
    with torch.no_grad():
        s1 = neu(u)
        p1 = neu.prob.clone()
        s_again = neu(u)                             # the generator moved on: other noise
        neu.reseed(11)
        s2 = neu(u)
        other = nnn.StochasticSpikingSSM(6, 4, complex=cplx, seed=11)
        other.load_state_dict(neu.state_dict())
        s3 = other(u)
        neu.reseed(11)
        xi = torch.rand(u.shape, generator=torch.Generator().manual_seed(11))
        steps, st = [], None
        for t in range(50):
            s, st = neu.step(u[t], st)
            steps.append(s)
        s_step = torch.stack(steps)
    assert torch.equal(s1, s2) and torch.equal(s1, s3) and not torch.equal(s1, s_again)
    assert 0.05 < float(s1.mean()) < 0.95
    # scan and step draw the same ξ; a spike can differ only where ξ is within the p error of p
    # (|Δp| ≤ |Δy|/4, |Δy| ≤ 1e-5 here by the bound of test_scan_equals_step for these sizes)
    near = (xi - p1).abs() <= 1e-5
    assert torch.equal(s1[~near], s_step[~near])
    assert torch.equal(s1, (xi < p1).float())


# -- gradients: a tiny task's loss decreases ----------------------------------

def _train(model, head, x, target, steps, lr=0.02):
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(model(x).mean(0)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _tiny_task():
    """The sign of one pulse at a random step in noise (T = 16, 32 sequences)."""
    g = torch.Generator().manual_seed(0)
    T, B = 16, 32
    x = torch.randn(T, B, 2, generator=g) * 0.1
    target = torch.randint(0, 2, (B,), generator=g)
    t0 = torch.randint(0, T, (B,), generator=g)
    x[t0, torch.arange(B), 0] += 4.0 * target - 2.0
    return x, target


@pytest.mark.slow
@pytest.mark.parametrize("output", ["gelu", "delta", "lif"])
def test_diag_ssm_stack_learns_a_tiny_task(output):
    torch.manual_seed(6)
    x, target = _tiny_task()
    kw = {"lif": {"beta": 0.9, "v_threshold": 0.5}} if output == "lif" else {}
    model = nnn.DiagSSMStack(2, 8, 8, n_layers=1, state_size=8, output=output, dt_min=0.05, dt_max=0.5, **kw)
    losses = _train(model, torch.nn.Linear(8, 2), x, target, 30, lr=0.05)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert model.blocks[0].ssm.lam_log_neg_re.grad is not None and model.blocks[0].ssm.log_step.grad.abs().sum() > 0


@pytest.mark.parametrize("gradient", ["straight_through", "surrogate"])
def test_stochastic_ssm_learns_a_tiny_task(gradient):
    torch.manual_seed(7)
    x, target = _tiny_task()
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), nnn.StochasticSpikingSSM(8, 4, gradient=gradient, seed=0))
    losses = _train(model, torch.nn.Linear(8, 2), x, target, 30, lr=0.05)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_saving_an_ssm_model_writes_its_ssm_nodes(tmp_path):
    import nmc
    from nmc.frontends.torch import load_file

    for layer, kind in ((nnn.DiagSSM(4, 8), "nmc.DiagSSM"), (nnn.StochasticSpikingSSM(4), "nmc.StochasticSSMNeuron")):
        nmc.save(torch.nn.Sequential(torch.nn.Linear(3, 4), layer), tmp_path / "m.pt")
        g = load_file(tmp_path / "m.pt")
        assert g.nodes["1"].nmc_type == kind


@pytest.mark.parametrize("residual", [True, False])
def test_stack_without_norm_scan_equals_step_and_round_trips(tmp_path, residual):
    """norm="none" (and residual/bias off, the loihi2 form): the parallel path equals the step path within
    the float32 bound of test_scan_equals_step..., nmc.save → nmc.nn.load gives the same outputs, and the saved
    graph has no LayerNorm node (and no skip edge for residual=False)."""
    import nmc
    from nmc.frontends.torch import load_file

    torch.manual_seed(0)
    kw = dict(norm="none", residual=residual, bias=residual)
    m = nnn.DiagSSMStack(4, 8, 3, n_layers=2, state_size=6, output="relu", dt_min=0.02, dt_max=0.3, **kw).eval()
    assert isinstance(m.norm, torch.nn.Identity) and all(isinstance(b.norm, torch.nn.Identity) for b in m.blocks)
    assert (m.encoder.bias is None) == (not residual) and (m.blocks[0].mix.bias is None) == (not residual)
    x = torch.randn(40, 2, 4)
    with torch.no_grad():
        y_par = m(x)
        st, y_step = None, []
        for t in range(x.shape[0]):
            y_t, st = m.step(x[t], st)
            y_step.append(y_t)
    y_step = torch.stack(y_step)
    assert torch.allclose(y_par, y_step, atol=1e-4 * float(y_par.abs().max()) + 1e-5)
    # a plain (residual, bias) model with norm="none" differs from the LayerNorm one: the option acts
    c = m.config()
    assert c["norm"] == "none" and c.get("residual", True) == residual and c.get("bias", True) == residual
    assert "norm" not in nnn.DiagSSMStack(4, 8, 3).config()          # defaults keep the old saved spec
    nmc.save(m, tmp_path / "m.pt", input_shape=(4,))
    m2 = nnn.load(tmp_path / "m.pt").eval()
    assert isinstance(m2, nnn.DiagSSMStack) and m2.config() == c
    with torch.no_grad():
        assert torch.equal(m2(x), y_par)
    g = load_file(tmp_path / "m.pt")
    kinds = {k: getattr(n, "nmc_type", type(n).__name__) for k, n in g.nodes.items()}
    assert "nmc.LayerNorm" not in kinds.values() and "norm" not in kinds
    assert sum(v == "nmc.DiagSSM" for v in kinds.values()) == 2
    skip = ("encoder", "blocks.1.ssm") in g.edges or any(e[0] == "encoder" and e[1] != "blocks.0.ssm" for e in g.edges)
    assert skip == residual


def test_unknown_norm_refused():
    with pytest.raises(ValueError, match="norm"):
        nnn.DiagSSMStack(4, 8, 3, norm="batch")
