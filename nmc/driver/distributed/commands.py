"""``nmc sweep`` and ``nmc fit`` (registered on the ``nmc`` group by :mod:`nmc.driver.cli`).

Ray is imported only when a command runs: without the ``distributed`` extra the
commands fail with one line naming it.
"""
from __future__ import annotations

from math import prod
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nmc.target_options import parse_value as _auto

from . import grid as G
from .fit import DEFAULT_SPACE, fit
from .sweep import sweep

err = Console(stderr=True)
out = Console()




def compile_options(f):
    """The `nmc compile` options a sweep or fit applies to every point."""
    opts = [
        click.option("--dt", type=float, help="Timestep in seconds (as nmc compile)."),
        click.option("--reset", type=click.Choice(["zero", "subtract"]), help="Reset after a spike (as nmc compile)."),
        click.option("--integrator", type=click.Choice(["euler", "exact"]), help="Discretisation (as nmc compile)."),
        click.option("--passes", help="Base pipeline the grid's options are set on [the target's default]."),
        click.option("--hw", multiple=True, help="TOML override or packaged spec name (repeatable, as nmc compile); applies to the targets with a spec, a packaged name to its own target."),
        click.option("--calibrate", type=click.Path(path_type=Path), help=".npz of calibration inputs (as nmc compile)."),
        click.option("--input-shape", help="Input shape for a PyTorch model that does not fix it, e.g. 2,34,34."),
        click.option("--trust-pickle", is_flag=True, help="Allow a fully pickled PyTorch module (runs its code)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of every randomised pass."),
        click.option("--option", "extra", multiple=True, metavar="KEY=VALUE", help="Target option (as nmc compile)."),
        click.option("--data", required=True, type=click.Path(path_type=Path),
                     help=".npz with one (T, B, *shape) array per input node (and optionally 'labels')."),
        click.option("--labels", type=click.Path(path_type=Path), help=".npy of integer labels, one per sample."),
        click.option("--samples", type=int, help="Use the first N samples of the data."),
        click.option("--energy-samples", type=int, default=32, show_default=True,
                     help="Samples the energy profile of each point runs on."),
        click.option("--workers", type=int, help="CPUs of the embedded Ray [all of this machine's]."),
        click.option("--address", envvar="RAY_ADDRESS", help="Join this Ray cluster (also RAY_ADDRESS) instead of "
                     "starting Ray in-process."),
        click.option("--retries", type=int, default=2, show_default=True,
                     help="Re-runs of a point whose worker process died."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _compile_kwargs(dt, reset, integrator, input_shape, trust_pickle, extra) -> dict:
    kw = {"dt": dt, "reset": reset, "integrator": integrator, "trust_pickle": trust_pickle or None}
    if input_shape:
        try:
            kw["input_shape"] = tuple(int(x) for x in input_shape.replace("x", ",").split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"{input_shape!r} is not a shape like 1,28,28", param_hint="--input-shape") from None
    for item in extra:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        k, v = item.split("=", 1)
        kw[k.strip().replace("-", "_")] = _auto(v.strip())
    return {k: v for k, v in kw.items() if v is not None}


def _progress():
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _fmt(v, spec=".4g"):
    return "-" if v is None else (format(v, spec) if isinstance(v, float) else str(v))


@click.command("sweep")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target(s), comma-separated, e.g. spinnaker2,loihi2.")
@click.option("--grid", help="Pass options to sweep: 'quantize.bits=8,6,4; sparsify.density=1,0.5,0.2'.")
@compile_options
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("sweep"), show_default=True,
              help="Folder for results.jsonl, pareto.png and report.html (a re-run resumes there).")
def sweep_cmd(model, target, grid, dt, reset, integrator, passes, hw, calibrate, input_shape, trust_pickle, seed,
              extra, data, labels, samples, energy_samples, workers, address, retries, output):
    """Compile and evaluate MODEL at every point of a grid of pass options, as Ray tasks.

    \b
    Example (the quick-start model, 9 points on this machine):
      nmc sweep examples/quickstart/digits_lif.nir --target spinnaker2 --dt 1e-3 --reset zero \\
          --integrator euler --grid 'quantize.bits=8,6,4; sparsify.density=1,0.95,0.9' \\
          --data examples/quickstart/digits_test.npz --labels examples/quickstart/digits_labels.npy -o sweep/
    Each point records accuracy (and agreement with the float reference), energy
    per inference from the profiler, cores/chips, compile time, or the design
    rule that failed; results.jsonl grows as points finish and a re-run skips
    the points already done (Ctrl-C is safe). Grid keys are pass.option as in
    `nmc passes`. Ray starts in-process unless --address / RAY_ADDRESS names a cluster.
    """
    kw = _compile_kwargs(dt, reset, integrator, input_shape, trust_pickle, extra)
    if grid:
        G.parse(grid)  # a bad grid: one line before any progress bar
    with _progress() as bar:
        task = bar.add_task("sweep", total=None)

        def on_plan(total, todo):
            bar.update(task, total=total, completed=total - todo,
                       description=f"sweep ({total - todo} done before)" if todo < total else "sweep")

        def on_result(rec):
            bar.update(task, advance=1, description=f"sweep: last {rec['status']} {rec['target']} "
                       + ",".join(f"{k}={v}" for k, v in rec.get("params", {}).items()))

        try:
            res = sweep(model, target, grid, data, labels, output, passes=passes, hw=hw, calibrate=calibrate,
                        samples=samples, energy_samples=energy_samples, workers=workers, address=address,
                        retries=retries, on_result=on_result, on_plan=on_plan, seed=seed, **kw)
        except KeyboardInterrupt:
            bar.stop()
            err.print(f"interrupted: finished points are in {output / 'results.jsonl'}; run the same command "
                      "again to resume", highlight=False)
            raise
    t = Table(title=f"{len(res.records)} points ({res.computed} run now, {res.reused} from earlier runs); "
                    f"* = Pareto front")
    for c in ("", "target", "params", "status", "accuracy", "agreement", "energy/inf (J)", "dynamic (J)", "cores",
              "rule / error"):
        t.add_column(c)
    for r in res.records:
        t.add_row("*" if r["key"] in res.front else "", r["target"],
                  ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items()), r["status"],
                  _fmt(r.get("accuracy")), _fmt(r.get("agreement")), _fmt(r.get("energy_per_inference_j"), ".6g"),
                  _fmt(r.get("energy_dynamic_j"), ".4g"), _fmt(r.get("cores")), (r.get("rule") or r.get("error") or "")[:80])
    out.print(t)
    out.print(f"[green]wrote[/] {output / 'results.jsonl'}, {output / 'pareto.png'}, {output / 'report.html'}",
              highlight=False)


