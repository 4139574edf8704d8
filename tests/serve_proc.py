"""`nmc serve` in a child process, for tests that measure the server's memory.

``with ServeProcess(bundle_path, "--queue", "4") as srv:`` starts
``python -m nmc.cli serve BUNDLE --port 0 ...``, reads the address from its
first stdout line and stops it (SIGTERM, then SIGKILL) on exit. ``srv.rss()``
and ``srv.peak()`` read ``VmRSS`` / ``VmHWM`` (peak resident set) of the child
from ``/proc`` in bytes: the server's own memory, not the test process's.
Loopback only; every wait is bounded.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nmc
from nmc.runtime import protocol as P

MiB = 1 << 20


class ServeProcess:
    def __init__(self, bundle_path, *args: str, start_timeout: float = 60.0, log_path=None):
        self.cmd = [sys.executable, "-m", "nmc.cli", "serve", str(bundle_path), "--port", "0", *args]
        self.start_timeout = start_timeout
        self.log_path = log_path  # the server's stderr (its one-line log) goes here, else nowhere
        self.p: subprocess.Popen | None = None
        self.address: tuple[str, int] | None = None

    def __enter__(self) -> "ServeProcess":
        err = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        try:
            self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        finally:
            if self.log_path:
                err.close()
        lines: list[str] = []
        t = threading.Thread(target=lambda: lines.append(self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(self.start_timeout)
        m = re.search(r"on (127\.0\.0\.1):(\d+)", lines[0]) if lines else None
        if m is None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"`nmc serve` printed no address within {self.start_timeout} s: {lines}")
        self.address = (m.group(1), int(m.group(2)))
        return self

    def __exit__(self, *exc) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
        raise RuntimeError(f"no {key} in /proc/{self.p.pid}/status")

    def rss(self) -> int:
        """Resident set size now, bytes."""
        return self._status("VmRSS")

    def peak(self) -> int:
        """Peak resident set size since the start, bytes."""
        return self._status("VmHWM")

    def warm_up(self, events) -> None:
        """One short legitimate session, so that the baseline includes a session's imports."""
        with nmc.connect(*self.address, timeout=30) as c:
            c.step(events)


def hello_open(window: int | None = None, token: str | None = None) -> bytes:
    return (P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": token}))
            + P.frame(P.OPEN, P.json_payload({"window": window})))


def connect_from(source_ip: str, address, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``address`` from the loopback address ``source_ip`` (e.g.
    127.0.0.2: another client address, as far as a per-client limit is concerned)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source_ip, 0))
    s.connect(address)
    return s
