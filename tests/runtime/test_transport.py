"""Host runtime: sessions and the TCP transport (loopback only, bounded in time)."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nmc
from nets import ff_lif, spikes
from nmc.cli import main
from nmc.errors import DeviceError, OptionError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.server import SessionServer


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    return nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler",
                       output=d / "b.nmc")


@pytest.fixture
def server(bundle):
    srv = SessionServer(bundle, port=0, window=4, idle_timeout=10)
    srv.start()
    yield srv
    srv.stop()


def _windows(x, w):
    return [ev.from_dense(x[i:i + w]) for i in range(0, x.shape[0], w)]


def _dense(parts, w, T, n):
    return ev.to_dense(ev.concat(parts, w), len(parts) * w, (n,))[:T]


def test_local_session_equals_run(bundle):
    x = spikes((8,), T=37, seed=2)
    want = bundle.run({"input": x})["output"]
    with nmc.open(bundle, window=5) as s:
        got = s.run_dense({"input": x})["output"][:37]
        assert np.array_equal(got, want)
        assert s.counters.received == s.counters.processed == int(x.sum())
        s.reset()
        again = s.run_dense({"input": x})["output"][:37]
    assert np.array_equal(again, want)


def test_tcp_stream_equals_run_and_counters_reconcile(bundle, server):
    x = spikes((8,), T=30, seed=3)
    want = bundle.run({"input": x})["output"]
    c = nmc.connect(*server.address, window=4)
    outs = [c.step(w)["output"] for w in _windows(x, 4)]
    stats = c.close()
    assert np.array_equal(_dense(outs, 4, 30, 4), want)
    assert stats["received"] == stats["processed"] == int(x.sum())
    padded = bundle.run({"input": x}, steps=32)["output"]  # 8 whole windows of 4 steps
    assert stats["sent"] == int(padded.sum()) == c.received


def test_overload_is_slowed_not_dropped(bundle):
    srv = SessionServer(bundle, port=0, window=1, queue_windows=2, idle_timeout=10)
    dev_step = None
    srv.start()
    try:
        c = nmc.connect(*srv.address, window=1)
        x = spikes((8,), T=60, seed=4, p=0.6)
        # pipeline: fire all windows without waiting, then read all answers
        frames = b"".join(P.frame(P.EVENTS, P.pack_table([(0, w, False)]), i) for i, w in enumerate(_windows(x, 1)))
        t = threading.Thread(target=c.sock.sendall, args=(frames,))
        t.start()
        outs = []
        for i in range(60):
            ft, payload, seq = P.read_frame(c.sock)
            assert ft == P.OUTPUT and seq == i
            outs.append(P.unpack_table(payload, 1).get(0, ev.events([], [])))
            time.sleep(0.002)  # a slow consumer too
        t.join(10)
        stats = c.close()
        assert stats["received"] == stats["processed"] == int(x.sum())
        assert np.array_equal(_dense(outs, 1, 60, 4), bundle.run({"input": x})["output"])
    finally:
        srv.stop()
    del dev_step


def test_two_clients_are_isolated(bundle, server):
    xa, xb = spikes((8,), T=20, seed=5), spikes((8,), T=20, seed=6, p=0.1)
    ca, cb = nmc.connect(*server.address, window=4), nmc.connect(*server.address, window=4)
    oa, ob = [], []
    for wa, wb in zip(_windows(xa, 4), _windows(xb, 4)):  # interleaved
        oa.append(ca.step(wa)["output"])
        ob.append(cb.step(wb)["output"])
    ca.close()
    cb.close()
    assert np.array_equal(_dense(oa, 4, 20, 4), bundle.run({"input": xa})["output"])
    assert np.array_equal(_dense(ob, 4, 20, 4), bundle.run({"input": xb})["output"])


def test_token_required_and_checked(bundle):
    with pytest.raises(OptionError):
        SessionServer(bundle, host="0.0.0.0", port=0)
    srv = SessionServer(bundle, port=0, token="s3cret")
    srv.start()
    try:
        with pytest.raises(DeviceError, match="token"):
            nmc.connect(*srv.address, token="wrong")
        c = nmc.connect(*srv.address, token="s3cret")
        c.close()
    finally:
        srv.stop()


def _raw_exchange(addr, data: bytes) -> bytes:
    s = socket.create_connection(addr, timeout=5)
    buf = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may already have answered bad bytes and closed: that is allowed
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return buf
            if not chunk:
                return buf
            buf += chunk
    finally:
        s.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=64),
                 st.builds(lambda t, body: P.frame(P.HELLO, P.json_payload({})) + P.frame(t, body),
                           st.sampled_from([P.EVENTS, P.READY, P.OUTPUT, P.STATS]), st.binary(max_size=40))))
def test_fuzzed_frames_never_crash_or_hang_the_server(server, data):
    reply = _raw_exchange(server.address, data)
    # the server answers with well-formed frames only (READY / ERROR / OUTPUT), then closes; a reset may
    # cut the last frame short, so only whole frames are checked
    off = 0
    while off + P.HEADER.size <= len(reply):
        ft, length, _ = P.parse_header(reply[off:off + P.HEADER.size])
        assert ft in (P.READY, P.ERROR, P.OUTPUT, P.STATS)
        off += P.HEADER.size + length
    c = nmc.connect(*server.address)  # still serving
    c.close()


def test_oversized_frame_gets_an_error_frame(server):
    hdr = P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, 0, P.MAX_PAYLOAD + 1, 0)
    reply = _raw_exchange(server.address, P.frame(P.HELLO, P.json_payload({})) + hdr)
    frames = []
    off = 0
    while off < len(reply):
        ft, length, _ = P.parse_header(reply[off:off + P.HEADER.size])
        frames.append((ft, reply[off + P.HEADER.size: off + P.HEADER.size + length]))
        off += P.HEADER.size + length
    assert frames[-1][0] == P.ERROR and P.parse_error(frames[-1][1])[0] == P.E_TOO_BIG


def test_cli_stream_local_and_remote_equal_run(bundle, server, tmp_path):
    x = spikes((8,), T=18, seed=7)
    ev.save_npz(tmp_path / "in.npz", {"input": x})
    r = CliRunner().invoke(main, ["run", str(bundle.path), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "run.npz")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["stream", str(bundle.path), "--input", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "local.npz"), "--window", "4"])
    assert r.exit_code == 0, r.output
    host, port = server.address
    r = CliRunner().invoke(main, ["stream", f"{host}:{port}", "--input", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "remote.npz"), "--window", "4"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "run.npz") as a, np.load(tmp_path / "local.npz") as b, np.load(tmp_path / "remote.npz") as c:
        assert np.array_equal(a["output"], b["output"]) and np.array_equal(a["output"], c["output"])
