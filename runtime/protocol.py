"""Wire protocol of ``nmc serve``: small versioned binary frames over TCP.

Frame layout
------------
Every frame is a 16-byte little-endian header followed by ``length`` payload
bytes::

    offset  type  field
    0       4s    magic    b"NMCE"
    4       u8    version  1 (a peer speaking another version is refused)
    5       u8    type     frame type (table below)
    6       u16   flags    bit 0 BATCH (EVENTS/OUTPUT carry several windows); other bits must be 0
    8       u32   length   payload bytes, at most MAX_PAYLOAD (16 MiB); before the token is
                           checked (HELLO, OPEN) at most PRE_AUTH_MAX_PAYLOAD (4 KiB): a larger
                           declared length is refused from the header, before anything is allocated
    12      u32   seq      EVENTS/OUTPUT: number of the (first) window; ERROR E_BUSY: retry
                           after this many milliseconds (0: unknown); else 0

Frame types (C = client → server, S = server → client)::

    1 HELLO   C: JSON {"version": 1, "token": str|null, "model": str|null, "model_version": int|null}
              first frame of a connection; a "version" other than the server's is refused
              (ERROR E_VERSION naming both). "model"/"model_version" pick a model of a
              repository server (null: its only model / the newest version); a
              single-bundle server refuses a "model" other than its own name
              S: JSON {"version", "target", "devices", "default_device", "window",
                       "inputs": {name: shape}, "outputs": {name: shape},
                       "model": str, "model_version": int}
    2 OPEN    C: JSON {"device": str|null, "window": int|null}   opens the session
              S: JSON {"device", "window", "inputs": {name: size}, "outputs": {name: size},
                       "input_shapes": {name: shape}, "output_shapes": {name: shape},
                       "modulator": bool (the session's device takes MODULATE)}
    3 EVENTS  C: one window of input events (node table), or with BATCH several
    4 OUTPUT  S: the output events of those windows, same layout, same seq
    5 RESET   C: empty; drop the session's state (answered by STATS)
    6 STATS   C: empty request; S: JSON counters, answered in order after the
              OUTPUT of every window sent before it
    7 ERROR   either: u16 code + UTF-8 message; the sender closes the connection after it
              (codes: ERROR_NAMES; E_BUSY: the server is at its connection limit, or has no
              free device and a full wait queue; the header's seq is then the time to wait
              before retrying in milliseconds, 0 when unknown)
    8 CLOSE   C: empty; end of session (answered by the final STATS, then the server closes)
    9 MODULATE C: the third factor of the session's learning rules (:meth:`Device.modulate
              <nmc.backends.base.Device.modulate>`): n ≥ 1 little-endian float64 values, the
              length a multiple of 8 and at most MAX_MODULATE_BYTES (checked from the header,
              before the payload is read), every value finite. One value: a reward (or one
              error for every post neuron); n values: the error per post neuron. It takes
              effect in order: after every window sent before it, before every window sent
              after it, and holds until the next MODULATE (or RESET). Not answered; a device
              that runs no rule with a third factor (OPEN's "modulator" is false), a batched
              session (its slot shares the device's weights with other sessions) or values of
              the wrong length get ERROR E_RUNTIME naming why, in place of the next answer

A conversation::

    C HELLO {token}        S HELLO {target, devices, io}     (wrong token: S ERROR E_AUTH, close)
    C OPEN {device, window} S OPEN {device, window, io}     (one session per connection)
    C EVENTS seq=0 ...      S OUTPUT seq=0 ...               (the client may send ahead: pipelining;
    C EVENTS seq=1 ...      S OUTPUT seq=1 ...                the server stops reading when its queue
    C MODULATE r                                              is full, so TCP slows the sender)
    C RESET / STATS         S STATS
    C CLOSE                 S STATS (final counters), close

Node table (one window)::

    u16 n_entries, then per entry:
        u16 node index   position in OPEN's "inputs" (EVENTS) or "outputs" (OUTPUT)
        u8  graded       0: 8-byte binary records, 1: 12-byte graded records
        u8  0            reserved
        u32 n_events
        n_events records packed by :func:`nmc.runtime.events.pack`
        (u32 t window-relative, u32 ch flat channel[, f32 v])

A node may appear in several entries (its events are concatenated); a node
absent from the table has no events in that window.

BATCH payload: ``u32 n_windows`` then per window ``u32 table bytes`` + that
node table; window ``k`` of the frame is window number ``seq + k``.

MODULATE payload: ``n`` float64 values, ``n`` = length / 8 (1 to
:data:`MAX_MODULATE_VALUES`), decoded by :func:`parse_modulate`.

Reading and decoding: client and server read every frame of a connection
through one :class:`FrameReader` (one buffered ``recv_into`` takes a small
frame's header and payload together; the header is checked before a longer
payload is read), and decode an EVENTS/OUTPUT payload whole
(:func:`unpack_tables`: one event array per node for all its windows, with the
checks of :func:`unpack_windows`); :func:`pack_tables` encodes several windows'
events the same way (a node's records are graded in every window of the frame
when any of its payloads is not 1.0). The frame layout is unchanged: these are
ways of reading and writing version 1, and a peer that reads window by window
reads them.

Every decoding error — bad magic/version/type/flags, oversized length,
truncated or trailing bytes, node index, graded flag, non-finite payload, an
event outside the window or the node's channels when limits are given — raises
:class:`~nmc.errors.EventFormatError` naming the byte offset; nothing is
silently skipped, and no byte string makes a decoder raise anything else.
"""
from __future__ import annotations

