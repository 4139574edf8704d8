"""Host runtime transport: sessions, framing, server and client (loopback only, bounded in time)."""
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
from flood_server import flood
from nets import ff_lif, recurrent_cubalif, spikes
from nmc.cli import main
from nmc.errors import DeviceError, EventFormatError, OptionError, ShapeError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.server import SessionServer
from nmc.runtime.session import Session

pytestmark = pytest.mark.timeout(60)  # every test here is bounded


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    return nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler",
                       output=d / "b.nmc")


@pytest.fixture(scope="module")
def graded_bundle():
    """Recurrent CubaLIF with a CubaLI readout: graded (voltage) outputs."""
    return nmc.compile(recurrent_cubalif(), target="reference", dt=1e-3, reset="zero", integrator="euler")


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


def _until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _frames(buf: bytes):
    """Whole frames of a byte string (a reset may cut the last one short)."""
    out, off = [], 0
    while off + P.HEADER.size <= len(buf):
        ft, flags, length, seq = P.parse_header(buf[off:off + P.HEADER.size])
        if off + P.HEADER.size + length > len(buf):
            break
        out.append((ft, buf[off + P.HEADER.size: off + P.HEADER.size + length], seq))
        off += P.HEADER.size + length
    return out


def _hello_open(window=None):
    return (P.frame(P.HELLO, P.json_payload({"version": 1, "token": None}))
            + P.frame(P.OPEN, P.json_payload({"window": window})))


def _raw_exchange(addr, data: bytes, timeout=5.0) -> bytes:
    s = socket.create_connection(addr, timeout=timeout)
    buf = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may already have answered bad bytes and closed: allowed
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return buf
            if not chunk:
                return buf
            buf += chunk
    finally:
        s.close()


# ------------------------------------------------------------------ sessions
def test_local_session_equals_run(bundle):
    x = spikes((8,), T=37, seed=2)
    want = bundle.run({"input": x})["output"]
    with nmc.open(bundle, window=5) as s:
        assert not s.replaying
        got = s.run_dense({"input": x})["output"][:37]
        assert np.array_equal(got, want)
        assert s.counters.received == s.counters.processed == int(x.sum()) and s.counters.reconciled()
        s.reset()
        again = s.run_dense({"input": x})["output"][:37]
    assert np.array_equal(again, want)


def test_local_session_loihi2_emulator_equals_run():
    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, reset="subtract", integrator="euler")
    x = spikes((8,), T=24, seed=8)
    want = b.run({"input": x})["output"]
    with nmc.open(b, window=6) as s:
        assert s.streaming and not s.replaying  # window by window, state carried
        got = s.run_dense(x)["output"]
    assert np.array_equal(got, want) and want.sum() > 0


def test_session_rejects_bad_windows_and_counts_them(bundle):
    s = nmc.open(bundle, window=4)
    with pytest.raises(EventFormatError, match="outside"):
        s.step(ev.events([0, 4], [1, 2]))  # t=4 is outside a 4-step window: nothing clipped
    with pytest.raises(EventFormatError, match="outside"):
        s.step(ev.events([0], [8]))  # 8 input channels
    with pytest.raises(EventFormatError):
        s.step({"nope": ev.events([0], [0])})
    with pytest.raises(ShapeError):
        s.run_dense({"input": np.zeros((8, 7))})
    s.step(ev.events([0, 3], [0, 7]))
    c = s.counters
    assert (c.received, c.processed, c.rejected) == (5, 2, 3) and c.reconciled()


def test_session_pacing_holds_windows_to_the_tick(bundle):
    s = nmc.open(bundle, window=5, pace=True)  # reference: dt = 1 ms → 5 ms per window
    t0 = time.perf_counter()
    for _ in range(6):
        s.step()
    assert time.perf_counter() - t0 >= 5 * 5e-3


# ------------------------------------------------------------------ protocol
_events = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7), st.sampled_from([1.0, 1.0, -2.5, 0.25])),
                   max_size=20).map(lambda r: ev.events([a for a, _, _ in r], [b for _, b, _ in r],
                                                        [c for _, _, c in r]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_events, min_size=2, max_size=2), min_size=1, max_size=4))
