"""Fidelity on networks trained and exported by other frameworks (issue #15).

Networks trained for a few seconds each with the framework's own layers and
surrogate gradients on sklearn's 8×8 digits, Bernoulli rate-coded (p =
pixel/16, T = 16 steps), then handed to nmc the way a user would:

* **snnTorch** 1.0 — a **recurrent CubaLIF** (64 → 40 ``RSynaptic`` → 10
  ``Leaky``) and a **conv** network (1×8×8 → Conv2d(3×3, 6) → ``Leaky`` →
  AvgPool 2 → Flatten → 10 ``Leaky``), exported with snnTorch's own
  ``export_to_nir`` and read as NIR files (snnTorch's dt = 1e-4 convention,
  nmc's default ``--dt``);
* **sinabs** 3.1 — a conv IAF network (Conv2d(3×3, 6) → ``IAFSqueeze`` →
  SumPool 2 → Flatten → Linear → ``IAFSqueeze``, single spike, subtract reset),
  exported with ``sinabs.to_nir`` and compiled with ``exporter="sinabs"``
  (dt = 1, subtract reset; the graph object: its Conv2d has no input shape,
  which ``nir.write`` cannot store);
* **Norse** 1.1 — an all-conv ``LIFBoxCell`` network (Conv2d(3×3, 6, stride 2)
  → LIF → Conv2d(4×4, 10) → LIF: Norse's ``to_nir`` leaves ``None`` for
  Flatten and pooling) exported with ``norse.torch.to_nir`` and compiled with
  ``exporter="norse"`` (dt = 1e-3, τ × 1000: its dt_export·τ bug); and a
  recurrent CubaLIF (``LIFRecurrentCell``, which its ``to_nir`` cannot export)
  and a conv net read from the trained ``SequentialState`` by nmc's torch frontend;
* **Rockpool** 3.1 — a feed-forward CubaLIF (64 → 40 ``LIFTorch`` → 10
  ``LIFTorch``, one spike per step; its ``to_nir`` drops recurrent weights, so
  no recurrent net) exported with ``to_nir``, written as a NIR file and
  compiled with ``exporter="rockpool"`` (its dt read from the file, its update
  rewritten, see docs/exporters.md);
* **nmc.nn** (``CubaLIF`` with a recurrent ``Linear``, ``LIF``): trained in
  nmc's own layers, written as a NIR file (the recurrent net) or compiled from
  the module (the conv net).

Each is compiled for every target with **default options** (only the
exporter's convention) and run on 200 held-out digits encoded with a fresh
seed and then **perturbed** (2 % of the input bits flipped). Class = most
output spikes (first index on ties, the same rule for every target); the
table gives each target's class agreement with the float reference, and the
reference's accuracy. BrainScaleS-2 runs its noiseless emulator.

``python -m bench.exported`` runs this part alone and replaces the
``exported`` entry of ``bench/results/fidelity.json`` (then
``python -m bench --report-only`` re-renders BENCHMARKS.md).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

T = 16
N_TEST = 200
FLIP = 0.02


def data(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float32) / 16.0, d.target
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    return X[idx[:-N_TEST]], y[idx[:-N_TEST]], X[idx[-N_TEST:]], y[idx[-N_TEST:]]


def encode(X, seed, flip=0.0):
    rng = np.random.default_rng(seed)
    s = (rng.random((T, *X.shape)) < X[None]).astype(np.float32)
    if flip:
        f = rng.random(s.shape) < flip
        s = np.where(f, 1 - s, s)
    return s


def _train(model, run, X, y, iters: int, lr: float, shape, seed: int = 0):
    """BPTT on spike counts (cross-entropy on the summed output spikes)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in nn.Module.parameters(model) if p.requires_grad], lr=lr)  # (Rockpool overrides .parameters())
    rng = np.random.default_rng(seed)
    for it in range(iters):
        b = rng.choice(len(y), 64, replace=False)
        x = torch.as_tensor(encode(X[b], seed=it)).reshape(T, 64, *shape)
        out = run(model, x)                                  # (T, B, 10)
        loss = nn.functional.cross_entropy(out.sum(0) * 0.5, torch.as_tensor(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# ----------------------------------------------------------------- snnTorch
def snntorch_models(Xtr, ytr, tmp: Path, iters: int):
    import nir
    import snntorch as snn
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    def run(net, x):
        utils.reset(net)
        for m in net:   # a fresh graph per batch: RSynaptic's reset keeps its previous spikes attached
            for k in ("spk", "syn", "mem"):
                if isinstance(getattr(m, k, None), torch.Tensor):
                    setattr(m, k, torch.zeros_like(getattr(m, k)).detach())
        outs = []
        for t in range(x.shape[0]):
            spk, _ = net(x[t])
            outs.append(spk)
        return torch.stack(outs)

    torch.manual_seed(0)
    # per-neuron decays: with scalar ones the exported neuron nodes carry no shape and NIR's type
    # inference in export_to_nir fails
    full = lambda shape, v: torch.full(shape if isinstance(shape, tuple) else (shape,), v)  # noqa: E731
    kw = dict(init_hidden=True, reset_mechanism="zero", reset_delay=False)
    # RSynaptic(init_hidden=True, reset_delay=False) fails in snnTorch 1.0 (its forward reads an unset
    # local): it trains with the delayed reset, which its NIR export cannot say (nmc resets in the step)
    rec = nn.Sequential(nn.Linear(64, 40), snn.RSynaptic(alpha=full(40, 0.8), beta=full(40, 0.9), threshold=full(40, 1.0), linear_features=40,
                                                         **{**kw, "reset_delay": True}),
                        nn.Linear(40, 10), snn.Leaky(beta=full(10, 0.9), threshold=full(10, 1.0), output=True, **kw))
    conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), snn.Leaky(beta=full((6, 8, 8), 0.9), threshold=full((6, 8, 8), 1.0), **kw), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(96, 10), snn.Leaky(beta=full(10, 0.9), threshold=full(10, 1.0), output=True, **kw))
    out = {}
    for name, net, shape in (("recurrent_cubalif", rec, (64,)), ("conv", conv, (1, 8, 8))):
        _train(net, run, Xtr, ytr, iters, 5e-3, shape)
        utils.reset(net)
        g = export_to_nir(net.eval(), torch.zeros(1, *shape), ignore_dims=[0])   # else the batch dim leaks in
        p = tmp / f"snntorch_{name}.nir"
        nir.write(p, g)
        out[name] = (p, dict(reset="zero"), shape)      # NIR file in snnTorch's dt = 1e-4 convention
    return out


