"""The energy model before issue #24, for the before/after table: runs
``runtime/energy.py`` and ``hw_configs/{loihi2,spinnaker2,brainscales2}.toml`` as of
commit 44ca06a (read with ``git show``) on the calibration workloads, and writes
``bench/results/energy_before.json``. Needs a git checkout; run once:

    .venv/bin/python -m bench.energy_before
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import ROOT, RESULTS

BEFORE = "44ca06a"


def _show(path: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def main() -> None:
    import nmc

    from . import energy_workloads as W

    d = Path(tempfile.mkdtemp(prefix="nmc_energy_before_"))
    (d / "old_energy.py").write_text(_show("runtime/energy.py"))
    for t in ("loihi2", "spinnaker2", "brainscales2"):
        (d / f"{t}.toml").write_text(_show(f"hw_configs/{t}.toml"))
    spec = importlib.util.spec_from_file_location("old_energy", d / "old_energy.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_energy"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    kw = dict(dt=1e-3, reset="zero", integrator="euler")
    out = {"commit": BEFORE, "command": "python -m bench.energy_before"}
    g, x = W.kws_loihi(8)
    b = nmc.compile(g, target="loihi2", passes="normalize,quantize{bits=8},partition,place", **kw)
    r, _ = old.profile(b, {"input": x}, spec=str(d / "loihi2.toml"))
    out["kws_loihi"] = {"per_inference_j": r["per_inference_j"], "dynamic_per_inference_j": r["dynamic_j"] / r["batch"]}
    g, x = W.mnist_bss2(8)
    b = nmc.compile(g, target="brainscales2", **kw)
    r, _ = old.profile(b, {"input": x}, spec=str(d / "brainscales2.toml"))
    out["mnist_bss2"] = {"per_inference_j": r["per_inference_j"], "dynamic_per_inference_j": r["dynamic_j"] / r["batch"]}
    g, x = W.egru_lm(16)
    b = nmc.compile(g, target="spinnaker2", passes=W.EGRU_PASSES, **kw)
    r, _ = old.profile(b, {"input": x}, spec=str(d / "spinnaker2.toml"))
    out["egru_lm"] = {"per_token_j": r["per_step_j"], "dynamic_per_token_j": r["dynamic_j"] / r["steps"],
                      "fp32_mac_per_token_j": r["conventional"]["fp32_j"] / r["steps"]}
    q = ROOT / "examples" / "quickstart"
    xd = np.load(q / "digits_test.npz")["input"][:, :20]
    out["digits"] = {}
    for t in ("loihi2", "spinnaker2", "brainscales2"):
        p = "normalize,quantize{bits=8},partition,place" if t == "loihi2" else None
        b = nmc.compile(q / "digits_lif.nir", target=t, passes=p, **kw)
        r, _ = old.profile(b, {"input": xd}, spec=str(d / f"{t}.toml"))
        out["digits"][t] = {"per_inference_j": r["per_inference_j"], "dynamic_per_inference_j": r["dynamic_j"] / r["batch"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "energy_before.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