def test_windows_round_trip(wins):
    tables = [P.pack_table([(i, e, bool(len(e) and (e["v"] != 1).any())) for i, e in enumerate(w)]) for w in wins]
    payload, flags = P.pack_windows(tables)
    assert bool(flags & P.BATCH) == (len(wins) > 1)
    back = P.unpack_windows(payload, flags, 2, [8, 8], 4)
    assert len(back) == len(wins)
    for w, b in zip(wins, back):
        for i, e in enumerate(w):
            got = b.get(i, ev.empty())
            assert np.array_equal(got["t"], e["t"]) and np.array_equal(got["ch"], e["ch"])
            assert np.array_equal(got["v"], e["v"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 1))
def test_decoders_raise_only_event_format_errors(data, flags):
    for f in (lambda: P.unpack_windows(data, flags, 2, [8, 8], 4), lambda: P.parse_header(data[:16]),
              lambda: P.parse_json(data), lambda: P.parse_error(data)):
        try:
            f()
        except EventFormatError:
            pass


def test_decoders_check_limits():
    tab = P.pack_table([(0, ev.events([4], [0]), False)])
    with pytest.raises(EventFormatError, match="timesteps"):
        P.unpack_table(tab, 1, [8], 4)
    with pytest.raises(EventFormatError, match="channels"):
        P.unpack_table(P.pack_table([(0, ev.events([0], [8]), False)]), 1, [8], 4)
    with pytest.raises(EventFormatError, match="node index"):
        P.unpack_table(P.pack_table([(1, ev.events([0], [0]), False)]), 1)
    with pytest.raises(EventFormatError, match="trailing"):
        P.unpack_table(tab + b"\0", 1)
    with pytest.raises(EventFormatError, match="flags"):
        P.parse_header(P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, 0x8000, 0, 0))
    with pytest.raises(EventFormatError, match="version"):
        P.parse_header(P.HEADER.pack(P.MAGIC, 2, P.EVENTS, 0, 0, 0))
    with pytest.raises(P.FrameTooBig):
        P.frame(P.EVENTS, bytes(P.MAX_PAYLOAD + 1))


# -------------------------------------------------------------------- server
def test_tcp_step_stream_batch_equal_run_and_counters_reconcile(bundle, server):
    x = spikes((8,), T=30, seed=3)
    want = bundle.run({"input": x})["output"]
    c = nmc.connect(*server.address, window=4)
    outs = [c.step(w)["output"] for w in _windows(x, 4)]
    assert np.array_equal(_dense(outs, 4, 30, 4), want)
    c.reset()
    assert np.array_equal(c.run_dense({"input": x})["output"][:30], want)  # pipelined
    c.reset()
    assert np.array_equal(c.run_dense({"input": x}, batch=3)["output"][:30], want)  # 3 windows per frame
    stats = c.close()
    assert stats["received"] == stats["processed"] == 3 * int(x.sum()) == c.counters["sent"]
    padded = bundle.run({"input": x}, steps=32)["output"]  # 8 whole windows of 4 steps
    assert stats["sent"] == 3 * int(padded.sum()) == c.counters["received"]
    assert stats["rejected"] == 0 and stats["windows"] == 24


def test_tcp_graded_outputs(graded_bundle):
    x = spikes((6,), T=20, seed=4)
    srv = SessionServer(graded_bundle, window=5)
    srv.start()
    try:
        with nmc.connect(*srv.address) as c:
            remote = c.run_dense({"input": x})["output"]
    finally:
        srv.stop()
    local = nmc.open(graded_bundle, window=5).run_dense({"input": x})["output"]
    want = graded_bundle.run({"input": x})["output"]
    assert np.array_equal(remote, local)  # the wire adds nothing
    assert np.array_equal(remote, want.astype(np.float32).astype(np.float64))  # float32 payloads
    assert np.count_nonzero(want) > 0


def test_tcp_loihi2_emulator_equals_run():
    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, reset="subtract", integrator="euler")
    x = spikes((8,), T=16, seed=9)
    srv = SessionServer(b, window=4)
    srv.start()
    try:
        with nmc.connect(*srv.address, device="emulator") as c:
            got = c.run_dense(x)["output"]
    finally:
        srv.stop()
    assert np.array_equal(got, b.run({"input": x})["output"])


class _SlowDevice:
    """The real device, each step delayed: a device slower than the sender."""

    def __init__(self, dev, delay):
        self.dev, self.delay = dev, delay

    streams = True
    main_thread_only = False

    def reset(self, batch=1):
        self.dev.reset(batch)

    def advance(self, inputs):
        time.sleep(self.delay * len(next(iter(inputs.values()))))  # each step delayed
        return self.dev.advance(inputs)

    def close(self):
        self.dev.close()


