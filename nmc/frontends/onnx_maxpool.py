"""Spiking max-pooling for the ONNX frontend (``maxpool="spiking"``): an IF max tree.

A max over rate-coded spike trains has no exact equivalent, so ``MaxPool`` is
refused by default. This option builds one from the identity

    max(a, b) = b + relu(a − b)

applied as a balanced tree over the k·k window positions: each window position
p is a *phase* tensor ``x[:, :, py::k, px::k]`` (a depthwise 0/1 ``Conv2d``
with stride k, one per term of x); each ``relu(a − b)`` is an ``IF`` neuron
(reset by subtraction) fed by a − b, with its threshold balanced like every
ReLU (the ``percentile`` of relu(a − b) on the calibration data); the result
``b + λ·r`` is a sum of terms like any other tensor. A 2×2 pool adds two IF
layers (three IF nodes). Only IF neurons and linear nodes: every target
expresses it.

Approximation: an IF neuron integrating a − b counts ≈ max(0, Σ_t (a_t − b_t))
spikes, which equals relu(a − b)·T only when the sign of a − b does not change
over the run; the chips add one step of latency per IF layer. The example
(``examples/onnx_digits``) measures the accuracy against the AveragePool
retrain that the default refusal recommends.

Restrictions (refused with the reason): window = stride (non-overlapping), no
padding, and the image divisible by the window.
"""
from __future__ import annotations

import numpy as np
import torch

from nmc.errors import UnsupportedNodeError


def spiking_maxpool(cv, o, out_shape) -> None:
    """Add the IF max tree for MaxPool node ``o`` to the converter ``cv`` (see :class:`~.onnx_graph._Converter`)."""
    from .onnx_ops import _conv2d, _merge

    x = o.inputs[0]
    k = tuple(int(v) for v in o.attrs["kernel_shape"])
    stride = tuple(int(v) for v in o.attrs.get("strides", k))
    shape = cv.shapes[x]
    if len(shape) != 3 or len(k) != 2:
        raise UnsupportedNodeError("spiking MaxPool needs an (N, C, H, W) input", node=o.name)
    C, H, W = shape
    if (stride != k or any(o.attrs.get("pads", [0, 0, 0, 0])) or H % k[0] or W % k[1]
            or int(o.attrs.get("ceil_mode", 0)) or any(int(d) != 1 for d in o.attrs.get("dilations", [1, 1]))):
        raise UnsupportedNodeError(f"spiking MaxPool needs stride = kernel {k}, no padding/dilation/ceil_mode and "
                                   f"an image divisible by the kernel (got stride {stride}, image {H}×{W})",
                                   node=o.name, hint="use AveragePool and retrain, or change the pooling")
    X = cv.env[x]
    phases = []
    for py in range(k[0]):
        for px in range(k[1]):
            terms = []
            for src, fac in cv.rep[x]:
                w = np.zeros((C, 1, *k))
                w[:, 0, py, px] = fac
                node = _conv2d(w, np.zeros(C), (H, W), stride=k, groups=C)
                terms.append((cv.add(f"{o.name}_p{py}{px}", node, src), 1.0))
            phases.append((terms, X[:, :, py::k[0], px::k[1]]))
    level = 0
    while len(phases) > 1:
        nxt = []
        for i in range(0, len(phases) - 1, 2):
            (ta, va), (tb, vb) = phases[i], phases[i + 1]
            d = torch.relu(va - vb)
            lam = max(float(np.percentile(d.numpy(), cv.percentile)), 1e-9)
            name = cv.if_node(f"{o.name}_max{level}_{i // 2}", out_shape, lam)
            cv.lam[name] = lam
            cv.feed(name, ta + [(n, -f) for n, f in tb], out_shape)
            nxt.append((_merge(tb + [(name, lam)]), torch.maximum(va, vb)))
        if len(phases) % 2:
            nxt.append(phases[-1])
        phases = nxt
        level += 1
    cv.rep[o.outputs[0]] = phases[0][0]