import json
import socket
import struct

import numpy as np

from nmc.errors import EventFormatError

from . import events as ev

MAGIC = b"NMCE"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")
MAX_PAYLOAD = 16 * 1024 * 1024
#: payload limit of the frames a server reads before the client is authenticated (HELLO, OPEN)
PRE_AUTH_MAX_PAYLOAD = 4096
#: frame flag: the EVENTS/OUTPUT payload holds several windows
BATCH = 0x0001
_KNOWN_FLAGS = BATCH
HELLO, OPEN, EVENTS, OUTPUT, RESET, STATS, ERROR, CLOSE, MODULATE = range(1, 10)
NAMES = {HELLO: "HELLO", OPEN: "OPEN", EVENTS: "EVENTS", OUTPUT: "OUTPUT", RESET: "RESET", STATS: "STATS",
         ERROR: "ERROR", CLOSE: "CLOSE", MODULATE: "MODULATE"}
#: values of one MODULATE frame at most (an error per post neuron of up to 2^20 neurons; 8 MiB)
MAX_MODULATE_VALUES = 1 << 20
MAX_MODULATE_BYTES = 8 * MAX_MODULATE_VALUES
# error codes of ERROR frames
E_MALFORMED, E_TOO_BIG, E_AUTH, E_PROTOCOL, E_RUNTIME, E_SHUTDOWN, E_INTERNAL, E_VERSION, E_BUSY = range(1, 10)
ERROR_NAMES = {E_MALFORMED: "malformed frame", E_TOO_BIG: "frame too big", E_AUTH: "not authorised",
               E_PROTOCOL: "protocol violation", E_RUNTIME: "session error", E_SHUTDOWN: "server shutting down",
               E_INTERNAL: "internal server error", E_VERSION: "protocol version mismatch",
               E_BUSY: "server busy"}
_ENTRY = struct.Struct("<HBBI")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class FrameTooBig(EventFormatError):
    """A frame (header length or payload to send) over :data:`MAX_PAYLOAD`
    (or over the smaller limit the reader applies, e.g. before authentication)."""


class VersionMismatch(EventFormatError):
    """The peer speaks another protocol version (header byte or HELLO's ``version``)."""


