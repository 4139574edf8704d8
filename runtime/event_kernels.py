"""Compiled (numba) fast paths of the event conversions a session runs every window.

:func:`nmc.runtime.events.to_dense` and :func:`~nmc.runtime.events.from_dense`
are a dozen numpy calls each (field views, range checks, ``bincount``,
``nonzero``, fancy indexing, casts): at a window of 4 steps × 1024 channels
with ~400 events those fixed costs are most of a local session's time. The
kernels here do each conversion in one pass with the checks folded in
(``from_dense``: one branch-free pass building a bit mask of the non-zeros and
counting them, then one step per set bit writing the event records), and
check and convert a whole array of wire records in one pass when it is
packed or read (:func:`encode`, :func:`decode`, writing the u32 words or the
event fields in place), and check a window before it is sent
(:func:`window_kind`: in range, finite, binary or graded). Whole frames go
through in one call each way: :func:`decode_tables` checks and decodes every
window table of an EVENTS/OUTPUT payload into one event array per node (two
passes: check and count, then write the records), :func:`window_bounds` and
:func:`encode`'s ``period`` let :func:`nmc.runtime.protocol.pack_tables`
encode a node's events of several windows at once. They
only ever take the *accepting* path: when an event or value would be refused
(out of range, not finite, a payload the caller said is binary) they return
``None`` and the caller runs the numpy code, which raises the usual error
naming the first bad event. Results are the same bits: payloads are summed
in float64 in event order, as ``bincount`` does, and events come out in the
row-major (t, ch) order of ``nonzero``.
"""
from __future__ import annotations

import sys

import numpy as np

try:
    from numba import njit
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover - numba is a dependency; the numpy paths stay usable without it
    njit = None

#: the kernels that write event records write their u32 words in host order (the fields are little-endian)
_BIG_ENDIAN = sys.byteorder != "little"

