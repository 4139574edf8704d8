"""``nmc fit``: the cheapest configuration that fits the chip and keeps an accuracy floor.

A Ray Tune search over pass options (the space is written like a sweep grid,
``'quantize.bits=8,6,4; sparsify.density=1,0.5,0.3'``; :data:`DEFAULT_SPACE`
when none is given). Every trial is one point (:func:`nmc.driver.distributed.point.run_point`):
compiled, checked against the design rules, evaluated on the data. A point is
*feasible* when it fits and its accuracy (agreement with the float reference
without labels) is at least ``min_accuracy``; among the feasible the winner has
the lowest cost — energy per inference, cores (then energy) or weight bits
(then energy) — ties going to the more accurate. The target's default compile
runs first as the baseline the winner is compared with.

Samplers: ``grid`` (every point of the space: exhaustive, ``trials`` ignored),
``random`` (Tune's random search, seeded) or ``optuna`` (Optuna's TPE through
``ray.tune.search.optuna``, seeded). Written to OUTPUT/: ``search.jsonl`` (every
trial's record, as it arrives; a re-run into the same folder takes the points
already there from it instead of recompiling them), ``fit.json`` (winner, baseline, closest),
``best.nmc`` (the winning bundle) and ``tune/`` (Tune's own trial logs).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from nmc.backends import get_backend
from nmc.errors import OptionError

from . import engine, grid as G
from .point import Job, compile_point, point_key, run_point, score
from .results import DONE, ResultsFile
from .sweep import check_output, make_job

MINIMIZE = ("energy", "cores", "bits")
SAMPLERS = ("grid", "random", "optuna")
DEFAULT_SPACE = "quantize.bits=8,6,4; sparsify.density=1,0.95,0.9,0.85,0.8,0.7"
LOG = "search.jsonl"


@dataclass
class FitResult:
    best: dict | None                 # the winning record (None: nothing met the floor)
    baseline: dict                    # the target's default compile
    closest: dict | None              # best accuracy among points that fit, when nothing met the floor
    records: list[dict] = field(default_factory=list)
    bundle: Path | None = None
    output: Path | None = None

    def summary(self) -> dict:
        return {"best": self.best, "baseline": self.baseline, "closest": self.closest,
                "trials": len(self.records), "bundle": str(self.bundle) if self.bundle else None}


def cost(rec: dict, minimize: str) -> tuple:
    """Sort key (lower is better) of a feasible record."""
    e = rec.get("energy_per_inference_j")
    e = float("inf") if e is None else float(e)
    lead = {"energy": e, "cores": rec.get("cores") if rec.get("cores") is not None else float("inf"),
            "bits": rec.get("bits") if rec.get("bits") is not None else 64}[minimize]
    return (lead, e, -(score(rec) or 0.0), rec.get("index", 0))


def choose(records: list[dict], floor: float, minimize: str) -> tuple[dict | None, dict | None]:
    """``(best, closest)``: the cheapest record that fits and meets ``floor``; when there is
    none, the most accurate record that fits (cheapest among equals), else None."""
    feasible = [r for r in records if r.get("status") == "ok" and (score(r) or 0.0) >= floor]
    if feasible:
        return min(feasible, key=lambda r: cost(r, minimize)), None
    fits = [r for r in records if r.get("status") == "ok"]
    return None, (min(fits, key=lambda r: (-(score(r) or 0.0), cost(r, minimize))) if fits else None)


def _encode(key: str) -> str:  # Tune flattens nested results with '/', keep config keys plain
    return key.replace(".", "__")


def _trial(config: dict, job: Job, base: str, target: str, ident: dict, floor: float, minimize: str, done: dict):
    """One Tune trial: the point of ``config`` (run in a Tune worker; a point already in the
    output folder's search.jsonl is taken from there, not recomputed)."""
    from ray import tune

    params = {k.replace("__", "."): v for k, v in sorted(config.items())}
    passes = G.apply(base, params)
    key = point_key(ident, target, passes)
    rec = dict(done[key], params=params, passes=passes) if key in done else run_point(
        {"key": key, "index": -1, "target": target, "params": params, "passes": passes}, job)
    feasible = rec["status"] == "ok" and (score(rec) or 0.0) >= floor
    c = cost(rec, minimize)[0] if feasible else None
    # objective for the sampler: feasible points by cost; others worse than any feasible, by how far they fall short
    objective = float(c) if feasible else 1e30 * (2.0 - (score(rec) or 0.0))
    tune.report({"objective": objective, "feasible": feasible, "record": json.dumps(rec, default=str)})


def fit(model, target: str, data, labels=None, output="fit", *, min_accuracy: float = 0.97,
        minimize: str = "energy", space: str | None = None, trials: int = 16, sampler: str = "grid",
        passes: str | None = None, hw: Sequence = (), calibrate=None, samples: int | None = None,
        energy_samples: int = 32, workers: int | None = None, address: str | None = None,
        retries: int = engine.DEFAULT_RETRIES, seed: int = 0, on_result: Callable[[dict], None] | None = None,
        **compile_opts) -> FitResult:
    """Search pass options for the cheapest configuration of ``model`` on ``target`` that fits and keeps
    ``min_accuracy``; write the winning bundle to ``output/best.nmc``. See the module doc."""
    ray = engine.require_ray()
    if minimize not in MINIMIZE:
        raise OptionError(f"--minimize {minimize!r} is not one of {', '.join(MINIMIZE)}")
    if sampler not in SAMPLERS:
        raise OptionError(f"--sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if not 0.0 <= min_accuracy <= 1.0:
        raise OptionError(f"--min-accuracy is a fraction in [0, 1], got {min_accuracy}", hint="e.g. 0.97")
    if trials < 1:
        raise OptionError(f"--trials must be >= 1, got {trials}")
    if "," in target:
        raise OptionError("nmc fit searches one target at a time", hint="run it once per target, or use nmc sweep")

    be = get_backend(target)
    grid = G.parse(space or DEFAULT_SPACE)
    out = Path(output).resolve()
    check_output(out, LOG)
    job, _ = make_job(model, data, labels, samples=samples, hw=hw, calibrate=calibrate,
                      energy_samples=energy_samples, seed=seed, **compile_opts)
    base = passes or be.default_pipeline({"target": target, **job.compile})
    ident = job.identity()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "tune", ignore_errors=True)   # Tune's logs of an earlier search in this folder
    records: list[dict] = []

    def log(rec: dict, rf: ResultsFile) -> None:
        rec["index"] = len(records)
        records.append(rec)
        rf.append(rec)
        if on_result is not None:
            on_result(rec)

    with ResultsFile(out / LOG) as rf, engine.session(address, workers):
        from ray import tune

        done = {k: r for k, r in rf.records.items() if r.get("status") in DONE}  # an earlier search here
        job_ref = engine.put(job)
        basep = {"key": point_key(ident, target, base), "index": 0, "target": target, "params": {}, "passes": base}
        if basep["key"] in done:
            baseline = dict(done[basep["key"]], params={}, passes=base)
        else:
            ((_, baseline),) = list(engine.run_tasks(run_point, [basep], job_ref, retries=retries))
            if isinstance(baseline, engine.TaskFailure):
                baseline = dict(basep, status="crashed", error=baseline.line())
        log(dict(baseline, role="baseline"), rf)

        class Log(tune.Callback):
            """Appends each trial's record to search.jsonl as it arrives (in this process)."""

            def __init__(self, sink):
                self.sink = sink

            def __getstate__(self):  # Tune pickles its state for restoring: the open log stays here
                return {"sink": None}

            def on_trial_result(self, iteration, trials, trial, result, **info):
                if self.sink is not None:
                    self.sink(json.loads(result["record"]))

        tune_space = {_encode(f"{n}.{o}"): (tune.grid_search(v) if sampler == "grid" else tune.choice(v))
                      for (n, o), v in grid.items()}
        search_alg = None
        if sampler == "random":
            from ray.tune.search.basic_variant import BasicVariantGenerator

            search_alg = BasicVariantGenerator(random_state=seed)
        elif sampler == "optuna":
            try:
                from ray.tune.search.optuna import OptunaSearch
                import optuna  # noqa: F401
            except ImportError:
                raise OptionError("--sampler optuna needs optuna", hint=engine.EXTRA_HINT) from None
            search_alg = OptunaSearch(seed=seed)
        trainable = tune.with_resources(tune.with_parameters(_trial, job=job, base=base, target=target, ident=ident,
                                                             floor=min_accuracy, minimize=minimize, done=done),
                                   {"cpu": 1})
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables on the console
        tuner = tune.Tuner(
            trainable, param_space=tune_space,
            tune_config=tune.TuneConfig(metric="objective", mode="min", num_samples=1 if sampler == "grid" else trials,
                                        search_alg=search_alg, max_concurrent_trials=workers),
            run_config=tune.RunConfig(name="search", storage_path=str(out / "tune"), verbose=0, callbacks=[Log(lambda rec: log(rec, rf))],
                                      failure_config=tune.FailureConfig(max_failures=retries)))
        grid_res = tuner.fit()
        for r in grid_res:  # a trial whose worker died on every attempt: recorded, never silently missing
            if r.error is not None and not (r.metrics or {}).get("record"):
                cfg = {k.replace("__", "."): v for k, v in sorted((r.config or {}).items())}
                passes_ = G.apply(base, cfg)
                log({"key": point_key(ident, target, passes_), "target": target, "params": cfg, "passes": passes_,
                     "status": "crashed", "error": engine._one_line(r.error)}, rf)
    del ray
    best, closest = choose(records, min_accuracy, minimize)
    res = FitResult(best, records[0], closest, records, output=out)
    if best is not None:
        with tempfile.TemporaryDirectory(prefix="nmc-fit-") as tmp:
            res.bundle = compile_point(job, target, best["passes"], Path(tmp), output=out / "best.nmc").path
    (out / "fit.json").write_text(json.dumps(
        {"model": str(model), "target": target, "min_accuracy": min_accuracy, "minimize": minimize,
         "sampler": sampler, "space": space or DEFAULT_SPACE, **res.summary()}, indent=2, sort_keys=True,
        default=str) + "\n")
    return res


__all__ = ["fit", "FitResult", "MINIMIZE", "SAMPLERS", "DEFAULT_SPACE"]
