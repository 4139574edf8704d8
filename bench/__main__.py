"""``python -m bench [SECTION ...] [--quick] [--out DIR] [--report FILE]``

Runs the benchmark sections (default: all, in order) — throughput, compile,
placement, placement_exact (the exact optimum of small placement instances), fidelity,
transport, energy, distributed, serve, lm — writes ``<DIR>/<section>.json``
(default ``bench/results``; with ``--quick``, ``bench/results/quick``) and
renders the report (default ``BENCHMARKS.md`` at the repository root for a
full run, ``<DIR>/BENCHMARKS.md`` for a quick one). A failing section is
recorded (its JSON holds the error) and the others still run; the exit status
is then 1. ``--report-only`` re-renders from existing results.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from .common import RESULTS, ROOT, meta, write

SECTIONS = {"throughput": "bench.throughput", "compile": "bench.compile_time", "placement": "bench.placement",
            "placement_exact": "bench.placement:run_exact",
            "fidelity": "bench.fidelity", "transport": "bench.runtime_transport", "energy": "bench.energy",
            "distributed": "bench.distributed", "serve": "bench.serve", "lm": "bench.lm"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", choices=[*SECTIONS, []], metavar="SECTION",
                    help=f"any of: {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="smallest sizes, no Lava/Brian2 (smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument("--report", type=Path, default=None, help="markdown file to render")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    out = a.out or (RESULTS / "quick" if a.quick else RESULTS)
    report = a.report or (out / "BENCHMARKS.md" if a.quick else ROOT / "BENCHMARKS.md")
    failed = []
    import torch

    # one intra-op thread for every torch user (nmc reference, snnTorch, Norse): at these sizes a second
    # thread only adds synchronisation, and on a shared 2-core machine spinning threads distort timings
    torch.set_num_threads(1)
    if not a.report_only:
        for name in a.sections or list(SECTIONS):
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                mod, _, fn = SECTIONS[name].partition(":")   # "module" (its run) or "module:function"
                res = getattr(importlib.import_module(mod), fn or "run")(quick=a.quick)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - a section's failure is recorded, the rest still run
                traceback.print_exc()
                failed.append(name)
                res = {"meta": meta(name, a.quick, f"python -m bench {name}"),
                       "error": f"{type(e).__name__}: {e}"}
            res["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
            write(name, res, out)
            print(f"== {name}: {res['meta']['wall_s']} s", flush=True)
    from .report import render

    report.write_text(render(out))
    print(f"wrote {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
