"""``nmc sweep``: every point of a grid of pass options, compiled and evaluated as a Ray task.

``SWEEP/`` gets ``results.jsonl`` (one record per point, appended and fsync'd
as each finishes: see :mod:`nmc.driver.distributed.results`), ``sweep.json`` (what was
asked), and, once every point is in, ``pareto.png`` and ``report.html``. A
re-run with the same model, data and options skips the points already done
(each point's key hashes the model bytes, compile options, data and pipeline),
so an interrupted sweep resumes and a grid that grows computes only what is new.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from nmc.backends import get_backend
from nmc.driver import api
from nmc.errors import InputFileError, OptionError
from nmc.hw import list_specs
from nmc.runtime.events import load_inputs_npz

from . import engine, grid as G
from .data import Dataset, load as load_data, predictions
from .point import TIMING_FIELDS, Job, point_key, run_point
from .report import html_report, pareto, plot_png
from .results import ResultsFile

RESULTS = "results.jsonl"


@dataclass
class SweepResult:
    records: list[dict]                 # one per point of the grid, in grid order
    computed: int                       # points run by this call
    reused: int                         # points found done in results.jsonl
    output: Path
    front: set = field(default_factory=set)

    def best(self) -> list[dict]:
        return [r for r in self.records if r["key"] in self.front]


def make_job(model, data, labels=None, *, samples: int | None = None, hw: Sequence = (), calibrate=None,
             energy_samples: int = 32, reference: bool = True, **compile_opts) -> tuple[Job, Dataset]:
    """Read the model, data and option files once; the float reference's predictions on the data."""
    mp = Path(model)
    if not mp.is_file():
        raise InputFileError("model file not found" if not mp.exists() else "the model must be a single file here",
                             path=mp, hint="pass a .nir/.pt/.pt2/.onnx file")
    hw_items = []
    for h in hw:
        if isinstance(h, str) and h in list_specs():
            hw_items.append(h)
        elif Path(h).is_file():
            hw_items.append((Path(h).name, Path(h).read_bytes()))
        else:
            raise InputFileError("--hw file not found", path=str(h), hint="a TOML file or a packaged spec name")
    calib = None
    if calibrate is not None:
        calib = dict(calibrate) if isinstance(calibrate, dict) else load_inputs_npz(calibrate)
    opts = {k: v for k, v in compile_opts.items() if v is not None}
    ds = load_data(data, labels, samples)
    job = Job(model_name=mp.name, model_bytes=mp.read_bytes(), compile=opts, hw=hw_items, calibrate=calib,
              inputs=ds.inputs, labels=ds.labels, energy_samples=energy_samples)
    if reference:
        ref = api.compile(str(mp), target="reference", calibrate=calib, **opts)
        ds_inputs = {k: v for k, v in ds.inputs.items() if k in ref.graph.inputs}
        missing = [k for k in ref.graph.inputs if k not in ds_inputs]
        if missing:
            raise InputFileError(f"no array for input node '{missing[0]}' (arrays: {', '.join(sorted(ds.inputs))})",
                                 path=ds.source, hint="name each (T, B, *shape) array after its input node")
        job.inputs = ds_inputs
        job.reference = predictions(ref.run(ds_inputs), ref.graph.outputs[0])
    return job, ds


def plan(job: Job, targets: Sequence[str], grid_text: str | None, passes: str | None = None) -> list[dict]:
    """The points: every target × every grid combination, with its pipeline and key."""
    if not targets:
        raise OptionError("no target given", hint="--target spinnaker2[,loihi2,...]")
    combos = G.points(G.parse(grid_text)) if grid_text else [{}]
    ident = job.identity()
    pts = []
    for t in targets:
        be = get_backend(t)
        base = passes or be.default_pipeline({"target": t, **job.compile})
        for params in combos:
            text = G.apply(base, params)
            pts.append({"index": len(pts), "target": t, "params": params, "passes": text,
                        "key": point_key(ident, t, text)})
    keys = [p["key"] for p in pts]
    if len(set(keys)) != len(keys):  # e.g. a grid value equal to the default repeated: run once
        seen: set = set()
        pts = [p for p in pts if not (p["key"] in seen or seen.add(p["key"]))]
        for i, p in enumerate(pts):
            p["index"] = i
    return pts