def frame(ftype: int, payload: bytes = b"", seq: int = 0, flags: int = 0) -> bytes:
    """Header + payload of one frame; refuses payloads over MAX_PAYLOAD."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooBig(f"frame payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                          limit=MAX_PAYLOAD, actual=len(payload), hint="send smaller windows or smaller batches")
    return HEADER.pack(MAGIC, VERSION, ftype, flags, len(payload), seq) + payload


#: buffers one ``sendmsg`` takes at most (POSIX guarantees 16; Linux takes 1024)
_IOV_MAX = 512


def send_frame(sock, ftype: int, payload=b"", seq: int = 0, flags: int = 0) -> None:
    """Write one frame: the header and the payload's buffers (``payload``: bytes, or a list of
    buffers that make it, e.g. :func:`pack_windows`'s parts) with ``sendmsg``, gathered by the
    kernel without joining them first (one copy fewer per frame, no second buffer of the payload's
    size); a socket without ``sendmsg`` (a TLS stream) gets one ``sendall`` of the joined bytes.
    Refuses payloads over MAX_PAYLOAD, like :func:`frame`."""
    parts = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else list(payload)
    n = sum(len(b) for b in parts)
    if n > MAX_PAYLOAD:
        raise FrameTooBig(f"frame payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                          limit=MAX_PAYLOAD, actual=n, hint="send smaller windows or smaller batches")
    bufs = [HEADER.pack(MAGIC, VERSION, ftype, flags, n, seq), *parts]
    sendmsg = getattr(sock, "sendmsg", None)
    if sendmsg is None or len(bufs) > _IOV_MAX:
        sock.sendall(b"".join(bufs))
        return
    k = sendmsg(bufs)   # (the lengths are byte counts, as the header's length already assumes)
    if k == HEADER.size + n:   # the usual case: all of it in one call, nothing to walk
        return
    views = [memoryview(b).cast("B") for b in bufs if len(b)]
    while True:   # sendmsg wrote part of it: go on from where it stopped
        while views and k >= len(views[0]):
            k -= len(views[0])
            views.pop(0)
        if not views:
            return
        if k:
            views[0] = views[0][k:]
        k = sendmsg(views)


def parse_header(h: bytes, limit: int = MAX_PAYLOAD) -> tuple[int, int, int, int]:
    """(type, flags, length, seq); raises EventFormatError on a bad header and
    :class:`FrameTooBig` when the declared length is over ``limit`` bytes."""
    if len(h) != HEADER.size:
        raise EventFormatError(f"truncated frame header ({len(h)} of {HEADER.size} bytes)")
    magic, version, ftype, flags, length, seq = HEADER.unpack(h)
    if magic != MAGIC:
        raise EventFormatError(f"bad magic {magic!r} (expected {MAGIC!r}): not an nmc stream")
    if version != VERSION:
        raise VersionMismatch(f"protocol version {version} is not supported (this side speaks {VERSION})",
                              limit=VERSION, actual=version, hint="use client and server of the same nmc release")
    if ftype not in NAMES:
        raise EventFormatError(f"unknown frame type {ftype}")
    if flags & ~_KNOWN_FLAGS:
        raise EventFormatError(f"unknown frame flags 0x{flags:04x} in a {NAMES[ftype]} frame")
    if flags & BATCH and ftype not in (EVENTS, OUTPUT):
        raise EventFormatError(f"BATCH flag on a {NAMES[ftype]} frame")
    limit = min(int(limit), MAX_PAYLOAD)
    if ftype == MODULATE:
        if length > MAX_MODULATE_BYTES and length <= limit:
            raise FrameTooBig(f"MODULATE frame of {length} bytes exceeds the {MAX_MODULATE_BYTES}-byte limit "
                              f"({MAX_MODULATE_VALUES} float64 values)", limit=MAX_MODULATE_BYTES, actual=length,
                              hint="one value per post neuron of the plastic projection, or one for all")
        if length == 0 or length % 8:
            raise EventFormatError(f"MODULATE payload of {length} bytes is not n ≥ 1 float64 values "
                                   "(a positive multiple of 8 bytes)", actual=length)
    if length > limit:
        what = "frames before authentication (HELLO, OPEN)" if limit < MAX_PAYLOAD else "frames"
        raise FrameTooBig(f"{NAMES[ftype]} frame of {length} bytes exceeds the {limit}-byte limit of {what}",
                          limit=limit, actual=length,
                          hint="send smaller windows or smaller batches" if limit == MAX_PAYLOAD
                          else "HELLO and OPEN carry only a short JSON object")
    return ftype, flags, length, seq


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Exactly n bytes (one buffer, no copy); ConnectionError if the peer closes first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        if not k:
            raise ConnectionError("peer closed the connection" + (f" in the middle of a frame ({got} of {n} bytes)"
                                                                   if got else ""))
        got += k
    return buf


def read_header(sock: socket.socket, limit: int = MAX_PAYLOAD) -> tuple[int, int, int, int]:
    """(type, flags, length, seq) of the next frame's header; the payload is still unread."""
    return parse_header(bytes(recv_exact(sock, HEADER.size)), limit)


