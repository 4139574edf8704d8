"""ANN → SNN: train a small MLP and a small CNN on sklearn's digits with
PyTorch, export them to ONNX, convert them with nmc (rate coding, data-based
threshold balancing) and print the accuracy table on every target's emulator.

    python examples/onnx_digits/run.py [--timesteps 64] [--out out/onnx_digits]

What runs, per model, as a user would type it::

    nmc compile mlp.onnx --target T --calibrate calib.npz --timesteps 64 --encoding regular -o mlp-T.nmc
    nmc run mlp-T.nmc --input test_input.npz -o out.npz     # class = argmax of the readout

Training takes ≈ 20 s on 2 CPU cores; no download (the digits ship with
scikit-learn).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[2]
console = Console()


def models():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return {"mlp": mlp, "cnn": cnn}


def train(model, X, y, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(Xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=64)
    ap.add_argument("--encoding", default="regular", choices=["regular", "poisson", "current"],
                    help="input encoding (chips take spikes: regular or poisson)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "onnx_digits")
    ap.add_argument("--targets", default=None, help="comma-separated targets (default: all registered)")
    args = ap.parse_args(argv)
    import nmc
    from nmc.backends import REGISTRY

    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, cal, te = idx[:1200], idx[1200:1400], idx[1400:]
    np.savez(args.out / "calib.npz", input=X[cal], labels=y[cal])
    targets = args.targets.split(",") if args.targets else list(REGISTRY)
    results = {}
    for name, model in models().items():
        train(model, X[tr], y[tr], args.epochs)
        with torch.no_grad():
            ann_acc = float((model(torch.from_numpy(X[te])).argmax(1).numpy() == y[te]).mean())
        onnx_path = args.out / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.from_numpy(X[:1]), str(onnx_path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
        results[name] = {"ann": ann_acc}
        for target in targets:
            b = nmc.compile(onnx_path, target=target, calibrate=args.out / "calib.npz",
                            output=args.out / f"{name}-{target}.nmc", timesteps=args.timesteps,
                            encoding=args.encoding)
            from nmc.frontends.onnx import encode

            out = b.run({"input": encode(X[te], args.timesteps, args.encoding)}, record=["readout"])
            v = out["readout.v"][-1]
            results[name][target] = float((v.argmax(-1) == y[te]).mean())
            if target == "reference":
                results[name]["conversion"] = b.report("conversion")["accuracy"]
    t = Table(title=f"digits test set ({len(te)} images): ANN vs converted SNN at T = {args.timesteps}")
    t.add_column("model")
    t.add_column("ANN")
    for target in targets:
        t.add_column(f"SNN {target}")
    for name, r in results.items():
        t.add_row(name, f"{r['ann']:.1%}", *(f"{r[tg]:.1%}" for tg in targets))
    console.print(t)
    for name, r in results.items():
        conv = r["conversion"]
        console.print(f"{name}: calibration-set accuracy vs timesteps (reference): ANN {conv['ann']:.1%}; SNN "
                      + ", ".join(f"T={k}: {v:.1%}" for k, v in sorted(conv["snn"].items(), key=lambda kv: int(kv[0]))),
                      highlight=False)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
