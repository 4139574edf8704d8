"""Wire protocol of ``nmc serve``: small versioned binary frames over TCP.

Every frame: a 16-byte little-endian header, then ``length`` payload bytes::

    0  4s  magic   b"NMCE"
    4  B   version 1
    5  B   type    (below)
    6  H   flags   (0)
    8  I   length  payload bytes (≤ MAX_PAYLOAD)
    12 I   seq     window number (EVENTS / OUTPUT), else 0

Types and payloads:

    HELLO   1  JSON {"version": 1, "token": str|null}        client → server, first frame
    READY   2  JSON {"inputs": {name: size}, "outputs": {...}, "window": n, "device": str}
    EVENTS  3  node table (below): one window of input events  client → server
    OUTPUT  4  node table: that window's output events         server → client
    RESET   5  empty: drop the session's state                 client → server (answered by STATS)
    STATS   6  JSON counters {received, processed, sent, windows, steps}
    ERROR   7  u16 code + UTF-8 message; the sender closes the connection after it
    CLOSE   8  empty: end of session (answered by STATS, then the server closes)

Node table: ``u16 n_nodes``, then per node ``u16 node index, u8 graded, u8 0,
u32 n_events`` followed by the node's events packed by
:func:`nmc.runtime.events.pack` (8 bytes per binary event, 12 per graded).
Node indices follow the order of READY's ``inputs`` / ``outputs``.

Every malformed input raises :class:`~nmc.errors.EventFormatError`; nothing is
silently skipped.
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
HELLO, READY, EVENTS, OUTPUT, RESET, STATS, ERROR, CLOSE = range(1, 9)
NAMES = {HELLO: "HELLO", READY: "READY", EVENTS: "EVENTS", OUTPUT: "OUTPUT", RESET: "RESET", STATS: "STATS",
         ERROR: "ERROR", CLOSE: "CLOSE"}
# error codes
E_MALFORMED, E_TOO_BIG, E_AUTH, E_PROTOCOL, E_RUNTIME = 1, 2, 3, 4, 5


def frame(ftype: int, payload: bytes = b"", seq: int = 0) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise EventFormatError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}",
                               limit=MAX_PAYLOAD, actual=len(payload), hint="send smaller windows")
    return HEADER.pack(MAGIC, VERSION, ftype, 0, len(payload), seq) + payload


def parse_header(h: bytes) -> tuple[int, int, int]:
    """(type, length, seq); raises EventFormatError on a bad header."""
    if len(h) != HEADER.size:
        raise EventFormatError(f"truncated frame header ({len(h)} of {HEADER.size} bytes)")
    magic, version, ftype, _flags, length, seq = HEADER.unpack(h)
    if magic != MAGIC:
        raise EventFormatError(f"bad magic {magic!r} (expected {MAGIC!r}): not an nmc stream")
    if version != VERSION:
        raise EventFormatError(f"protocol version {version} is not supported (this side speaks {VERSION})")
    if ftype not in NAMES:
        raise EventFormatError(f"unknown frame type {ftype}")
    if length > MAX_PAYLOAD:
        raise EventFormatError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                               limit=MAX_PAYLOAD, actual=length)
    return ftype, length, seq


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[int, bytes, int]:
    ftype, length, seq = parse_header(recv_exact(sock, HEADER.size))
    return ftype, recv_exact(sock, length) if length else b"", seq


def pack_table(tables: list[tuple[int, np.ndarray, bool]]) -> bytes:
    parts = [struct.pack("<H", len(tables))]
    for idx, e, graded in tables:
        body = ev.pack(e, graded=graded)
        parts.append(struct.pack("<HBBI", idx, 1 if graded else 0, 0, len(e)))
        parts.append(body)
    return b"".join(parts)


def unpack_table(buf: bytes, n_nodes: int) -> dict[int, np.ndarray]:
    if len(buf) < 2:
        raise EventFormatError("event table shorter than its 2-byte node count")
    (count,) = struct.unpack_from("<H", buf, 0)
    off, out = 2, {}
    for _ in range(count):
        if off + 8 > len(buf):
            raise EventFormatError(f"event table truncated at byte {off}")
        idx, graded, _pad, n = struct.unpack_from("<HBBI", buf, off)
        off += 8
        if idx >= n_nodes:
            raise EventFormatError(f"node index {idx} out of range (the bundle has {n_nodes})", limit=n_nodes - 1,
                                   actual=idx)
        if graded not in (0, 1):
            raise EventFormatError(f"bad graded flag {graded} at byte {off - 6}")
        size = n * (12 if graded else 8)
        if off + size > len(buf):
            raise EventFormatError(f"node {idx}: {n} events need {size} bytes but only {len(buf) - off} remain")
        e = ev.unpack(buf[off:off + size], graded=bool(graded))
        out[idx] = np.concatenate([out[idx], e]) if idx in out else e
        off += size
    if off != len(buf):
        raise EventFormatError(f"{len(buf) - off} trailing bytes after the event table")
    return out


def error_payload(code: int, msg: str) -> bytes:
    return struct.pack("<H", code) + msg.encode("utf8", "replace")[:4000]


def parse_error(buf: bytes) -> tuple[int, str]:
    if len(buf) < 2:
        return E_PROTOCOL, "malformed ERROR frame"
    return struct.unpack_from("<H", buf)[0], buf[2:].decode("utf8", "replace")


def json_payload(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def parse_json(buf: bytes) -> dict:
    try:
        d = json.loads(buf.decode("utf8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventFormatError(f"bad JSON payload ({e})") from None
    if not isinstance(d, dict):
        raise EventFormatError("JSON payload is not an object")
    return d
