"""The ``lava`` device (:class:`LavaDevice`): runs the emitted ``lava_net.py`` in Lava itself.

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

from nmc.errors import DeviceError, OptionError

from ...base import LaggedStreaming
from ..emulator import LoihiDevice
from ..program import LoihiProgram


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


class LavaDevice(LaggedStreaming, LoihiDevice):
    """``run``: the emitted module in a child process per call. ``reset(1)`` +
    ``advance``: one Lava network kept running in a child process
    (:mod:`.lava_stream`), fed through Lava's ``Injector`` and read through its
    ``Extractor`` processes window by window; the look-ahead of the latency
    alignment saves and restores Lava's state Vars. One sample at a time (Lava
    has no batch axis); ``close()`` (or the session's) ends the child."""

    name = "lava"

    def __init__(self, program, align: bool = True, timeout: float = 300.0, hw: bool = False):
        from ..learning_format import check_lava_learning
        from ..numerics import check_lava_numerics

        check_lava_numerics(program.numerics)   # Lava's models have fixed widths: refuse others, never run Lava's
        check_lava_learning(program)            # and so has its learning engine
        super().__init__(program, align)
        self.timeout, self.hw = timeout, hw
        self._stream = None

    def _simulate(self, payload, steps, need):  # Lava probes every group
        if self.takes_modulator:                  # the reward-modulated synapses' y2 per step (.learning)
            B = next(iter(payload.values())).shape[1]
            payload = {**payload, **self._reward_payload(B, steps)}
        return run_lava(self.program, payload, steps, timeout=self.timeout, hw=self.hw)

    def reset(self, batch: int = 1) -> None:
        """(Re)start the streaming Lava network from its initial state."""
        if self.program.units:
            raise OptionError("streaming a program with graded units (an SSM) through Lava is not implemented: "
                              "the stream worker probes LIF groups only", hint="use run() on the lava device, or "
                              "stream on the emulator device (bit-exact with Lava)")
        if self.program.meta.get("plasticity"):
            raise OptionError("streaming a program with learning synapses through Lava is not implemented: the "
                              "stream worker builds frozen synapses", hint="use run() on the lava device, or stream "
                              "on the emulator device (bit-exact with Lava)")
        if int(batch) != 1:
            raise OptionError(f"the lava device streams one sample at a time (Lava has no batch axis), got batch {batch}",
                              hint="open one session per sample, or use the emulator device")
        from .lava_stream import LavaStream

        self.close()
        self.batch = 1
        self._stream = LavaStream(self.program, timeout=self.timeout, hw=self.hw)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _device_steps(self, inputs, n: int) -> dict[str, np.ndarray]:
        if self._stream is None:
            raise OptionError("reset() the lava device before advancing it")
        payload = self._stream_payload(inputs, n)
        want_v = sorted({o.src for o in self.program.outputs if o.read != "spikes"})
        raw = self._stream.call("run", {k: x[:, 0] for k, x in payload.items()}, want_v)
        return self._stream_outputs(n, lambda g: raw[f"{g}.s"][:, None], lambda g: raw[f"{g}.v"][:, None])

    def _save_state(self):
        self._stream.call("save")

    def _restore_state(self, saved) -> None:
        self._stream.call("restore")
