"""``nmc serve``: a session server speaking :mod:`nmc.runtime.protocol` over TCP.

Connections
    One thread per connection, and one :class:`~nmc.runtime.session.Session`
    per connection (isolated state), opened by the client's OPEN frame and
    freed when the client closes, disconnects (even mid-stream) or stays idle
    longer than ``idle_timeout`` seconds.

Back-pressure and memory
    A connection whose session is not paced is served by its one thread in
    turn: read and decode a frame, step it, write its OUTPUT frame, read the
    next (no hand-off between threads: no queue, no lock, no interpreter-lock
    switch per frame). A paced session (``Session.pace``) keeps a reader thread
    that decodes frames into a bounded queue of ``queue_frames`` frames (1 to
    :data:`MAX_QUEUE_FRAMES`; there is no unbounded setting) while the
    connection thread waits for the tick, steps the session and writes OUTPUT
    frames. Either way, when the device is slower than the sender, or the
    client does not read its outputs, the server stops reading the socket (the
    frame in hand is not answered yet, or the queue is full), the kernel
    buffers fill and the sender's ``send`` blocks: the sender is slowed,
    nothing is dropped. ``stall_s`` in the STATS' ``transport`` counts that
    time: waiting on a full queue, or (one thread) answering a frame while the
    next had already arrived in the reader's buffer (a lower bound: bytes still
    in the kernel's buffer are not seen). A client that reads nothing for
    ``idle_timeout`` seconds is cut
    (its OUTPUT cannot be written). Besides the per-connection queue, all
    connections together hold at most ``max_buffered_bytes`` of payload read
    but not yet answered (the reader waits for room before it reads a payload),
    so the memory frames take is bounded for the whole server, not per
    connection. A session's window is refused (ERROR, E_PROTOCOL) when
    ``window`` × (input + output channels) exceeds ``max_window_cells`` (dense
    buffers).

Frames
    Every frame of a connection is read through one buffered reader
    (:class:`~nmc.runtime.protocol.FrameReader`); an EVENTS frame's windows are
    decoded into one event array per input node, stepped with one session call
    (:meth:`Session.step_windows <nmc.runtime.session.Session.step_windows>`) and
    answered by one OUTPUT frame of the same windows, encoded per node in one pass.

Limits
    At most ``max_connections`` connections at once, and at most
    ``max_connections_per_client`` from one client address (an IPv6 client's
    /64 network, see :func:`client_key`); a connection over
    either limit is answered at once with ERROR E_BUSY (no thread, nothing
    read) and closed. Before the token is checked a frame may declare at most
    :data:`~nmc.runtime.protocol.PRE_AUTH_MAX_PAYLOAD` bytes (a larger one is
    refused from its header, before allocating), and the handshake must finish
    within :data:`HANDSHAKE_TIMEOUT_S` seconds. A HELLO whose ``version`` is not
    this server's gets ERROR E_VERSION naming both. Devices that must run in the
    main thread (``Device.main_thread_only``, e.g. ``brian2``) are refused at
    OPEN with a session error.

Learning
    A MODULATE frame sets the third factor of the session's learning rules
    (``Session.modulate``) between the windows sent before and after it; it
    passes the same token, budget and size checks as EVENTS. A device that
    runs no rule with a third factor refuses it (ERROR E_RUNTIME naming why),
    and so does a batched session (``nmc serve --max-batch``): its slot shares
    the device's weights with the other sessions, so one client's reward
    would change every client's network.

Errors
    A malformed or oversized frame, a frame out of order, or an event outside
    the window/channels gets an ERROR frame (code and one-line message) and a
    clean close of that connection only; every other connection keeps going.

Security
    Binds to 127.0.0.1 by default. Listening on any other address requires a
    token, which clients must present in HELLO (compared in constant time); a
    wrong or missing token gets ERROR E_AUTH and the connection is closed.
    The protocol is plain TCP: off loopback, terminate TLS in front of the
    server (SECURITY.md, section "nmc serve").

Shutdown
    :meth:`SessionServer.stop` stops accepting, stops reading every
    connection, finishes the windows already queued (their OUTPUT frames are
    sent), sends each client its final STATS and an ERROR E_SHUTDOWN, then
    closes; a connection that does not finish within ``timeout`` is cut.
"""
from __future__ import annotations