def _slow_factory(delay):
    def make(b, device, window):
        s = Session(b, device=device, window=window)
        s.device = _SlowDevice(s.device, delay)
        return s
    return make


def test_overload_sender_is_slowed_nothing_dropped(bundle):
    queue_frames, n_win = 2, 80
    srv = SessionServer(bundle, window=1, queue_frames=queue_frames, idle_timeout=20,
                        session_factory=_slow_factory(0.004))
    srv.start()
    try:
        c = nmc.connect(*srv.address)
        x = spikes((8,), T=n_win, seed=4, p=0.6)
        frames = b"".join(P.frame(P.EVENTS, P.pack_table([(0, w, False)]), i) for i, w in enumerate(_windows(x, 1)))
        # everything at once; ahead: frames read off the socket but not yet stepped, bounded by the queue
        outs, ahead, t = flood(srv, c, frames, n_win)
        assert not t.is_alive(), "the sender is still blocked after every window was answered"
        stats = c.close()
    finally:
        srv.stop()
    assert max(ahead) <= queue_frames + 2  # queue + one in the reader's hand + one being stepped
    assert stats["transport"]["stall_s"] > 0.1  # the server stopped reading while the device caught up
    assert stats["transport"]["queue_peak"] <= queue_frames
    assert stats["received"] == stats["processed"] == int(x.sum()) and stats["rejected"] == 0
    assert np.array_equal(_dense(outs, 1, n_win, 4), bundle.run({"input": x})["output"])


def test_two_clients_at_once_are_isolated(bundle, server):
    xs = [spikes((8,), T=40, seed=5), spikes((8,), T=40, seed=6, p=0.1)]
    got, errs = [None, None], []

    def run(i):
        try:
            with nmc.connect(*server.address, window=4, timeout=20) as c:
                got[i] = c.run_dense({"input": xs[i]})["output"]
        except Exception as e:  # reported by the main thread
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    assert not any(t.is_alive() for t in ts) and not errs, errs
    for x, g in zip(xs, got):
        assert np.array_equal(g, bundle.run({"input": x})["output"])
    # interleaved steps on one thread
    ca, cb = nmc.connect(*server.address, window=4), nmc.connect(*server.address, window=4)
    oa, ob = [], []
    for wa, wb in zip(_windows(xs[0], 4), _windows(xs[1], 4)):
        oa.append(ca.step(wa)["output"])
        ob.append(cb.step(wb)["output"])
    ca.close()
    cb.close()
    assert np.array_equal(_dense(oa, 4, 40, 4), bundle.run({"input": xs[0]})["output"])
    assert np.array_equal(_dense(ob, 4, 40, 4), bundle.run({"input": xs[1]})["output"])


def test_token_required_and_checked(bundle):
    with pytest.raises(OptionError, match="token"):
        SessionServer(bundle, host="0.0.0.0", port=0)
    srv = SessionServer(bundle, port=0, token="s3cret")
    srv.start()
    try:
        for tok in ("wrong", None):
            with pytest.raises(DeviceError, match="token"):
                nmc.connect(*srv.address, token=tok)
        with nmc.connect(*srv.address, token="s3cret") as c:
            c.step(ev.events([0], [0]))
    finally:
        srv.stop()


def test_cli_serve_off_loopback_without_token_is_one_line(bundle):
    r = CliRunner().invoke(main, ["serve", str(bundle.path), "--host", "0.0.0.0", "--port", "0"])
    assert r.exit_code == 2 and "requires a token" in r.output and "Traceback" not in r.output


def test_open_refusals(bundle, server):
    with pytest.raises(DeviceError, match="no device"):
        nmc.connect(*server.address, device="lava")
    with pytest.raises(DeviceError, match="limit"):
        nmc.connect(*server.address, window=10 ** 7)
    with nmc.connect(*server.address) as c:  # still serving
        assert c.window == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda t, body: P.frame(P.HELLO, P.json_payload({})) + P.frame(t, body),
              st.sampled_from(list(P.NAMES)), st.binary(max_size=40)),
    st.builds(lambda t, fl, body: _hello_open() + P.HEADER.pack(P.MAGIC, P.VERSION, t, fl, len(body), 0) + body,
              st.sampled_from(list(P.NAMES)), st.sampled_from([0, 1, 2]), st.binary(max_size=60)),
    st.builds(lambda body, cut: _hello_open() + P.frame(P.EVENTS, body)[:cut],
              st.binary(max_size=40).map(lambda b: b"\x01\x00\x00\x00\x00\x00" + b), st.integers(0, 80))))
