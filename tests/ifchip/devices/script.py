"""The ``script`` device: the bundle's own ``run_ifchip.py`` in a child Python,
as a chip's vendor tool would run it: whole recordings only, so a streaming
session gets ``advance`` by replay (:class:`nmc.backends.base.ReplayStreaming`)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from nmc.backends.base import Device, ReplayStreaming, validate_inputs
from nmc.errors import DeviceError, OptionError


class ScriptDevice(ReplayStreaming, Device):
    name = "script"

    def __init__(self, program, timeout: float = 120.0):
        self.program, self.timeout = program, float(timeout)

    def run(self, inputs, steps=None, record=()):
        if list(record):
            raise OptionError("the script device returns the outputs only", node=list(record)[0],
                              hint="record on the emulator")
        p = self.program
        arrs, T, batched = validate_inputs(p.io, inputs, steps)
        with tempfile.TemporaryDirectory(prefix="ifchip-") as d:
            for rel, data in p.files().items():
                (Path(d) / rel).write_bytes(data)
            np.savez(Path(d) / "in.npz", **{k: np.pad(a, [(0, T - a.shape[0])] + [(0, 0)] * (a.ndim - 1))
                                            .reshape(T, a.shape[1], -1) for k, a in arrs.items()})
            r = subprocess.run([sys.executable, "run_ifchip.py", "--input", "in.npz", "-o", "out.npz"], cwd=d,
                               capture_output=True, text=True, timeout=self.timeout)
            if r.returncode != 0:
                raise DeviceError("run_ifchip.py failed: " + " | ".join(r.stderr.strip().splitlines()[-3:]))
            with np.load(Path(d) / "out.npz", allow_pickle=False) as z:
                res = {o: z[o].reshape(T, -1, *p.io.output(o).shape) for o in p.outputs}
        return res if batched else {k: v[:, 0] for k, v in res.items()}
