"""ANN → SNN: train small classifiers on sklearn's digits with PyTorch, export
them to ONNX, convert them with nmc (rate coding, data-based threshold
balancing) and print the accuracy table on every target's emulator.

    python examples/onnx_digits/run.py [--timesteps 64] [--out out/onnx_digits] [--models mlp,cnn,...]

The models (all trained in the run, 30 epochs, Adam):

* ``mlp``: 64-128-10;
* ``cnn``: two conv layers with AveragePool, BatchNorm after the first;
* ``cnn-maxpool``: the same CNN trained with MaxPool, converted with the
  spiking max-pool option (``maxpool=spiking``: an IF max tree). Compare its
  row with ``cnn``: that is the "replace MaxPool with AveragePool and retrain"
  advice nmc gives by default;
* ``resnet``: a stem, one residual block (two 3×3 convs with BatchNorm and an
  identity skip), a strided conv, ``AdaptiveAvgPool2d(1)`` head and a
  LogSoftmax output (exported, dropped by the converter);
* ``mobilenet``: depthwise-separable convs (depthwise 3×3 + pointwise 1×1,
  BatchNorm), a concat of two branches, a ``AdaptiveAvgPool2d(1)`` head and a
  Softmax output.

The residual and mobilenet models are exported with torch's default (dynamo)
exporter, the others with the TorchScript one (``dynamo=False``). What runs,
per model, as a user would type it::

    nmc compile mlp.onnx --target T --calibrate calib.npz --timesteps 64 --encoding regular -o mlp-T.nmc
    nmc run mlp-T.nmc --input test_input.npz -o out.npz     # class = argmax of the readout

No download (the digits ship with scikit-learn). README.md next to this file
has the measured table.
"""
from __future__ import annotations

import argparse
import json
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


nn = torch.nn


def conv_bn(cin, cout, k=3, groups=1, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """stem → residual block (identity skip) → strided conv → global average pool → linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8)
        self.a, self.b = conv_bn(8, 8), conv_bn(8, 8)
        self.down = conv_bn(8, 24, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.b(torch.relu(self.a(h))) + h)
        return self.head(torch.relu(self.down(h)))


class MobileNet(nn.Module):
    """stem → [depthwise-separable block ‖ 1×1 branch] → concat → depthwise-separable (stride 2) → GAP → linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8)
        self.dw1, self.pw1 = conv_bn(8, 8, groups=8), conv_bn(8, 8, k=1)
        self.side = conv_bn(8, 8, k=1)
        self.dw2, self.pw2 = conv_bn(16, 16, groups=16, stride=2), conv_bn(16, 32, k=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        a = torch.relu(self.pw1(torch.relu(self.dw1(h))))
        h = torch.cat([a, torch.relu(self.side(h))], 1)
        return self.head(torch.relu(self.pw2(torch.relu(self.dw2(h)))))


def cnn(pool):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), pool(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), pool(2),
        nn.Flatten(), nn.Linear(64, 10))


#: name → (model, output layer appended for the export, exporter, conversion options)
def models():
    return {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)), None, "torchscript", {}),
        "cnn": (cnn(nn.AvgPool2d), None, "torchscript", {}),
        "cnn-maxpool": (cnn(nn.MaxPool2d), None, "torchscript", {"maxpool": "spiking"}),
        "resnet": (ResNet(), nn.LogSoftmax(1), "dynamo", {}),
        "mobilenet": (MobileNet(), nn.Softmax(1), "dynamo", {}),
    }


def export(model, out_layer, exporter: str, x, path) -> None:
    m = nn.Sequential(model, out_layer) if out_layer is not None else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":  # torch's default exporter (needs onnxscript)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(m, (x,), str(path), input_names=["input"], output_names=["logits"],
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
                                  external_data=False)
        else:
            torch.onnx.export(m, x, str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}})


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
    ap.add_argument("--models", default=None, help="comma-separated models (default: all)")
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
    zoo = models()
    for name in (args.models.split(",") if args.models else list(zoo)):
        if name not in zoo:
            raise SystemExit(f"error: unknown model {name!r}; choose from {', '.join(zoo)}")
        model, out_layer, exporter, conv_opts = zoo[name]
        torch.manual_seed(0)
        train(model, X[tr], y[tr], args.epochs)
        with torch.no_grad():
            ann_acc = float((model(torch.from_numpy(X[te])).argmax(1).numpy() == y[te]).mean())
        onnx_path = args.out / f"{name}.onnx"
        export(model, out_layer, exporter, torch.from_numpy(X[:1]), onnx_path)
        results[name] = {"ann": ann_acc, "exporter": exporter}
        for target in targets:
            b = nmc.compile(onnx_path, target=target, calibrate=args.out / "calib.npz",
                            output=args.out / f"{name}-{target}.nmc", timesteps=args.timesteps,
                            encoding=args.encoding, **conv_opts)
            from nmc.frontends.onnx import encode

            out = b.run({"input": encode(X[te], args.timesteps, args.encoding)}, record=["readout"])
            v = out["readout.v"][-1]
            results[name][target] = float((v.argmax(-1) == y[te]).mean())
            console.print(f"{name} on {target}: {results[name][target]:.1%} (ANN {ann_acc:.1%})", highlight=False)
            if target == "reference":
                results[name]["conversion"] = b.report("conversion")["accuracy"]
    (args.out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    t = Table(title=f"digits test set ({len(te)} images): ANN vs converted SNN at T = {args.timesteps}")
    t.add_column("model")
    t.add_column("exporter")
    t.add_column("ANN")
    for target in targets:
        t.add_column(f"SNN {target}")
    for name, r in results.items():
        t.add_row(name, r["exporter"], f"{r['ann']:.1%}", *(f"{r[tg]:.1%}" for tg in targets))
    console.print(t)
    for name, r in results.items():
        if "conversion" not in r:
            continue
        conv = r["conversion"]
        console.print(f"{name}: calibration-set accuracy vs timesteps (reference): ANN {conv['ann']:.1%}; SNN "
                      + ", ".join(f"T={k}: {v:.1%}" for k, v in sorted(conv["snn"].items(), key=lambda kv: int(kv[0]))),
                      highlight=False)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