def read_frame(sock: socket.socket, limit: int = MAX_PAYLOAD) -> tuple[int, int, bytes, int]:
    """(type, flags, payload, seq) of the next frame on ``sock``; a declared
    length over ``limit`` raises :class:`FrameTooBig` before the payload is read."""
    ftype, flags, length, seq = read_header(sock, limit)
    return ftype, flags, recv_exact(sock, length) if length else b"", seq


class FrameReader:
    """Frames off one socket through one receive buffer: each ``recv_into`` takes whatever has
    arrived, up to the buffer's free space, so a small frame's header and payload (and the next
    frames behind them) come in one system call, not a header read then a payload read.

    The header is checked (:func:`parse_header`: magic, version, type, flags, the declared length
    against ``limit``) before the payload is asked for: a payload longer than what already
    arrived with it is read only after its length is accepted (the buffer grows for it, at most
    to that length; a buffer over 4 × ``size`` is handed over with that payload and a new one of
    ``size`` bytes takes its place, so a large frame's memory is freed with its payload, as with
    one buffer per frame; frames of up to that size reuse the buffer). Bytes read ahead stay
    in the buffer for the next frame, so every frame of a connection must be read through the
    same reader. A payload is returned as a view into the buffer, valid until the next read:
    decode it (or copy it) first."""

    def __init__(self, sock, size: int = 1 << 15):
        self.sock, self.size = sock, int(size)
        self._buf = bytearray(self.size)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out."""
        return self._end - self._start

    def _fill(self, n: int) -> None:
        """At least ``n`` bytes after the read position (ConnectionError if the peer closes first)."""
        have = self._end - self._start
        if have >= n:
            return
        if len(self._buf) - self._start < n:   # move what is left to the front; grow only for a longer frame
            cap = max(n, self.size)
            if cap != len(self._buf):
                buf = bytearray(cap)
                buf[:have] = self._view[self._start:self._end]
                self._buf, self._view = buf, memoryview(buf)
            else:   # (through bytes: the two ranges may overlap)
                self._buf[:have] = bytes(self._view[self._start:self._end])
            self._start, self._end = 0, have
        while self._end - self._start < n:
            k = self.sock.recv_into(self._view[self._end:])
            if not k:
                got = self._end - self._start
                raise ConnectionError("peer closed the connection" + (
                    f" in the middle of a frame ({got} of {n} bytes)" if got else ""))
            self._end += k

    def header(self, limit: int = MAX_PAYLOAD) -> tuple[int, int, int, int]:
        """(type, flags, length, seq) of the next frame (:func:`parse_header`); its payload is next."""
        have = self._end - self._start
        if len(self._buf) > 4 * self.size and have <= self.size:   # after a large frame
            buf = bytearray(self.size)
            buf[:have] = self._view[self._start:self._end]
            self._buf, self._view, self._start, self._end = buf, memoryview(buf), 0, have
        if self._end == self._start:
            self._start = self._end = 0
        self._fill(HEADER.size)
        h = bytes(self._view[self._start:self._start + HEADER.size])
        r = parse_header(h, limit)
        self._start += HEADER.size
        return r

    def payload(self, length: int) -> memoryview:
        """The next ``length`` bytes (a view into the buffer, valid until the next read)."""
        if not length:
            return memoryview(b"")
        self._fill(length)
        v = self._view[self._start:self._start + length]
        self._start += length
        if len(self._buf) > 4 * self.size:   # a large frame's buffer goes with its payload, freed with it
            rest = self._view[self._start:self._end]
            self._buf = bytearray(max(self.size, len(rest)))
            self._buf[:len(rest)] = rest
            self._view, self._start, self._end = memoryview(self._buf), 0, len(rest)
        return v

    def frame(self, limit: int = MAX_PAYLOAD) -> tuple[int, int, memoryview, int]:
        """(type, flags, payload, seq) of the next frame, as :func:`read_frame` (payload: a view)."""
        ftype, flags, length, seq = self.header(limit)
        return ftype, flags, self.payload(length), seq


def check_version(hello: dict, side: str = "server") -> None:
    """HELLO's ``version`` must be this module's :data:`VERSION` (VersionMismatch otherwise)."""
    v = hello.get("version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise VersionMismatch(f"HELLO has no integer 'version' (got {v!r}); this {side} speaks protocol version "
                              f"{VERSION}", limit=VERSION, actual=v, hint="use client and server of the same nmc release")
    if v != VERSION:
        peer = "client" if side == "server" else "server"
        raise VersionMismatch(f"the {peer} speaks protocol version {v}, this {side} speaks version {VERSION}",
                              limit=VERSION, actual=v, hint="use client and server of the same nmc release")


# ---------------------------------------------------------------- node tables
def pack_table(entries) -> bytes:
    """One window: ``entries`` is ``[(node index, events, graded), ...]``."""
    parts = [_U16.pack(len(entries))]
    for idx, e, graded in entries:
        body = ev.pack(e, graded=bool(graded))
        parts.append(_ENTRY.pack(idx, 1 if graded else 0, 0, len(e)))
        parts.append(body)
    return b"".join(parts)


def unpack_table(buf, n_nodes: int, sizes=None, window: int | None = None, base: int = 0) -> dict[int, np.ndarray]:
    """One window's node table → ``{node index: events}``.

    ``sizes[i]`` (channels of node i) and ``window`` (steps), when given, bound
    ``ch`` and ``t``; ``base`` offsets byte positions in messages.
    """
    buf = memoryview(buf)
    if len(buf) < 2:
        raise EventFormatError(f"event table at byte {base} is shorter than its 2-byte entry count")
    (count,) = _U16.unpack_from(buf, 0)
    off, out = 2, {}
    for _ in range(count):
        if off + _ENTRY.size > len(buf):
            raise EventFormatError(f"event table truncated at byte {base + off} (entry header needs {_ENTRY.size})")
        idx, graded, pad, n = _ENTRY.unpack_from(buf, off)
        if idx >= n_nodes:
            raise EventFormatError(f"node index {idx} at byte {base + off} out of range (there are {n_nodes})",
                                   limit=n_nodes - 1, actual=idx)
        if graded not in (0, 1) or pad:
            raise EventFormatError(f"bad graded flag {graded} / reserved byte {pad} at byte {base + off + 2}")
        off += _ENTRY.size
        size = n * ev.record_size(bool(graded))
        if off + size > len(buf):
            raise EventFormatError(f"node {idx}: {n} events need {size} bytes at byte {base + off} but only "
                                   f"{len(buf) - off} remain")
        try:
            e = ev.unpack(buf[off:off + size], graded=bool(graded), steps=window,
                          n_channels=None if sizes is None else int(sizes[idx]))
        except EventFormatError as x:
            raise EventFormatError(f"node {idx} (records from byte {base + off}): {x.message}", limit=x.limit,
                                   actual=x.actual, hint=x.hint) from None
        out[idx] = ev.join([out[idx], e]) if idx in out else e
        off += size
    if off != len(buf):
        raise EventFormatError(f"{len(buf) - off} trailing bytes after the event table at byte {base + off}")
    return out


def pack_windows(tables: list[bytes]) -> tuple[bytes, int]:
    """Payload and flags for one window (no BATCH) or several (BATCH)."""
    parts, flags = pack_window_parts(tables)
    return b"".join(parts), flags


def pack_window_parts(tables: list[bytes]) -> tuple[list[bytes], int]:
    """:func:`pack_windows` as the list of buffers that make the payload (for :func:`send_frame`,
    which gathers them without joining)."""
    if len(tables) == 1:
        return [tables[0]], 0
    parts = [_U32.pack(len(tables))]
    for t in tables:
        parts += [_U32.pack(len(t)), t]
    return parts, BATCH


def unpack_windows(buf, flags: int, n_nodes: int, sizes=None, window: int | None = None) -> list[dict[int, np.ndarray]]:
    """EVENTS/OUTPUT payload → one ``{node index: events}`` per window."""
    if not flags & BATCH:
        return [unpack_table(buf, n_nodes, sizes, window)]
    buf = memoryview(buf)
    if len(buf) < 4:
        raise EventFormatError("batch shorter than its 4-byte window count")
    (k,) = _U32.unpack_from(buf, 0)
    if k == 0 or k > len(buf) // 6:  # each window needs ≥ 4 + 2 bytes
        raise EventFormatError(f"batch claims {k} windows in {len(buf)} bytes")
    off, out = 4, []
    for w in range(k):
        if off + 4 > len(buf):
            raise EventFormatError(f"batch truncated at byte {off} (window {w} of {k})")
        (n,) = _U32.unpack_from(buf, off)
        off += 4
        if off + n > len(buf):
            raise EventFormatError(f"window {w} of the batch needs {n} bytes at byte {off}, {len(buf) - off} remain")
        out.append(unpack_table(buf[off:off + n], n_nodes, sizes, window, base=off))
        off += n
    if off != len(buf):
        raise EventFormatError(f"{len(buf) - off} trailing bytes after the batch")
    return out



class Tables:
    """An EVENTS/OUTPUT payload decoded whole (:func:`unpack_tables`): ``k`` windows,
    ``events[i]`` node i's events of every window in window order (one array per node),
    ``counts[w, i]`` how many of them window ``w`` holds; ``t`` window-relative, or relative to
    the first window's start when ``absolute``."""

    __slots__ = ("k", "counts", "events", "absolute", "_starts")

    def __init__(self, k: int, counts: np.ndarray, events: list[np.ndarray], absolute: bool):
        self.k, self.counts, self.events, self.absolute = k, counts, events, absolute
        self._starts = None

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def window(self, w: int) -> dict[int, np.ndarray]:
        """``{node index: events}`` of window ``w`` (views into the node arrays)."""
        if self._starts is None:
            self._starts = np.zeros((self.k + 1, self.counts.shape[1]), np.int64)
            np.cumsum(self.counts, axis=0, out=self._starts[1:])
        a, b = self._starts[w], self._starts[w + 1]
        return {i: e[a[i]:b[i]] for i, e in enumerate(self.events)}


