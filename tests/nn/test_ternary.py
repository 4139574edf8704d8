"""nmc.nn.ternary: the absmean rule in torch equals the compiler's, the straight-through gradient,
baking to exactly ternary×scale weights that the compiler keeps as they are, and the embedding fold."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc import nn as nnn
from nmc.nn import ternary as T
from nmc.passes.quantize import ternary_rows as compiler_rule


def test_torch_rule_equals_the_compiler_rule_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    # dyadic values: the row means are exact in float64, so both rules see the same s
    w = torch.randint(-64, 65, (40, 16), generator=g).double() / 64
    w[5] = torch.tensor([0.5, -0.5, 0.25, -0.25] * 4, dtype=torch.float64)   # ties at |w| = s/2
    w[6] = 0
    t, s = T.ternary_rows(w)
    ct, cs = compiler_rule(w.numpy())
    assert np.array_equal(t.numpy().astype(np.int8), ct)
    assert np.array_equal(s.reshape(-1).numpy()[[i for i in range(40) if i != 6]], cs[[i for i in range(40) if i != 6]])


def test_straight_through_gradient_and_ternary_forward():
    w = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    q = T.ternary_weight(w)
    t, s = T.ternary_rows(w)
    assert torch.equal(q.detach(), s * t)
    g = torch.randn(6, 9, dtype=torch.float64)
    (q * g).sum().backward()
    assert torch.equal(w.grad, g)      # the gradient passes straight through


def test_ternarize_trains_latent_weights_and_bake_leaves_exact_ternary_rows():
    torch.manual_seed(0)
    lm = nnn.EGRULanguageModel(11, 11, [8, 6], thr_init=0.1)
    T.ternarize(lm)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    tok = torch.randint(0, 11, (12, 3))
    latent0 = lm.layers[0].parametrizations.w_h.original.detach().clone()
    for _ in range(3):
        lm.reset_state()
        loss = torch.nn.functional.cross_entropy(lm(tok[:-1]).reshape(-1, 11), tok[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(lm.layers[0].parametrizations.w_h.original, latent0)   # the latent weights learn
    for layer in lm.layers:
        for n in T.WEIGHTS:
            t, s = T.ternary_rows(layer.parametrizations[n].original)
            assert torch.equal(getattr(layer, n), s * t)
    lm.reset_state()
    with torch.no_grad():
        before = lm(tok)
    T.bake(lm)
    lm.reset_state()
    with torch.no_grad():
        after = lm(tok)
    assert torch.equal(before, after)
    for layer in lm.layers:
        for n in T.WEIGHTS:
            w = getattr(layer, n).detach()
            assert isinstance(getattr(layer, n), torch.nn.Parameter) and T.is_ternary(w)
            ct, cs = compiler_rule(w.double().numpy())                 # the compiler keeps s and t
            assert np.array_equal(cs[:, None] * ct, w.double().numpy())


def test_fold_embedding_keeps_the_function():
    torch.manual_seed(1)
    lm = nnn.EGRULanguageModel(9, 4, [7], thr_init=0.1)
    f = T.fold_embedding(lm)
    assert f.embed_size == 9 and f.layers[0].w_x.shape == (21, 9) and not f.embed.weight.requires_grad
    tok = torch.randint(0, 9, (15, 2))
    with torch.no_grad():
        lm.reset_state()
        a = lm(tok)
        f.reset_state()
        b = f(tok)
    # one float32 product regrouped: w_x·E[v] vs (w_x·Eᵀ)[:, v], each ≤ 4 terms of |·| ≤ 1·3 → ≤ 1e-5 on the
    # gates; the cell's spike threshold could flip on an exact tie only, which these seeds do not hit
    assert torch.allclose(a, b, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        T.fold_embedding(nnn.EGRULanguageModel(9, 7, [7], tie=True))
