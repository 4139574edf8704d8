"""Whole-frame event tables (protocol.unpack_tables / pack_tables), the buffered frame reader and
Session.step_windows: the same events, errors and outputs as the per-window code they batch."""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nmc
from nets import ff_lif, spikes
from nmc.errors import EventFormatError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.session import Session

pytestmark = pytest.mark.timeout(120)

SIZES = [5, 3]
WINDOW = 4


def _random_window(rng, n_nodes=2, entries_max=3):
    """One window's entries: a node may appear in several entries, binary or graded."""
    entries = []
    for _ in range(rng.integers(0, entries_max + 1)):
        i = int(rng.integers(0, n_nodes))
        k = int(rng.integers(0, 6))
        graded = bool(rng.integers(0, 2))
        v = rng.normal(size=k).astype(np.float32) if graded else None
        entries.append((i, ev.events(rng.integers(0, WINDOW, k), rng.integers(0, SIZES[i], k), v), graded))
    return entries


def _payload(rng, k):
    tables = [P.pack_table(_random_window(rng)) for _ in range(k)]
    return P.pack_windows(tables)


def _same(a, b):
    assert a.dtype == b.dtype == ev.EVENT_DTYPE
    np.testing.assert_array_equal(a.view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("k", [1, 2, 7])
@pytest.mark.parametrize("seed", range(4))
def test_unpack_tables_equals_per_window_decoding(k, seed):
    rng = np.random.default_rng(seed)
    payload, flags = _payload(rng, k)
    want = P.unpack_windows(payload, flags, 2, SIZES, WINDOW)
    for buf in (payload, bytearray(payload), memoryview(bytearray(b"x" + payload))[1:]):
        rel = P.unpack_tables(buf, flags, 2, SIZES, WINDOW)
        absolute = P.unpack_tables(buf, flags, 2, SIZES, WINDOW, absolute=True)
        assert rel.k == absolute.k == k
        for w in range(k):
            got = rel.window(w)
            for i in range(2):
                _same(got[i], want[w].get(i, ev.empty()))
                assert rel.counts[w, i] == len(want[w].get(i, ()))
        for i in range(2):
            parts = [want[w].get(i, ev.empty()).copy() for w in range(k)]
            for w, p in enumerate(parts):
                p["t"] += w * WINDOW
            _same(absolute.events[i], np.concatenate(parts))


def test_unpack_tables_numpy_path_gives_the_same(monkeypatch):
    rng = np.random.default_rng(9)
    payload, flags = _payload(rng, 5)
    fast = P.unpack_tables(payload, flags, 2, SIZES, WINDOW, absolute=True)
    monkeypatch.setattr(ev, "_EK", False)
    slow = P.unpack_tables(payload, flags, 2, SIZES, WINDOW, absolute=True)
    np.testing.assert_array_equal(fast.counts, slow.counts)
    for a, b in zip(fast.events, slow.events):
        _same(a, b)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 4), st.data())