import ipaddress
import queue
import socket
import socketserver
import threading
import time

from pathlib import Path

import numpy as np

from dataclasses import dataclass, field

from nmc.errors import EventFormatError, NmcError, OptionError, ServerBusyError

from . import events as ev
from . import protocol as P
from .serve.tenants import Tenant, authenticate
from .session import Session
from .tlsstream import TLSStream

IDLE_TIMEOUT_S = 60.0
#: seconds a new connection has to finish HELLO and OPEN (capped by the idle timeout)
HANDSHAKE_TIMEOUT_S = 10.0
MAX_WINDOW_CELLS = 1 << 24  # window × channels of one session's dense buffers (float64: 128 MiB)
#: default and largest ``queue_frames`` (frames read ahead per connection)
QUEUE_FRAMES, MAX_QUEUE_FRAMES = 4, 64
#: default connection limits, in total and per client address
MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT = 64, 8
#: default limit of payload bytes read and not yet answered, all connections together
MAX_BUFFERED_BYTES = 4 * P.MAX_PAYLOAD
#: a refused (busy) connection is kept half-closed this long so that its ERROR frame is read, not reset
_REFUSED_LINGER_S = 0.5
_MAX_REFUSED_PENDING = 256
#: busy answers over TLS: each needs a handshake, so a thread, bounded in time and number
_REFUSED_TLS_TIMEOUT_S, _MAX_REFUSED_TLS = 2.0, 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Violation(EventFormatError):
    """A well-formed frame that is not allowed here (ERROR E_PROTOCOL)."""


def _code(e: Exception) -> int:
    if isinstance(e, ServerBusyError):
        return P.E_BUSY
    if isinstance(e, P.VersionMismatch):
        return P.E_VERSION
    if isinstance(e, P.FrameTooBig):
        return P.E_TOO_BIG
    if isinstance(e, _Violation):
        return P.E_PROTOCOL
    if isinstance(e, EventFormatError):
        return P.E_MALFORMED
    if isinstance(e, NmcError):
        return P.E_RUNTIME
    return P.E_INTERNAL


class _Budget:
    """Payload bytes read off the sockets and not yet answered, all connections
    together, at most ``limit`` (one frame always fits when nothing is held)."""

    def __init__(self, limit: int):
        self.limit, self.used, self.peak = int(limit), 0, 0
        self.cv = threading.Condition()

    def acquire(self, conn: "_Conn", n: int) -> bool:
        """Wait for room for ``n`` bytes; False if the connection stops meanwhile."""
        with self.cv:
            while not conn.stop.is_set() and self.used and self.used + n > self.limit:
                self.cv.wait(0.05)
            if conn.stop.is_set():
                return False
            self.used += n
            conn.held += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, conn: "_Conn", n: int) -> None:
        with self.cv:
            n = min(n, conn.held)
            conn.held -= n
            self.used -= n
            self.cv.notify_all()


