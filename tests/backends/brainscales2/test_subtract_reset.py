"""Reset by subtraction on BrainScaleS-2 (issue #25: ANN → SNN conversions, whose IF neurons reset by
subtraction, fell to 18 % on deep models). A circuit resets to a potential; resetting to 0 drops the
residue v − θ that subtraction keeps, so an IF neuron driven by d threshold units per step fires
1/⌈1/d⌉ per step instead of d (0.25 instead of 0.32 at d = 0.32), and the loss compounds layer after
layer. The lowering now resets each neuron to its mean residue measured on the float reference with
the calibration data (the synthetic probe without it)."""
from __future__ import annotations

import nir
import numpy as np

import nmc

DT = 1e-3


def _net(seed=0, nin=64, nh=64):
    rng = np.random.default_rng(seed)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([nin])}),
        "fc": nir.Affine(weight=rng.normal(0, 0.3, (nh, nin)), bias=np.zeros(nh)),
        "h": nir.IF(r=np.full(nh, 1 / DT), v_threshold=np.ones(nh), v_reset=np.zeros(nh)),
        "fc2": nir.Affine(weight=rng.normal(0, 0.3, (10, nh)), bias=np.zeros(10)),
        "h2": nir.IF(r=np.full(10, 1 / DT), v_threshold=np.ones(10), v_reset=np.zeros(10)),
        "output": nir.Output(output_type={"output": np.array([10])})},
        edges=[("input", "fc"), ("fc", "h"), ("h", "fc2"), ("fc2", "h2"), ("h2", "output")])


def _regular(p, T):
    """Regular spike trains at rate p (the ONNX converter's 'regular' encoding)."""
    x, acc = np.zeros((T, *p.shape)), np.zeros(p.shape)
    for t in range(T):
        acc += p
        x[t] = acc >= 1
        acc -= x[t]
    return x


def _agreement(a, b):
    a, b = a.sum(0), b.sum(0)
    return 1 - np.abs(a - b).sum() / np.maximum(a, b).sum()


def test_subtract_reset_keeps_rate_coded_counts():
    x = _regular(np.random.default_rng(1).random((4, 64)), 48)
    opts = dict(dt=DT, reset="subtract", integrator="euler")
    ref = nmc.compile(_net(), target="reference", fidelity_check=False, **opts).run({"input": x}, record=["h", "h2"])
    b = nmc.compile(_net(), target="brainscales2", calibrate={"input": x}, fidelity_check=False, **opts)
    out = b.run({"input": x}, record=["h", "h2"], mismatch="off")
    # the reset potential is each neuron's mean residue v − θ after a spike on the reference, in [0, θ]
    # (θ = 1 here; a neuron driven above one threshold per step keeps a growing residue: clipped at θ)
    vr = {l.name: l for l in b.program.layers}["h"].params["v_reset"]
    assert np.all((vr >= 0) & (vr <= 1.01)) and np.sum((vr > 0.05) & (vr < 0.95)) >= 10
    assert any("mean residue" in w["message"] for w in b.report("compile")["warnings"])
    # spike-count agreement per layer (1 − Σ|n_dev − n_ref| / Σ max): with a reset to 0 it was 0.75 and
    # 0.68 on these inputs (the residue lost at every spike, ~d/2 of d per step); with the mean residue
    # what is left is the spread of each neuron's residues around their mean and the 6-bit weights
    # (measured 0.96 / 0.92): the bar sits between the two
    assert _agreement(ref["h.spikes"], out["h.spikes"]) > 0.88
    assert _agreement(ref["h2.spikes"], out["h2.spikes"]) > 0.82
