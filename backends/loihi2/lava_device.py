"""The ``lava`` device: runs the emitted ``lava_net.py`` in Lava itself.

The program files are written to a temporary directory and the module runs in
a child Python (same interpreter) in its **own session**, under a wall-clock
timeout. Lava starts one OS process per Lava process; when the run ends,
fails or times out, the whole process group of that child is killed, so no
Lava worker is left behind. Lava is imported only in the child.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from nmc.errors import DeviceError

from .program import LoihiProgram


def lava_available() -> str | None:
    """None when ``import lava`` works in this interpreter, else the reason."""
    try:
        import lava.magma.core.run_configs  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "no Lava"
        return f"{type(e).__name__}: {e}"
    return None


def run_lava(program: LoihiProgram, payload: dict[str, np.ndarray], steps: int, timeout: float = 300.0,
             hw: bool = False) -> dict[str, np.ndarray]:
    """Run ``program`` in Lava. ``payload``: {input: (T, B, n) int}. Returns
    ``{group.s, group.v: (steps, B, n) int64}`` in Lava time."""
    with tempfile.TemporaryDirectory(prefix="nmc-lava-") as tmp:
        root = Path(tmp)
        for rel, data in program.files().items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        np.savez(root / "inputs.npz", **{k: np.asarray(v, np.int32) for k, v in payload.items()})
        cmd = [sys.executable, str(root / "lava_net.py"), str(root / "inputs.npz"), str(root / "outputs.npz"),
               "--steps", str(int(steps))] + (["--hw"] if hw else [])
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise DeviceError(f"Lava did not finish {steps} steps within {timeout:.0f} s; its processes were killed",
                              limit=timeout, hint="run fewer steps or pass timeout=... to the lava device") from None
        finally:
            _kill_group(proc)
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            raise DeviceError("Lava run failed: " + " | ".join(tail),
                              hint="check the Lava installation (README: Set-up) or run program/lava_net.py by hand")
        with np.load(root / "outputs.npz") as f:
            return {k: f[k] for k in f.files}


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's process group (the child and every Lava worker it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