if njit is not None:

    @njit(cache=True)
    def _scatter(t, ch, v, steps, n, out):
        """out[t·n + ch] += v in event order; False at the first event a check refuses."""
        for i in range(t.shape[0]):
            ti, ci, vi = t[i], ch[i], v[i]
            if ti < 0 or ti >= steps or ci >= n or not np.isfinite(vi):
                return False
            out[ti * n + ci] += np.float64(vi)
        return True

    @njit(cache=True)
    def _nonzero_masks(f, masks):
        """Bit w·64 + j of ``masks`` set where ``f[w·64 + j]`` (a flat array) is not zero, and their
        count; -1 when a value is not finite. One branch-free pass (whole 64-value words, then the
        rest)."""
        N = f.shape[0]
        W = N // 64
        finite = True
        for w in range(W):
            m = np.uint64(0)
            for j in range(64):
                x = f[w * 64 + j]
                m |= np.uint64(x != 0) << np.uint64(j)
                finite &= x - x == 0   # False for inf and NaN
            masks[w] = m
        if N > W * 64:
            m = np.uint64(0)
            for j in range(N - W * 64):
                x = f[W * 64 + j]
                m |= np.uint64(x != 0) << np.uint64(j)
                finite &= x - x == 0
            masks[W] = m
        cnt = 0
        for w in range(masks.shape[0]):
            v = masks[w]   # popcount
            v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
            v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
            v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
            cnt += np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))
        return cnt if finite else -1

    @njit(cache=True)
    def _fill_nonzero(f, masks, n, binary_only, out):
        """The values at the set bits of ``masks`` (:func:`_nonzero_masks`) as rows of ``out``, the
        event array's 16-byte records as u32 words (t low, t high, ch, v's float32 bits), row-major
        with ``n`` channels a row: one step per event, not per cell. False at the first value
        refused (not 1 with ``binary_only``, over float32)."""
        bits = np.empty(1, np.float32)
        ubits = bits.view(np.uint32)
        r = 0
        for w in range(masks.shape[0]):
            m = masks[w]
            while m:
                p = w * 64 + np.int64(trailing_zeros(m))
                m &= m - np.uint64(1)
                x = f[p]
                if binary_only and x != 1:
                    return False
                bits[0] = np.float32(x)
                if not np.isfinite(bits[0]):   # overflows the float32 payload
                    return False
                t = p // n
                out[r, 0] = t & 0xFFFFFFFF
                out[r, 1] = t >> 32
                out[r, 2] = p - t * n
                out[r, 3] = ubits[0]
                r += 1
        return True

    @njit(cache=True)
    def _window_kind(t, ch, v, steps, n):
        """0 when an event would be refused (t outside [0, steps), ch >= n, payload not finite),
        else 1 (every payload 1.0: binary records) or 2 (graded records)."""
        graded = False
        for i in range(t.shape[0]):
            if t[i] < 0 or t[i] >= steps or ch[i] >= n or not np.isfinite(v[i]):
                return 0
            graded |= v[i] != 1.0
        return 2 if graded else 1

    @njit(cache=True)
    def _encode(t, ch, v, graded, u, f, bounds, period):
        """Wire records into the u32 words ``u`` (``f``: the same words as float32): per event
        t, ch[, v]; with ``period`` > 0, events ``bounds[w]`` to ``bounds[w + 1]`` are window
        ``w``'s and their ``t`` is written less ``w × period`` (window-relative). False at the
        first event that does not fit (the caller lets pack raise)."""
        w = 3 if graded else 2
        nw = bounds.shape[0] - 1 if period > 0 else 1
        for win in range(nw):
            lo, hi = (bounds[win], bounds[win + 1]) if period > 0 else (0, t.shape[0])
            base = win * period if period > 0 else 0
            for i in range(lo, hi):
                ti, vi = t[i] - base, v[i]
                if ti < 0 or ti > 4294967295 or not np.isfinite(vi) or (not graded and vi != 1.0):
                    return False
                u[i * w] = ti
                u[i * w + 1] = ch[i]
                if graded:
                    f[i * w + 2] = vi
        return True

    @njit(cache=True)
    def _decode(u, f, graded, steps, n, t, ch, v):
        """Wire records (u32 words ``u``, the same as float32 ``f``) into the event fields; False at
        the first record refused (t >= steps, ch >= n, payload not finite; -1: no bound)."""
        w = 3 if graded else 2
        for i in range(t.shape[0]):
            ti, ci = u[i * w], u[i * w + 1]
            if (steps >= 0 and ti >= steps) or (n >= 0 and ci >= n):
                return False
            t[i], ch[i] = ti, ci
            if graded:
                vi = f[i * w + 2]
                if not np.isfinite(vi):
                    return False
                v[i] = vi
            else:
                v[i] = 1.0
        return True


    @njit(cache=True)
    def _rd(b, o, nbytes):
        """Little-endian unsigned integer of ``nbytes`` bytes at byte ``o`` of the u8 array ``b``."""
        x = np.int64(0)
        for j in range(nbytes):
            x |= np.int64(b[o + j]) << (8 * j)
        return x

    @njit(cache=True)
    def _tables(b, batch, n_nodes, sizes, window, counts, out, pos, absolute):
        """Walk an EVENTS/OUTPUT payload (module :mod:`nmc.runtime.protocol`'s layout) in the u8
        array ``b``. ``pos`` None-like (length 0): first pass, check every byte the protocol's
        decoder checks and count the events of node i in window w into ``counts[w, i]``; else
        second pass: write each record as row ``pos[node]`` (advancing it) of ``out``, the event
        array's 16-byte records as u32 words (t low, t high, ch, v's bits), ``t`` made batch-relative
        (``w·window + t``) when ``absolute``. False at the first thing the decoder would refuse."""
        L = b.shape[0]
        fill = pos.shape[0] > 0
        if batch:
            if L < 4:
                return False
            k = _rd(b, 0, 4)
            if k == 0 or k > L // 6 or k != counts.shape[0]:
                return False
            off = 4
        else:
            k = 1
            off = 0
        for w in range(k):
            if batch:
                if off + 4 > L:
                    return False
                n = _rd(b, off, 4)
                off += 4
                if off + n > L:
                    return False
                end = off + n
            else:
                end = L
            if off + 2 > end:
                return False
            count = _rd(b, off, 2)
            off += 2
            for _ in range(count):
                if off + 8 > end:
                    return False
                idx = _rd(b, off, 2)
                graded = b[off + 2]
                if idx >= n_nodes or graded > 1 or b[off + 3] != 0:
                    return False
                ne = _rd(b, off + 4, 4)
                off += 8
                rec = 12 if graded else 8
                if off + ne * rec > end:
                    return False
                lim = sizes[idx]
                for r in range(ne):
                    o = off + r * rec
                    t = _rd(b, o, 4)
                    c = _rd(b, o + 4, 4)
                    v = np.int64(0x3F800000)   # 1.0f
                    if graded:
                        v = _rd(b, o + 8, 4)
                        if v & 0x7F800000 == 0x7F800000:   # inf or NaN
                            return False
                    if t >= window or c >= lim:
                        return False
                    if fill:
                        p = pos[idx]
                        ta = t + w * window if absolute else t
                        out[p, 0] = ta & 0xFFFFFFFF
                        out[p, 1] = ta >> 32
                        out[p, 2] = c
                        out[p, 3] = v
                        pos[idx] = p + 1
                if not fill:
                    counts[w, idx] += ne
                off += ne * rec
            if off != end:
                return False
        return off == L


def available() -> bool:
    return njit is not None


def to_dense_f64(t: np.ndarray, ch: np.ndarray, v: np.ndarray, steps: int, n: int) -> np.ndarray | None:
    """Flat float64 (steps·n) sums of the payloads, or None when an event would be refused."""
    out = np.zeros(steps * n, np.float64)
    return out if _scatter(t, ch, v, steps, n, out) else None


