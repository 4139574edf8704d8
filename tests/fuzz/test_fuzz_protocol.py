"""Protocol-frame fuzzing of ``nmc serve`` (issue #21): hostile byte streams against
the frame decoder directly and against a live server on 127.0.0.1.

Inputs: valid conversations (HELLO, OPEN, EVENTS with single and BATCH tables,
MODULATE with valid and hostile values and lengths, STATS, RESET, CLOSE) mutated by byte flips, truncation, header surgery (declared
lengths up to 2^32-1, unknown types, flags, version and magic bytes), hostile JSON
field values in HELLO/OPEN (wrong types, other versions, huge numbers, deep
nesting, lone surrogates), hostile node tables (event counts, node indices,
graded flags, batch counts) and random frames; plus plain random bytes.

Properties:
* decoder: reading and decoding any byte string raises only
  :class:`~nmc.errors.EventFormatError` (or ``ConnectionError`` when the stream
  ends inside a frame), and allocates at most the reader's frame limit plus a
  small multiple of the bytes actually received (tracemalloc);
* live server (a child ``nmc serve`` process with a token): every reply is a
  sequence of well-formed frames; an ERROR carries a known code and never
  E_INTERNAL (an untyped exception in the server); each exchange ends within a
  few seconds; after every example a good client is served with the right
  output; the server never logs a traceback; its peak resident memory grows by
  at most LIVE_MEM_BOUND over the whole run.

Budget: ``NMC_FUZZ_EXAMPLES`` examples on the live server (default 40, derandomized
so CI is reproducible) and 5x as many on the decoder; setting the variable
explores randomly for longer, e.g. ``NMC_FUZZ_EXAMPLES=2000 pytest tests/fuzz/test_fuzz_protocol.py``.
The default run takes about 30 s.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nmc
from nets import ff_lif, spikes
from nmc.errors import EventFormatError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from serve_proc import MiB, ServeProcess

pytestmark = pytest.mark.timeout(600)

EXAMPLES = int(os.environ.get("NMC_FUZZ_EXAMPLES", "40"))
_SETTINGS = dict(deadline=None, database=None, derandomize="NMC_FUZZ_EXAMPLES" not in os.environ,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
TOKEN = "s3cret"
WINDOW, N_IN, N_OUT = 4, 8, 4  # the served bundle: ff_lif, 8 inputs, 4 outputs
#: the whole live run: every example sends < 100 kB and the server holds at most one
#: session per connection (a window of 4 x 12 cells) and one 4 KiB frame before the token;
#: a declared 16 MiB payload after it is allocated but never touched beyond the bytes that
#: arrive. 64 MiB covers sessions, thread arenas and allocator slack (measured: < 10 MiB).
LIVE_MEM_BOUND = 64 * MiB
#: seconds one exchange may take (the server closes after an ERROR or our EOF)
EXCHANGE_S = 5.0


# ------------------------------------------------------------------ inputs
def _events(rng_seed: int, n: int, graded: bool = False) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    return ev.events(rng.integers(0, WINDOW, n), rng.integers(0, N_IN, n),
                     rng.normal(size=n).astype(np.float32) if graded else None)


def _json(obj) -> bytes:
    return json.dumps(obj).encode("utf8", "surrogatepass")


HOSTILE_VALUES = st.sampled_from([None, 0, 1, 2, -1, 2 ** 31, 2 ** 64, 1.5, float("nan"), True, "1", "",
                                  "x" * 5000, "\ud800", [], {}, [1, 2], {"a": 1}, "brian2", "lava", "../x"])


@st.composite
def hello_payloads(draw) -> bytes:
    d = {"version": P.VERSION, "token": TOKEN}
    if draw(st.booleans()):
        d[draw(st.sampled_from(["version", "token", "extra"]))] = draw(HOSTILE_VALUES)
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"[" * 5000 + b"]" * 5000, b"{", b"\xff\xfe", b"null", b'"s"', b"[]"]))
    return _json(d)


@st.composite
def open_payloads(draw) -> bytes:
    d = {"device": None, "window": WINDOW}
    if draw(st.booleans()):
        d[draw(st.sampled_from(["device", "window"]))] = draw(HOSTILE_VALUES)
    return _json(d)


@st.composite
def tables(draw) -> bytes:
    """One window's node table: valid, or with one hostile entry field."""
    n = draw(st.integers(0, 40))
    graded = draw(st.booleans())
    t = bytearray(P.pack_table([(0, _events(draw(st.integers(0, 99)), n, graded), graded)]))
    k = draw(st.integers(0, 5))
    if k == 1:  # node index
        t[2:4] = draw(st.sampled_from([1, 2, 0xFFFF])).to_bytes(2, "little")
    elif k == 2:  # graded flag / reserved byte
        t[4 + draw(st.integers(0, 1))] = draw(st.integers(2, 255))
    elif k == 3:  # declared event count
        t[6:10] = draw(st.sampled_from([n + 1, 2 ** 31, 2 ** 32 - 1])).to_bytes(4, "little")
    elif k == 4:  # entry count
        t[0:2] = draw(st.sampled_from([2, 0xFFFF])).to_bytes(2, "little")
    return bytes(t)


