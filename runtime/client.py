"""``nmc.connect``: a client for ``nmc serve`` with the local Session's interface."""
from __future__ import annotations

import socket
from typing import Iterable, Iterator

import numpy as np

from nmc.errors import DeviceError, EventFormatError

from . import events as ev
from . import protocol as P


class Client:
    def __init__(self, host: str, port: int, token: str | None = None, window: int | None = None,
                 timeout: float = 60.0):
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise DeviceError(f"cannot connect to {host}:{port} ({e})", hint="is `nmc serve` running there?") from None
        self.sock.sendall(P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": token, "window": window})))
        ft, payload, _ = self._read()
        if ft != P.READY:
            raise DeviceError(f"server answered {P.NAMES[ft]} instead of READY")
        info = P.parse_json(payload)
        self.inputs, self.outputs = list(info["inputs"]), list(info["outputs"])
        self.sizes_in, self.sizes_out = info["inputs"], info["outputs"]
        self.shapes_out = {k: tuple(v) for k, v in info.get("output_shapes", {}).items()}
        self.window, self.device = int(info["window"]), info["device"]
        self.seq = 0
        self.sent = self.received = 0

    def _read(self):
        ft, payload, seq = P.read_frame(self.sock)
        if ft == P.ERROR:
            code, msg = P.parse_error(payload)
            raise DeviceError(f"server error {code}: {msg}")
        return ft, payload, seq

    def step(self, events) -> dict[str, np.ndarray]:
        """Send one window; returns ``{output: events}`` (t relative to the window)."""
        if not isinstance(events, dict):
            if len(self.inputs) != 1:
                raise EventFormatError(f"the server's bundle has inputs {self.inputs}: pass a dict")
            events = {self.inputs[0]: events}
        tab = []
        for name, e in events.items():
            if name not in self.inputs:
                raise EventFormatError("not an input of the served bundle", node=name, hint=f"inputs: {self.inputs}")
            e = np.asarray(e)
            tab.append((self.inputs.index(name), e, bool(len(e) and (e["v"] != 1).any())))
            self.sent += len(e)
        self.sock.sendall(P.frame(P.EVENTS, P.pack_table(tab), self.seq))
        ft, payload, seq = self._read()
        if ft != P.OUTPUT or seq != self.seq:
            raise DeviceError(f"unexpected {P.NAMES[ft]} frame (seq {seq}, expected OUTPUT {self.seq})")
        self.seq += 1
        out = P.unpack_table(payload, len(self.outputs))
        res = {name: out.get(i, ev.events([], [])) for i, name in enumerate(self.outputs)}
        self.received += sum(len(v) for v in res.values())
        return res

    def stream(self, windows: Iterable) -> Iterator[dict[str, np.ndarray]]:
        for w in windows:
            yield self.step(w)

    def reset(self) -> dict:
        self.sock.sendall(P.frame(P.RESET))
        _, payload, _ = self._read()
        return P.parse_json(payload)

    def close(self) -> dict:
        """End the session; returns the server's final counters."""
        try:
            self.sock.sendall(P.frame(P.CLOSE))
            ft, payload, _ = self._read()
            return P.parse_json(payload) if ft == P.STATS else {}
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.close()
        except (OSError, DeviceError, EventFormatError):
            pass


def connect(host: str, port: int, token: str | None = None, window: int | None = None) -> Client:
    return Client(host, port, token=token, window=window)
