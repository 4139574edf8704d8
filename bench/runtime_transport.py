"""Harness wrapper for :mod:`bench.transport` (owned by the runtime work; its own
CLI stays ``python bench/transport.py``): events/s and per-window latency of
a local session vs loopback TCP, transport alone and end to end.

    .venv/bin/python -m bench transport [--quick]
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .common import meta


def run(quick: bool = False, log=print) -> dict:
    from . import transport

    with tempfile.TemporaryDirectory(prefix="nmc-bench-tr-") as tmp:
        out = Path(tmp) / "transport.json"
        transport.main(["--windows", "60" if quick else "400", "--out", str(out)])
        data = json.loads(out.read_text())
    extra = {k: data[k] for k in ("breakdown_us_per_window", "events_per_window") if k in data}
    data = data.get("results", data)      # both layouts of bench/transport.py's file
    return {"meta": meta("transport", quick, "python -m bench transport" + (" --quick" if quick else "")),
            "results": data, **extra}


if __name__ == "__main__":
    sys.exit(run("--quick" in sys.argv) and 0)
