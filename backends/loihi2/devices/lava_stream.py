"""Parent side of the ``lava`` device's streaming: a child Python running
:mod:`.lava_stream_worker` (Lava's Injector/Extractor processes around the
bundle's network, kept running between windows).

Like :mod:`.lava_device`, the child runs in its own process session and the
whole group (the child and every Lava worker process it started) is killed
when the stream is closed, reset, garbage-collected or a request does not
finish within ``timeout`` seconds — every wait on it is bounded.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nmc.errors import DeviceError

from ..program import LoihiProgram
from .lava_device import _kill_group

_LEN = struct.Struct("<I")
WORKER = Path(__file__).with_name("lava_stream_worker.py")


class LavaStream:
    def __init__(self, program: LoihiProgram, timeout: float = 300.0, hw: bool = False):
        self.timeout = float(timeout)
        self._tmp = tempfile.TemporaryDirectory(prefix="nmc-lava-stream-")
        root = Path(self._tmp.name)
        for rel, data in program.files().items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(root)] + (["--hw"] if hw else []), cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.sizes = self._answer("starting Lava")

    def call(self, *msg):
        """Send one request and wait (bounded) for its answer."""
        if self.proc is None:
            raise DeviceError("the Lava stream is closed", hint="reset() the device to start a new one")
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_LEN.pack(len(data)) + data)
            self.proc.stdin.flush()
        except OSError as e:
            self.close()
            raise DeviceError(f"the Lava stream process is gone ({e})") from None
        return self._answer(f"'{msg[0]}'")

    def _answer(self, what: str):
        head = self._read_exact(_LEN.size, what)
        (n,) = _LEN.unpack(head)
        status, payload = pickle.loads(self._read_exact(n, what))
        if status != "ok":
            self.close()
            tail = " | ".join(str(payload).strip().splitlines()[-3:])
            raise DeviceError(f"Lava failed while {what}: {tail}",
                              hint="check the Lava installation (README: Set-up) or run program/lava_net.py by hand")
        return payload

    def _read_exact(self, n: int, what: str) -> bytes:
        fd, buf = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + self.timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.close()
                raise DeviceError(f"Lava did not answer {what} within {self.timeout:.0f} s; its processes were killed",
                                  limit=self.timeout, hint="pass timeout=... to the lava device")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                code = self.proc.poll()
                self.close()
                raise DeviceError(f"the Lava stream process ended while {what} (exit code {code})")
            buf += chunk
        return buf

    def close(self) -> None:
        """Stop Lava (briefly, politely) and kill the process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                data = pickle.dumps(("stop",))
                proc.stdin.write(_LEN.pack(len(data)) + data)
                proc.stdin.flush()
                proc.stdin.close()
                proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            _kill_group(proc)
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self._tmp.cleanup()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
