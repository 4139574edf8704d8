"""The ``hardware`` device: runs the bundle's PyNN script on a BrainScaleS-2 system.

``pynn_brainscales`` (the vendor's PyNN backend) is imported only here and
only when the device is created; without it a :class:`DeviceError` says
what to install. The script (``program/run_brainscales2.py``) is the same
file the bundle ships, so the emulator and the hardware share one Program.
"""
from __future__ import annotations

import importlib
import runpy
import tempfile
from pathlib import Path

import numpy as np

from nmc.errors import DeviceError

from ...base import Device, ReplayStreaming


class BSS2Hardware(ReplayStreaming, Device):
    """Whole recordings only: a session streams it by replay (:class:`~...base.ReplayStreaming`)."""

    name = "hardware"

    def __init__(self, files: dict[str, bytes], **_):
        try:
            importlib.import_module("pynn_brainscales.brainscales2")
        except ImportError as e:
            raise DeviceError(f"cannot run on BrainScaleS-2: the vendor package pynn_brainscales is not importable ({e})",
                              hint="install the BrainScaleS-2 software stack (pynn-brainscales from the "
                                   "electronicvisions 'spack' container) on a machine with chip access, "
                                   "or use --device emulator") from None
        self.files = files
        import json

        rules = json.loads(files["bss2_program.json"]).get("plasticity", [])
        #: a reward rule: ``modulate`` sets the reward the script writes into PPU memory (per run)
        self.takes_modulator = any(r["third_factor"] == "reward" for r in rules)
        self.reward = 0.0

    def modulate(self, value) -> None:
        """The reward for the next runs: each run writes it into the plasticity processor's memory
        with the program (``--reward``; it holds for the whole run)."""
        if not self.takes_modulator:
            return super().modulate(value)
        v = np.asarray(value, float)
        if v.size != 1 or not np.isfinite(v).all():
            raise DeviceError("the reward must be one finite number (one 8-bit reward in PPU memory)")
        self.reward = float(v.reshape(-1)[0])

    def run(self, inputs, steps=None, record=()):
        if record:
            raise DeviceError("the hardware device returns the output layers only", hint="drop record=, or use the emulator")
        outs = []
        arrs = {k: np.asarray(v) for k, v in inputs.items()}
        batched = any(a.ndim >= 3 for a in arrs.values())
        B = next(iter(arrs.values())).shape[1] if batched else 1
        with tempfile.TemporaryDirectory(prefix="nmc-bss2-") as d:
            for k, v in self.files.items():
                (Path(d) / k).write_bytes(v)
            mod = runpy.run_path(str(Path(d) / "run_brainscales2.py"))
            for b in range(B):  # one hardware run per sample
                np.savez(Path(d) / "in.npz", **{k: (a[:, b] if batched else a) for k, a in arrs.items()})
                try:
                    mod["main"](["--input", str(Path(d) / "in.npz"), "-o", str(Path(d) / "out.npz"),
                                 "--reward", repr(self.reward)])
                except Exception as e:
                    raise DeviceError(f"the BrainScaleS-2 run failed: {type(e).__name__}: {e}") from e
                with np.load(Path(d) / "out.npz") as z:
                    outs.append({k: z[k] for k in z.files})
        if not batched:
            return outs[0]
        return {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}
