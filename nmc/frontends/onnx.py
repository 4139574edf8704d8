"""ONNX frontend: a trained ANN converted to a rate-coded spiking network.

The supported operators are the keys of :data:`OPERATORS` (README.md lists the
same table; a test keeps them equal). Every unsupported node is listed in one
:class:`~nmc.errors.UnsupportedNodeError`. Constants (initializers,
``Constant``, ``Shape`` and the shape arithmetic computed from them, a
``Transpose`` of a weight) are folded before conversion
(:mod:`nmc.frontends.onnx_eval`).

Conversion (Rueckauer et al.'s data-based threshold balancing, phrased with
thresholds instead of weight normalisation):

* each ReLU becomes an ``IF`` node (reset by subtraction, R = 1/dt so
  ``v += x`` per step) with threshold λ_l = the ``percentile`` of that
  ReLU's activations on calibration data. Its spike rate r (spikes per step)
  approximates a_l / λ_l, so the ANN tensor ≈ λ_l · r;
* every ANN tensor is represented as a sum ``Σ factor · (graph node output)``
  (one term per branch). A weight layer reading a sum gets one weight node per
  term (weights × factor, the bias on the first one) whose outputs are summed
  again where they meet, so linear layers distribute over residual sums and
  concatenations;
* ``Clip(0, c)`` works like a ReLU (an IF neuron saturates at one spike per
  step, so λ ≤ c reproduces the clip when λ = c);
* ``Concat`` along channels/features: NIR has no concatenation, so each
  concatenated term becomes an index-mapping node into the joined tensor (a
  0/1 ``Conv2d`` 1×1 for images, a 0/1 ``Linear`` for vectors, carrying the
  term's factor) and the mapped terms are summed. Every target lowers these
  exactly (they compose into the next weight matrix);
* ``GlobalAveragePool`` (and ``ReduceMean`` over the spatial axes, which is how
  ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` export) becomes an
  ``AvgPool2d`` over the whole image;
* grouped and depthwise ``Conv`` (``group > 1``) stay grouped ``Conv2d`` nodes
  (NIR's ``groups``); targets expand them into block-sparse synapses, so per-core
  synapse counts and bytes hold only the connections the groups make;
* ``Mul``/``Div`` by a constant fold into the preceding weight node(s) (a scalar
  into any term's factor; per-channel constants into weights or a ``Scale``);
* a ``Softmax``/``LogSoftmax`` whose output is the model output is dropped (a
  monotone map of the readout: the argmax is unchanged) with a note in the
  report; anywhere else it is refused;
* ``MaxPool`` is refused by default (a max over spike trains has no exact
  rate-coded equivalent: replace it with AveragePool and retrain). With
  ``maxpool="spiking"`` it becomes a tree of IF neurons using
  ``max(a, b) = b + relu(a − b)`` (:mod:`nmc.frontends.onnx_maxpool`): only IF
  neurons and linear nodes, so every target expresses it, approximately;
* the last layer (no ReLU) feeds an ``I`` integrator (R = 1/dt), whose
  membrane accumulates the logits; the class is argmax of the final membrane;
* inputs are encoded per the ``encoding`` option: ``current`` (the analog
  value every step), ``poisson`` (Bernoulli spikes with p = value, values in
  [0, 1]) or ``regular`` (deterministic spike trains at rate = value);
  :func:`encode` produces the input array for a run.

The converted graph is an ordinary nmc graph (Affine, Linear, Conv2d,
AvgPool2d, Flatten, Scale, IF, I nodes), so every pass and backend applies.

Files: this module (options, calibration, :func:`convert`, :func:`encode`,
the accuracy table), :mod:`.onnx_eval` (reading the file, folding constants,
the float ANN forward pass), :mod:`.onnx_graph` (the walk over the ONNX nodes
and the graph being built), :mod:`.onnx_ops` (the operator table and one
converter per operator), :mod:`.onnx_maxpool` (the spiking max tree).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmc.errors import OptionError, ShapeError
from nmc.ir import Graph
from nmc.limits import check_dims, check_shape_alloc

from .onnx_eval import Op as _Op  # noqa: F401  (re-exported for callers of the old names)
from .onnx_eval import MAX_ELEMENTS, constant_tensors, forward, node_errors, read
from .onnx_graph import _Converter
from .onnx_ops import (CONSTANT_ONLY, OPERATORS, REFUSED, RESHAPES, SUPPORTED, _conv2d,  # noqa: F401  (the public names)
                       _merge, check_supported)

_read = read
_ann_forward = forward

ENCODINGS = ("current", "poisson", "regular")
MAXPOOL_MODES = ("refuse", "spiking")


# ---------------------------------------------------------------- conversion
def convert(path: str | Path, *, data: dict | None = None, timesteps: int = 32, percentile: float = 99.9,
            encoding: str = "current", dt: float = 1e-3, seed: int = 0, maxpool: str = "refuse") -> tuple[Graph, dict]:
    """Convert an ONNX ANN to a spiking :class:`Graph`; returns (graph, report).

    ``maxpool``: ``refuse`` (default) or ``spiking`` (an approximate IF max tree, see the module docstring)."""
    with node_errors([]):
        return _convert(path, data, timesteps, percentile, encoding, dt, seed, maxpool)


def _convert(path, data, timesteps, percentile, encoding, dt, seed, maxpool) -> tuple[Graph, dict]:
    path = Path(path)
    if encoding not in ENCODINGS:
        raise OptionError(f"unknown input encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}")
    if maxpool not in MAXPOOL_MODES:
        raise OptionError(f"unknown maxpool mode {maxpool!r}", hint=f"use one of {', '.join(MAXPOOL_MODES)}")
    if not (0 < percentile <= 100):
        raise OptionError(f"percentile must be in (0, 100], got {percentile}")
    ops, inits, in_name, dims, out_name = read(path)
    const = constant_tensors(ops, inits)
    check_supported(ops, path, const=const, out_name=out_name, maxpool=maxpool)
    in_shape = tuple(int(d) for d in dims[1:] if d is not None) if dims else ()
    if len(in_shape) != len(dims) - 1:
        raise ShapeError(f"input '{in_name}' has unknown dimensions {dims}", path=path,
                         hint="export with a fixed input shape (batch may be dynamic)")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise OptionError(f"timesteps must be a whole number >= 1, got {timesteps!r}", hint="e.g. --timesteps 32")
    check_dims(in_shape, f"input '{in_name}' shape {in_shape}", path=path,
               hint="export with a fixed, positive input shape")
    # the calibration batch (at most 256 samples) encoded over every timestep is the largest array made here
    n_cal = 256 if data is None else max((len(v) for v in data.values() if np.ndim(v) > 0), default=1)
    check_shape_alloc((timesteps, max(n_cal, 1), *in_shape), 8, f"input '{in_name}' of shape {in_shape} over "
                      f"{timesteps} timesteps for {n_cal} calibration samples", path=path)
    n_in = int(np.prod(in_shape, dtype=object)) if in_shape else 1
    if n_in > MAX_ELEMENTS or n_in == 0:
        raise ShapeError(f"input '{in_name}' has {n_in} elements per sample", path=path, node="input",
                         limit=f"1..{MAX_ELEMENTS}", actual=n_in, hint="export with the model's real input shape")
    x_cal, labels, synthetic = _calibration(data, in_name, in_shape, seed)
    with torch.no_grad():
        env, acts = forward(ops, inits, in_name, torch.as_tensor(x_cal, dtype=torch.float64), record=True)
    lam = {k: max(float(np.percentile(v.numpy(), percentile)), 1e-9) for k, v in acts.items()}
    cv = _Converter(ops, inits, in_name, in_shape, out_name, env, lam, dt, percentile, maxpool, const)
    with torch.no_grad():
        g = cv.run()
    g.meta.update({"encoding": encoding, "timesteps": int(timesteps)})
    report = {"thresholds": {k: round(v, 6) for k, v in cv.lam.items()}, "percentile": percentile,
              "encoding": encoding, "timesteps": int(timesteps), "calibration": "synthetic" if synthetic else "data",
              "calibration_samples": int(len(x_cal)), "maxpool": maxpool, "notes": cv.notes}
    if labels is not None:
        ann_pred = env[out_name].numpy().argmax(1)
        report["accuracy"] = accuracy_table(g, x_cal, labels, ann_pred, timesteps, encoding, seed)
    return g, report


def _calibration(data, in_name, in_shape, seed):
    if data is None:   # 256 samples, fewer for inputs so large that 256 would exceed MAX_ELEMENTS in all
        rng = np.random.default_rng(seed)
        n = max(1, min(256, MAX_ELEMENTS // max(1, int(np.prod(in_shape, dtype=object)))))
        return rng.random((n, *in_shape)), None, True
    arr = data.get("input", data.get(in_name))
    if arr is None:
        arr = next((v for k, v in data.items() if k != "labels"), None)
    if arr is None:
        raise ShapeError("calibration data has no input array", hint="store the inputs under 'input' in the .npz")
    arr = np.asarray(arr, dtype=np.float64)
    if tuple(arr.shape[1:]) != in_shape:
        raise ShapeError(f"calibration inputs have shape {arr.shape}, expected (N, {', '.join(map(str, in_shape))})",
                         node="input")
    labels = data.get("labels")
    return arr, (np.asarray(labels).astype(int) if labels is not None else None), False


def encode(x: np.ndarray, timesteps: int, encoding: str = "current", seed: int = 0) -> np.ndarray:
    """Input array for a run: x of shape (B, *shape) with values in [0, 1] for
    spike encodings → (T, B, *shape)."""
    x = np.asarray(x, dtype=np.float64)
    if encoding == "current":
        return np.broadcast_to(x, (timesteps, *x.shape)).copy()
    if np.any(x < 0) or np.any(x > 1):
        raise ShapeError(f"{encoding} spike encoding needs input values in [0, 1]", node="input",
                         hint="scale the inputs or use encoding=current")
    if encoding == "poisson":
        return (np.random.default_rng(seed).random((timesteps, *x.shape)) < x).astype(np.float64)
    if encoding == "regular":
        t = np.arange(1, timesteps + 1).reshape(-1, *([1] * x.ndim))
        return (np.floor(t * x) - np.floor((t - 1) * x)).astype(np.float64)
    raise OptionError(f"unknown input encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}")


def accuracy_table(g: Graph, x, labels, ann_pred, timesteps: int, encoding: str, seed: int) -> dict:
    """ANN accuracy vs converted-SNN accuracy on the reference simulator at several timestep counts."""
    from nmc.reference import ReferenceSimulator

    sim = ReferenceSimulator(g)
    ts = sorted({t for t in (8, 16, 32, 64, 128, 256) if t <= timesteps} | {int(timesteps)})
    inp = encode(x, max(ts), encoding, seed)
    out = sim.run({"input": inp}, batched=True, record=["readout"])["readout.v"]
    res = {"ann": float(np.mean(ann_pred == labels)), "snn": {}}
    for t in ts:
        res["snn"][str(t)] = float(np.mean(out[t - 1].argmax(-1) == labels))
    res["agreement_with_ann_at_T"] = float(np.mean(out[timesteps - 1].argmax(-1) == ann_pred))
    return res


def load_file(path: Path, *, data: dict | None = None, options: dict | None = None, **_: Any) -> tuple[Graph, dict]:
    o = options or {}
    return convert(path, data=data, timesteps=int(o.get("timesteps", 32)), percentile=float(o.get("percentile", 99.9)),
                   encoding=str(o.get("encoding", "current")), dt=float(o.get("dt") or 1e-3), seed=int(o.get("seed", 0)),
                   maxpool=str(o.get("maxpool") or "refuse"))
