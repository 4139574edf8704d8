"""Evaluation data for sweeps, fits and sharded evaluation: inputs, labels, the readout.

``D.npz`` holds one array per input node, ``(T, B, *shape)`` (B samples), read
without unpickling (:func:`nmc.runtime.events.load_inputs_npz`); labels come from
``--labels L.npy`` or a ``labels`` array in the same .npz. A classifier's
prediction is the output node's activity summed over time, argmax over units
(the spike-count readout of the quick-start model).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmc.errors import InputFileError, OptionError
from nmc.runtime.events import load_inputs_npz


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]      # input node -> (T, B, *shape)
    labels: np.ndarray | None          # (B,) int64
    source: str

    @property
    def samples(self) -> int:
        return int(next(iter(self.inputs.values())).shape[1])

    def digest(self) -> str:
        """sha256 of the arrays (names, dtypes, shapes, bytes): part of every point's identity."""
        h = hashlib.sha256()
        for k in sorted(self.inputs):
            a = np.ascontiguousarray(self.inputs[k])
            h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
            h.update(a.tobytes())
        if self.labels is not None:
            h.update(b"labels")
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def load(data: str | Path | dict, labels: str | Path | np.ndarray | None = None, samples: int | None = None,
         input_names=None) -> Dataset:
    """Read ``data`` (an .npz path or a dict of arrays) and ``labels``; keep the first ``samples``."""
    src = str(data) if not isinstance(data, dict) else "<dict>"
    arrays = dict(data) if isinstance(data, dict) else load_inputs_npz(data)
    lab = arrays.pop("labels", None)
    if labels is not None:
        lab = _load_labels(labels)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if input_names is not None:
        missing = [k for k in input_names if k not in arrays]
        if missing:
            raise InputFileError(f"no array for input node '{missing[0]}' (arrays: {', '.join(sorted(arrays)) or 'none'})",
                                 path=src, hint="name each (T, B, *shape) array after its input node")
        arrays = {k: arrays[k] for k in input_names}
    if not arrays:
        raise InputFileError("the data file holds no input arrays", path=src, hint="one (T, B, *shape) array per input node")
    batch = {k: v.shape[1] if v.ndim >= 2 else None for k, v in arrays.items()}
    if any(b is None for b in batch.values()) or len(set(batch.values())) != 1:
        raise InputFileError(f"input arrays need the same batch axis (T, B, *shape); got shapes "
                             f"{ {k: v.shape for k, v in arrays.items()} }", path=src,
                             hint="stack the samples on axis 1")
    B = next(iter(batch.values()))
    if samples is not None:
        if samples < 1:
            raise OptionError(f"--samples must be >= 1, got {samples}")
        B = min(B, samples)
        arrays = {k: v[:, :B] for k, v in arrays.items()}
    if lab is not None:
        lab = np.asarray(lab)
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise InputFileError(f"labels must be a 1-D integer array, got {lab.dtype} {lab.shape}",
                                 path=str(labels) if labels is not None else src, hint="one class index per sample")
        if lab.shape[0] < B:
            raise InputFileError(f"{lab.shape[0]} labels for {B} samples", path=str(labels or src),
                                 hint="give one label per sample (axis 1 of the inputs)")
        lab = lab[:B].astype(np.int64)
    return Dataset(arrays, lab, src)


def _load_labels(labels) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        return labels
    p = Path(labels)
    if not p.is_file():
        raise InputFileError("labels file not found", path=p, hint="pass a .npy of integer class indices")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        raise InputFileError(f"not a plain .npy array ({e})", path=p,
                             hint="save it with numpy.save(path, labels) (no pickles)") from None
    except Exception as e:
        raise InputFileError(f"unreadable labels file ({type(e).__name__}: {e})", path=p) from None


def predictions(outputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Class per sample: activity of ``output`` summed over time, argmax over its units."""
    a = np.asarray(outputs[output])
    if a.ndim < 3:
        raise OptionError(f"output '{output}' has shape {a.shape}, not (T, B, units): no per-sample prediction",
                          node=output, hint="evaluate batched data (T, B, *shape)")
    return a.sum(0).reshape(a.shape[1], -1).argmax(1).astype(np.int64)
