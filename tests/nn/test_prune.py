"""nmc.nn.prune: the cubic density schedule against its formula, the masks (exact count, largest
magnitudes, the rule of sparsify's keep_top), zeros held through forward and optimizer steps,
no regrowth, state_dict round trip; gradual pruning + distillation through train.py's functions."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nmc import nn as nnn
from nmc.nn.prune import GradualPruner, cubic_density, magnitude_mask, recurrent_weights
from nmc.passes.sparsify import keep_top
from script_modules import load_script


def test_cubic_density_is_the_formula():
    # d_t = d_f + (1 − d_f)(1 − (t − t0)/(t1 − t0))³ on [t0, t1]; 1 before, d_f after
    N, df, start, end = 1000, 0.1, 0.2, 0.7
    t0, t1 = 200, 700
    for t in (0, 100, 200, 201, 350, 512, 699, 700, 701, 1000):
        want = 1.0 if t <= t0 else df if t >= t1 else df + (1 - df) * (1 - (t - t0) / (t1 - t0)) ** 3
        assert cubic_density(t, N, df, start=start, end=end) == pytest.approx(want, abs=1e-15)
    # monotone non-increasing, and from an initial density other than 1
    ds = [cubic_density(t, N, df, start=start, end=end) for t in range(N + 1)]
    assert all(a >= b for a, b in zip(ds, ds[1:]))
    assert cubic_density(450, N, 0.2, start=start, end=end, initial_density=0.6) == pytest.approx(0.2 + 0.4 * 0.5 ** 3)
    # start == end: one-shot at that step
    assert cubic_density(300, N, df, start=0.3, end=0.3) == df and cubic_density(299, N, df, start=0.3, end=0.3) == 1


def test_magnitude_mask_keeps_exact_count_of_largest_as_keep_top():
    g = torch.Generator().manual_seed(0)
    for shape, d in [((48, 16), 0.1), ((30, 7), 0.05), ((5, 5), 0.5), ((8, 3), 1.0)]:
        w = torch.randn(shape, generator=g)
        m = magnitude_mask(w, d)
        assert int(m.sum()) == math.ceil(d * w.numel() - 1e-9)
        if d < 1:
            assert float(w.abs()[m == 0].max()) <= float(w.abs()[m == 1].min())
        np.testing.assert_array_equal(m.numpy().astype(bool), keep_top(w.abs().numpy(), d))
    # ties broken stably (the first of equal magnitudes is kept), as keep_top
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5]])
    np.testing.assert_array_equal(magnitude_mask(w, 0.5).numpy(), [[1, 1, 0, 0]])


def _model(seed=0):
    torch.manual_seed(seed)
    return nnn.EGRULanguageModel(11, 6, [12], thr_init=0.1)


def test_recurrent_weights_finds_egru_and_torch_gru_arrays():
    assert set(recurrent_weights(_model())) == {"layers.0.w_x", "layers.0.w_h"}
    seq = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.GRU(4, 8, num_layers=2))
    assert set(recurrent_weights(seq)) == {"1.weight_ih_l0", "1.weight_hh_l0", "1.weight_ih_l1", "1.weight_hh_l1"}


def test_gradual_pruner_follows_schedule_holds_zeros_and_never_regrows():
    lm = _model()
    opt = torch.optim.Adam(lm.parameters(), lr=0.05)
    N, every = 40, 5
    pr = GradualPruner(recurrent_weights(lm), 0.1, total_steps=N, start=0.25, end=0.75, every=every)
    pr.attach(opt)
    tok = torch.randint(0, 11, (8, 3), generator=torch.Generator().manual_seed(1))
    prev = {k: m.clone() for k, m in pr.masks.items()}
    expect = 1.0
    for t in range(1, N + 1):
        lm.reset_state()
        loss = lm(tok).square().mean()
        opt.zero_grad()
        loss.backward()
        for k, p in pr.params.items():   # gradients of pruned weights are zero (Adam's moments stay 0)
            assert not p.grad[pr.masks[k] == 0].any()
        opt.step()                        # the post hook advances the pruner and re-zeroes
        assert pr.t == t
        if t >= 10 and (t - 10) % every == 0:   # t0 = 10, t1 = 30: masks recomputed at 10, 15, ..., 40
            expect = cubic_density(t, N, 0.1, start=0.25, end=0.75)
        assert pr.density == pytest.approx(expect)
        for k, p in pr.params.items():
            n = p.numel()
            assert int(pr.masks[k].sum()) == math.ceil(pr.density * n - 1e-9)
            assert not p.detach()[pr.masks[k] == 0].any()            # held at zero after the step
            assert not (pr.masks[k] > prev[k]).any()                  # a pruned weight never returns
            prev[k] = pr.masks[k].clone()
    assert pr.density == 0.1
    for k, p in pr.params.items():
        assert int((p != 0).sum()) <= math.ceil(0.1 * p.numel())


def test_oneshot_and_state_dict_round_trip():
    lm = _model()
    pr = GradualPruner(recurrent_weights(lm), 0.2, total_steps=10, start=0.0, end=0.0)
    assert pr.density == 0.2 and all(abs(s - 0.8) < 0.01 for s in pr.sparsity().values())
    for _ in range(3):
        pr.step()
    sd = pr.state_dict()
    lm2 = _model(seed=1)                      # other weights: loading the state applies its masks
    pr2 = GradualPruner(recurrent_weights(lm2), 0.5, total_steps=99, start=0.5, end=0.9, every=7)
    pr2.load_state_dict(sd)
    assert (pr2.t, pr2.density, pr2.total_steps, pr2.every, pr2.final_density) == (3, 0.2, 10, 100, 0.2)
    for k in pr.masks:
        assert torch.equal(pr2.masks[k], pr.masks[k])
        assert not pr2.params[k].detach()[pr.masks[k] == 0].any()
    bad = {**sd, "masks": {"nope": next(iter(sd["masks"].values()))}}
    with pytest.raises(KeyError, match="nope"):
        pr2.load_state_dict(bad)


@pytest.mark.parametrize("kw, match", [({"final_density": 0.0}, "final_density"),
                                       ({"start": 0.8, "end": 0.2}, "start <= end"),
                                       ({"every": 0}, "every")])
def test_pruner_rejects_bad_options(kw, match):
    args = {"final_density": 0.1, "total_steps": 10, **kw}
    with pytest.raises(ValueError, match=match):
        GradualPruner(recurrent_weights(_model()), **args)


def _train_module():
    return load_script("examples/egru_lm/train.py", "egru_lm_train")


@pytest.mark.parametrize("cell", ["egru", "gru"])
def test_train_gradual_pruning_with_distillation_tiny(cell):
    """train.py's functions: a tiny LM, a few dense steps, then gradual pruning to 20 % with the
    dense model as teacher: the masks reach the target, the teacher is untouched, loss is finite."""
    tr = _train_module()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    text = np.random.default_rng(1).integers(0, 9, 6000)   # token ids; a learnable pattern below
    text[1::2] = (text[::2][: text[1::2].size] + 1) % 9     # every odd token follows its predecessor
    lm = (tr.GRULanguageModel(9, 8, [16]) if cell == "gru" else
          nnn.EGRULanguageModel(9, 8, [16], thr_init=0.1, thr_min=0.05))
    args = SimpleNamespace(lr=1e-2, batch=4, seq=16, penalty=0.05, prune="gradual", prune_start=0.0,
                           prune_end=0.5, prune_every=3, temperature=2.0, alpha=0.5)
    tr.train(lm, text, 30, args, rng)
    before = tr.evaluate(lm, text, streams=4, max_chars=2000)[0]
    teacher = copy.deepcopy(lm)
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    pruner = tr.make_pruner(lm, 0.2, 24, args)
    curve = tr.train(lm, text, 24, args, rng, pruner=pruner, teacher=teacher, tag="ft", curve_ids=text, curve_every=12)
    assert pruner.density == pytest.approx(0.2)
    for k, p in recurrent_weights(lm).items():
        assert int((p != 0).sum()) <= math.ceil(0.2 * p.numel())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_state.items())
    assert [c[0] for c in curve] == [12, 24] and curve[-1][1] == pytest.approx(0.2)
    after = tr.evaluate(lm, text, streams=4, max_chars=2000)[0]
    assert math.isfinite(after) and after < 9 and before < 9   # below chance (9 symbols): it learned