def nonzero_events(flat: np.ndarray, binary_only: bool, dtype: np.dtype) -> np.ndarray | None:
    """The non-zeros of a C-contiguous float (T, n) array as an event array of ``dtype`` (fields
    t, ch, v in 16-byte records), row-major: a bit mask of the non-zeros and their count, then one
    step per event writing its record; None when a value would be refused (not finite, over
    float32, or not 1 with ``binary_only``)."""
    if dtype.itemsize != 16 or _BIG_ENDIAN:
        return None
    f = flat.reshape(-1)
    masks = np.empty((f.shape[0] + 63) // 64, np.uint64)
    k = _nonzero_masks(f, masks)
    if k < 0:
        return None
    out = np.empty(k, dtype)
    ok = _fill_nonzero(f, masks, flat.shape[1] if flat.ndim == 2 else 1, bool(binary_only),
                       out.view(np.uint32).reshape(-1, 4))
    return out if ok else None


def window_kind(ev: np.ndarray, steps: int, n: int) -> int:
    """0: an event of ``ev`` would be refused in a window of ``steps`` × ``n`` channels (let the
    numpy checks raise); 1: all binary; 2: graded payloads."""
    return int(_window_kind(ev["t"], ev["ch"], ev["v"], int(steps), int(n)))


_NO_BOUNDS = np.zeros(1, np.int64)


def encode(ev: np.ndarray, graded: bool, period: int = 0, bounds: np.ndarray | None = None) -> bytes | None:
    """Wire records of ``ev`` (little-endian u32 t, u32 ch[, f32 v]), or None when one does not fit;
    with ``period`` > 0 and ``bounds`` (:func:`window_bounds`), several windows' events written
    window-relative (window w's ``t`` less w × ``period``)."""
    u = np.empty(len(ev) * (3 if graded else 2), "<u4")
    b = _NO_BOUNDS if bounds is None or period <= 0 else bounds
    ok = _encode(ev["t"], ev["ch"], ev["v"], bool(graded), u, u.view("<f4"), b, int(period) if bounds is not None else 0)
    return u.tobytes() if ok else None


if njit is not None:

    @njit(cache=True)
    def _window_bounds(t, window, bounds):
        """``bounds[w]``: index of the first event at or after window ``w`` (windows of ``window``
        steps, ``bounds`` of length k + 1); False when ``t`` is not in window order or outside
        the k windows."""
        k = bounds.shape[0] - 1
        w = 0
        end = window   # end of window w (no division: the windows are walked in order)
        bounds[0] = 0
        for i in range(t.shape[0]):
            ti = t[i]
            if ti < end - window or ti >= k * window:   # before the current window, or after the last
                return False
            while ti >= end:
                w += 1
                end += window
                bounds[w] = i
        while w < k:
            w += 1
            bounds[w] = t.shape[0]
        return True


def window_bounds(ev: np.ndarray, window: int, k: int) -> np.ndarray | None:
    """Where each of ``k`` windows of ``window`` steps starts in ``ev`` (times relative to the first
    window, events in window order: k + 1 indices), or None when they are not."""
    bounds = np.empty(k + 1, np.int64)
    return bounds if _window_bounds(ev["t"], int(window), bounds) else None


def decode(data, graded: bool, steps: int | None, n: int | None, dtype: np.dtype) -> np.ndarray | None:
    """Wire records (a whole number of them) → an event array of ``dtype``, or None when a record
    would be refused (the caller's checks then raise, naming it)."""
    u = np.frombuffer(data, "<u4")
    out = np.empty(len(u) // (3 if graded else 2), dtype)
    ok = _decode(u, u.view("<f4"), bool(graded), -1 if steps is None else int(steps), -1 if n is None else int(n),
                 out["t"], out["ch"], out["v"])
    return out if ok else None


#: windows × nodes of a payload's count table at most on the compiled path (larger: the numpy path)
MAX_TABLE_CELLS = 1 << 16


def decode_tables(payload, batch: bool, k: int, sizes: np.ndarray, window: int, absolute: bool,
                  dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """An EVENTS/OUTPUT payload of ``k`` windows (``batch``: with the BATCH layout) → ``(events,
    counts)``: one event array holding node 0's events of every window, then node 1's, … (each
    node's in window order, then table-entry order, as the per-window decoder concatenates them),
    and ``counts[w, i]``, the events of node ``i`` in window ``w``; ``t`` window-relative, or
    relative to the first window's start with ``absolute``. Two compiled passes (check and count,
    then write); None when the payload would be refused (the caller's decoder then raises, naming
    the byte)."""
    n_nodes = len(sizes)
    if dtype.itemsize != 16 or _BIG_ENDIAN or k < 1 or k * n_nodes > MAX_TABLE_CELLS:
        return None
    b = np.frombuffer(payload, np.uint8)
    counts = np.zeros((k, n_nodes), np.int64)
    none = np.empty(0, np.int64)
    words = np.empty((0, 4), np.uint32)
    if not _tables(b, batch, n_nodes, sizes, window, counts, words, none, absolute):
        return None
    per_node = counts.sum(axis=0)
    pos = np.zeros(n_nodes, np.int64)
    np.cumsum(per_node[:-1], out=pos[1:])
    out = np.empty(int(per_node.sum()), dtype)
    _tables(b, batch, n_nodes, sizes, window, counts, out.view(np.uint32).reshape(-1, 4), pos, absolute)
    return out, counts
