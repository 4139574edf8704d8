"""One entry point for several ``nmc serve`` replicas (plain processes, on this
machine or others): a TCP router.

A session is one TCP connection, so forwarding each connection whole to one
replica pins the session to it (session affinity without a table). A new
connection goes to the replica with the fewest open connections (ties: the
next in turn); a replica that refuses the connection is marked down for
``down_s`` seconds and the next one is tried, so clients reach the live
replicas. When a replica dies, its open sessions end (their clients see the
connection close); see docs/serve.md, "Beyond one machine".

    router = Router([("127.0.0.1", 7001), ("127.0.0.1", 7002)], port=7878).start()

Bytes are forwarded unchanged (TLS, tokens and the protocol are end to end
between client and replica); the router reads nothing of them.
"""
from __future__ import annotations

import socket
import socketserver
import threading
import time

from nmc.errors import OptionError



class _Pipe(socketserver.BaseRequestHandler):
    def handle(self):
        r: Router = self.server  # type: ignore[assignment]
        client: socket.socket = self.request
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up, i = r._connect()
        if up is None:
            client.close()
            return
        try:
            t = threading.Thread(target=_pump, args=(up, client), daemon=True, name="nmc-router-up")
            t.start()
            _pump(client, up)
            t.join(r.idle_timeout)
        finally:
            up.close()
            with r.lock:
                r.open[i] -= 1


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


class Router(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, replicas, host: str = "127.0.0.1", port: int = 0, down_s: float = 5.0,
                 idle_timeout: float = 600.0, connect_timeout: float = 2.0):
        if not replicas:
            raise OptionError("a router needs at least one replica address")
        self.replicas = [(str(h), int(p)) for h, p in replicas]
        self.down_s, self.idle_timeout, self.connect_timeout = down_s, idle_timeout, connect_timeout
        self.open = [0] * len(self.replicas)
        self.served = [0] * len(self.replicas)  # connections forwarded to each replica so far
        self.down_until = [0.0] * len(self.replicas)
        self.lock = threading.Lock()
        self._turn = 0
        super().__init__((host, port), _Pipe)

    @property
    def address(self) -> tuple[str, int]:
        return self.server_address[0], self.server_address[1]

    def _order(self) -> list[int]:
        now = time.monotonic()
        with self.lock:
            n = len(self.replicas)
            idx = sorted(range(n), key=lambda i: (self.down_until[i] > now, self.open[i], (i - self._turn) % n))
            self._turn = (self._turn + 1) % n
        return idx

    def _connect(self):
        for i in self._order():
            try:
                up = socket.create_connection(self.replicas[i], timeout=self.connect_timeout)
            except OSError:
                with self.lock:
                    self.down_until[i] = time.monotonic() + self.down_s
                continue
            up.settimeout(self.idle_timeout)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.open[i] += 1
                self.served[i] += 1
            return up, i
        return None, -1

    def start(self) -> "Router":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                         name="nmc-router").start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
