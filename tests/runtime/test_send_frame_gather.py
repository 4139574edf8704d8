"""``protocol.send_frame`` writes the header and a frame's buffers with ``sendmsg``: the bytes
on the wire are :func:`protocol.frame`'s, whether one call takes them all or each call
takes a few bytes (a full socket buffer), across buffer boundaries and empty parts."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.runtime import events as ev
from nmc.runtime import protocol as P


class _Partial:
    """A socket whose ``sendmsg`` takes at most ``cap`` bytes a call (None: all)."""

    def __init__(self, cap):
        self.cap, self.out, self.calls = cap, bytearray(), 0

    def sendmsg(self, bufs):
        self.calls += 1
        data = b"".join(bytes(memoryview(b).cast("B")) for b in bufs)
        k = len(data) if self.cap is None else min(self.cap, len(data))
        self.out += data[:k]
        return k


def _parts():
    x = (np.random.default_rng(3).random((12, 32)) < 0.3).astype(np.float32)
    e = ev.from_dense(x)
    parts, flags, _ = P.pack_tables([e, ev.empty()], 3, 4, [32, 8])
    return parts, flags


@pytest.mark.parametrize("cap", [None, 1, 7, 13, 64])
def test_bytes_on_the_wire_are_the_joined_frame(cap):
    parts, flags = _parts()
    joined = b"".join(bytes(p) for p in parts)
    s = _Partial(cap)
    P.send_frame(s, P.OUTPUT, parts, 9, flags)
    assert bytes(s.out) == P.frame(P.OUTPUT, joined, 9, flags)
    if cap is None:
        assert s.calls == 1   # all of it in one call
    else:
        assert s.calls >= len(s.out) // cap


def test_empty_payload_and_empty_parts():
    s = _Partial(3)
    P.send_frame(s, P.STATS, [b"", b"ab", b"", b"c"], 1)
    assert bytes(s.out) == P.frame(P.STATS, b"abc", 1)
    s = _Partial(None)
    P.send_frame(s, P.CLOSE)
    assert bytes(s.out) == P.frame(P.CLOSE, b"")