def unpack_tables(buf, flags: int, n_nodes: int, sizes, window: int, absolute: bool = False) -> Tables:
    """EVENTS/OUTPUT payload → :class:`Tables` (one array per node for the whole frame), with the
    checks of :func:`unpack_windows` (``sizes`` and ``window`` bound ``ch`` and ``t``): two compiled
    passes over the bytes (:func:`nmc.runtime.event_kernels.decode_tables`: check and count, then
    write), whatever the number of windows; a payload they refuse, or no compiler, goes through
    :func:`unpack_windows`, which raises EventFormatError naming the byte (or decodes it: the
    same events either way)."""
    batch = bool(flags & BATCH)
    k = 1 if not batch else (_U32.unpack_from(buf, 0)[0] if len(buf) >= 4 else 0)
    kern = ev._kernels()
    if kern and 1 <= k <= len(buf) // 6:   # (more windows than 6-byte ones would fit: refused below)
        r = kern.decode_tables(buf, batch, k, np.asarray(sizes, np.int64), int(window), absolute, ev.EVENT_DTYPE)
        if r is not None:
            out, counts = r
            ends = np.cumsum(counts.sum(axis=0)).tolist()
            return Tables(k, counts, [out[a:b] for a, b in zip([0] + ends[:-1], ends)], absolute)
    wins = unpack_windows(buf, flags, n_nodes, sizes, window)
    counts = np.array([[len(w.get(i, ())) for i in range(n_nodes)] for w in wins], np.int64).reshape(len(wins), n_nodes)
    events = []
    for i in range(n_nodes):
        parts = [w.get(i, ev.empty()) for w in wins]
        if absolute:
            parts = [p.copy() for p in parts]
            for j, p in enumerate(parts):
                p["t"] += j * window
        events.append(ev.join(parts))
    return Tables(len(wins), counts, events, absolute)