def test_fuzzed_frames_never_crash_or_hang_the_server(server, data):
    t0 = time.monotonic()
    reply = _raw_exchange(server.address, data)
    assert time.monotonic() - t0 < 5
    for ft, payload, _ in _frames(reply):  # only well-formed frames come back
        assert ft in (P.HELLO, P.OPEN, P.ERROR, P.OUTPUT, P.STATS)
        if ft == P.ERROR:
            assert P.parse_error(payload)[0] in P.ERROR_NAMES
    with nmc.connect(*server.address, timeout=10) as c:  # still serving
        c.step(ev.events([1], [2]))
    assert _until(lambda: server.active_sessions == 0)


def test_bad_frame_closes_only_that_connection(bundle, server):
    x = spikes((8,), T=24, seed=10)
    good = nmc.connect(*server.address, window=4)
    wins = _windows(x, 4)
    outs = [good.step(w)["output"] for w in wins[:3]]
    for data in (_hello_open() + P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, 0, P.MAX_PAYLOAD + 1, 0),
                 _hello_open() + P.frame(P.EVENTS, P.pack_table([(0, ev.events([9], [0]), False)])),
                 _hello_open() + P.frame(P.OUTPUT, b"\0\0"),
                 b"GET / HTTP/1.1\r\n\r\n"):
        frames = _frames(_raw_exchange(server.address, data))
        assert frames[-1][0] == P.ERROR
    codes = [P.parse_error(_frames(_raw_exchange(server.address, d))[-1][1])[0] for d in (
        _hello_open() + P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, 0, P.MAX_PAYLOAD + 1, 0),
        _hello_open() + P.frame(P.EVENTS, b"\x01"),
        _hello_open() + P.frame(P.OUTPUT, b"\0\0"))]
    assert codes == [P.E_TOO_BIG, P.E_MALFORMED, P.E_PROTOCOL]
    outs += [good.step(w)["output"] for w in wins[3:]]
    stats = good.close()
    assert np.array_equal(_dense(outs, 4, 24, 4), bundle.run({"input": x})["output"])
    assert stats["received"] == stats["processed"] == int(x.sum())


def test_client_disconnect_mid_stream_frees_the_session(bundle):
    srv = SessionServer(bundle, window=1, session_factory=_slow_factory(0.002))
    srv.start()
    try:
        c = nmc.connect(*srv.address)
        x = spikes((8,), T=50, seed=11)
        c.sock.sendall(b"".join(P.frame(P.EVENTS, P.pack_table([(0, w, False)]), i)
                                for i, w in enumerate(_windows(x, 1))))
        assert _until(lambda: srv.active_sessions == 1)
        c.sock.close()  # gone without CLOSE, windows still queued
        assert _until(lambda: srv.active_sessions == 0 and len(srv.closed_sessions) == 1)
        assert srv.closed_sessions[0]["received"] == srv.closed_sessions[0]["processed"]
        with nmc.connect(*srv.address) as c2:  # and it keeps serving
            c2.step(ev.events([0], [0]))
    finally:
        srv.stop()


def test_graceful_shutdown_answers_queued_windows(bundle):
    srv = SessionServer(bundle, window=1, queue_frames=8, session_factory=_slow_factory(0.01))
    srv.start()
    try:
        c = nmc.connect(*srv.address, timeout=10)
        x = spikes((8,), T=30, seed=12)
        c.sock.sendall(b"".join(P.frame(P.EVENTS, P.pack_table([(0, w, False)]), i)
                                for i, w in enumerate(_windows(x, 1))))
        assert _until(lambda: next(iter(srv.conns.values())).transport["frames_in"] >= 5)
        t0 = time.monotonic()
    finally:
        srv.stop(timeout=5)
    assert time.monotonic() - t0 < 6
    frames = _frames(_raw_recv_all(c.sock))
    kinds = [f[0] for f in frames]
    n_out = kinds.count(P.OUTPUT)
    assert n_out >= 5 and kinds[n_out:] == [P.STATS, P.ERROR]  # every window the server read was answered
    assert [f[2] for f in frames[:n_out]] == list(range(n_out))
    stats = P.parse_json(frames[n_out][1])
    assert stats["windows"] == n_out and stats["received"] == stats["processed"] == int(x[:n_out].sum())
    assert P.parse_error(frames[-1][1])[0] == P.E_SHUTDOWN
    c.sock.close()


