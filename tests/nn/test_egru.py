"""EGRU: EvNN-layout import checked against an independent plain-PyTorch
implementation of EvNN's equations; nmc.nn.EGRU ≡ reference; training works."""
from __future__ import annotations

import numpy as np
import torch

import nmc
from nmc import nn as nnn
from nmc.frontends.torch import from_module, load_file
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.reference import ReferenceSimulator


def evnn_reference(x, kernel, rkernel, bias, rbias, thr, c0=None, y0=None):
    """EvNN's EGRU written out independently, in EvNN's x·W layout."""
    T, B, _ = x.shape
    H = thr.shape[0]
    c = torch.zeros(B, H, dtype=x.dtype) if c0 is None else c0
    y = torch.zeros(B, H, dtype=x.dtype) if y0 is None else y0
    out = []
    for t in range(T):
        xz, xr, xg = torch.split(x[t] @ kernel + bias, H, dim=1)
        hz, hr, hg = torch.split(y @ rkernel + rbias, H, dim=1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        g = torch.tanh(xg + r * hg)
        c_hat = z * c + (1 - z) * g
        o = (c_hat - thr > 0).to(x.dtype)
        y = o * c_hat
        c = c_hat - o * thr
        out.append(y)
    return torch.stack(out), c, y


def _evnn_sd(n_in=5, H=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"kernel": torch.randn(n_in, 3 * H, generator=g, dtype=torch.float64) * 0.8,
            "recurrent_kernel": torch.randn(H, 3 * H, generator=g, dtype=torch.float64) * 0.8,
            "bias": torch.randn(3 * H, generator=g, dtype=torch.float64) * 0.2,
            "recurrent_bias": torch.randn(3 * H, generator=g, dtype=torch.float64) * 0.2,
            "thr": torch.rand(H, generator=g, dtype=torch.float64) * 0.3 + 0.05}


def test_evnn_state_dict_import_matches_independent_equations(tmp_path):
    sd = _evnn_sd()
    x = torch.randn(30, 3, 5, dtype=torch.float64)
    want, _, _ = evnn_reference(x, sd["kernel"], sd["recurrent_kernel"], sd["bias"], sd["recurrent_bias"], sd["thr"])
    layer = nnn.EGRU.from_evnn_state_dict(sd, thr_min=0.0).double()
    assert torch.allclose(layer(x), want, atol=1e-12, rtol=0)
    torch.save(sd, tmp_path / "evnn.pt")  # a raw EvNN checkpoint compiles directly
    g = load_file(tmp_path / "evnn.pt")
    g = PassManager(parse_pipeline("normalize")).run(g, PassContext())
    out = ReferenceSimulator(g).run({"input": x.numpy()})["output"]
    assert np.allclose(out, want.numpy(), atol=1e-12, rtol=0)
    assert (want != 0).float().mean() > 0.05  # events actually flow


def test_stacked_evnn_layers_and_evnn_restart():
    sd1, sd2 = _evnn_sd(5, 7, 1), _evnn_sd(7, 4, 2)
    both = {**{f"layers.0.{k}": v for k, v in sd1.items()}, **{f"layers.1.{k}": v for k, v in sd2.items()}}
    from nmc.frontends.torch.files import _evnn_graph

    g = _evnn_graph(both, "mem")
    assert [k for k in g.nodes if k.startswith("egru")] == ["egru0", "egru1"]
    # EvNN restarts c at 0 on each call but carries y
    layer = nnn.EGRU.from_evnn_state_dict(sd1, thr_min=0.0).double()
    x1, x2 = torch.randn(6, 2, 5, dtype=torch.float64), torch.randn(6, 2, 5, dtype=torch.float64)
    layer(x1)
    y_carry = layer.state["y"].clone()
    got = layer(x2)
    want, _, _ = evnn_reference(x2, sd1["kernel"], sd1["recurrent_kernel"], sd1["bias"], sd1["recurrent_bias"],
                                sd1["thr"], c0=None, y0=y_carry)
    assert torch.allclose(got, want, atol=1e-12)


def test_nmc_egru_module_equals_reference_and_trains():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), nnn.EGRU(6, 8)).double()
    x = torch.randn(12, 3, 4, dtype=torch.float64)
    h = model[0](x)
    y = model[1](h)
    g = PassManager(parse_pipeline("normalize")).run(from_module(model), PassContext())
    out = ReferenceSimulator(g).run({"input": x.numpy()})["output"]
    assert np.allclose(out, y.detach().numpy(), atol=1e-12)
    lm = nnn.EGRULanguageModel(20, 16, [16], tie=True)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    tok = torch.randint(0, 20, (16, 4))
    losses = []
    for _ in range(15):
        lm.reset_state()
        logits = lm(tok[:-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), tok[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(0 <= a <= 1 for a in lm.activity())
    assert lm.decoder.weight is lm.embed.weight
