"""Benchmark workloads: generated networks and their inputs.

The four small networks reuse the builders of ``tests/nets.py`` (the same
graphs the conformance tests run), sized as issue #11 asks:

* ``lif_mlp`` — Input(64) → Affine → LIF(128) → Affine → LIF(10); Bernoulli(0.2) spikes;
* ``braille_cubalif`` — Input(12) → Affine → CubaLIF(40) ⟲ Linear → Affine → CubaLI(7)
  (the Braille-reading shape: 12 taxel channels, ~40 recurrent units, 7 letters);
* ``conv_pool`` — Input(2,16,16) → Conv2d(3×3, 8) → IF → SumPool2d(2) → Flatten → Affine → LIF(10);
* ``egru`` — Input(16) → nmc.EGRU(64) → Affine → LI(8) with Gaussian (graded) input;
* ``ssm_s4d`` — Input(32) → Affine → nmc.DiagSSM(64 channels, 32 complex modes, ReLU)
  (:mod:`bench.ssm_workload`; its peer a plain PyTorch recurrent S4D step loop).

Scaled families for compile time (:func:`dense_recurrent`, 10⁴…3·10⁷ synapses;
:func:`dense_feedforward`, 10⁴…10⁸) and sparse-layer families live in :mod:`bench.compile_time`/:mod:`bench.placement`.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from .common import ROOT


def nets():
    """tests/nets.py as a module (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_nets", ROOT / "tests" / "nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Workload:
    name: str
    describe: str
    graph: object           # nir.NIRGraph as an exporter writes it
    in_shape: tuple
    kind: str               # builder family: mlp | cuba | conv | egru
    graded_input: bool = False

    def inputs(self, T: int, batch: int | None = None, seed: int = 0) -> np.ndarray:
        n = nets()
        if self.graded_input:
            return n.currents(self.in_shape, T=T, scale=1.0, seed=seed, batch=batch)
        return n.spikes(self.in_shape, T=T, p=0.2, seed=seed, batch=batch)


def small() -> dict[str, Workload]:
    n = nets()
    return {
        "lif_mlp": Workload("lif_mlp", "LIF MLP 64→128→10", n.ff_lif(64, 128, 10, w_scale=3.0), (64,), "mlp"),
        "braille_cubalif": Workload("braille_cubalif", "recurrent CubaLIF 12→40⟲→7 (Braille-like)",
                                    n.recurrent_cubalif(12, 40, 7, w_scale=3.0), (12,), "cuba"),
        "conv_pool": Workload("conv_pool", "conv 2×16×16 →(3×3, 8) IF → sum-pool 2 → LIF(10)",
                              n.conv_pool(2, 16, 8, 10), (2, 16, 16), "conv"),
        "egru": Workload("egru", "EGRU(64) layer, 16 graded inputs, LI(8) readout", n.egru_net(16, 64, 8), (16,),
                         "egru", graded_input=True),
        "ssm_s4d": _ssm(),   # issue #16: bench/ssm_workload.py
    }


def _ssm() -> Workload:
    from .ssm_workload import ssm_s4d

    return ssm_s4d()


def dense_recurrent(n: int, n_in: int = 32, seed: int = 0):
    """One LIF population of ``n`` neurons with dense n×n recurrent weights and a
    32-input layer: n² + 32n synapses (the compile-time scaling family)."""
    import nir

    rng = np.random.default_rng(seed)
    lif = nir.LIF(tau=np.full(n, 1e-2), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
                               "fc": nir.Linear(weight=rng.normal(0, 1, (n, n_in)).astype(np.float32)),
                               "lif": lif, "rec": nir.Linear(weight=rng.normal(0, 0.05, (n, n)).astype(np.float32)),
                               "output": nir.Output(output_type={"output": np.array([n])})},
                        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])


def dense_feedforward(width: int, layers: int = 8, seed: int = 0):
    """``layers`` LIF layers of ``width`` neurons, each fed by dense float32 weights from the one
    before (the first from ``width`` inputs): layers·width² synapses, fan-in ``width`` per neuron (the
    compile-time family that reaches 10⁸ synapses on targets whose cores take ≤ 4,096 input axons).
    Weights normal with standard deviation 2/√width, so a layer's input current neither vanishes nor saturates with width."""
    import nir

    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([width])})}
    edges, prev = [], "input"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32)
        w *= np.float32(2.0 / np.sqrt(width))
        nodes[f"fc{i}"] = nir.Linear(weight=w)
        nodes[f"lif{i}"] = nir.LIF(tau=np.full(width, 1e-2), r=np.full(width, 10.0), v_leak=np.zeros(width),
                                   v_threshold=np.ones(width), v_reset=np.zeros(width))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def conv_scaled(neurons: int, seed: int = 0):
    """conv_pool sized so the IF layer has ≈ ``neurons`` neurons (8 channels, square
    image): neurons ∝ side², synapses ≈ 2·9·8·side² (expanded convolution)."""
    side = max(4, int(round(np.sqrt(neurons / 8) / 2)) * 2)
    return nets().conv_pool(2, side, 8, 10, seed=seed), side