# -------------------------------------------------------------------- Norse
def norse_models(Xtr, ytr, tmp: Path, iters: int):
    import norse.torch as norse

    def run(net, x):
        st, outs = None, []
        for t in range(x.shape[0]):
            o, st = net(x[t], st)
            outs.append(o)
        return torch.stack(outs)

    torch.manual_seed(1)
    rec = norse.SequentialState(nn.Linear(64, 40), norse.LIFRecurrentCell(40, 40), nn.Linear(40, 10),
                                norse.LIFCell())
    conv = norse.SequentialState(nn.Conv2d(1, 6, 3, padding=1), norse.LIFCell(), nn.AvgPool2d(2), nn.Flatten(),
                                 nn.Linear(96, 10), norse.LIFCell())
    with torch.no_grad():   # Norse integrates a current of one input unit per step: start with a useful gain
        for m in (rec, conv):
            for mod in m.modules():
                if isinstance(mod, (nn.Linear, nn.Conv2d)):
                    mod.weight.mul_(8.0)
        rec[1].recurrent_weights.mul_(3.0)
    out = {}
    for name, net, shape in (("recurrent_cubalif", rec, (64,)), ("conv", conv, (1, 8, 8))):
        _train(net, run, Xtr, ytr, iters, 2e-2, shape)
        out[name] = (net.eval(), dict(input_shape=shape), shape)   # the module, read by nmc's torch frontend
    return out


# ------------------------------------------------------------ sinabs to_nir
def sinabs_models(Xtr, ytr, tmp: Path, iters: int):
    import sinabs
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleSpike

    def run(net, x):                                  # x (T, B, ...) → sinabs' (B·T, ...) batch-major layout
        for m in net.modules():
            if isinstance(m, sl.StatefulLayer):
                m.reset_states()
        t, b = x.shape[:2]
        y = net(x.transpose(0, 1).reshape(b * t, *x.shape[2:]))
        return y.reshape(b, t, -1).transpose(0, 1)

    torch.manual_seed(3)
    iaf = lambda: sl.IAFSqueeze(num_timesteps=T, spike_fn=SingleSpike, reset_fn=MembraneSubtract())  # noqa: E731
    conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), iaf(), sl.SumPool2d(2), nn.Flatten(), nn.Linear(96, 10),
                         iaf())
    _train(conv, run, Xtr, ytr, iters, 5e-3, (1, 8, 8))
    run(conv.eval(), torch.zeros(T, 1, 1, 8, 8))
    g = sinabs.to_nir(conv, torch.zeros(T, 1, 8, 8))
    return {"conv": (g, dict(exporter="sinabs"), (1, 8, 8))}