def check_output(out: Path, marker: str) -> None:
    """Refuse to write into a folder that holds something other than our own results."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        raise InputFileError(f"output exists and is not a folder of nmc results (no {marker}); refusing to write "
                             "into it", path=out, hint="choose another -o folder or delete it")


def run_points(points: list[dict], job: Job, rf: ResultsFile, *, workers: int | None, address: str | None,
               retries: int, on_result: Callable[[dict], None] | None, task=run_point) -> int:
    """Run the points not yet done in ``rf`` as Ray tasks; append each record as it arrives."""
    done = rf.done()
    todo = [p for p in points if p["key"] not in done]
    if not todo:
        return 0
    with engine.session(address, workers):
        ref = engine.put(job)
        for i, res in engine.run_tasks(task, todo, ref, retries=retries):
            p = todo[i]
            if isinstance(res, engine.TaskFailure):
                res = {k: p[k] for k in ("key", "index", "target", "params", "passes")} | {
                    "status": "crashed" if res.kind == "crash" else "failed", "error": res.line()}
            rf.append(res)
            if on_result is not None:
                on_result(res)
    return len(todo)


def sweep(model, target: str | Sequence[str], grid: str | None, data, labels=None, output="sweep", *,
          passes: str | None = None, hw: Sequence = (), calibrate=None, samples: int | None = None,
          energy_samples: int = 32, workers: int | None = None, address: str | None = None,
          retries: int = engine.DEFAULT_RETRIES, on_result: Callable[[dict], None] | None = None,
          on_plan: Callable[[int, int], None] | None = None, task=run_point, **compile_opts) -> SweepResult:
    """Compile and evaluate ``model`` at every point of ``grid`` for each target, as Ray tasks.

    ``grid``: ``'quantize.bits=8,6,4; sparsify.density=1,0.5'`` (pass.option = values);
    ``data``: an .npz (or dict) of ``(T, B, *shape)`` inputs; ``labels``: .npy or array;
    ``samples``: use the first N; ``energy_samples``: samples the energy profile runs on;
    ``workers``: CPUs of the embedded Ray (default all); ``address``: join a cluster;
    ``retries``: re-runs of a point whose worker died; ``compile_opts``: as :func:`nmc.compile`
    (dt, reset, integrator, seed, ...). ``on_plan(total, to_run)`` and ``on_result(record)``
    report progress. Returns every point's record and the Pareto front; writes
    ``output/results.jsonl``, ``pareto.png`` and ``report.html``.
    """
    engine.require_ray()
    targets = [t.strip() for t in target.split(",")] if isinstance(target, str) else list(target)
    out = Path(output)
    check_output(out, RESULTS)
    if grid:
        G.parse(grid)  # refuse a bad grid before anything is compiled
    job, _ = make_job(model, data, labels, samples=samples, hw=hw, calibrate=calibrate,
                      energy_samples=energy_samples, **compile_opts)
    points = plan(job, targets, grid, passes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(
        {"model": str(model), "targets": targets, "grid": grid, "passes": passes, "samples": job.reference.shape[0]
         if job.reference is not None else None, "compile": job.compile, "points": len(points)},
        indent=2, sort_keys=True, default=str) + "\n")
    with ResultsFile(out / RESULTS) as rf:
        done = rf.done()
        if on_plan is not None:
            on_plan(len(points), sum(p["key"] not in done for p in points))
        computed = run_points(points, job, rf, workers=workers, address=address, retries=retries,
                              on_result=on_result, task=task)
        records = [dict(rf.records[p["key"]], index=p["index"]) for p in points if p["key"] in rf.records]
    res = SweepResult(records, computed, len(points) - computed, out)
    write_report(res, f"sweep of {Path(model).name} on {', '.join(targets)}")
    return res


def write_report(res: SweepResult, title: str) -> None:
    res.front = pareto(res.records)
    png = plot_png(res.records, title)
    (res.output / "pareto.png").write_bytes(png)
    (res.output / "report.html").write_bytes(html_report(res.records, png, title))


def comparable(records: list[dict]) -> list[dict]:
    """Records without the machine-dependent fields (timings, worker), sorted by key: what a
    serial and a distributed run of the same sweep must agree on exactly."""
    return sorted(({k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records), key=lambda r: r["key"])


def serial(points: list[dict], job: Job) -> list[dict]:
    """The same points in this process, one after another (the reference a Ray run must equal)."""
    return [run_point(p, job) for p in points]


__all__ = ["sweep", "SweepResult", "make_job", "plan", "serial", "comparable"]
