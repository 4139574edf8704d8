"""Supervised structural plasticity under a fixed fan-in on sklearn's 8×8 digits, learned in nmc's
float reference simulator, against a frozen random topology with the same fan-in.

    python examples/rewiring_digits/run.py [--epochs 12] [--fan-in 8]

The network is one plastic projection 64 → 10 into IF neurons (v += W·s per 1 ms step, spike and
reset to 0 at v ≥ 1), the pixels a Bernoulli rate code (p = intensity/16) over T = 16 steps. Its
:class:`nmc.plasticity.Plasticity` rule (equations in :mod:`nmc.plasticity`):

* weights: the error-modulated trace rule, ΔW_ji = η·E_j·e_i with e_i the presynaptic trace and
  E_j = target_j − s_j(t − 1) the error of output neuron j at the previous step (target 0.5 for
  the digit's neuron, 0 for the others), mean over the mini-batch of 64 digits; weight decay
  ``decay`` per step, weights in [−1, 1];
* structure: every neuron keeps exactly ``fan_in`` synapses; every ``rewire_every`` steps a synapse
  with |w| < ``prune_below`` gets a new random presynaptic pixel (seeded) and w = ``w_new``.

A dense projection (all 64 pixels per neuron, the same rule without rewiring) is shown for scale.
The baseline is the same rule on the same initial random topology with pruning off (``prune_below =
0``: no synapse is ever rewired). Both are evaluated on the held-out digits with the learned weights
frozen (spike count over T, argmax), and the connectomes compared: synapses on pixels that are blank
in every training digit, and the spread of each pixel's out-degree.

Prints the table; writes ``out/rewiring_digits/result.json``.
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
from sklearn.model_selection import train_test_split

from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.plasticity import Plasticity
from nmc.reference import ReferenceSimulator

ROOT = Path(__file__).resolve().parents[2]
T, DT, BATCH, TARGET = 16, 1e-3, 64, 0.5


def network(w: np.ndarray, rule: Plasticity | None) -> Graph:
    n_out, n_in = w.shape
    g = Graph(meta={"dt": DT})
    g.add_node("pixels", nir.Input(input_type={"input": np.array([n_in])}))
    g.add_node("w", nir.Affine(weight=w, bias=np.zeros(n_out)))
    g.add_node("digit", nir.IF(r=np.full(n_out, 1.0 / DT), v_threshold=np.ones(n_out)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("pixels", "w"), ("w", "digit"), ("digit", "out")):
        g.add_edge(*e)
    if rule is not None:
        g.annotate("w", rule)
    return PassManager(parse_pipeline("normalize")).run(g, PassContext(options={}))


def encode(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 64) intensities in [0, 1] → (T, N, 64) Bernoulli spikes."""
    return (rng.random((T, *x.shape)) < x[None]).astype(np.float64)


def train(w0, rule, xtr, ytr, epochs, seed):
    sim = ReferenceSimulator(network(w0, rule))
    lr = sim.learners["w"]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(xtr))
        for s in range(0, len(order) - BATCH + 1, BATCH):
            idx = order[s:s + BATCH]
            spikes = encode(xtr[idx], rng)
            target = np.zeros((BATCH, 10))
            target[np.arange(BATCH), ytr[idx]] = TARGET
            sim.reset_state(BATCH)
            out = np.zeros((BATCH, 10))
            with torch.no_grad():
                for t in range(T):
                    sim.modulate(target - out)
                    o, _ = sim.step({"pixels": torch.as_tensor(spikes[t])})
                    out = o["out"].numpy()
    return lr.w.numpy().copy(), lr


def accuracy(w, x, y, seed) -> float:
    sim = ReferenceSimulator(network(w, None))
    spikes = encode(x, np.random.default_rng(seed))
    counts = sim.run({"pixels": spikes}, batched=True)["out"].sum(axis=0)
    return float(np.mean(np.argmax(counts, axis=1) == y))


def connectome(mask, blank) -> dict:
    syn = mask
    out_deg = syn.sum(axis=0)
    return {"synapses": int(syn.sum()), "fan_in": sorted(set(syn.sum(axis=1).tolist())),
            "density": float(syn.mean()), "on_blank_pixels": int(syn[:, blank].sum()),
            "pixels_used": int((out_deg > 0).sum()), "pixel_out_degree_max": int(out_deg.max())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--fan-in", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--decay", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "rewiring_digits")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    d = load_digits()
    x, y = d.data / 16.0, d.target
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=a.seed, stratify=y)
    blank = np.flatnonzero(xtr.max(axis=0) == 0)
    w0 = np.random.default_rng(a.seed).uniform(-0.3, 0.3, (10, 64))
    common = dict(third_factor="error", tau_e=2e-3, lr=a.lr, w_min=-1.0, w_max=1.0, decay=a.decay, fan_in=a.fan_in,
                  w_new=0.0, rewire_every=4 * T, seed=a.seed)
    res = {"epochs": a.epochs, "fan_in": a.fan_in, "train": len(xtr), "test": len(xte), "blank_pixels": len(blank)}
    for name, prune, fan_in in (("rewiring", 0.05, a.fan_in), ("frozen random topology", 0.0, a.fan_in),
                                ("dense (all 64 pixels)", 0.0, 0)):
        t0 = time.perf_counter()
        w, lr = train(w0, Plasticity(**{**common, "prune_below": prune, "fan_in": fan_in}), xtr, ytr, a.epochs, a.seed)
        mask = lr.mask.numpy() if lr.mask is not None else np.ones_like(w, bool)
        res[name] = {"accuracy": accuracy(w, xte, yte, a.seed + 1), "rewired": lr.rewired,
                     "train_s": round(time.perf_counter() - t0, 1), **connectome(mask, blank)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(f"rewiring digits: 64 → 10 IF neurons, fan-in {a.fan_in} of 64, {a.epochs} epochs, "
          f"{len(xte)} test digits ({len(blank)} pixels blank in every training digit)")
    print(f"{'topology':24s} {'accuracy':>8s} {'rewired':>8s} {'synapses':>8s} {'on blank':>8s} "
          f"{'pixels used':>11s} {'train s':>7s}")
    for name in ("rewiring", "frozen random topology", "dense (all 64 pixels)"):
        r = res[name]
        print(f"{name:24s} {r['accuracy']:8.3f} {r['rewired']:8d} {r['synapses']:8d} {r['on_blank_pixels']:8d} "
              f"{r['pixels_used']:11d} {r['train_s']:7.1f}")
    return res


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r["rewiring"]["accuracy"] > r["frozen random topology"]["accuracy"] else 1)