def pack_tables(events: list[np.ndarray], k: int, window: int, sizes, bounds=None,
                nodes=None) -> tuple[list, int, list[int]]:
    """The payload (as buffers for :func:`send_frame`) and flags of ``k`` windows of ``window``
    steps whose events are given as one array per node (``events[i]``, times relative to the first
    window's start, in window order; or with ``bounds``, window-relative times and ``bounds[i]``
    the k + 1 indices where node i's windows start), and the events per window: each node's
    records encoded in one compiled pass (``t`` window-relative on the wire; graded records for a
    node whose frame has any payload other than 1.0), the window tables' headers around slices of
    them. Events out of window order or refused by the checks of
    :func:`~nmc.runtime.events.window_events` go the per-window way (:func:`pack_table`), which
    raises EventFormatError naming the first bad one (and its node, from ``nodes``)."""
    kern = ev._kernels()
    wires = []
    if kern:
        for i, (e, n) in enumerate(zip(events, sizes)):
            if bounds is None:
                kind = kern.window_kind(e, k * window, n)
                b = kern.window_bounds(e, window, k) if kind else None
                wire = kern.encode(e, kind == 2, window, b) if b is not None else None
            else:
                kind, b = kern.window_kind(e, window, n), bounds[i]
                wire = kern.encode(e, kind == 2) if kind else None
            if wire is None:
                wires = None
                break
            wires.append((memoryview(wire), b, kind == 2))
    if not kern or wires is None:
        return _pack_tables_per_window(events, k, window, sizes, bounds, nodes)
    nodes_ = [(wire, b.tolist(), 1 if graded else 0, ev.record_size(graded)) for wire, b, graded in wires]
    parts = [_U32.pack(k)] if k > 1 else []
    per_window = []
    for w in range(k):
        head = bytearray(_U32.pack(0) + _U16.pack(len(events)) if k > 1 else _U16.pack(len(events)))
        table, size, total = [], 2, 0
        for i, (wire, at, graded, rec) in enumerate(nodes_):
            a, b = at[w], at[w + 1]
            head += _ENTRY.pack(i, graded, 0, b - a)
            size += 8 + (b - a) * rec
            total += b - a
            if b > a:
                table += [head, wire[a * rec:b * rec]]
                head = bytearray()
        if head:
            table.append(head)
        if k > 1:
            _U32.pack_into(table[0], 0, size)   # the table's byte count, ahead of it
        parts += table
        per_window.append(total)
    return parts, BATCH if k > 1 else 0, per_window