# ------------------------------------------------------------- Norse to_nir
def norse_nir_models(Xtr, ytr, tmp: Path, iters: int):
    import norse.torch as norse

    def run(net, x):
        st, outs = None, []
        for t in range(x.shape[0]):
            o, st = net(x[t], st)
            outs.append(o.reshape(o.shape[0], -1))
        return torch.stack(outs)

    torch.manual_seed(4)
    conv = norse.SequentialState(nn.Conv2d(1, 6, 3, stride=2, padding=1), norse.LIFBoxCell(), nn.Conv2d(6, 10, 4),
                                 norse.LIFBoxCell())
    with torch.no_grad():   # v ← v + 0.1·(x − v) per step at Norse's defaults: start with a useful gain
        for mod in conv.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(8.0)
    _train(conv, run, Xtr, ytr, iters, 2e-2, (1, 8, 8))
    g = norse.to_nir(conv.eval(), torch.zeros(1, 1, 8, 8))
    return {"conv": (g, dict(exporter="norse"), (1, 8, 8))}


# ---------------------------------------------------------- Rockpool to_nir
def rockpool_models(Xtr, ytr, tmp: Path, iters: int):
    import nir
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch, to_nir

    def run(net, x):                                   # Rockpool's layout: (batch, time, channels)
        net.reset_state()                              # (its modules keep their state across calls)
        return net(x.transpose(0, 1))[0].transpose(0, 1)

    torch.manual_seed(5)
    lif = lambda n: LIFTorch((n,), tau_mem=torch.full((n,), 0.02), tau_syn=torch.full((n,), 0.01),  # noqa: E731
                             dt=1e-3, max_spikes_per_dt=1)
    net = Sequential(LinearTorch((64, 40)), lif(40), LinearTorch((40, 10)), lif(10))
    for k, prm in nn.Module.named_parameters(net):    # train the weights; τ, threshold and bias stay
        prm.requires_grad_("weight" in k)
    _train(net, run, Xtr, ytr, iters, 5e-3, (64,))
    p = tmp / "rockpool_cubalif.nir"
    nir.write(p, to_nir(net))
    return {"cubalif": (p, dict(exporter="rockpool"), (64,))}


# ------------------------------------------------------------------ nmc.nn
class _NmcRecurrent(nn.Module):
    def __init__(self):
        super().__init__()
        from nmc import nn as nnn

        self.fc_in = nn.Linear(64, 40)
        self.lif1 = nnn.CubaLIF(40, alpha=0.8, beta=0.9, reset="zero", dt=1e-3)
        self.rec = nn.Linear(40, 40, bias=False)
        self.fc_out = nn.Linear(40, 10)
        self.lif2 = nnn.LIF(10, beta=0.9, reset="zero", dt=1e-3)

    def forward(self, x):                            # x: (T, B, 64)
        self.lif1.reset_state()
        self.lif2.reset_state()
        s = torch.zeros(x.shape[1], 40)
        outs = []
        for t in range(x.shape[0]):
            s = self.lif1(self.fc_in(x[t]) + self.rec(s))
            outs.append(self.lif2(self.fc_out(s)))
        return torch.stack(outs)

    def to_nir(self):
        import nir

        c, o = self.lif1, self.lif2
        a = lambda t: t.detach().double().numpy().reshape(-1)  # noqa: E731
        full = lambda t, n: np.broadcast_to(a(t), (n,)).copy()  # noqa: E731
        W = lambda m: m.weight.detach().double().numpy()  # noqa: E731
        nodes = {
            "input": nir.Input(input_type={"input": np.array([64])}),
            "fc_in": nir.Affine(weight=W(self.fc_in), bias=self.fc_in.bias.detach().double().numpy()),
            "lif1": nir.CubaLIF(tau_syn=full(c.tau_syn, 40), tau_mem=full(c.tau_mem, 40), r=full(c.r, 40),
                                v_leak=full(c.v_leak, 40), v_threshold=full(c.v_threshold, 40),
                                v_reset=full(c.v_reset, 40), w_in=full(c.w_in, 40)),
            "rec": nir.Linear(weight=W(self.rec)),
            "fc_out": nir.Affine(weight=W(self.fc_out), bias=self.fc_out.bias.detach().double().numpy()),
            "lif2": nir.LIF(tau=full(o.tau, 10), r=full(o.r, 10), v_leak=full(o.v_leak, 10),
                            v_threshold=full(o.v_threshold, 10), v_reset=full(o.v_reset, 10)),
            "output": nir.Output(output_type={"output": np.array([10])})}
        edges = [("input", "fc_in"), ("fc_in", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "fc_out"),
                 ("fc_out", "lif2"), ("lif2", "output")]
        return nir.NIRGraph(nodes=nodes, edges=edges)


