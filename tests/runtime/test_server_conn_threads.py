"""How a server connection is served: an unpaced session by its one thread (read a frame,
answer it, read the next), a paced one with a reader thread decoding ahead into the
bounded queue. Both give the outputs a local run gives, and both slow a sender that
outruns the device rather than drop anything."""
from __future__ import annotations

import time

import numpy as np
import pytest

import nmc
from flood_server import flood, serving_conn
from nets import ff_lif, spikes
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.server import SessionServer
from nmc.runtime.session import Session

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def bundle():
    return nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler")


def _factory(pace: bool, delay: float = 0.0):
    def make(b, device, window):
        s = Session(b, device=device, window=window, pace=pace)
        if delay:
            step = s._step
            s._step = lambda e, k: (time.sleep(delay), step(e, k))[1]
        return s
    return make


@pytest.mark.parametrize("pace", [False, True])
def test_stream_outputs_match_a_local_run(bundle, pace):
    T, w = 48, 4
    x = spikes((8,), T=T, seed=21, p=0.4)
    srv = SessionServer(bundle, window=w, queue_frames=2, session_factory=_factory(pace))
    srv.start()
    try:
        with nmc.connect(*srv.address, window=w) as c:
            wins = [ev.from_dense(x[i:i + w]) for i in range(0, T, w)]
            outs = [o["output"] for o in c.stream(wins, batch=3)]
            conn = serving_conn(srv)
            reader_thread = conn.rd is not None
            stats = c.stats()
    finally:
        srv.stop()
    assert reader_thread == pace   # a reader thread only where the session is paced
    got = ev.to_dense(ev.concat(outs, w), T, (4,))
    assert np.array_equal(got, bundle.run({"input": x})["output"])
    assert stats["received"] == stats["processed"] == int(x.sum()) and stats["windows"] == T // w
    assert stats["transport"]["queue_peak"] <= 2


@pytest.mark.parametrize("pace", [False, True])
def test_sender_ahead_of_a_slow_device_is_slowed_not_dropped(bundle, pace):
    """Frames sent all at once to a device taking 4 ms a window: the server holds at most
    one frame (one thread) or the queue's (paced) read and not yet stepped; the time the
    next frame waited is counted in ``stall_s``; every window is answered, in order."""
    n, queue_frames = 60, 2
    x = spikes((8,), T=n, seed=22, p=0.5)
    srv = SessionServer(bundle, window=1, queue_frames=queue_frames, idle_timeout=20,
                        session_factory=_factory(pace, 0.004))
    srv.start()
    try:
        c = nmc.connect(*srv.address)
        frames = b"".join(P.frame(P.EVENTS, P.pack_table([(0, ev.from_dense(x[i:i + 1]), False)]), i)
                          for i in range(n))
        outs, ahead, _ = flood(srv, c, frames, n)
        stats = c.close()
    finally:
        srv.stop()
    assert max(ahead) <= (queue_frames + 2 if pace else 1)
    assert stats["transport"]["stall_s"] > 0.05
    assert stats["received"] == stats["processed"] == int(x.sum()) and stats["rejected"] == 0
    assert np.array_equal(ev.to_dense(ev.concat(outs, 1), n, (4,)), bundle.run({"input": x})["output"])
