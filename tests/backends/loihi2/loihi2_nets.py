"""Shared builders for the loihi2 tests."""
from __future__ import annotations

import nir
import numpy as np

from nets import conv_pool, ff_lif, normalized, recurrent_cubalif, spikes, strong_bias_cubalif  # noqa: F401
from nmc.backends.loihi2 import BACKEND
from nmc.passes import PassContext


def lower(graph, **options):
    ctx = PassContext(options=options)
    return BACKEND.lower(graph, ctx), ctx


def nn_style(n_in=6, n_hid=10, n_out=3, seed=3, dt=1e-3):
    """An nmc.nn-style model built as a Graph: snnTorch-Leaky layers (β = 0.9,
    threshold 1) with reset by subtraction and graded (integer) inputs."""
    rng = np.random.default_rng(seed)
    beta = 0.9
    tau = dt / (1 - beta)
    lif = lambda n: nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.zeros(n),  # noqa: E731
                            v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Linear(weight=rng.normal(0, 0.25, (n_hid, n_in))),
             "lif1": lif(n_hid),
             "fc2": nir.Affine(weight=rng.normal(0, 0.8, (n_out, n_hid)), bias=rng.normal(0, 0.02, n_out)),
             "lif2": lif(n_out),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return normalized(nir.NIRGraph(nodes=nodes, edges=edges), dt=dt, reset="subtract")


def graded(n, T=25, seed=0, hi=8):
    return np.random.default_rng(seed).integers(-hi, hi, (T, n)).astype(float)


NETS = {
    "ff": (lambda: normalized(ff_lif()), lambda: spikes(8, T=30, p=0.3, seed=1), {}),
    "recurrent": (lambda: normalized(recurrent_cubalif()), lambda: spikes(6, T=30, p=0.3, seed=2), {}),
    "conv": (lambda: normalized(conv_pool()), lambda: spikes((2, 8, 8), T=20, p=0.3, seed=3), {}),
    "nn_graded_subtract": (nn_style, lambda: graded(6), {"input_bits": 5}),
    # current-based layers with a strong bias: u starts at the bias transient (u_init), chosen vth, split signs
    "cuba_bias": (lambda: normalized(strong_bias_cubalif(n_in=6, n_hid=10, samples=8, T=20)[0], dt=1e-4),
                  lambda: spikes(6, T=30, p=0.3, seed=4), {}),
}
