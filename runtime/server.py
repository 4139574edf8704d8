"""``nmc serve``: a session server speaking :mod:`nmc.runtime.protocol` over TCP.

One thread per connection; each connection gets its own :class:`Session`
(isolated state), freed when the client closes or disconnects. Back-pressure:
a reader thread puts decoded windows into a bounded queue (``queue_windows``);
when the device is slower than the sender the queue fills, the reader stops
reading the socket, the kernel buffers fill and the sender's ``send`` blocks:
the sender is slowed, no window is dropped. A malformed or oversized frame gets
an ERROR frame and that connection is closed; the server keeps serving the
others. Listening on a non-loopback address requires a token, which clients
must present in HELLO.
"""
from __future__ import annotations

import hmac
import ipaddress
import queue
import socket
import socketserver
import threading

from nmc.errors import EventFormatError, NmcError, OptionError

from . import protocol as P
from .session import Session

IDLE_TIMEOUT_S = 60.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv: SessionServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.settimeout(srv.idle_timeout)
        session = None

        def send(ftype, payload=b"", seq=0):
            sock.sendall(P.frame(ftype, payload, seq))

        def fail(code, msg):
            try:
                send(P.ERROR, P.error_payload(code, msg))
                # drain what the peer already sent (briefly), so closing does not reset the
                # connection and destroy the ERROR frame before the peer reads it
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(0.2)
                for _ in range(64):
                    if not sock.recv(65536):
                        break
            except OSError:
                pass

        try:
            ftype, payload, _ = P.read_frame(sock)
            if ftype != P.HELLO:
                return fail(P.E_PROTOCOL, f"expected HELLO, got {P.NAMES[ftype]}")
            hello = P.parse_json(payload)
            if srv.token is not None and not hmac.compare_digest(str(hello.get("token") or ""), srv.token):
                return fail(P.E_AUTH, "wrong or missing token")
            window = int(hello.get("window") or srv.window)
            session = Session(srv.bundle, device=srv.device, window=window)
            with srv.lock:
                srv.sessions.add(session)
            io = session.io
            send(P.READY, P.json_payload({"inputs": {k: int(session.io.size(k)) for k in io.inputs},
                                          "outputs": {k: int(session.io.size(k, "out")) for k in io.outputs},
                                          "output_shapes": {k: list(v) for k, v in io.outputs.items()},
                                          "window": window, "device": session.device_name}))
            in_names, out_names = list(io.inputs), list(io.outputs)
            q: queue.Queue = queue.Queue(maxsize=srv.queue_windows)
            err: list = []

            def reader():
                try:
                    while True:
                        ft, pl, seq = P.read_frame(sock)
                        if ft == P.EVENTS:
                            tab = P.unpack_table(pl, len(in_names))
                            q.put((ft, {in_names[i]: e for i, e in tab.items()}, seq))
                        elif ft in (P.RESET, P.CLOSE):
                            q.put((ft, None, seq))
                            if ft == P.CLOSE:
                                return
                        else:
                            raise EventFormatError(f"unexpected {P.NAMES[ft]} frame")
                except (EventFormatError, ConnectionError, OSError) as e:
                    err.append(e)
                    q.put((None, None, 0))

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            while True:
                ft, data, seq = q.get()
                if ft is None:
                    e = err[0] if err else ConnectionError("closed")
                    if isinstance(e, EventFormatError):
                        fail(P.E_TOO_BIG if "exceeds" in e.message else P.E_MALFORMED, e.one_line())
                    return
                if ft == P.CLOSE:
                    send(P.STATS, P.json_payload(session.counters.as_dict()))
                    return
                if ft == P.RESET:
                    session.reset()
                    send(P.STATS, P.json_payload(session.counters.as_dict()))
                    continue
                try:
                    out = session.step(data)
                except NmcError as e:
                    return fail(P.E_RUNTIME, e.one_line())
                tab = [(i, out[name], bool(len(out[name]) and (out[name]["v"] != 1).any()))
                       for i, name in enumerate(out_names)]
                send(P.OUTPUT, P.pack_table(tab), seq)
        except EventFormatError as e:
            fail(P.E_TOO_BIG if "exceeds" in e.message else P.E_MALFORMED, e.one_line())
        except NmcError as e:
            fail(P.E_RUNTIME, e.one_line())
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            if session is not None:
                session.close()
                with srv.lock:
                    srv.sessions.discard(session)
                srv.closed_sessions.append(session.counters.as_dict())


class SessionServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bundle, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 device: str | None = None, window: int = 1, queue_windows: int = 4,
                 idle_timeout: float = IDLE_TIMEOUT_S):
        if not _is_loopback(host) and not token:
            raise OptionError(f"listening on {host} (not loopback) requires a token that clients must present",
                              hint="pass --token SECRET, or bind to 127.0.0.1")
        self.bundle, self.token, self.device, self.window = bundle, token, device, int(window)
        self.queue_windows, self.idle_timeout = int(queue_windows), float(idle_timeout)
        self.sessions: set = set()
        self.closed_sessions: list[dict] = []
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def address(self) -> tuple[str, int]:
        return self.server_address[0], self.server_address[1]

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