def test_unpack_tables_refuses_exactly_what_the_per_window_decoder_refuses(seed, k, data):
    """Corrupted payloads: both decoders raise EventFormatError, or both give the same events."""
    rng = np.random.default_rng(seed)
    payload, flags = _payload(rng, k)
    buf = bytearray(payload)
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "batch"]))
    if how == "flip" and buf:
        for _ in range(data.draw(st.integers(1, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        buf = buf[:data.draw(st.integers(0, len(buf)))]
    elif how == "append":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    else:
        flags ^= P.BATCH
    try:
        want = P.unpack_windows(bytes(buf), flags, 2, SIZES, WINDOW)
    except EventFormatError:
        with pytest.raises(EventFormatError):
            P.unpack_tables(bytes(buf), flags, 2, SIZES, WINDOW)
        return
    got = P.unpack_tables(bytes(buf), flags, 2, SIZES, WINDOW)
    assert got.k == len(want)
    for w in range(got.k):
        for i, e in got.window(w).items():
            _same(e, want[w].get(i, ev.empty()))


@pytest.mark.parametrize("k", [1, 3])
def test_pack_tables_round_trips_and_matches_per_window_packing(k):
    rng = np.random.default_rng(k)
    x = [(rng.random((k * WINDOW, n)) < 0.4).astype(np.float32) for n in SIZES]
    x[1][x[1] > 0] = 0.5   # node 1 graded
    per_node = [ev.from_dense(a) for a in x]
    parts, flags, counts = P.pack_tables(per_node, k, WINDOW, SIZES)
    payload = b"".join(bytes(p) for p in parts)
    assert bool(flags & P.BATCH) == (k > 1)
    wins = P.unpack_windows(payload, flags, 2, SIZES, WINDOW)
    assert counts == [sum(len(e) for e in w.values()) for w in wins]
    for w in range(k):
        for i in range(2):
            _same(wins[w][i], ev.from_dense(x[i][w * WINDOW:(w + 1) * WINDOW]))
    # the per-window packing gives the same windows
    ref = [P.pack_table([(i, *ev.window_events(ev.from_dense(x[i][w * WINDOW:(w + 1) * WINDOW]), WINDOW, n))
                         for i, n in enumerate(SIZES)]) for w in range(k)]
    assert P.pack_windows(ref) == (payload, flags)


def test_pack_tables_refuses_events_outside_the_windows(monkeypatch):
    bad = ev.events([0, 2 * WINDOW], [0, 1])  # t beyond the 2 windows
    with pytest.raises(EventFormatError, match="outside the 4 timesteps"):
        P.pack_tables([bad, ev.empty()], 2, WINDOW, SIZES)
    with pytest.raises(EventFormatError, match="outside the 5 channels"):
        P.pack_tables([ev.events([0], [5]), ev.empty()], 1, WINDOW, SIZES)
    unordered = ev.events([WINDOW, 0], [0, 1])  # window 1 before window 0: packed the per-window way
    parts, flags, counts = P.pack_tables([unordered, ev.empty()], 2, WINDOW, SIZES)
    wins = P.unpack_windows(b"".join(bytes(p) for p in parts), flags, 2, SIZES, WINDOW)
    assert counts == [1, 1] and wins[0][0]["ch"].tolist() == [1] and wins[1][0]["t"].tolist() == [0]
    monkeypatch.setattr(ev, "_EK", False)   # the numpy path packs the same bytes
    per_node = [ev.events([0, 5, 6], [1, 2, 2]), ev.events([1], [0], [0.25])]
    slow = P.pack_tables(per_node, 2, WINDOW, SIZES)
    monkeypatch.setattr(ev, "_EK", None)
    fast = P.pack_tables(per_node, 2, WINDOW, SIZES)
    for a, b in ((slow, fast),):
        assert a[2] == b[2]
        da = P.unpack_windows(b"".join(bytes(p) for p in a[0]), a[1], 2, SIZES, WINDOW)
        db = P.unpack_windows(b"".join(bytes(p) for p in b[0]), b[1], 2, SIZES, WINDOW)
        for wa, wb in zip(da, db):
            for i in wa:
                _same(wa[i], wb[i])


# ------------------------------------------------------------- frame reader
def _frames(rng, n):
    out = []
    for j in range(n):
        payload, flags = _payload(rng, int(rng.integers(1, 4)))
        out.append((P.EVENTS, flags, payload, j))
    out.append((P.STATS, 0, b"", n))
    return out


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_frame_reader_reads_frames_split_and_joined_anywhere(chunk):
    rng = np.random.default_rng(chunk)
    frames = _frames(rng, 30)
    big = bytes(rng.integers(0, 256, 300_000, dtype=np.uint8))   # grows the buffer, which then shrinks back
    frames.insert(10, (P.ERROR, 0, big, 0))
    data = b"".join(P.frame(ft, p, seq, fl) for ft, fl, p, seq in frames)
    a, b = socket.socketpair()
    a.settimeout(10)

    def send():
        for i in range(0, len(data), chunk if chunk > 1 else 997):
            b.sendall(data[i:i + (chunk if chunk > 1 else 997)])
        b.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    r = P.FrameReader(a, size=1024)
    try:
        for ft, fl, p, seq in frames:
            got = r.frame()
            assert got[0] == ft and got[1] == fl and got[3] == seq and bytes(got[2]) == p
            assert len(r._buf) <= max(1024, len(big) + P.HEADER.size)
        with pytest.raises(ConnectionError):
            r.header()
        assert len(r._buf) <= 4 * 1024   # the large frame's buffer went with its payload
    finally:
        t.join(10)
        a.close()
        b.close()


def test_frame_reader_checks_the_header_before_reading_the_payload():
    a, b = socket.socketpair()
    try:
        b.sendall(P.HEADER.pack(P.MAGIC, P.VERSION, P.HELLO, 0, P.PRE_AUTH_MAX_PAYLOAD + 1, 0) + b"x" * 100)
        r = P.FrameReader(a, size=256)
        with pytest.raises(P.FrameTooBig):
            r.frame(P.PRE_AUTH_MAX_PAYLOAD)
        assert len(r._buf) == 256   # nothing allocated for the declared length
        b.sendall(P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, 0, 50, 0) + b"y" * 20)
        b.shutdown(socket.SHUT_WR)
        r2 = P.FrameReader(a)
        with pytest.raises(ConnectionError, match="middle of a frame"):
            r2.frame()
    finally:
        a.close()
        b.close()


# -------------------------------------------------------- session, k windows
@pytest.fixture(scope="module")
def bundle():
    return nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler")


def _abs(parts, window):
    parts = [p.copy() for p in parts]
    for j, p in enumerate(parts):
        p["t"] += j * window
    return np.concatenate(parts)


@pytest.mark.parametrize("pace", [False, True])
def test_step_windows_equals_one_step_per_window(bundle, pace):
    k, w = 5, 3
    x = spikes((bundle.program.io.inputs[0].shape), T=k * w * 2, seed=5, p=0.4)
    one = Session(bundle, window=w)
    many = Session(bundle, window=w, pace=pace)
    many.tick = 1e-5
    name, out = one.io.input_names[0], one.io.output_names[0]
    for half in range(2):
        wins = [ev.from_dense(x[(half * k + j) * w:(half * k + j + 1) * w]) for j in range(k)]
        want = _abs([one.step(e)[out] for e in wins], w)
        got = many.step_windows({name: _abs(wins, w)}, k)[out]
        _same(got, want)
    assert many.counters.as_dict() == one.counters.as_dict()
    assert many.counters.windows == 2 * k and many.counters.reconciled()


def test_step_windows_one_window_per_call_on_a_window_locked_device(bundle):
    calls = []
    s = Session(bundle, window=2)
    adv = s.device.advance

    def advance(inputs):
        calls.append(next(iter(inputs.values())).shape[0])
        return adv(inputs)

    s.device.advance = advance
    s.device.window_locked = True
    s.step_windows(ev.events([0, 5], [0, 1]), 3)
    assert calls == [2, 2, 2]
    s.step_windows(None, 2)   # no events: still two windows
    assert calls == [2] * 5 and s.counters.windows == 5
    with pytest.raises(EventFormatError):
        s.step_windows(ev.events([6], [0]), 3)   # beyond the 3 windows: refused, and counted
    assert s.counters.rejected == 1 and s.counters.reconciled()


# ------------------------------------------------------------ over a server
def test_batched_stream_equals_local_steps_and_names_a_bad_window(bundle):
    from nmc.runtime.server import SessionServer

    srv = SessionServer(bundle, port=0, window=3, idle_timeout=10)
    srv.start()
    try:
        x = spikes((8,), T=3 * 11, seed=8, p=0.4)
        wins = [ev.from_dense(x[i:i + 3]) for i in range(0, 33, 3)]
        local = Session(bundle, window=3)
        want = [local.step(w)["output"] for w in wins]
        mixed = [w if j % 2 else {"input": w} for j, w in enumerate(wins)]   # arrays and {node: events}
        with nmc.connect(*srv.address) as c:
            for batch in (1, 4, 16):
                c.reset()
                got = [r["output"] for r in c.stream(mixed, batch=batch)]
                assert len(got) == len(want)
                for a, b in zip(got, want):
                    _same(a, b)
            c.reset()
            bad = wins[:5] + [ev.events([0, 3], [1, 2])] + wins[6:]   # t = 3 is outside a 3-step window
            out = []
            with pytest.raises(EventFormatError, match="input.*outside the 3 timesteps|outside the 3 timesteps"):
                for r in c.stream(bad, batch=4):
                    out.append(r)
            assert len(out) == 4   # the first frame's windows; the second frame was never sent
            stats = c.stats()
            assert stats["received"] == stats["processed"] == c.counters["sent"]   # nothing lost
    finally:
        srv.stop()


def test_join_equals_concatenate():
    rng = np.random.default_rng(3)
    parts = [ev.events(rng.integers(0, 9, k), rng.integers(0, 5, k), rng.normal(size=k).astype(np.float32))
             for k in (0, 3, 1, 7)]
    parts.append(parts[3][::2])   # a strided view
    _same(ev.join(parts), np.concatenate(parts))
    assert len(ev.join([])) == 0 and ev.join([]).dtype == ev.EVENT_DTYPE
    shifted = parts[2].copy()
    shifted["t"] += 9
    _same(ev.concat(parts[1:3], 9), np.concatenate([parts[1], shifted]))
