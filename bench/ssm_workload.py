"""The SSM workload of ``bench throughput`` (issue #16) and its peer, a plain PyTorch recurrent S4D step loop.

* ``ssm_s4d`` — Input(32) → Affine(32 → 64, no bias) → ``nmc.DiagSSM`` (64 channels, 32 complex
  S4D-Lin modes, ZOH, Δ log-uniform in [0.02, 0.3] so 8-bit Loihi decays resolve every mode, ReLU
  output) → Output; Bernoulli(0.2) spike inputs (the throughput harness's inputs).
* the peer (:func:`torch_s4d_net`): the same discretised system stepped in a Python loop over
  time in torch float32, complex state, no grad — what a user writes for a recurrent S4D without
  nmc: ``u = W·s;  x = Λ̄ ⊙ x + B̄·u;  y = relu(Re(C̄·x) + D ⊙ u)`` per step.
"""
from __future__ import annotations

import nir
import numpy as np
import torch

from nmc import ssm_math as M
from nmc.nodes_ssm import DiagSSM

from .workloads import Workload

N_IN, H, P = 32, 64, 32


def ssm_s4d(seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    node = DiagSSM(lam=M.s4d_lin(P), step=np.exp(rng.uniform(np.log(0.02), np.log(0.3), P)),
                   b=(rng.normal(size=(P, H)) + 1j * rng.normal(size=(P, H))) / np.sqrt(H),
                   c=(rng.normal(size=(H, P)) + 1j * rng.normal(size=(H, P))) / np.sqrt(P),
                   d=rng.normal(size=H), output="relu")
    w = rng.normal(size=(H, N_IN)) / np.sqrt(N_IN * 0.2)
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([N_IN])}),
                            "fc": nir.Affine(weight=w, bias=np.zeros(H)), "ssm": node,
                            "output": nir.Output({"output": np.array([H])})},
                     edges=[("input", "fc"), ("fc", "ssm"), ("ssm", "output")], type_check=False)
    return Workload("ssm_s4d", f"Affine {N_IN}→{H} → DiagSSM ({H} channels, {P} complex modes, ReLU); "
                               "Bernoulli(0.2) spikes", g, (N_IN,), "ssm")


def torch_s4d_net(wl):
    """The plain PyTorch recurrent S4D step loop of workload ``wl`` (kind ``ssm``); None for other kinds.
    Returns ``f(x)``, x (T, B, n_in) float → y (T, B, H) numpy."""
    if wl.kind != "ssm":
        return None
    g = wl.graph.nodes
    node = g["ssm"]
    lam_bar, gamma = M.discretize(node.lam, node.step, node.method)
    w = torch.as_tensor(np.asarray(g["fc"].weight), dtype=torch.float32)
    lb = torch.as_tensor(lam_bar, dtype=torch.complex64)
    bb = torch.as_tensor(gamma[:, None] * node.b, dtype=torch.complex64)
    cb = torch.as_tensor(2.0 * node.c, dtype=torch.complex64)     # ρ = 2: conjugate pairs
    d = torch.as_tensor(node.d, dtype=torch.float32)

    def run(x):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        st = torch.zeros(x.shape[1], P, dtype=torch.complex64)
        ys = []
        with torch.no_grad():
            for t in range(x.shape[0]):
                u = x[t] @ w.T
                st = lb * st + u.to(torch.complex64) @ bb.T
                ys.append(torch.relu((st @ cb.T).real + d * u))
        return torch.stack(ys).numpy()

    return run
