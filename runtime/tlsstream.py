"""A TLS socket that one reader thread and one writer thread may use at once.

nmc's streaming protocol is full duplex: the server reads a client's EVENTS
frames in one thread while another writes OUTPUT frames, and the client's
sender thread writes while its caller reads. A plain :class:`socket.socket`
allows that; an :class:`ssl.SSLSocket` does not: both directions go through
one OpenSSL ``SSL`` object, which is not safe for concurrent use (CPython
releases the GIL inside ``SSL_read``/``SSL_write`` and takes no lock of its
own). Under load the two threads interleave inside OpenSSL and a read fails
with an EOF that the ``ssl`` module reports as a clean close, so a session
ended mid-stream or lost its final STATS/E_SHUTDOWN frames after a stop.

:class:`TLSStream` holds one lock around every ``SSL_*`` call and never waits
while holding it: the TLS socket is non-blocking, an operation that would block
(``SSLWantReadError``/``SSLWantWriteError``, whichever direction OpenSSL needs,
e.g. a read that must first write a key update) releases the lock and waits on
the file descriptor with :func:`select.select`, then retries. The socket's
timeout keeps its meaning: a ``recv``/``sendall`` that makes no progress for
that long raises :class:`TimeoutError`, as a blocking socket would.

``shutdown`` shuts the plain socket's direction down and keeps the TLS session
(``SSLSocket.shutdown`` would drop it and send later frames in the clear); it
also wakes a reader waiting in ``select``. Shutting the read side down marks the
stream read-closed under the lock first, so no ``SSL_read`` ever sees the local
EOF: OpenSSL 3 takes an unexpected EOF as a fatal error, answers it with a
decode_error alert and refuses every later write, which lost the final
STATS/E_SHUTDOWN frames of a graceful stop. A ragged EOF from the peer (closed
without close_notify) reads as b"" (end of stream), as ``suppress_ragged_eofs``
does; frames are length-prefixed, so a truncated frame is still detected.
"""
from __future__ import annotations

import select
import socket
import ssl
import threading
import time


class TLSStream:
    """Wraps a connected (handshaken) :class:`ssl.SSLSocket`; see the module docstring."""

    def __init__(self, sock: ssl.SSLSocket):
        self._s = sock
        self._lock = threading.Lock()
        self._timeout = sock.gettimeout()
        self._read_closed = False  # shutdown(SHUT_RD/SHUT_RDWR) was called: reads are at EOF
        sock.setblocking(False)

    # -------------------------------------------------------------- timeouts
    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def _wait(self, want: str, deadline: float | None) -> None:
        """Wait until the descriptor is ready for ``want`` ("r"/"w") or the deadline passes."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError("timed out")
        fd = self._s.fileno()
        if fd < 0:
            raise OSError("socket closed")
        r, w, _ = select.select([fd] if want == "r" else [], [fd] if want == "w" else [], [], left)
        if not r and not w and deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("timed out")

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _call(self, op):
        """Run one SSL operation under the lock, waiting outside it until it can proceed."""
        deadline = self._deadline()
        while True:
            with self._lock:
                try:
                    return op()
                except ssl.SSLWantReadError:
                    want = "r"
                except ssl.SSLWantWriteError:
                    want = "w"
            self._wait(want, deadline)

    # ---------------------------------------------------------------- reading
    def recv_into(self, buf, nbytes: int = 0) -> int:
        def op():
            if self._read_closed:
                return 0
            try:
                return self._s.recv_into(buf, nbytes)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0
        return self._call(op)

    def recv(self, n: int) -> bytes:
        def op():
            if self._read_closed:
                return b""
            try:
                return self._s.recv(n)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
        return self._call(op)

    # ---------------------------------------------------------------- writing
    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = self._call(lambda: self._s.send(view))  # retried with the same bytes after a WANT_*
            view = view[n:]

    def send(self, data) -> int:
        return self._call(lambda: self._s.send(data))

    # ------------------------------------------------------------- the rest
    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            with self._lock:  # no SSL_read in progress now, and none will read past this point
                self._read_closed = True
        socket.socket.shutdown(self._s, how)  # wakes a reader waiting in select

    def close(self) -> None:
        with self._lock:
            self._s.close()

    def fileno(self) -> int:
        return self._s.fileno()

    def version(self) -> str | None:
        return self._s.version()

    def setsockopt(self, *args) -> None:
        self._s.setsockopt(*args)

    def getpeername(self):
        return self._s.getpeername()
