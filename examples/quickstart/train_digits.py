"""Train the quickstart's spiking digit classifier and export it as NIR.

sklearn's bundled 8×8 digits (no download), Bernoulli rate code over T = 16
steps, a LIF MLP 64 → 128 → 10 trained with a surrogate gradient (BPTT) in
plain PyTorch, using the same discrete-time LIF update as nmc's reference
simulator (forward Euler, dt = 1 ms, τ = 5 ms, R = τ/dt so the input gain is
1; reset to zero). Writes ``digits_lif.nir`` (the model), ``digits_test.npz`` (200 rate-coded
held-out digits, (T, 200, 64) under ``input``) and ``digits_labels.npy``.

Run: ``python examples/quickstart/train_digits.py`` (≈ 10 s on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from sklearn.datasets import load_digits

from nmc import dynamics as D
from nmc.nn import surrogate

HERE = Path(__file__).parent
T, DT, TAU, HIDDEN = 16, 1e-3, 5e-3, 128


#: Heaviside forward (H(0) = 0), fast-sigmoid surrogate gradient 1/(1 + 10|x|)² backward
SPIKE = surrogate("fast_sigmoid", slope=10.0)


def encode(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 64) intensities in [0, 1] → (T, N, 64) Bernoulli spikes."""
    return (rng.random((T, *x.shape)) < x[None]).astype(np.float32)


def forward(w1, b1, w2, b2, spikes):
    tau, r, vl, th, vr = (torch.tensor(v) for v in (TAU, TAU / DT, 0.0, 1.0, 0.0))
    B = spikes.shape[1]
    v1, v2 = torch.zeros(B, HIDDEN), torch.zeros(B, 10)
    count = torch.zeros(B, 10)
    for t in range(spikes.shape[0]):
        v1 = D.leaky(v1, spikes[t] @ w1.T + b1, tau, r, vl, DT, "euler")
        s1, v1 = D.fire(v1, th, vr, "zero", SPIKE)
        v2 = D.leaky(v2, s1 @ w2.T + b2, tau, r, vl, DT, "euler")
        s2, v2 = D.fire(v2, th, vr, "zero", SPIKE)
        count = count + s2
    return count


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx = rng.permutation(len(X))
    tr, te = idx[:1400], idx[1400:]
    w1 = torch.nn.Parameter(torch.randn(HIDDEN, 64) * 0.3)
    b1 = torch.nn.Parameter(torch.zeros(HIDDEN))
    w2 = torch.nn.Parameter(torch.randn(10, HIDDEN) * 0.15)
    b2 = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=2e-3)
    for epoch in range(15):
        perm = rng.permutation(tr)
        for i in range(0, len(perm), 64):
            bi = perm[i:i + 64]
            s = torch.from_numpy(encode(X[bi], rng))
            loss = torch.nn.functional.cross_entropy(forward(w1, b1, w2, b2, s) * 0.5, torch.from_numpy(y[bi]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    s_te = encode(X[te], rng)
    with torch.no_grad():
        acc = (forward(w1, b1, w2, b2, torch.from_numpy(s_te)).argmax(1).numpy() == y[te]).mean()
    print(f"float test accuracy (spike count, T={T}): {acc:.3f}")

    def lif(n):
        return nir.LIF(tau=np.full(n, TAU), r=np.full(n, TAU / DT), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n))

    f32 = lambda p: p.detach().numpy().astype(np.float32)  # noqa: E731
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([64])}),
               "fc1": nir.Affine(weight=f32(w1), bias=f32(b1)), "lif1": lif(HIDDEN),
               "fc2": nir.Affine(weight=f32(w2), bias=f32(b2)), "lif2": lif(10),
               "output": nir.Output(output_type={"output": np.array([10])})},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])
    nir.write(HERE / "digits_lif.nir", graph)
    np.savez_compressed(HERE / "digits_test.npz", input=s_te[:, :200])
    np.save(HERE / "digits_labels.npy", y[te][:200].astype(np.int64))
    print(f"wrote {HERE / 'digits_lif.nir'}, {HERE / 'digits_test.npz'} and {HERE / 'digits_labels.npy'}")


if __name__ == "__main__":
    main()