def _raw_recv_all(sock) -> bytes:
    buf = b""
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return buf
        if not chunk:
            return buf
        buf += chunk


# ----------------------------------------------------------------------- CLI
def test_cli_stream_local_and_remote_equal_run(bundle, server, tmp_path):
    x = spikes((8,), T=18, seed=7)
    ev.save_npz(tmp_path / "in.npz", {"input": x})
    r = CliRunner().invoke(main, ["run", str(bundle.path), "--input", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "run.npz")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["stream", str(bundle.path), "--input", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "local.npz"), "--window", "4"])
    assert r.exit_code == 0, r.output
    host, port = server.address
    r = CliRunner().invoke(main, ["stream", f"{host}:{port}", "--input", str(tmp_path / "in.npz"), "-o",
                                  str(tmp_path / "remote.npz"), "--window", "4", "--batch", "2"])
    assert r.exit_code == 0, r.output
    run = (tmp_path / "run.npz").read_bytes()
    assert (tmp_path / "local.npz").read_bytes() == run and (tmp_path / "remote.npz").read_bytes() == run


def test_cli_stream_errors_are_one_line(bundle, tmp_path):
    ev.save_npz(tmp_path / "in.npz", {"input": np.zeros((4, 7))})
    r = CliRunner().invoke(main, ["stream", str(bundle.path), "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 2 and "input" in r.output and "Traceback" not in r.output
    ev.save_npz(tmp_path / "in.npz", {"input": np.zeros((4, 8))})
    with socket.socket() as s:  # a port held (bound, not listening) while the client tries it: refused, and
        s.bind(("127.0.0.1", 0))  # neither another process nor the client's own source port can take it
        port = s.getsockname()[1]
        r = CliRunner().invoke(main, ["stream", f"127.0.0.1:{port}", "--input", str(tmp_path / "in.npz")])
    assert r.exit_code == 2 and "cannot connect" in r.output


def test_bench_transport_smoke(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "transport.py"
    spec = importlib.util.spec_from_file_location("bench_transport", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--windows", "10", "--window", "2", "--out", str(tmp_path / "t.json"), "--quick"])
    assert (tmp_path / "t.json").exists() and all(v[m]["events_per_s"] > 0 for v in res.values() for m in ("local", "tcp step", "tcp stream"))


def test_cli_serve_process_serves_and_stops_gracefully_on_sigterm(bundle, tmp_path):
    import re
    import shutil
    import signal
    import subprocess
    import sys

    # a path long enough that a console wrapping at 80 columns would push the address to a second line
    path = tmp_path / ("a-rather-long-folder-name-" * 3) / bundle.path.name
    path.parent.mkdir()
    (shutil.copytree if bundle.path.is_dir() else shutil.copy)(bundle.path, path)
    p = subprocess.Popen([sys.executable, "-m", "nmc.cli", "serve", str(path), "--port", "0", "--window", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(p.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)  # "serving ... on 127.0.0.1:PORT (Ctrl-C to stop)", one line however long the path
        assert lines and p.poll() is None, f"no address line within 30 s (exit code {p.poll()})"
        m = re.search(r"on (127\.0\.0\.1):(\d+)", lines[0])
        assert m, lines[0]
        x = spikes((8,), T=12, seed=13)
        c = nmc.connect(m.group(1), int(m.group(2)), timeout=10)
        outs = [c.step(w)["output"] for w in _windows(x, 4)]
        assert np.array_equal(_dense(outs, 4, 12, 4), bundle.run({"input": x})["output"])
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
        frames = _frames(_raw_recv_all(c.sock))
        assert [f[0] for f in frames] == [P.STATS, P.ERROR]  # final counters, then "shutting down"
        stats = P.parse_json(frames[0][1])
        assert stats["received"] == stats["processed"] == int(x.sum())
        c.sock.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_connection_accepted_while_stopping_is_told_and_closed(bundle):
    """A connection whose handler starts after stop() took its snapshot of the connections
    ends itself with E_SHUTDOWN instead of being served by a stopped server."""
    srv = SessionServer(bundle, window=4)
    srv.start()
    try:
        with srv.lock:
            srv.stopping = True  # the moment between stop()'s flag and the accept loop's end
        frames = _frames(_raw_exchange(srv.address, _hello_open()))
        assert [f[0] for f in frames] == [P.ERROR] and P.parse_error(frames[0][1])[0] == P.E_SHUTDOWN
    finally:
        srv.stop()
    assert _until(lambda: not srv.conns)