class _Conn:
    """State of one connection, shared by its reader and its stepping thread."""

    def __init__(self, srv: "SessionServer", sock: socket.socket, peer):
        self.srv, self.sock, self.peer = srv, sock, peer
        self.stop = threading.Event()
        self.q: queue.Queue = queue.Queue(maxsize=srv.queue_frames)
        self.transport = {"frames_in": 0, "windows_in": 0, "frames_out": 0, "stall_s": 0.0, "queue_peak": 0}
        self.session: Session | None = None
        self.frames = P.FrameReader(sock)   # every frame of the connection is read through it
        self.rd: threading.Thread | None = None
        self.held = 0  # bytes of the server's budget this connection holds (guarded by srv.budget.cv)
        self.model: ServedModel | None = None
        self.tenant = None  # the token's tenant (nmc.runtime.serve.tenants), when the server has tokens
        self.tenant_counted = False

    # ------------------------------------------------------------------ I/O
    def send(self, ftype, payload=b"", seq=0, flags=0):
        P.send_frame(self.sock, ftype, payload, seq, flags)
        self.transport["frames_out"] += 1

    def stats(self) -> bytes:
        d = self.session.counters.as_dict() if self.session else {}
        d["transport"] = dict(self.transport, stall_s=round(self.transport["stall_s"], 6))
        return P.json_payload(d)

    def fail(self, code: int, msg: str, seq: int = 0) -> None:
        """ERROR frame, then a clean close: stop writing, drain what the peer already
        sent (briefly) so the close does not reset the connection and destroy the
        ERROR frame before the peer reads it. ``seq``: E_BUSY's retry-after in ms."""
        self.stop.set()
        try:
            self.send(P.ERROR, P.error_payload(code, msg), seq)
            _shut(self.sock, socket.SHUT_WR)
            self.sock.settimeout(0.1)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.srv._log(f"{self.peer}: error {code} ({P.ERROR_NAMES.get(code)}): {msg}")

    def put(self, item) -> bool:
        """Blocking put that gives up when the connection stops; time spent waiting
        on a full queue is the time the socket was not read (back-pressure)."""
        full, t0 = self.q.full(), time.perf_counter()
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.05)
            except queue.Full:
                full = True
                continue
            if full:
                self.transport["stall_s"] += time.perf_counter() - t0
            self.transport["queue_peak"] = max(self.transport["queue_peak"], self.q.qsize())
            return True
        return False

    # --------------------------------------------------------------- threads
    def next_item(self, in_names, sizes, window):
        """Read and decode the next frame: ``(kind, data, seq, payload bytes held)``, or None
        when the connection stops while waiting for room in the server's budget."""
        if self.srv.stopping:  # graceful stop: no new frames; the ones read are still answered
            raise ConnectionError("server stopping")
        ft, flags, length, seq = self.frames.header()
        if ft in (P.RESET, P.STATS, P.CLOSE) and length:
            raise EventFormatError(f"{P.NAMES[ft]} frame with a {length}-byte payload (must be empty)")
        if ft not in (P.EVENTS, P.MODULATE, P.RESET, P.STATS, P.CLOSE):
            raise _Violation(f"unexpected {P.NAMES[ft]} frame in an open session")
        t0 = time.perf_counter()
        if not self.srv.budget.acquire(self, length):  # room first: the payload is read only then
            return None
        self.transport["stall_s"] += time.perf_counter() - t0
        self.transport["frames_in"] += 1
        if ft == P.EVENTS:   # one array per input node for all the frame's windows
            tables = P.unpack_tables(self.frames.payload(length), flags, len(in_names), sizes, window,
                                     absolute=True)
            self.transport["windows_in"] += tables.k
            if self.tenant is not None:  # over the tenant's event rate: stop reading a while (back-pressure)
                self.transport["stall_s"] += self.tenant.wait_for(tables.total, self.stop)
            return "events", tables, seq, length
        if ft == P.MODULATE:
            return "modulate", P.parse_modulate(self.frames.payload(length)), seq, length
        return P.NAMES[ft].lower(), None, seq, 0

    def reader(self, in_names, sizes, window):
        """The reader thread of a paced session: frames read ahead into the queue."""
        try:
            while not self.stop.is_set():
                item = self.next_item(in_names, sizes, window)
                if item is None or not self.put(item) or item[0] == "close":
                    return
                del item
        except Exception as e:  # decoding errors, disconnects, timeouts: all reported to the stepper
            self.put(("error", e, 0, 0))

    def handshake(self) -> tuple[list[str], list[int], int]:
        srv = self.srv
        ft, _, payload, _ = self.frames.frame(P.PRE_AUTH_MAX_PAYLOAD)
        if ft != P.HELLO:
            raise _Violation(f"expected HELLO, got {P.NAMES[ft]}")
        hello = P.parse_json(payload)
        P.check_version(hello)
        if srv.tenants is not None:
            self.tenant = authenticate(srv.tenants, P.opt_str(hello, "token"))
            if self.tenant is None:
                raise PermissionError("wrong or missing token")
        m = self.model = srv.model_for(hello)
        b, io = m.bundle, m.io
        self.send(P.HELLO, P.json_payload({"version": P.VERSION, "target": b.target, "devices": list(b.backend.devices),
                                           "default_device": m.device or b.backend.default_device,
                                           "window": m.window, "model": m.name, "model_version": m.version, **io}))
        ft, _, payload, _ = self.frames.frame(P.PRE_AUTH_MAX_PAYLOAD)
        if ft != P.OPEN:
            raise _Violation(f"expected OPEN, got {P.NAMES[ft]}")
        req = P.parse_json(payload)
        device = P.opt_str(req, "device") or m.device or b.backend.default_device
        window = P.opt_int(req, "window") or m.window
        if m.device is not None and device != m.device:
            raise _Violation(f"this server serves device '{m.device}' only, not '{device}'")
        if device not in b.backend.devices:
            raise _Violation(f"target '{b.target}' has no device '{device}' (devices: {', '.join(b.backend.devices)})")
        cells = window * sum(int(np.prod(s)) for d in io.values() for s in d.values())
        if cells > srv.max_window_cells:
            raise _Violation(f"window of {window} steps needs {cells} dense cells, over this server's limit of "
                             f"{srv.max_window_cells}; use a smaller window", limit=srv.max_window_cells, actual=cells)
        if self.tenant is not None:
            self.tenant.open_session()  # ServerBusyError over the tenant's session quota
            self.tenant_counted = True
        self.session = srv.open_session(m, device, window)
        s = self.session
        self.sock.settimeout(srv.idle_timeout)  # the handshake is over: from now on, the idle timeout
        self.send(P.OPEN, P.json_payload({
            "device": s.device_name, "window": s.window,
            "inputs": {p.name: p.size for p in s.io.inputs}, "outputs": {p.name: p.size for p in s.io.outputs},
            "input_shapes": {p.name: list(p.shape) for p in s.io.inputs},
            "output_shapes": {p.name: list(p.shape) for p in s.io.outputs},
            "modulator": s.takes_modulator}))
        return s.io.input_names, [p.size for p in s.io.inputs], s.window

    def serve(self) -> None:
        in_names, sizes, window = self.handshake()
        self._in_names, self._out_names = in_names, self.session.io.output_names
        self._sizes_out = [p.size for p in self.session.io.outputs]
        if getattr(self.session, "pace", False):   # paced: a reader thread decodes ahead while the session waits
            self.rd = threading.Thread(target=self.reader, args=(in_names, sizes, window), daemon=True,
                                       name=f"nmc-reader-{self.peer}")
            self.rd.start()
            while True:
                try:
                    item = self.q.get(timeout=0.5)
                except queue.Empty:
                    if self.rd.is_alive():
                        continue
                    item = "error", ConnectionError("reader stopped"), 0, 0
                if self.answer(*item):
                    return
        while True:   # not paced: this thread reads a frame, then answers it, in turn
            try:
                item = self.next_item(in_names, sizes, window)
            except Exception as e:  # decoding errors, disconnects, timeouts: answered as the reader's are
                item = "error", e, 0, 0
            if item is None:
                item = "error", ConnectionError("connection stopped"), 0, 0
            t0 = time.perf_counter()
            if self.answer(*item):
                return
            if self.frames.buffered:  # the next frame arrived meanwhile: it waited while this one was answered
                self.transport["stall_s"] += time.perf_counter() - t0
            del item

    def answer(self, kind, data, seq, nbytes) -> bool:
        """Step or answer one decoded frame (``next_item``); True when the connection is over."""
        if kind == "events":   # the frame's windows in one session call (Session.step_windows)
            s = self.session
            k, t0 = data.k, time.perf_counter()
            out = s.step_windows({self._in_names[i]: e for i, e in enumerate(data.events)}, k)
            dt = (time.perf_counter() - t0) / k
            parts, fl, n_out = P.pack_tables([out[name] for name in self._out_names], k, s.window, self._sizes_out)
            for n_in, n_o in zip(data.counts.sum(axis=1).tolist(), n_out):
                self.srv.observe_window(self.model, n_in, n_o, s.window, dt)
            del data, out
            self.send(P.OUTPUT, parts, seq, fl)
            self.srv.budget.release(self, nbytes)
        elif kind == "modulate":  # in order between the windows; a refusal is an ERROR (E_RUNTIME)
            self.session.modulate(data)
            self.srv.budget.release(self, nbytes)
        elif kind == "reset":
            self.session.reset()
            self.send(P.STATS, self.stats())
        elif kind == "stats":
            self.send(P.STATS, self.stats())
        elif kind == "close":
            self.send(P.STATS, self.stats())
            return True
        else:  # reading stopped: bad frame, disconnect, timeout or server shutdown
            if isinstance(data, Exception) and not isinstance(data, (ConnectionError, OSError)):
                raise data
            if self.srv.stopping:
                self.send(P.STATS, self.stats())
                self.fail(P.E_SHUTDOWN, "server shutting down")
            elif isinstance(data, TimeoutError):
                self.fail(P.E_PROTOCOL, f"idle for {self.srv.idle_timeout:g} s: closing the session")
            else:
                self.srv._log(f"{self.peer}: disconnected ({type(data).__name__}: {data})")
            return True
        return False


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv: SessionServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.settimeout(min(srv.idle_timeout, HANDSHAKE_TIMEOUT_S))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames go out at once (no Nagle delay)
        if srv.ssl_context is not None:  # the TLS handshake, in this thread, within the handshake time
            try:
                sock = TLSStream(srv.ssl_context.wrap_socket(sock, server_side=True))
            except (OSError, ValueError) as e:
                srv._log("%s:%s: TLS handshake failed (%s)" % (*self.client_address[:2], e))
                return
        conn = _Conn(srv, sock, "%s:%s" % self.client_address[:2])
        with srv.lock:
            srv.conns[threading.current_thread()] = conn
            stopping = srv.stopping
        try:
            if stopping:  # accepted just before stop(): stop() did not see it, so say so here
                conn.fail(P.E_SHUTDOWN, "server shutting down")
                return
            conn.serve()
        except PermissionError as e:
            conn.fail(P.E_AUTH, str(e))
        except ServerBusyError as e:  # no free device and the wait queue full: retry after the time it names
            conn.fail(P.E_BUSY, e.one_line(), int(round(1000 * (e.retry_after or 0))))
        except (ConnectionError, TimeoutError) as e:
            srv._log(f"{conn.peer}: disconnected ({type(e).__name__}: {e})")
        except Exception as e:  # every failure of one connection ends that connection only
            msg = e.one_line() if isinstance(e, NmcError) else f"{type(e).__name__}: {e}"
            conn.fail(_code(e), msg)
        finally:
            conn.stop.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader if it is blocked in recv
            except OSError:
                pass
            if conn.rd is not None:
                conn.rd.join(2.0)
            srv.budget.release(conn, conn.held)  # frames read but never answered
            if conn.tenant_counted:
                conn.tenant.close_session()
            if conn.session is not None:
                conn.session.close()
                srv.closed_sessions.append(dict(conn.session.counters.as_dict(), transport=dict(conn.transport)))
            with srv.lock:
                srv.conns.pop(threading.current_thread(), None)
            if sock is not self.request:  # the TLS socket (socketserver closes only the plain one, now detached)
                sock.close()


