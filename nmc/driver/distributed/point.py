"""One design point: compile the model with one pipeline for one target, evaluate it.

:func:`run_point` is the Ray task of sweeps and fits. It gets the point (target,
pipeline text, grid values: small) and the shared :class:`Job` (model bytes,
compile options, data, reference predictions), put once in the object store.
It returns a results record (see :mod:`nmc.driver.distributed.results`):

* ``accuracy`` against the labels (when given) and ``agreement`` with the float
  reference's predictions on the same data (the ``reference`` target, same
  compile options);
* ``energy_per_inference_j`` (and its dynamic part) from the energy profiler
  (:func:`nmc.runtime.energy.profile`) over the first ``energy_samples``
  samples, ``cores`` and ``chips`` used, for targets with a hardware spec;
* ``compile_s`` and ``eval_s`` (wall clock), ``bits`` of the quantize pass;
* ``no_fit`` with the first violated design rule (``rule``) and their count, or
  ``failed`` with the error when the compile or run raised.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nmc.backends import get_backend
from nmc.driver import api
from nmc.errors import DesignRuleError, NmcError

from .data import predictions
from .engine import format_exception

#: fields of a record that depend on the machine and load, not on the point
TIMING_FIELDS = ("compile_s", "eval_s", "worker")


@dataclass
class Job:
    """What every point of a sweep shares (shipped once per node)."""

    model_name: str
    model_bytes: bytes
    compile: dict                    # dt, reset, integrator, seed, input_shape, trust_pickle, target options
    hw: list = field(default_factory=list)            # packaged spec names or (file name, bytes)
    calibrate: dict | None = None
    inputs: dict = field(default_factory=dict)        # input node -> (T, B, *shape)
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None               # float-reference predictions on the inputs
    energy_samples: int = 32

    def identity(self) -> dict:
        """What makes two sweeps' points the same point (hashed into each key)."""
        h = hashlib.sha256(self.model_bytes).hexdigest()
        d = hashlib.sha256()
        for k in sorted(self.inputs):
            a = np.ascontiguousarray(self.inputs[k])
            d.update(f"{k}|{a.dtype.str}|{a.shape}".encode() + a.tobytes())
        if self.labels is not None:
            d.update(b"labels" + np.ascontiguousarray(self.labels).tobytes())
        if self.calibrate is not None:
            for k in sorted(self.calibrate):
                d.update(k.encode() + np.ascontiguousarray(self.calibrate[k]).tobytes())
        hw = [x if isinstance(x, str) else [x[0], hashlib.sha256(x[1]).hexdigest()] for x in self.hw]
        return {"model": h, "compile": self.compile, "hw": hw, "data": d.hexdigest(),
                "energy_samples": self.energy_samples}


def point_key(identity: dict, target: str, passes: str) -> str:
    text = json.dumps({"job": identity, "target": target, "passes": passes}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_point(job: Job, target: str, passes: str | None, workdir: Path, output: str | Path | None = None):
    """Compile the job's model for one target and pipeline (files written to ``workdir`` only)."""
    model = workdir / Path(job.model_name).name
    if not model.exists():
        model.write_bytes(job.model_bytes)

    hw = []
    # --hw reaches the targets that have a hardware spec (the reference has none); a packaged
    # spec name (spinnaker2-48chip) only its own target
    for x in (job.hw if get_backend(target).spec_name else []):
        if isinstance(x, str):
            if x.split("-")[0] == target:
                hw.append(x)
        else:
            f = workdir / f"hw{len(hw)}-{Path(x[0]).name}"
            f.write_bytes(x[1])
            hw.append(str(f))
    opts = dict(job.compile)
    return api.compile(str(model), target=target, output=output, passes=passes, hw=hw,
                       calibrate=job.calibrate, **opts)


def run_point(point: dict, job: Job) -> dict:
    """The Ray task: compile and evaluate one point; returns its record (never raises for the point's own failure)."""
    rec = {"key": point["key"], "index": point["index"], "target": point["target"], "params": point["params"],
           "passes": point["passes"], "worker": f"{os.uname().nodename}:{os.getpid()}"}
    with tempfile.TemporaryDirectory(prefix="nmc-point-") as tmp:
        t0 = time.perf_counter()
        try:
            b = compile_point(job, point["target"], point["passes"], Path(tmp))
        except DesignRuleError as e:
            rec.update(status="no_fit", compile_s=time.perf_counter() - t0, violations=len(e.violations),
                       rule=e.violations[0].line() if e.violations else e.one_line())
            return rec
        except NmcError as e:
            rec.update(status="failed", compile_s=time.perf_counter() - t0, error="compile: " + e.one_line())
            return rec
        except Exception as e:  # a bug in nmc: recorded, with where it was raised
            rec.update(status="failed", compile_s=time.perf_counter() - t0, error="compile: " + format_exception(e))
            return rec
        rec["compile_s"] = time.perf_counter() - t0
        rec["bits"] = _bits(b.manifest["pipeline"])
        t1 = time.perf_counter()
        try:
            rec.update(evaluate_bundle(b, job))
        except NmcError as e:
            rec.update(status="failed", error="evaluate: " + e.one_line())
            return rec
        except Exception as e:
            rec.update(status="failed", error="evaluate: " + format_exception(e))
            return rec
        rec["eval_s"] = time.perf_counter() - t1
    rec["status"] = "ok"
    return rec


def evaluate_bundle(b, job: Job) -> dict:
    """Accuracy / agreement on the job's data, energy and resources from the profiler."""
    out = b.run(job.inputs)
    pred = predictions(out, b.graph.outputs[0])
    res: dict = {"samples": int(pred.shape[0])}
    if job.labels is not None:
        res["accuracy"] = float(np.mean(pred == job.labels))
    if job.reference is not None:
        res["agreement"] = float(np.mean(pred == job.reference))
    if b.hw is not None:
        from nmc.runtime import energy

        n = max(1, min(job.energy_samples, res["samples"]))
        rep, _ = energy.profile(b, {k: v[:, :n] for k, v in job.inputs.items()})
        res.update(energy_per_inference_j=rep["per_inference_j"], energy_dynamic_j=rep["dynamic_j"] / rep["batch"],
                   cores=rep["cores_used"], chips=rep["chips_used"], energy_samples=n)
    return res


def _bits(pipeline: str) -> int | None:
    from nmc.passes import parse_pipeline

    q = [p for p in parse_pipeline(pipeline) if p.name == "quantize"]
    return int(q[-1].bits) if q and getattr(q[-1], "bits", None) is not None else None


def score(rec: dict) -> float | None:
    """The quality a floor applies to: accuracy with labels, else agreement with the reference."""
    v = rec.get("accuracy", rec.get("agreement"))
    return None if v is None else float(v)