def nmcnn_models(Xtr, ytr, tmp: Path, iters: int):
    import nir

    from nmc import nn as nnn

    torch.manual_seed(2)
    rec = _NmcRecurrent()
    _train(rec, lambda m, x: m(x), Xtr, ytr, iters, 5e-3, (64,))
    p = tmp / "nmcnn_recurrent_cubalif.nir"
    nir.write(p, rec.to_nir())
    conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nnn.LIF((6, 8, 8), beta=0.9, reset="zero", dt=1e-3),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(96, 10),
                         nnn.LIF(10, beta=0.9, reset="zero", dt=1e-3))

    def run(m, x):
        nnn.reset(m)
        return torch.stack([m(x[t]) for t in range(x.shape[0])])

    _train(conv, run, Xtr, ytr, iters, 5e-3, (1, 8, 8))
    return {"recurrent_cubalif": (p, dict(dt=1e-3, reset="zero", integrator="euler"), (64,)),
            "conv": (conv.eval(), dict(input_shape=(1, 8, 8)), (1, 8, 8))}


FRAMEWORKS = {"snntorch (export_to_nir)": snntorch_models, "sinabs (to_nir)": sinabs_models,
              "norse (to_nir)": norse_nir_models, "rockpool (to_nir)": rockpool_models,
              "norse (torch frontend)": norse_models, "nmc.nn": nmcnn_models}


def run(quick: bool = False, log=print, only: list[str] | None = None, iters: int | None = None) -> dict:
    import nmc
    from nmc.errors import NmcError

    from .common import registered_targets, versions

    Xtr, ytr, Xte, yte = data()
    iters_default = 10 if quick else 150              # quick (smoke run): nmc.nn only, a few steps, 20 digits
    n_test = 20 if quick else N_TEST
    frameworks = {"nmc.nn": FRAMEWORKS["nmc.nn"]} if quick else FRAMEWORKS
    if only:
        frameworks = {k: v for k, v in FRAMEWORKS.items() if any(k.startswith(o) for o in only)}
    iters = iters or iters_default
    res: dict = {"setup": {"data": "sklearn digits 8x8, Bernoulli rate code p = pixel/16, T = 16",
                           "perturbation": f"fresh encoding seed, {FLIP:.0%} of input bits flipped",
                           "test_samples": n_test, "train_iterations": iters, "batch": 64,
                           "class": "most output spikes (first index on ties)",
                           "brainscales2": "noiseless emulator (mismatch off)",
                           "versions": versions("snntorch", "norse", "sinabs", "rockpool", "nir", "torch")},
                 "results": {}}
    with tempfile.TemporaryDirectory(prefix="nmc-bench-exported-") as tmp:
        tmp = Path(tmp)
        for fw, make in frameworks.items():
            t0 = time.perf_counter()
            models = make(Xtr, ytr, tmp, iters)
            train_s = time.perf_counter() - t0
            for name, (model, opts, shape) in models.items():
                x = encode(Xte[:n_test], seed=99, flip=FLIP).reshape(T, n_test, *shape).astype(np.float64)
                row = {"train_s": round(train_s / len(models), 1)}
                ref = None
                for target in ["reference"] + [t for t in registered_targets() if t != "reference"]:
                    try:
                        b = nmc.compile(model, target=target, **opts)
                        out = b.run({"input": x})["output"]
                    except NmcError as e:
                        row[target] = {"refused": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
                        continue
                    cls = out.sum(0).reshape(n_test, -1).argmax(-1)
                    if target == "reference":
                        ref = cls
                        row[target] = {"accuracy": float((cls == yte[:n_test]).mean()),
                                       "spikes_per_sample": float(out.sum() / n_test)}
                    else:
                        row[target] = {"class_agreement": float((cls == ref).mean()),
                                       "accuracy": float((cls == yte[:n_test]).mean()),
                                       "warnings": len(b.report("compile")["warnings"])}
                res["results"][f"{fw}/{name}"] = row
                log(f"exported {fw}/{name}: {row}")
    return res


def main(argv=None) -> int:
    """Run this part alone; replace the ``exported`` entry of bench/results/fidelity.json."""
    import argparse

    from .common import load, write

    ap = argparse.ArgumentParser(description="fidelity on networks exported by other frameworks")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated framework prefixes (a trial run: writes nothing)")
    ap.add_argument("--iters", type=int, default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(a.quick, only=a.only.split(",") if a.only else None, iters=a.iters)
    if a.only or a.iters:
        return 0
    res["setup"]["seconds"] = round(time.perf_counter() - t0, 1)
    res["setup"]["command"] = "python -m bench.exported" + (" --quick" if a.quick else "")
    res["setup"]["date"] = time.strftime("%Y-%m-%d")
    d = load("fidelity", a.out) or {}
    d["exported"] = res
    write("fidelity", d, a.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