@st.composite
def events_frames(draw, seq: int) -> bytes:
    tabs = draw(st.lists(tables(), min_size=1, max_size=4))
    payload, flags = P.pack_windows(tabs)
    if flags and draw(st.integers(0, 4)) == 0:  # batch window count
        payload = draw(st.sampled_from([0, len(tabs) + 1, 2 ** 32 - 1])).to_bytes(4, "little") + payload[4:]
    return P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, flags, len(payload), seq) + payload


@st.composite
def modulate_frames(draw) -> bytes:
    """A MODULATE frame: finite values, or non-finite ones, or a length that is not whole float64 values
    (the served bundle learns nothing: even a valid one is refused, with a reason)."""
    values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=0, max_size=8))
    payload = np.asarray(values, "<f8").tobytes() + draw(st.sampled_from([b"", b"", b"\0", b"\0" * 7]))
    return P.HEADER.pack(P.MAGIC, P.VERSION, P.MODULATE, 0, len(payload), 0) + payload


@st.composite
def conversations(draw) -> bytes:
    """A conversation with the served bundle, mutated."""
    frames = [P.frame(P.HELLO, draw(hello_payloads())), P.frame(P.OPEN, draw(open_payloads()))]
    for i in range(draw(st.integers(0, 4))):
        frames.append(draw(events_frames(i)))
    if draw(st.integers(0, 3)) == 0:
        frames.insert(draw(st.integers(0, len(frames))), draw(modulate_frames()))
    frames += [P.frame(t) for t in draw(st.lists(st.sampled_from([P.STATS, P.RESET]), max_size=2))]
    if draw(st.booleans()):
        frames.append(P.frame(P.CLOSE))
    mutation = draw(st.sampled_from(["none", "flip", "truncate", "header", "insert", "garbage"]))
    if mutation == "header":  # rewrite one header field of one frame
        k = draw(st.integers(0, len(frames) - 1))
        h = bytearray(frames[k][:P.HEADER.size])
        field = draw(st.sampled_from(["magic", "version", "type", "flags", "length"]))
        if field == "magic":
            h[0:4] = draw(st.binary(min_size=4, max_size=4))
        elif field == "version":
            h[4] = draw(st.integers(0, 255))
        elif field == "type":
            h[5] = draw(st.integers(0, 255))
        elif field == "flags":
            h[6:8] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
        else:
            h[8:12] = draw(st.sampled_from([0, 1, P.PRE_AUTH_MAX_PAYLOAD + 1, P.MAX_PAYLOAD, P.MAX_PAYLOAD + 1,
                                            2 ** 32 - 1])).to_bytes(4, "little")
        frames[k] = bytes(h) + frames[k][P.HEADER.size:]
    elif mutation == "insert":  # a frame of any type with any body, anywhere
        body = draw(st.binary(max_size=64))
        raw = P.HEADER.pack(P.MAGIC, P.VERSION, draw(st.integers(0, 10)), draw(st.sampled_from([0, 1, 2])),
                            len(body), draw(st.integers(0, 2 ** 32 - 1))) + body
        frames.insert(draw(st.integers(0, len(frames))), raw)
    data = b"".join(frames)
    if mutation == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(buf)
    elif mutation == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == "garbage":
        data = data[:draw(st.integers(0, len(data)))] + draw(st.binary(min_size=1, max_size=256))
    return data


STREAMS = st.one_of(st.binary(max_size=256), conversations())


# ----------------------------------------------------------------- decoder
def _decode_stream(data: bytes, limit: int) -> None:
    """Read and decode every frame of ``data`` as the server and client do."""
    a, b = socket.socketpair()
    try:
        b.sendall(data)
        b.shutdown(socket.SHUT_WR)
        a.settimeout(5)
        frames = P.FrameReader(a)
        while True:
            try:
                ft, flags, payload, _ = frames.frame(limit)
            except ConnectionError:
                return  # the stream ended (between or inside frames)
            if ft in (P.HELLO, P.OPEN, P.STATS):
                d = P.parse_json(payload)
                if ft == P.HELLO:
                    P.check_version(d)
                    P.opt_str(d, "token")
                elif ft == P.OPEN:
                    P.opt_str(d, "device")
                    P.opt_int(d, "window")
            elif ft in (P.EVENTS, P.OUTPUT):
                P.unpack_tables(payload, flags, 1, [N_IN], WINDOW, absolute=ft == P.EVENTS)
            elif ft == P.ERROR:
                P.parse_error(payload)
            elif ft == P.MODULATE:
                P.parse_modulate(payload)
            elif payload:
                raise EventFormatError(f"{P.NAMES[ft]} frame with a payload")
    finally:
        a.close()
        b.close()


