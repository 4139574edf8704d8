"""Sharded evaluation: a data set split along its batch axis across Ray workers.

Samples are independent inferences: each shard (a contiguous slice of the batch
axis) runs the bundle on one worker and the outputs are concatenated in order,
so the result equals a single-process run of the whole batch bit for bit on the
emulators (each sample's arithmetic does not depend on its neighbours; the
tests check it). ``workers=1`` runs in this process without Ray.

What is shipped: the bundle's files (bytes, once per node through the object
store) and each shard's slice of the data; each worker rebuilds the program
from the files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.driver.bundle import Bundle
from nmc.errors import DistributedError, OptionError

from . import engine
from .data import Dataset, load as load_data, predictions


@dataclass
class Evaluation:
    outputs: dict[str, np.ndarray]      # output node -> (T, B, ...), the whole batch
    predictions: np.ndarray             # (B,) spike-count argmax of the first output
    accuracy: float | None              # against the labels, when given
    samples: int
    shards: int

    def summary(self) -> dict:
        return {"samples": self.samples, "shards": self.shards, "accuracy": self.accuracy}


def _run_shard(item: dict, bundle_ref) -> dict[str, np.ndarray]:
    """The Ray task: one slice of the batch through the bundle."""
    files, manifest = bundle_ref
    b = Bundle(files, manifest)
    return b.run(item["inputs"], device=item["device"])


def evaluate(bundle, data, labels=None, *, workers: int = 1, address: str | None = None, device: str | None = None,
             samples: int | None = None, shards: int | None = None, retries: int = engine.DEFAULT_RETRIES) -> Evaluation:
    """Run ``bundle`` on ``data`` (an .npz path or ``{input: (T, B, *shape)}``), sharded over ``workers``.

    ``shards``: pieces of the batch (default: one per worker). ``labels``: .npy path
    or array (or a ``labels`` array in the .npz). ``address``: join a Ray cluster.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    if workers < 1:
        raise OptionError(f"--workers must be >= 1, got {workers}")
    ds: Dataset = load_data(data, labels, samples, input_names=bundle.graph.inputs)
    B = ds.samples
    n = max(1, min(B, shards or workers))
    bounds = np.linspace(0, B, n + 1).astype(int)
    items = [{"inputs": {k: np.ascontiguousarray(v[:, lo:hi]) for k, v in ds.inputs.items()}, "device": device}
             for lo, hi in zip(bounds[:-1], bounds[1:])]
    if workers == 1 and address is None:
        parts = [bundle.run(it["inputs"], device=device) for it in items]
    else:
        parts = [None] * n
        with engine.session(address, workers):
            ref = engine.put((bundle.files, bundle.manifest))
            for i, res in engine.run_tasks(_run_shard, items, ref, retries=retries):
                if isinstance(res, engine.TaskFailure):
                    raise DistributedError(f"shard {i + 1}/{n} (samples {bounds[i]}..{bounds[i + 1] - 1}) failed: "
                                           f"{res.line()}")
                parts[i] = res
    outputs = {k: np.concatenate([p[k] for p in parts], axis=1) if np.ndim(parts[0][k]) >= 2 else parts[0][k]
               for k in parts[0]}
    pred = predictions(outputs, bundle.graph.outputs[0])
    acc = float(np.mean(pred == ds.labels)) if ds.labels is not None else None
    return Evaluation(outputs, pred, acc, B, n)
