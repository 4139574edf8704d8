"""A sender that outruns the server: every frame written at once from a thread while the test
reads the answers, noting per answer how many frames the server had read off the socket but
not yet stepped. Used by the tests of the bounded queue and of the one-thread connection."""
from __future__ import annotations

import threading
import time

from nmc.runtime import events as ev
from nmc.runtime import protocol as P


def serving_conn(srv, timeout: float = 5.0):
    """The server's first connection once its session is open (None after ``timeout`` s)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        conns = list(srv.conns.values())
        if conns and conns[0].session is not None:
            return conns[0]
        time.sleep(0.01)
    return None


def flood(srv, client, frames: bytes, n: int):
    """Sends ``frames`` (``n`` EVENTS frames, seq 0..n−1) in one ``sendall`` from a thread and reads
    the ``n`` OUTPUT answers in order. Returns (the outputs' event tables of node 0, frames read
    ahead of the stepping at each answer, the sender thread after a join of up to 10 s)."""
    t = threading.Thread(target=client.sock.sendall, args=(frames,), daemon=True)
    t.start()
    conn = serving_conn(srv)
    assert conn is not None, "the server opened no session"
    ahead, outs = [], []
    for i in range(n):
        ft, _, payload, seq = P.read_frame(client.sock)
        assert ft == P.OUTPUT and seq == i
        outs.append(P.unpack_table(payload, 1).get(0, ev.empty()))
        ahead.append(conn.transport["frames_in"] - conn.session.counters.windows)
    t.join(10)
    return outs, ahead, t