def _pack_tables_per_window(events: list[np.ndarray], k: int, window: int, sizes, bounds=None,
                            nodes=None) -> tuple[list, int, list[int]]:
    """:func:`pack_tables` one window at a time (no compiler, or events its fast path refuses):
    each event goes to the window its ``t`` falls in (clipped to the first and last), made
    window-relative (or to the window ``bounds`` give), and each window is checked by
    :func:`~nmc.runtime.events.window_events`."""
    split = []
    for i, e in enumerate(events):
        if bounds is not None:
            split.append([e[bounds[i][j]:bounds[i][j + 1]] for j in range(k)])
            continue
        w = np.clip(e["t"] // window, 0, k - 1) if len(e) else np.zeros(0, np.int64)
        order = np.argsort(w, kind="stable")
        e, w = e[order], w[order]
        e["t"] -= w * window
        at = np.searchsorted(w, np.arange(k + 1))
        split.append([e[at[j]:at[j + 1]] for j in range(k)])
    tables, per_window = [], []
    for j in range(k):
        entries = [(i, *ev.window_events(split[i][j], window, int(n), node=None if nodes is None else nodes[i]))
                   for i, n in enumerate(sizes)]
        tables.append(pack_table(entries))
        per_window.append(sum(len(x) for _, x, _ in entries))
    parts, flags = pack_window_parts(tables)
    return parts, flags, per_window


# ------------------------------------------------------------- other payloads
def modulate_payload(value) -> bytes:
    """A MODULATE payload: ``value`` (a number, or a 1-D array of them) as little-endian
    float64; EventFormatError when it is empty, not 1-D, too long or not finite."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EventFormatError(f"a third factor is a number or a 1-D array of numbers, not {type(value).__name__}",
                               hint="pass a reward (float) or the error per post neuron") from None
    if v.ndim > 1 or not 1 <= v.size <= MAX_MODULATE_VALUES:
        raise EventFormatError(f"a third factor is 1 to {MAX_MODULATE_VALUES} values (a reward, or the error per "
                               f"post neuron), got shape {v.shape}", limit=MAX_MODULATE_VALUES, actual=v.size)
    if not np.all(np.isfinite(v)):
        raise EventFormatError("the third factor is not finite", hint="send finite rewards / errors")
    return v.astype("<f8").tobytes()


def parse_modulate(buf):
    """MODULATE payload → a float (one value) or a float64 array (several); EventFormatError
    on a length that is not 1 to MAX_MODULATE_VALUES float64 values, or a non-finite value."""
    n = len(buf)
    if n == 0 or n % 8 or n > MAX_MODULATE_BYTES:
        raise EventFormatError(f"MODULATE payload of {n} bytes is not 1 to {MAX_MODULATE_VALUES} float64 values",
                               limit=MAX_MODULATE_BYTES, actual=n)
    v = np.frombuffer(buf, dtype="<f8").astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise EventFormatError(f"MODULATE value {int(bad[0])} (byte {8 * int(bad[0])}) is not finite "
                               f"({v[bad[0]]!r}); {bad.size} of {v.size} values are not",
                               hint="send finite rewards / errors")
    return float(v[0]) if v.size == 1 else v


def error_payload(code: int, msg: str) -> bytes:
    return _U16.pack(code) + msg.encode("utf8", "replace")[:4000]


def parse_error(buf: bytes) -> tuple[int, str]:
    if len(buf) < 2:
        raise EventFormatError("ERROR frame shorter than its 2-byte code")
    return _U16.unpack_from(buf)[0], bytes(buf[2:]).decode("utf8", "replace")


def json_payload(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def parse_json(buf: bytes) -> dict:
    try:
        d = json.loads(bytes(buf).decode("utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EventFormatError(f"bad JSON payload ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(d, dict):
        raise EventFormatError("JSON payload is not an object")
    return d


def opt_int(d: dict, key: str, lo: int = 1, hi: int = 2 ** 31) -> int | None:
    """An optional integer field of a JSON payload, checked (EventFormatError otherwise)."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise EventFormatError(f"'{key}' must be an integer in [{lo}, {hi}], got {v!r}", limit=hi, actual=v)
    return v


def opt_str(d: dict, key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise EventFormatError(f"'{key}' must be a string or null, got {type(v).__name__}")
    return v