@click.command("fit")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target to fit (one).")
@click.option("--min-accuracy", type=float, required=True, help="Accuracy floor, a fraction (agreement with the "
              "float reference when no labels are given).")
@click.option("--minimize", type=click.Choice(["energy", "cores", "bits"]), default="energy", show_default=True,
              help="Cost to minimise among configurations that fit and keep the floor.")
@click.option("--space", help="Pass options to search, grid syntax [quantize.bits=8,6,5,4; "
              "sparsify.density=1,0.8,0.6,0.5,0.4,0.3].")
@click.option("--sampler", type=click.Choice(["grid", "random", "optuna"]), default="grid", show_default=True,
              help="grid: every point of the space; random / optuna (TPE): --trials points.")
@click.option("--trials", type=int, default=16, show_default=True, help="Trials for random / optuna.")
@compile_options
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("fit"), show_default=True,
              help="Folder for best.nmc, fit.json, search.jsonl and Tune's logs.")
def fit_cmd(model, target, min_accuracy, minimize, space, sampler, trials, dt, reset, integrator, passes, hw,
            calibrate, input_shape, trust_pickle, seed, extra, data, labels, samples, energy_samples, workers,
            address, retries, output):
    """Search pass options (Ray Tune) for the cheapest configuration that fits TARGET and keeps an accuracy floor.

    \b
    Example (the quick-start model; see examples/quickstart/fit.py):
      nmc fit examples/quickstart/digits_lif.nir --target spinnaker2 --dt 1e-3 --reset zero --integrator euler \\
          --data examples/quickstart/digits_test.npz --labels examples/quickstart/digits_labels.npy \\
          --min-accuracy 0.97 --minimize energy -o fit/
    The target's default compile runs first as the baseline; the winner is
    written to OUTPUT/best.nmc. When nothing meets the floor, it says so, names
    the closest configuration and exits with status 1.
    """
    kw = _compile_kwargs(dt, reset, integrator, input_shape, trust_pickle, extra)

    sizes = [len(v) for v in G.parse(space or DEFAULT_SPACE).values()]
    with _progress() as bar:  # the baseline, then every point of the space (grid) or --trials
        task = bar.add_task("fit", total=1 + (prod(sizes) if sampler == "grid" else trials))

        def on_result(rec):
            bar.update(task, advance=1, description=f"fit: last {rec['status']} "
                       + (",".join(f"{k}={v}" for k, v in rec.get("params", {}).items()) or "default"))

        res = fit(model, target, data, labels, output, min_accuracy=min_accuracy, minimize=minimize, space=space,
                  trials=trials, sampler=sampler, passes=passes, hw=hw, calibrate=calibrate, samples=samples,
                  energy_samples=energy_samples, workers=workers, address=address, retries=retries, seed=seed,
                  on_result=on_result, **kw)
    t = Table(title=f"{len(res.records)} configurations tried for {target} (floor {min_accuracy:g}, "
                    f"minimise {minimize})")
    for c in ("", "params", "status", "accuracy", "agreement", "energy/inf (J)", "cores", "bits"):
        t.add_column(c)
    for r in (x for x in (res.baseline, res.best or res.closest) if x is not None):
        label = "baseline (default)" if r is res.baseline else ("best" if res.best is not None else "closest")
        t.add_row(label, ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items()) or "default", r["status"],
                  _fmt(r.get("accuracy")), _fmt(r.get("agreement")), _fmt(r.get("energy_per_inference_j")),
                  _fmt(r.get("cores")), _fmt(r.get("bits")))
    out.print(t)
    if res.best is None:
        c = res.closest
        msg = (f"no configuration met the accuracy floor {min_accuracy:g} while fitting {target}; "
               + (f"closest: {', '.join(f'{k}={v}' for k, v in c['params'].items()) or 'the default'} "
                  f"with {c.get('accuracy', c.get('agreement')):.4g}" if c else "no configuration fitted at all")
               + f" (log: {output / 'search.jsonl'})")
        err.print(f"[bold red]{msg}[/]", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    b, base = res.best, res.baseline
    if base.get("energy_per_inference_j") and b.get("energy_per_inference_j") is not None:
        out.print(f"energy per inference {b['energy_per_inference_j']:.6g} J vs default "
                  f"{base['energy_per_inference_j']:.6g} J ({100 * (b['energy_per_inference_j'] / base['energy_per_inference_j'] - 1):+.3f} %)",
                  highlight=False)
    out.print(f"[green]wrote[/] {res.bundle} (pipeline {b['passes']}), {output / 'fit.json'}, "
              f"{output / 'search.jsonl'}", highlight=False)