def _shut(sock, how: int) -> None:
    """Shut a socket's direction down; on a TLS connection (a :class:`TLSStream`) the
    plain socket's own shutdown, which keeps the TLS session (SSLSocket.shutdown drops
    it, so later frames would go out unencrypted)."""
    sock.shutdown(how)


def client_key(ip: str) -> str:
    """The client address a per-client limit counts: the IP address, or for IPv6
    its /64 network (one host is routinely given a whole /64)."""
    try:
        a = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if a.version == 6:
        if a.ipv4_mapped is not None:
            return str(a.ipv4_mapped)
        return str(ipaddress.ip_network(f"{a}/64", strict=False))
    return str(a)


@dataclass
class ServedModel:
    """One model a server serves: its bundle, name and version, io map (read once, in
    the main thread), the device it is fixed to (None: the client chooses) and the
    default window. ``extra`` holds what a repository server keeps per model."""

    name: str
    version: int
    bundle: object
    device: str | None = None
    window: int = 1
    io: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, bundle, name: str, version: int = 1, device: str | None = None, window: int = 1) -> "ServedModel":
        g = bundle.graph
        io = {"inputs": {k: list(g.shape_out(k)) for k in g.inputs},
              "outputs": {k: list(g.shape_in(k)) for k in g.outputs}}
        return cls(name, int(version), bundle, device, int(window), io)