@functools.lru_cache(maxsize=None)
def _warm_decoder() -> None:
    """Decode valid windows once (binary and graded, one and several per frame) before measuring:
    the first call of the compiled event kernels (:mod:`nmc.runtime.event_kernels`, numba) loads
    or compiles them, a one-time allocation of about a megabyte that is not the decoder's; the
    server does the same before it listens (:func:`nmc.runtime.events.warm_kernels`)."""
    from nmc.runtime.events import warm_kernels

    warm_kernels()
    for tabs in ([(0, _events(1, 6), False)], [(0, _events(2, 6, graded=True), True)]):
        for k in (1, 2):
            payload, flags = P.pack_windows([P.pack_table(tabs)] * k)
            frame = P.HEADER.pack(P.MAGIC, P.VERSION, P.EVENTS, flags, len(payload), 0) + payload
            _decode_stream(frame, P.MAX_PAYLOAD)


@settings(max_examples=5 * EXAMPLES, **_SETTINGS)
@given(STREAMS, st.sampled_from([P.PRE_AUTH_MAX_PAYLOAD, P.MAX_PAYLOAD]))
def test_decoder_raises_only_typed_errors_and_allocates_within_its_limit(data, limit):
    _warm_decoder()
    tracemalloc.start()
    try:
        try:
            _decode_stream(data, limit)
        except EventFormatError:  # includes FrameTooBig and VersionMismatch
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a frame's payload buffer (at most `limit`) + decoded events (16 B per 8 B record) + copies
    assert peak <= limit + 40 * len(data) + 256 * 1024, f"{peak} bytes for {len(data)} bytes of input"


def test_decoder_refuses_oversized_declared_lengths_before_allocating():
    for limit in (P.PRE_AUTH_MAX_PAYLOAD, P.MAX_PAYLOAD):
        for length in (limit + 1, 2 ** 32 - 1):
            tracemalloc.start()
            try:
                with pytest.raises(P.FrameTooBig, match=str(limit)):
                    _decode_stream(P.HEADER.pack(P.MAGIC, P.VERSION, P.HELLO, 0, length, 0), limit)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 64 * 1024


# ------------------------------------------------------------- live server
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_protocol")
    b = nmc.compile(ff_lif(), target="reference", dt=1e-3, reset="subtract", integrator="euler", output=d / "b.nmc")
    log = d / "serve.log"
    with ServeProcess(b.path, "--token", TOKEN, "--window", str(WINDOW), "--idle-timeout", "5",
                      "--max-connections-per-client", "64", log_path=log) as srv:
        yield b, srv, log


def _exchange(addr, data: bytes) -> bytes:
    s = socket.create_connection(addr, timeout=EXCHANGE_S)
    buf = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may have answered bad bytes and closed already
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError, socket.timeout):
                return buf
            if not chunk:
                return buf
            buf += chunk
    finally:
        s.close()


def _reply_frames(buf: bytes):
    out, off = [], 0
    while off < len(buf):
        ft, flags, length, seq = P.parse_header(buf[off:off + P.HEADER.size])  # raises on a malformed reply
        assert off + P.HEADER.size + length <= len(buf), "the server sent a truncated frame"
        out.append((ft, flags, buf[off + P.HEADER.size:off + P.HEADER.size + length]))
        off += P.HEADER.size + length
    return out


def test_live_server_survives_fuzzed_frames(served):
    bundle, srv, log = served
    x = spikes((N_IN,), T=WINDOW, seed=3)
    want = bundle.run({"input": x})["output"]
    with nmc.connect(*srv.address, token=TOKEN, timeout=30) as c:  # warm-up: a session's imports
        c.step(ev.from_dense(x))
    base = srv.rss()

    @settings(max_examples=EXAMPLES, **_SETTINGS)
    @given(STREAMS)
    def one(data):
        t0 = time.monotonic()
        frames = _reply_frames(_exchange(srv.address, data))
        assert time.monotonic() - t0 < 2 * EXCHANGE_S
        kinds = [f[0] for f in frames]
        assert set(kinds) <= {P.HELLO, P.OPEN, P.OUTPUT, P.STATS, P.ERROR}, kinds
        assert P.ERROR not in kinds[:-1], kinds  # an ERROR is the last frame
        if kinds and kinds[-1] == P.ERROR:
            code, msg = P.parse_error(frames[-1][2])
            assert code in P.ERROR_NAMES and code != P.E_INTERNAL, (code, msg)
        for ft, flags, payload in frames:
            if ft == P.OUTPUT:
                P.unpack_windows(payload, flags, 1, [N_OUT], None)
        assert srv.alive()
        with nmc.connect(*srv.address, token=TOKEN, timeout=10) as c:  # a good client is served, correctly
            got = ev.to_dense(c.step(ev.from_dense(x))["output"], WINDOW, (N_OUT,))
        assert np.array_equal(got, want)

    one()
    growth = srv.peak() - base
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-2000:]
    assert growth <= LIVE_MEM_BOUND, f"server grew {growth / MiB:.1f} MiB during the fuzz run"
    print(f"live protocol fuzz: {EXAMPLES} examples, server peak growth {growth / MiB:.1f} MiB")
