"""The ``spinnaker2`` device: run a bundle on a SpiNNaker 2 board.

py-spinnaker2 is imported lazily, here only; without it the device raises a
DeviceError saying what to install. It runs the bundle's own emitted script
(the same code a user runs by hand), so the hardware path and the emitted
artefact cannot drift apart.
"""
from __future__ import annotations

import importlib.util
import runpy
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from nmc.errors import DeviceError, OptionError

from ...base import Device, ReplayStreaming


class S2Hardware(ReplayStreaming, Device):
    """Whole recordings only: a session streams it by replay (:class:`~...base.ReplayStreaming`)."""

    name = "spinnaker2"

    def __init__(self, files: dict[str, bytes], board: str | None = None, **_):
        if not board:
            raise OptionError("the spinnaker2 device needs the board's address", hint="pass --board IP")
        if importlib.util.find_spec("spinnaker2") is None:
            raise DeviceError("py-spinnaker2 is not installed, so nmc cannot talk to a SpiNNaker 2 board",
                              hint="install py-spinnaker2 from its GitLab repository, or use --device emulator")
        import json

        chips = json.loads(files["s2_program.json"]).get("chips", 1)
        if chips > 1:
            raise DeviceError(f"this program is placed on {chips} chips; py-spinnaker2 runs one chip per "
                              "SpiNNaker2Chip", hint="recompile with --hw spinnaker2 (one chip) to run on a board")
        self.files, self.board = files, board

    def run(self, inputs, steps=None, record: Iterable[str] = ()):
        if record:
            raise OptionError("recording internal populations on the board is not supported yet",
                              hint="record on --device emulator")
        with tempfile.TemporaryDirectory(prefix="nmc-s2-") as d:
            for k, v in self.files.items():
                (Path(d) / k).write_bytes(v)
            np.savez(Path(d) / "in.npz", **{k: np.asarray(v) for k, v in inputs.items()})
            mod = runpy.run_path(str(Path(d) / "run_spinnaker2.py"))
            try:
                mod["main"](["--board", self.board, "--input", str(Path(d) / "in.npz"), "-o", str(Path(d) / "out.npz")])
            except (Exception, SystemExit) as e:  # the board, the vendor package or the script refused
                raise DeviceError(f"the SpiNNaker 2 run failed: {type(e).__name__}: {e}") from e
            with np.load(Path(d) / "out.npz") as z:
                return {k: z[k] for k in z.files}
