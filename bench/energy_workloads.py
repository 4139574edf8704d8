"""Calibration workloads for ``bench energy``: the published measured workloads that
can be rebuilt here (topology, time steps, activity level), with random weights
scaled to the activity the source describes. Trained weights are not available
offline (``abr/power_benchmarks`` ships them as a pickle, which nmc does not load).

* ``kws_loihi`` — Blouw et al. 2018 (arXiv:1812.01739): keyword spotter 390 → 256 →
  256 → 29 on Loihi; Nengo LIF neurons with a 100 Hz maximum rate, each feature
  frame presented for 10 steps of 1 ms (``n_steps=10`` in power_benchmarks'
  ``training/nengo_speech_model.py``). Input: Bernoulli spikes at ≤ 100 Hz.
* ``mnist_bss2`` — Cramer et al. 2022 (PNAS 119(4)): 16×16 MNIST → 246 hidden LIF →
  10 readout on BrainScaleS-2, 85 k frames/s (11.8 µs of hardware time per frame
  = 12 steps of 1 µs at the 1000× speed-up).
* ``egru_lm`` — an EGRU language model in the shape of the SpiNNaker 2 work
  (3 EGRU layers, 95 % of the weights pruned and stored sparse): embedding 64 →
  3 × EGRU(256) → 64-way readout, one step per token.
"""
from __future__ import annotations

import nir
import numpy as np


def _lif(n: int, tau: float = 20e-3, thr: float = 1.0) -> nir.LIF:
    return nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, thr),
                   v_reset=np.zeros(n))


def mlp(sizes: list[int], gain: float, seed: int, readout: str = "lif") -> nir.NIRGraph:
    """Input → (Affine → LIF)* with N(0, gain/√fan-in) weights (positive mean so spikes propagate)."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([sizes[0]])})}
    edges, prev = [], "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.5, 1.0, (b, a)) * gain / np.sqrt(a)
        nodes[f"fc{i}"] = nir.Affine(weight=w, bias=np.zeros(b))
        last = i == len(sizes) - 2
        nodes[f"l{i}"] = (nir.LI(tau=np.full(b, 20e-3), r=np.ones(b), v_leak=np.zeros(b))
                          if last and readout == "li" else _lif(b))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"l{i}")]
        prev = f"l{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array([sizes[-1]])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def kws_loihi(samples: int, seed: int = 0):
    """(graph, inputs (10, samples, 390)): the Blouw 2018 keyword spotter topology."""
    g = mlp([390, 256, 256, 29], gain=4.0, seed=seed)
    x = (np.random.default_rng(seed + 1).random((10, samples, 390)) < 0.1).astype(np.float64)
    return g, x


def mnist_bss2(samples: int, seed: int = 0):
    """(graph, inputs (12, samples, 256)): the Cramer 2022 MNIST network shape."""
    g = mlp([256, 246, 10], gain=4.0, seed=seed, readout="li")
    x = (np.random.default_rng(seed + 1).random((12, samples, 256)) < 0.15).astype(np.float64)
    return g, x


def egru_lm(tokens: int, hidden: int = 256, layers: int = 3, emb: int = 64, density: float = 0.05, seed: int = 0):
    """(graph, inputs (tokens, emb)): 3 × EGRU(hidden), weights pruned to ``density``, graded embedding input."""
    from nmc.nodes import EGRU

    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([emb])})}
    edges, prev, n_prev = [], "input", emb

    def pruned(shape, scale):
        w = rng.normal(0, scale, shape)
        w[rng.random(shape) >= density] = 0.0
        return w

    for i in range(layers):
        h = hidden
        nodes[f"egru{i}"] = EGRU(w_x=pruned((3 * h, n_prev), 3.0 / np.sqrt(n_prev * density)),
                                 w_h=pruned((3 * h, h), 1.0 / np.sqrt(h * density)),
                                 b_x=rng.normal(0, 0.1, 3 * h), b_h=np.zeros(3 * h), thr=np.full(h, 0.3))
        edges.append((prev, f"egru{i}"))
        prev, n_prev = f"egru{i}", h
    nodes["fc"] = nir.Affine(weight=pruned((emb, n_prev), 1.0 / np.sqrt(n_prev * density)), bias=np.zeros(emb))
    nodes["li"] = nir.LI(tau=np.full(emb, 1e-2), r=np.ones(emb), v_leak=np.zeros(emb))
    nodes["output"] = nir.Output(output_type={"output": np.array([emb])})
    edges += [(prev, "fc"), ("fc", "li"), ("li", "output")]
    x = rng.normal(0, 1.0, (tokens, emb))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), x

#: passes for the pruned EGRU LM on SpiNNaker 2: weights stored sparse (CSR), int8
EGRU_PASSES = "normalize,sparsify{density=0.05},quantize{bits=8},partition,place,route"
