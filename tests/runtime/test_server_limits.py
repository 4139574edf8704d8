"""`nmc serve` cannot be driven out of memory, and refuses bad options in one line
(issue #21, items 5-7). Loopback only; every loop is bounded and stops itself.

Memory is measured on a server in a child process (tests/serve_proc.py) from
/proc: VmHWM (peak resident set) against VmRSS after a warm-up session.
"""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import ff_lif, spikes
from nmc.cli import main
from nmc.errors import DeviceError, OptionError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.server import MAX_BUFFERED_BYTES, MAX_QUEUE_FRAMES, SessionServer
from nmc.runtime.session import Session
from serve_proc import MiB, ServeProcess, connect_from, hello_open

pytestmark = pytest.mark.timeout(120)

WINDOW = 16
#: events in one EVENTS frame of the floods: the largest window table that fits MAX_PAYLOAD
FLOOD_EVENTS = (P.MAX_PAYLOAD - 2 - 8) // ev.BINARY_RECORD_SIZE

# Memory bound of the slow-reader flood (a client sending 16 MiB EVENTS frames of 2M events
# in windows of FLOOD_WINDOW steps as fast as it can, reading nothing; stepping such a window
# takes longer than decoding it, so a reader left alone runs ahead of the stepper). The server
# holds at most MAX_BUFFERED_BYTES (64 MiB) of unanswered payload, all connections together.
# Each held frame is in memory as its decoded events (EVENT_DTYPE: 16 bytes per 8-byte wire
# record, 2x the payload: 128 MiB for the whole budget), plus the transients of the one frame
# being decoded and the one being stepped (the wire buffer, the decoder's copy, index and
# dense-window temporaries: a few copies of a 16 MiB frame each, counted as 12 x 16 MiB with
# the allocator's slack across threads). Total 320 MiB above the idle server, whatever --queue
# says (measured: 180-215 MiB on x86-64 Linux; the same flood took the previous server past
# 650 MiB in 12 s and still climbing).
SLOW_READER_BOUND = 2 * MAX_BUFFERED_BYTES + 12 * P.MAX_PAYLOAD
FLOOD_WINDOW = 4096

# Memory bound of the pre-authentication flood: every connection is refused at its header
# (declared HELLO over PRE_AUTH_MAX_PAYLOAD) or waits in a thread holding at most a 4 KiB
# frame; with at most 8 connections per client address the server holds 8 threads (stacks
# are reserved, not resident) and 8 x 4 KiB. 32 MiB leaves room for the allocator's arenas
# of those threads (measured: under 5 MiB).
PRE_AUTH_BOUND = 32 * MiB


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    return nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler",
                       output=d / "b.nmc")


def _flood_table() -> bytes:
    rng = np.random.default_rng(0)
    return P.pack_table([(0, ev.events(rng.integers(0, FLOOD_WINDOW, FLOOD_EVENTS),
                                       rng.integers(0, 8, FLOOD_EVENTS)), False)])


def _cli(args, timeout=30.0):
    """CliRunner in a thread: a command that does not return (a server that started
    although it should have refused its options) fails the test instead of hanging it."""
    res = []
    t = threading.Thread(target=lambda: res.append(CliRunner().invoke(main, args)), daemon=True)
    t.start()
    t.join(timeout)
    assert res, f"`nmc {' '.join(args)}` did not return within {timeout} s (it should refuse its options)"
    return res[0]


def _frames(buf: bytes):
    out, off = [], 0
    while off + P.HEADER.size <= len(buf):
        ft, _, length, seq = P.parse_header(buf[off:off + P.HEADER.size])
        if off + P.HEADER.size + length > len(buf):
            break
        out.append((ft, bytes(buf[off + P.HEADER.size: off + P.HEADER.size + length])))
        off += P.HEADER.size + length
    return out


def _recv_all(s: socket.socket, timeout=5.0) -> bytes:
    s.settimeout(timeout)
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError, socket.timeout):
            return buf
        if not chunk:
            return buf
        buf += chunk


# ------------------------------------------------------------ option checks
@pytest.mark.parametrize("kw, flag", [
    ({"queue_frames": 0}, "--queue"), ({"queue_frames": -1}, "--queue"),
    ({"queue_frames": MAX_QUEUE_FRAMES + 1}, "--queue"),
    ({"idle_timeout": 0}, "--idle-timeout"), ({"idle_timeout": -1}, "--idle-timeout"),
    ({"idle_timeout": float("inf")}, "--idle-timeout"), ({"idle_timeout": float("nan")}, "--idle-timeout"),
    ({"port": 99999}, "--port"), ({"port": -1}, "--port"),
    ({"max_connections": 0}, "--max-connections"),
    ({"max_connections": 4, "max_connections_per_client": 5}, "--max-connections-per-client"),
    ({"max_connections_per_client": 0}, "--max-connections-per-client"),
])
def test_server_refuses_bad_limits(bundle, kw, flag):
    with pytest.raises(OptionError, match=flag):
        SessionServer(bundle, **kw)