def bundle_name(bundle) -> str:
    """A single bundle's model name: its directory's stem (``digits`` for ``digits.nmc``)."""
    path = getattr(bundle, "path", None)
    return Path(path).stem if path else "model"


def _int_option(name: str, flag: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise OptionError(f"{name} ({flag}) must be an integer from {lo} to {hi}, got {v!r}", limit=f"{lo}..{hi}",
                          actual=v, hint=f"pass {flag} N with {lo} <= N <= {hi}")
    return int(v)


class SessionServer(socketserver.ThreadingTCPServer):
    """A TCP session server for one bundle. ``port=0`` picks a free port
    (``address`` tells which); ``start()`` serves in a background thread,
    ``serve_forever()`` in this one; ``stop()`` shuts down gracefully.

    ``session_factory(bundle, device, window)`` builds each connection's
    session (default :class:`Session`); a wrapper can add device options.

    Limits (module docstring): ``queue_frames`` (1..MAX_QUEUE_FRAMES),
    ``idle_timeout`` (seconds > 0), ``max_connections``,
    ``max_connections_per_client`` (per client IP address), ``max_buffered_bytes``
    (all connections together, at least one MAX_PAYLOAD frame),
    ``max_window_cells``. Every one is checked here: a bad value raises
    :class:`~nmc.errors.OptionError` naming the ``nmc serve`` option.
    """

    daemon_threads = True
    allow_reuse_address = True
    #: listen backlog: connections the kernel completes before ``accept`` takes them. socketserver's
    #: default of 5 drops the SYNs of a burst of clients connecting at once, which their TCP retries
    #: only after 1 s, then 3 s (a second-long stall for a client of a busy server, measured with 64
    #: clients); the kernel caps it at ``net.core.somaxconn``. Connections over ``max_connections``
    #: are still refused after ``accept``, with an answer.
    request_queue_size = 256

    def __init__(self, bundle, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 device: str | None = None, window: int = 1, queue_frames: int = QUEUE_FRAMES,
                 idle_timeout: float = IDLE_TIMEOUT_S, max_window_cells: int = MAX_WINDOW_CELLS,
                 max_connections: int = MAX_CONNECTIONS, max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
                 max_buffered_bytes: int = MAX_BUFFERED_BYTES, session_factory=None, log=None,
                 name: str | None = None, tenants: dict | None = None, ssl_context=None):
        port = _int_option("port", "--port", port, 0, 65535)
        queue_frames = _int_option("queue length", "--queue", queue_frames, 1, MAX_QUEUE_FRAMES)
        max_connections = _int_option("connection limit", "--max-connections", max_connections, 1, 1 << 16)
        max_connections_per_client = _int_option("per-client connection limit", "--max-connections-per-client",
                                                 max_connections_per_client, 1, max_connections)
        max_buffered_bytes = _int_option("buffered-bytes limit", "max_buffered_bytes", max_buffered_bytes,
                                         P.MAX_PAYLOAD, 1 << 40)
        max_window_cells = _int_option("window-cells limit", "max_window_cells", max_window_cells, 1, 1 << 40)
        try:
            idle_timeout = float(idle_timeout)
        except (TypeError, ValueError):
            idle_timeout = float("nan")
        if not 0 < idle_timeout < 1e7:  # NaN and inf fail too; settimeout refuses <0 and overflows on huge values
            raise OptionError(f"idle timeout (--idle-timeout) must be a number of seconds > 0, got {idle_timeout!r}",
                              limit="> 0 and < 1e7", actual=idle_timeout,
                              hint="pass --idle-timeout 60 (a connection silent that long is closed)")
        if tenants is None and token:
            tenants = {"default": Tenant("default", token)}
        if not is_loopback(host) and not tenants:
            raise OptionError(f"listening on {host} (not loopback) requires a token that clients must present",
                              hint="pass --token-file FILE (or set NMC_TOKEN), or bind to 127.0.0.1")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise OptionError(f"window must be an integer >= 1, got {window!r}")
        if device is not None and bundle is not None and device not in bundle.backend.devices:
            raise OptionError(f"target '{bundle.target}' has no device '{device}'",
                              hint=f"devices: {', '.join(bundle.backend.devices)}")
        self.bundle, self.token, self.device, self.window = bundle, token or None, device, window
        self.tenants = tenants or None  # {name: Tenant}; None: no token asked
        self.ssl_context = ssl_context  # TLS on every connection (ssl.SSLContext, server side)
        self.metrics = None  # a nmc.runtime.serve.metrics.Metrics, set by whoever exposes them
        # the graph is read here, in the main thread, once: not by the first client's HELLO
        # bundle None: a subclass serves several models (nmc.runtime.serve.server.RepositoryServer)
        self.model = None if bundle is None else ServedModel.of(bundle, name or bundle_name(bundle), 1, device, window)
        self.io = None if bundle is None else self.model.io
        ev.warm_kernels()   # compile the event conversions before the first connection, not during its first window
        self.queue_frames, self.idle_timeout = queue_frames, idle_timeout
        self.max_window_cells = max_window_cells
        self.max_connections, self.max_connections_per_client = max_connections, max_connections_per_client
        self.budget = _Budget(max_buffered_bytes)
        self._open_by_client: dict[str, int] = {}  # accepted, not yet ended connections per client address
        self._refused: list[tuple[float, socket.socket]] = []  # busy answers waiting to be closed
        self._tls_refusals = threading.BoundedSemaphore(_MAX_REFUSED_TLS)  # busy answers over TLS in progress
        self.session_factory = session_factory or (lambda b, d, w: Session(b, device=d, window=w))
        self.log = log
        self.conns: dict[threading.Thread, _Conn] = {}
        self.closed_sessions: list[dict] = []
        self.lock = threading.Lock()
        self.stopping = False
        self._serving = False
        self._loop_ended = False
        try:
            super().__init__((host, port), _Handler)
        except (OSError, OverflowError, UnicodeError) as e:
            raise OptionError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})",
                              hint="pick another --port (0 = any free port) or --host") from None

    def _log(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    # ------------------------------------------------- models and sessions
    def model_for(self, hello: dict) -> ServedModel:
        """The model a HELLO asks for (``model``, ``model_version``; null: this server's).
        A repository server (:mod:`nmc.runtime.serve`) overrides this."""
        name, version = P.opt_str(hello, "model"), P.opt_int(hello, "model_version")
        m = self.model
        if (name is not None and name != m.name) or (version is not None and version != m.version):
            raise _Violation(f"this server serves model '{m.name}' version {m.version} only, not "
                             f"'{name or m.name}'" + (f" version {version}" if version is not None else ""))
        return m

    def observe_window(self, model: ServedModel, events_in: int, events_out: int, steps: int, seconds: float) -> None:
        """Called after each window a session steps (``metrics``: nmc.runtime.serve.metrics)."""
        if self.metrics is not None:
            self.metrics.window(model, events_in, events_out, steps, seconds)

    def open_session(self, model: ServedModel, device: str, window: int):
        """The session of one connection (``session_factory``); a repository server
        places it on a device of its pool instead."""
        return self.session_factory(model.bundle, device, window)

    # ------------------------------------------------------ connection limits
    @property
    def open_connections(self) -> int:
        """Accepted connections not yet ended (what ``max_connections`` limits)."""
        with self.lock:
            return sum(self._open_by_client.values())

    def process_request(self, request, client_address):
        """Counts the connection against the limits, or answers E_BUSY without a thread."""
        ip = client_key(str(client_address[0]))
        with self.lock:
            total, mine = sum(self._open_by_client.values()), self._open_by_client.get(ip, 0)
            if total >= self.max_connections:
                busy = (f"server busy: {total} connections open, the limit (--max-connections "
                        f"{self.max_connections}); retry later")
            elif mine >= self.max_connections_per_client:
                busy = (f"server busy: {mine} connections open from {ip}, the per-client limit "
                        f"(--max-connections-per-client {self.max_connections_per_client}); close one or retry later")
            else:
                busy = None
                self._open_by_client[ip] = mine + 1
        if busy is not None:
            self._refuse(request, busy)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread to serve it (e.g. out of threads): the connection is not counted
            self._uncount(ip)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._uncount(client_key(str(client_address[0])))

    def _uncount(self, ip: str) -> None:
        with self.lock:
            n = self._open_by_client.get(ip, 0) - 1
            if n > 0:
                self._open_by_client[ip] = n
            else:
                self._open_by_client.pop(ip, None)

    def _refuse(self, sock: socket.socket, msg: str) -> None:
        """ERROR E_BUSY and a half-close, from the accept loop, never blocking; the socket
        is closed by :meth:`service_actions` once the client has read it (or after a
        short linger), so that the close does not reset the connection over the frame."""
        self._log(f"refused a connection: {msg}")
        if self.ssl_context is not None:  # the TLS handshake would block the accept loop: a short-lived thread
            self._refuse_tls(sock, msg)
            return
        try:
            sock.setblocking(False)
            sock.send(P.frame(P.ERROR, P.error_payload(P.E_BUSY, msg)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._refused.append((time.monotonic() + _REFUSED_LINGER_S, sock))
        while len(self._refused) > _MAX_REFUSED_PENDING:
            self._refused.pop(0)[1].close()

    def _refuse_tls(self, sock: socket.socket, msg: str) -> None:
        """The busy answer over TLS: handshake, ERROR E_BUSY, half-close, in a thread of its
        own bounded in time (``_REFUSED_TLS_TIMEOUT_S``) and in number (``_MAX_REFUSED_TLS``
        at once; past that the connection is closed unanswered, which a client reads as
        a lost connection, as before)."""
        if not self._tls_refusals.acquire(blocking=False):
            sock.close()
            return

        def answer():
            try:
                sock.settimeout(_REFUSED_TLS_TIMEOUT_S)
                t = self.ssl_context.wrap_socket(sock, server_side=True)
                t.sendall(P.frame(P.ERROR, P.error_payload(P.E_BUSY, msg)))
                socket.socket.shutdown(t, socket.SHUT_WR)  # keeps the TLS session: the frame stays readable
                deadline = time.monotonic() + _REFUSED_LINGER_S
                while time.monotonic() < deadline and t.recv(65536):  # the peer's EOF, or the linger
                    pass
                t.close()
            except (OSError, ValueError):
                pass
            finally:
                sock.close()
                self._tls_refusals.release()

        threading.Thread(target=answer, daemon=True, name="nmc-refuse-tls").start()

    def service_actions(self) -> None:
        """Called by the accept loop between polls: finish the refused connections."""
        super().service_actions()
        now, keep = time.monotonic(), []
        for deadline, sock in self._refused:
            done = now >= deadline
            while not done:
                try:
                    done = not sock.recv(65536)  # discard what the client sent; EOF: it has closed
                except BlockingIOError:
                    break
                except OSError:
                    done = True
            if done:
                sock.close()
            else:
                keep.append((deadline, sock))
        self._refused = keep

    def handle_error(self, request, client_address):
        """One log line instead of socketserver's traceback on stderr."""
        import sys

        e = sys.exc_info()[1]
        self._log(f"{client_address}: connection failed ({type(e).__name__}: {e})")

    @property
    def address(self) -> tuple[str, int]:
        return self.server_address[0], self.server_address[1]

    def server_activate(self) -> None:
        super().server_activate()
        self._listening = True  # connections queue in the backlog from here on

    def server_close(self) -> None:
        self._listening = False
        super().server_close()

    @property
    def healthy(self) -> bool:
        """Liveness: the socket listens and its accept loop has not ended (connections made
        before the loop starts wait in the backlog, so a server is up as soon as it listens:
        ``nmc serve`` prints its address then)."""
        return getattr(self, "_listening", False) and not self._loop_ended

    @property
    def ready(self) -> bool:
        """New sessions are taken: up and not stopping (readiness)."""
        return self.healthy and not self.stopping

    @property
    def active_sessions(self) -> int:
        with self.lock:
            return sum(c.session is not None for c in self.conns.values())

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False
            self._loop_ended = True

    def start(self) -> threading.Thread:
        self._serving = True
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name="nmc-serve")
        t.start()
        return t

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful shutdown (see the module docstring); returns when every
        connection thread has ended or ``timeout`` seconds have passed."""
        with self.lock:  # a connection registering from now on sees it and ends itself
            self.stopping = True
        if self._serving:
            self.shutdown()
        with self.lock:
            conns = dict(self.conns)
        for c in conns.values():
            try:
                _shut(c.sock, socket.SHUT_RD)  # the reader sees EOF; queued windows still get answered
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t, c in conns.items():
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():  # stuck writing to a client that does not read: cut it
                c.stop.set()
                try:
                    _shut(c.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                t.join(1.0)
        for _, sock in self._refused:
            sock.close()
        self._refused = []
        self.server_close()
