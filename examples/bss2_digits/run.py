"""A spiking digit classifier on the BrainScaleS-2-style analog target: what
6-bit weights, fixed-pattern mismatch (with and without calibration) and
trial-to-trial noise cost.

    python examples/bss2_digits/run.py

1. Trains a current-based LIF MLP 64 → 128 → 10 (CubaLIF, snnTorch "Synaptic"
   convention: i ← α·i + W·s, v ← β·v + i; τ_syn = 2 ms, τ_mem = 5 ms,
   dt = 1 ms, forward Euler, reset to zero) on sklearn's bundled 8×8 digits,
   Bernoulli rate code over T = 16 steps, surrogate gradient (BPTT) with the
   nmc.dynamics update the reference simulator uses (≈ 10–20 s on 2 cores).
2. Exports NIR, compiles for ``brainscales2`` (default pipeline
   ``normalize,quantize{bits=7},rewire``), and classifies the held-out digits
   (spike count) on the float reference, the noiseless emulator, with
   uncalibrated and calibrated mismatch, and calibrated mismatch + noise
   (:func:`nmc.backends.brainscales2.analog_report`).

Prints the table and the margin; writes ``out/bss2_digits/analog.json`` and
the bundle. Exit status 1 if the noiseless emulator loses more than
``MARGIN`` against the float reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nir
import numpy as np
import torch
from sklearn.datasets import load_digits

from nmc.nn import surrogate

ROOT = Path(__file__).resolve().parents[2]
T, DT, TAU_SYN, TAU_MEM, HIDDEN = 16, 1e-3, 2e-3, 5e-3, 128
MARGIN = 0.02  # the noiseless analog emulator must stay within 2 points of the float reference


#: Heaviside forward (H(0) = 0), fast-sigmoid surrogate gradient 1/(1 + 10|x|)² backward
SPIKE = surrogate("fast_sigmoid", slope=10.0)


def encode(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 64) intensities in [0, 1] → (T, N, 64) Bernoulli spikes."""
    return (rng.random((T, *x.shape)) < x[None]).astype(np.float32)


def forward(w1, w2, spikes):
    from nmc import dynamics as D

    ts, tm = torch.tensor(TAU_SYN), torch.tensor(TAU_MEM)
    w_in, r, zero, one = torch.tensor(TAU_SYN / DT), torch.tensor(TAU_MEM / DT), torch.tensor(0.0), torch.tensor(1.0)
    B = spikes.shape[1]
    i1, v1, i2, v2 = torch.zeros(B, HIDDEN), torch.zeros(B, HIDDEN), torch.zeros(B, 10), torch.zeros(B, 10)
    count = torch.zeros(B, 10)
    for t in range(spikes.shape[0]):
        i1 = D.synaptic(i1, spikes[t] @ w1.T, ts, w_in, DT, "euler")
        v1 = D.leaky(v1, i1, tm, r, zero, DT, "euler")
        s1, v1 = D.fire(v1, one, zero, "zero", SPIKE)
        i2 = D.synaptic(i2, s1 @ w2.T, ts, w_in, DT, "euler")
        v2 = D.leaky(v2, i2, tm, r, zero, DT, "euler")
        s2, v2 = D.fire(v2, one, zero, "zero", SPIKE)
        count = count + s2
    return count


def train(seed: int = 0, epochs: int = 8, batch: int = 100):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx = rng.permutation(len(X))
    tr, te = idx[:1400], idx[1400:]
    w1 = torch.nn.Parameter(torch.randn(HIDDEN, 64) * 0.15)
    w2 = torch.nn.Parameter(torch.randn(10, HIDDEN) * 0.08)
    opt = torch.optim.Adam([w1, w2], lr=5e-3)
    for _ in range(epochs):
        perm = rng.permutation(tr)
        for i in range(0, len(perm), batch):
            bi = perm[i:i + batch]
            s = torch.from_numpy(encode(X[bi], rng))
            loss = torch.nn.functional.cross_entropy(forward(w1, w2, s) * 0.5, torch.from_numpy(y[bi]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    x_te = encode(X[te], rng)
    with torch.no_grad():
        acc = float((forward(w1, w2, torch.from_numpy(x_te)).argmax(1).numpy() == y[te]).mean())

    def cuba(n):
        return nir.CubaLIF(tau_syn=np.full(n, TAU_SYN), tau_mem=np.full(n, TAU_MEM), r=np.full(n, TAU_MEM / DT),
                           v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n),
                           w_in=np.full(n, TAU_SYN / DT))

    f = lambda p: p.detach().numpy().astype(np.float64)  # noqa: E731
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([64])}),
               "fc1": nir.Linear(weight=f(w1)), "lif1": cuba(HIDDEN),
               "fc2": nir.Linear(weight=f(w2)), "lif2": cuba(10),
               "output": nir.Output(output_type={"output": np.array([10])})},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])
    return graph, x_te.astype(np.float64), y[te].astype(np.int64), acc


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bss2_digits")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import nmc
    from nmc.backends.brainscales2 import analog_report

    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    graph, x, labels, torch_acc = train(a.seed)
    t_train = time.perf_counter() - t0
    opts = dict(dt=DT, reset="zero", integrator="euler", seed=a.seed)
    ref = nmc.compile(graph, target="reference", **opts)
    b = nmc.compile(graph, target="brainscales2", output=a.out / "digits-bss2.nmc", **opts)
    ref_acc = float((ref.run({"input": x})["output"].sum(0).argmax(1) == labels).mean())
    rep = {"reference (float)": {"accuracy": ref_acc, "agreement_with_noiseless": None},
           **analog_report(b, {"input": x}, labels=labels, seed=a.seed)}
    m = b.report("mapping")
    print(f"trained CubaLIF 64-{HIDDEN}-10 in {t_train:.1f} s (torch accuracy {torch_acc:.1%}); "
          f"{len(labels)} held-out digits, T = {T}")
    print(f"{'run':<24}{'accuracy':>10}{'vs float':>10}{'agree w/ noiseless':>20}")
    for k, v in rep.items():
        ag = v["agreement_with_noiseless"]
        print(f"{k:<24}{v['accuracy']:>10.1%}{v['accuracy'] - ref_acc:>+10.1%}{'-' if ag is None else f'{ag:.1%}':>20}")
    print(f"mapping: {m['rows_used']} synapse rows (lower bound {m['rows_lower_bound']}), {m['circuits_used']} "
          f"circuits (lower bound {m['circuits_lower_bound']}), {m['runs_used']} run(s); calibration: {m['calibration']}")
    loss = ref_acc - rep["noiseless"]["accuracy"]
    print(f"margin: the noiseless emulator must stay within {MARGIN:.0%} of float; it loses {loss:+.1%} -> "
          f"{'OK' if loss <= MARGIN else 'OUTSIDE'}")
    rep["_meta"] = {"margin": MARGIN, "train_s": t_train, "torch_accuracy": torch_acc, "samples": int(len(labels))}
    (a.out / "analog.json").write_text(json.dumps(rep, indent=2, sort_keys=True))
    return rep


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r["noiseless"]["accuracy"] >= r["reference (float)"]["accuracy"] - MARGIN else 1)