@pytest.mark.parametrize("args", [["--queue", "0"], ["--queue", "-3"], ["--idle-timeout", "0"],
                                  ["--idle-timeout", "-1"], ["--port", "99999"], ["--port", "-1"],
                                  ["--max-connections", "0"], ["--max-connections-per-client", "0"]])
def test_cli_serve_bad_options_are_one_line(bundle, args):
    r = _cli(["serve", str(bundle.path), *(["--port", "0"] if "--port" not in args else []), *args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert args[0] in lines[0] and "Traceback" not in r.output


@pytest.mark.parametrize("port", ["99999", "0"])
def test_cli_stream_port_out_of_range_is_one_line(tmp_path, port):
    ev.save_npz(tmp_path / "in.npz", {"input": np.zeros((4, 8))})
    r = _cli(["stream", f"127.0.0.1:{port}", "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 2 and "port must be an integer from 1 to 65535" in r.output, r.output


def test_cli_serve_help_documents_the_limits():
    r = CliRunner().invoke(main, ["serve", "--help"])
    assert r.exit_code == 0
    for word in ("--max-connections", "--max-connections-per-client", "--queue", "never unbounded", "4 KiB",
                 "--idle-timeout", "> 0"):
        assert word in r.output, word


# -------------------------------------------------------------- handshake
def test_hello_version_mismatch_is_a_typed_error_naming_both(bundle):
    srv = SessionServer(bundle, window=4)
    srv.start()
    try:
        for hello, got in (({"version": 2, "token": None}, "2"), ({"token": None}, "None")):
            s = socket.create_connection(srv.address, timeout=5)
            s.sendall(P.frame(P.HELLO, P.json_payload(hello)))
            frames = _frames(_recv_all(s))
            s.close()
            assert [f[0] for f in frames] == [P.ERROR]
            code, msg = P.parse_error(frames[0][1])
            assert code == P.E_VERSION and got in msg and f"version {P.VERSION}" in msg, msg
        with nmc.connect(*srv.address) as c:  # and a client of this version is served
            c.step(ev.events([0], [0]))
    finally:
        srv.stop()
    with pytest.raises(P.VersionMismatch, match="server speaks protocol version 7, this client speaks version 1"):
        P.check_version({"version": 7}, side="client")


def test_token_with_a_lone_surrogate_is_refused_not_an_internal_error(bundle):
    """A JSON token "\\ud800" (one of the fuzz harness's hostile values) made the token
    comparison raise UnicodeEncodeError (ERROR E_INTERNAL)."""
    srv = SessionServer(bundle, window=4, token="s3cret")
    srv.start()
    try:
        s = socket.create_connection(srv.address, timeout=5)
        s.sendall(P.frame(P.HELLO, b'{"version": 1, "token": "\\ud800"}'))
        frames = _frames(_recv_all(s))
        s.close()
        assert P.parse_error(frames[-1][1])[0] == P.E_AUTH
    finally:
        srv.stop()


def test_pre_auth_frames_are_limited_before_allocation(bundle):
    srv = SessionServer(bundle, window=4, token="s3cret")
    srv.start()
    try:
        for ftype in (P.HELLO, P.OPEN, P.EVENTS):
            s = socket.create_connection(srv.address, timeout=5)
            s.sendall(P.HEADER.pack(P.MAGIC, P.VERSION, ftype, 0, P.PRE_AUTH_MAX_PAYLOAD + 1, 0))
            frames = _frames(_recv_all(s))
            s.close()
            code, msg = P.parse_error(frames[-1][1])
            assert code == P.E_TOO_BIG and str(P.PRE_AUTH_MAX_PAYLOAD) in msg, msg
        # a HELLO at the limit is read (and refused for its token, not its size)
        s = socket.create_connection(srv.address, timeout=5)
        body = P.json_payload({"version": 1, "token": "x" * (P.PRE_AUTH_MAX_PAYLOAD - 40)})
        s.sendall(P.frame(P.HELLO, body))
        code, _ = P.parse_error(_frames(_recv_all(s))[-1][1])
        s.close()
        assert len(body) <= P.PRE_AUTH_MAX_PAYLOAD and code == P.E_AUTH
    finally:
        srv.stop()


def test_brian2_device_is_refused_at_session_open_not_crashed(tmp_path):
    b = nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, reset="subtract", integrator="euler",
                    output=tmp_path / "s2.nmc")
    srv = SessionServer(b, window=4)
    srv.start()
    try:
        with pytest.raises(DeviceError, match=r"session error\).*device 'brian2' can only run in the main thread"):
            nmc.connect(*srv.address, device="brian2")
        with nmc.connect(*srv.address) as c:  # the emulator is still served
            assert c.device_name == "emulator"
            c.step(ev.events([0], [0]))
    finally:
        srv.stop()
    err = []

    def open_in_thread():
        try:
            Session(b, device="brian2")
        except DeviceError as e:
            err.append(e)
    t = threading.Thread(target=open_in_thread)
    t.start()
    t.join(30)
    assert err and "main thread" in str(err[0]) and "emulator" in str(err[0])


# ------------------------------------------------------------ connection caps
def test_connection_caps_answer_busy_and_free_slots(bundle):
    srv = SessionServer(bundle, window=4, max_connections=4, max_connections_per_client=2, idle_timeout=30)
    srv.start()
    held = []
    try:
        held = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]  # 127.0.0.1 at its limit
        assert _until(lambda: srv.open_connections == 2)
        with pytest.raises(DeviceError, match=r"server busy.*per-client limit \(--max-connections-per-client 2\)"):
            nmc.connect(*srv.address)
        others = [connect_from(ip, srv.address) for ip in ("127.0.0.2", "127.0.0.3")]  # total at its limit
        assert _until(lambda: srv.open_connections == 4)
        s = connect_from("127.0.0.4", srv.address)
        s.sendall(hello_open(4))
        frames = _frames(_recv_all(s))
        s.close()
        code, msg = P.parse_error(frames[-1][1])
        assert [f[0] for f in frames] == [P.ERROR] and code == P.E_BUSY and "--max-connections 4" in msg, msg
        for o in others + held:
            o.close()
        assert _until(lambda: srv.open_connections == 0)
        with nmc.connect(*srv.address) as c:  # freed slots are given to new clients
            c.step(ev.events([0], [0]))
    finally:
        for o in held:
            o.close()
        srv.stop()


def test_per_client_key_groups_an_ipv6_64():
    from nmc.runtime.server import client_key

    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == client_key("10.0.0.1") == "10.0.0.1"
    assert client_key("127.0.0.2") != client_key("127.0.0.1")


def _until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_budget_bounds_frames_held_whatever_the_queue(bundle):
    """64 frames may be queued per connection, but the server-wide budget holds
    at most one 16 MiB frame here: the reader waits before reading a payload."""
    delay = 0.05

    def slow(b, device, window):
        s = Session(b, device=device, window=window)
        step = s.step
        s.step = lambda e: (time.sleep(delay), step(e))[1]
        return s

    srv = SessionServer(bundle, window=WINDOW, queue_frames=MAX_QUEUE_FRAMES, max_buffered_bytes=P.MAX_PAYLOAD,
                        session_factory=slow)
    srv.start()
    try:
        c = nmc.connect(*srv.address, window=WINDOW)
        k = 750_000  # 6 MB frames: two fit in the 16 MiB budget, a third waits
        table = P.pack_table([(0, ev.events(np.arange(k) % WINDOW, np.arange(k) % 8), False)])
        n = 8
        t = threading.Thread(target=lambda: c.sock.sendall(b"".join(P.frame(P.EVENTS, table, i) for i in range(n))),
                             daemon=True)
        t.start()
        for i in range(n):
            ft, _, _, seq = P.read_frame(c.sock)
            assert ft == P.OUTPUT and seq == i
        t.join(10)
        stats = c.close()
    finally:
        srv.stop()
    assert srv.budget.peak <= P.MAX_PAYLOAD and srv.budget.used == 0
    assert stats["transport"]["queue_peak"] <= 2 and stats["windows"] == n


# ------------------------------------------------------------------ floods
def test_slow_reader_flood_memory_is_bounded(bundle):
    """A client sends 16 MiB EVENTS frames as fast as it can and reads nothing, to a
    server allowed the largest queue (64 frames per connection, 1 GiB of payload)."""
    table = _flood_table()
    with ServeProcess(bundle.path, "--queue", str(MAX_QUEUE_FRAMES), "--idle-timeout", "30") as srv:
        srv.warm_up(ev.events([0], [0]))
        base = srv.rss()
        s = socket.create_connection(srv.address, timeout=30)
        s.sendall(hello_open(FLOOD_WINDOW))
        sent, stop = [0], threading.Event()

        def flood():
            try:
                while not stop.is_set():
                    s.sendall(P.frame(P.EVENTS, table, sent[0]))
                    sent[0] += 1
            except OSError:
                pass
        t = threading.Thread(target=flood, daemon=True)
        t.start()
        end, growth = time.monotonic() + 10, 0
        while time.monotonic() < end and growth <= SLOW_READER_BOUND and srv.alive():
            time.sleep(0.25)
            growth = srv.peak() - base
        stop.set()
        s.close()
        t.join(10)
        assert srv.alive()
        with nmc.connect(*srv.address, timeout=30) as c:  # still serving
            c.step(ev.events([0], [2]))
    print(f"slow-reader flood: {sent[0]} x 16 MiB frames, server peak growth {growth / MiB:.0f} MiB")
    assert sent[0] >= 4, "the flood sent too little to measure anything"
    assert growth <= SLOW_READER_BOUND, (f"server grew {growth / MiB:.0f} MiB (bound {SLOW_READER_BOUND / MiB:.0f} MiB)"
                                         f" under {sent[0]} x 16 MiB frames")


def test_pre_auth_flood_memory_is_bounded_and_clients_are_answered(bundle):
    """From 127.0.0.1: 10 connections that send nothing (slowloris) and 50 that each
    declare a 16 MiB HELLO and send 4 MiB of it. The server stays small, answers every
    flooding connection (E_BUSY beyond the per-client limit, E_TOO_BIG at the header),
    serves a client from another address (127.0.0.2) during the flood, and answers a
    new client from the flooding address at once (busy, or served)."""
    with ServeProcess(bundle.path, "--token", "s3cret", "--idle-timeout", "30") as srv:
        with nmc.connect(*srv.address, token="s3cret", timeout=30) as c:  # warm-up
            c.step(ev.events([0], [0]))
        base = srv.rss()
        idle = [socket.create_connection(srv.address, timeout=5) for _ in range(10)]
        header = P.HEADER.pack(P.MAGIC, P.VERSION, P.HELLO, 0, P.MAX_PAYLOAD, 0)
        big, chunk = [], bytes(256 * 1024)
        for _ in range(50):
            s = socket.create_connection(srv.address, timeout=5)
            s.setblocking(False)
            big.append(s)
        for r in range(17):  # the header, then up to 4 MiB of payload per connection, while the server takes it
            for s in big:
                try:
                    s.send(header if r == 0 else chunk)
                except OSError:  # answered and closed already, or its buffers are full
                    pass
            if srv.peak() - base > PRE_AUTH_BOUND:
                break
        growth = srv.peak() - base
        legit = connect_from("127.0.0.2", srv.address, timeout=10)
        legit.sendall(P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": "s3cret"}))
                      + P.frame(P.OPEN, P.json_payload({"window": 4}))
                      + P.frame(P.EVENTS, P.pack_table([(0, ev.events([0, 1], [3, 3]), False)]), 0)
                      + P.frame(P.CLOSE))
        got = [f[0] for f in _frames(_recv_all(legit, 20))]
        legit.close()
        t0 = time.monotonic()
        try:
            nmc.connect(*srv.address, token="s3cret", timeout=10).close()
            answer = "served"
        except DeviceError as e:
            answer = str(e)
        answered_s = time.monotonic() - t0
        codes = []
        for s in big:
            s.setblocking(True)
            errs = [P.parse_error(p)[0] for ft, p in _frames(_recv_all(s, 2)) if ft == P.ERROR]
            codes.append(errs[0] if errs else None)
            s.close()
        for s in idle:
            s.close()
        assert srv.alive()
    print(f"pre-auth flood: server peak growth {growth / MiB:.1f} MiB; answers {codes}")
    assert got == [P.HELLO, P.OPEN, P.OUTPUT, P.STATS], got
    assert answered_s < 5 and (answer == "served" or "server busy" in answer), answer
    assert all(c in (P.E_BUSY, P.E_TOO_BIG) for c in codes), codes
    assert codes.count(P.E_BUSY) >= 40, codes  # the 8 slots of 127.0.0.1 are held by the silent connections
    assert growth <= PRE_AUTH_BOUND, f"server grew {growth / MiB:.1f} MiB under the pre-auth flood"
