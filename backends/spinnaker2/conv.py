"""Convolutional projections (py-spinnaker2 ``Conv2DProjection`` into ``lif_conv2d``).

A neuron layer fed by exactly ``source → [SumPool2d | AvgPool2d] → Conv2d →
layer`` keeps the convolution as a kernel instead of a dense matrix: the chip
stores the int8 kernel once per PE instead of one synapse per (pre, post) pair.

Geometry (``conv`` dict of a :class:`~.program.Projection`): the pre
population is a (C_in, H, W) image in torch order (channel-major); pooled
input ``P[c, y, x] = Σ_{a<pool_y, b<pool_x} s[c, y·pool_y + a, x·pool_x + b]``
(sum pooling, window = stride, no padding, as py-spinnaker2's ``pool_x/pool_y``
conv parameters); then ``I[o, y, x] = Σ_{c, ky, kx} K[o, c, ky, kx] ·
P[c, y·stride − pad_top + ky, x·stride − pad_left + kx]`` (zero outside). An
AvgPool2d in front is folded into the kernel (÷ window) before quantization.

Only unambiguous cases become conv projections: groups = 1, dilation = 1,
equal strides and equal pool sizes along x and y (py-spinnaker2's user scripts
disagree on which NIR axis ``stride_x`` means), numeric padding, a source with a
3-d shape. Anything else is lowered as a dense projection (same arithmetic);
for a grouped or depthwise convolution its zero blocks are not synapses: only
the connections within a group are stored, counted and costed (per PE: 3 bytes
per synapse plus row pointers, see :mod:`.cost`).

Every dense entry of a conv projection is exactly one kernel entry (pool
windows do not overlap), so rounding the kernel and rounding the dense matrix
give the same integers: conv and dense lowerings of one layer are bit-equal.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.ir import Graph
from nmc.semantics import hook_of, register_hook


def _two(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return int(a[0]), int(a[-1])


@register_hook("spinnaker2", "conv_kernel", nir.Conv2d)
def _conv2d_kernel(conv) -> tuple[np.ndarray, int, tuple[int, int]] | None:
    """(float kernel (C_out, C_in, kh, kw), stride, (pad_y, pad_x)) of a convolution a conv projection
    holds as it is (groups = 1, dilation = 1, numeric padding, equal strides), else None."""
    if int(conv.groups) != 1 or _two(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
        return None
    sy, sx = _two(conv.stride)
    if sy != sx:
        return None
    return np.asarray(conv.weight, float), sy, _two(conv.padding)


def _pool_window(node) -> int | None:
    """The square window of a pooling a conv projection's ``pool`` holds (window = stride, no
    padding), else None."""
    kk, ss, pp = _two(node.kernel_size), _two(node.stride), _two(node.padding)
    return kk[0] if kk == ss and pp == (0, 0) and kk[0] == kk[1] else None


@register_hook("spinnaker2", "conv_pool", nir.SumPool2d)
def _sum_pool(node) -> tuple[int, int] | None:
    """(window, divisor folded into the kernel): window sums, nothing to fold."""
    w = _pool_window(node)
    return None if w is None else (w, 1)


@register_hook("spinnaker2", "conv_pool", nir.AvgPool2d)
def _avg_pool(node) -> tuple[int, int] | None:
    """(window, divisor folded into the kernel): window means, the kernel ÷ window area."""
    w = _pool_window(node)
    return None if w is None else (w, w * w)


def detect(graph: Graph, target: str, source: str) -> tuple[np.ndarray, dict] | None:
    """(float kernel (C_out, C_in, kh, kw), geometry) when ``source`` reaches
    ``target`` only through [pool →] a convolution (the node types with a spinnaker2
    ``conv_kernel`` / ``conv_pool`` hook), else None."""
    preds = graph.preds(target)
    kernel = hook_of(graph.nodes[preds[0]], "conv_kernel", "spinnaker2") if len(preds) == 1 else None
    if kernel is None:
        return None
    cname = preds[0]
    held = kernel(graph.nodes[cname])
    if held is None or len(graph.succs(cname)) != 1:
        return None
    k, sy, (py_, px_) = held
    pool = (1, 1)
    before = graph.preds(cname)
    if len(before) != 1:
        return None
    pooling = hook_of(graph.nodes[before[0]], "conv_pool", "spinnaker2")
    if pooling is not None:
        held = pooling(graph.nodes[before[0]])
        if held is None or len(graph.succs(before[0])) != 1:
            return None
        pool = (held[0], held[0])
        if held[1] != 1:
            k = k / held[1]
        before = graph.preds(before[0])
        if len(before) != 1:
            return None
    if before[0] != source:
        return None
    in_shape = tuple(int(v) for v in graph.shape_out(source) or ())
    out_shape = tuple(int(v) for v in graph.shape_out(cname) or ())
    if len(in_shape) != 3 or len(out_shape) != 3 or in_shape[0] != k.shape[1]:
        return None
    if in_shape[1] % pool[0] or in_shape[2] % pool[1]:
        return None  # pooling would drop a border: keep the dense form
    geo = {"in_shape": list(in_shape), "out_shape": list(out_shape), "pool": pool[0], "stride": sy,
           "padding": [py_, py_, px_, px_]}
    return k, geo


def synapses(kernel: np.ndarray, geo: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(post, pre, weight) of every synapse the conv projection makes (vectorised)."""
    co, ci, kh, kw = kernel.shape
    C, H, W = geo["in_shape"]
    _, Ho, Wo = geo["out_shape"]
    p, s = int(geo["pool"]), int(geo["stride"])
    pt, _, pl, _ = geo["padding"]
    Hp, Wp = H // p, W // p
    o, y, x, c, ky, kx, a, b = np.meshgrid(np.arange(co), np.arange(Ho), np.arange(Wo), np.arange(ci),
                                           np.arange(kh), np.arange(kw), np.arange(p), np.arange(p),
                                           indexing="ij", sparse=False)
    iy, ix = y * s - pt + ky, x * s - pl + kx
    ok = (iy >= 0) & (iy < Hp) & (ix >= 0) & (ix < Wp)
    w = kernel[o, c, ky, kx]
    ok &= w != 0
    post = (o * Ho + y) * Wo + x
    pre = (c * H + iy * p + a) * W + ix * p + b
    return post[ok].astype(np.int64), pre[ok].astype(np.int64), w[ok]


def dense(kernel: np.ndarray, geo: dict) -> np.ndarray:
    """The (post, pre) integer matrix the conv projection stands for."""
    n_post = int(np.prod(geo["out_shape"]))
    n_pre = int(np.prod(geo["in_shape"]))
    m = np.zeros((n_post, n_pre), dtype=np.int32)
    post, pre, w = synapses(kernel, geo)
    m[post, pre] = w
    return m


#: below this fraction of nonzero pooled inputs :func:`apply` scatters the active inputs' kernel
#: taps (event-driven, as the chip does) instead of im2col + matmul; both are exact
EVENT_ACTIVITY = 0.3
#: from this batch size on :func:`apply` always scatters (batch innermost, :func:`use_events`)
EVENT_BATCH = 8

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None

if njit is not None:

    @njit(cache=True)
    def _scatter(s, K, C, H, W, p, stride, pt, pl, Ho, Wo, y):
        """y[(o·Ho + oy)·Wo + ox, b] (y overwritten, (O·Ho·Wo, B) float32) = Σ over the pooled
        inputs P[c, iy, ix] nonzero in some sample of K[o, c, ky, kx]·P[b] at the output positions
        its taps reach (padded position iy + pt = oy·stride + ky); P[b] = Σ of the p×p window of
        s[b] (exact counts). The batch is the inner axis: each nonzero kernel tap is read once per
        step for the whole batch (a sample without an event there adds w·0 = +0, which leaves its
        sum unchanged)."""
        B = s.shape[0]
        O, _, kh, kw = K.shape
        Hp, Wp = H // p, W // p
        y[:, :] = 0.0
        col = np.empty(B, np.float32)
        for c in range(C):
            for iy in range(Hp):
                for ix in range(Wp):
                    act = False
                    for b in range(B):
                        v = np.float32(0.0)
                        for a in range(p):
                            r = (c * H + iy * p + a) * W + ix * p
                            for q in range(p):
                                v += s[b, r + q]
                        col[b] = v
                        act = act or v != 0
                    if not act:
                        continue
                    for ky in range(kh):
                        ty = iy + pt - ky
                        if ty < 0 or ty % stride != 0 or ty // stride >= Ho:
                            continue
                        oy = ty // stride
                        for kx in range(kw):
                            tx = ix + pl - kx
                            if tx < 0 or tx % stride != 0 or tx // stride >= Wo:
                                continue
                            ox = tx // stride
                            for o in range(O):
                                w = K[o, c, ky, kx]
                                if w == 0:
                                    continue
                                yr = y[(o * Ho + oy) * Wo + ox]
                                for b in range(B):
                                    yr[b] += w * col[b]
        return y


def use_events(s: np.ndarray) -> bool:
    """Whether :func:`apply` scatters (numba importable, and a batch of at least
    :data:`EVENT_BATCH` rows or under :data:`EVENT_ACTIVITY` of the spikes nonzero): with the
    batch innermost the scatter reads each kernel tap once for the whole batch and beats
    im2col + matmul at any activity from batch 8 on."""
    return njit is not None and (s.shape[0] >= EVENT_BATCH or np.count_nonzero(s) < EVENT_ACTIVITY * s.size)


def scatter_t(kernel_f32, geo: dict, s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Σ W·s as :func:`apply` with ``events``, transposed: (n_post, B) float32, the batch innermost;
    into ``out`` (overwritten) when given."""
    C, H, W = (int(v) for v in geo["in_shape"])
    Ho, Wo = (int(v) for v in geo["out_shape"][1:])
    pt, _, pl, _ = (int(v) for v in geo["padding"])
    K = np.ascontiguousarray(kernel_f32, dtype=np.float32)
    if out is None:
        out = np.empty((K.shape[0] * Ho * Wo, s.shape[0]), np.float32)
    return _scatter(np.ascontiguousarray(s, dtype=np.float32), K, C, H, W, int(geo["pool"]), int(geo["stride"]),
                    pt, pl, Ho, Wo, out)


def apply(kernel_f32, geo: dict, s: np.ndarray, events: bool | None = None) -> np.ndarray:
    """Σ W·s for a batch of 0/1 spike vectors s (B, n_pre) in float32, exact below
    2²⁴ whatever the summation order (integer kernel × spike counts). Sum pooling,
    then either an event-driven scatter of the nonzero pooled inputs' kernel taps
    (``events``; default: :func:`use_events`) or
    zero padding, im2col (``unfold``, a copy) and one matmul (no Winograd/FFT)."""
    B = s.shape[0]
    if events is None:
        events = use_events(s)
    if events:
        return np.ascontiguousarray(scatter_t(kernel_f32, geo, s).T)
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.ascontiguousarray(s, dtype=np.float32)).reshape(B, *geo["in_shape"])
    p = int(geo["pool"])
    if p > 1:
        x = F.avg_pool2d(x, p, p, divisor_override=1)
    pt, pb, pl, pr = geo["padding"]
    x = F.pad(x, (pl, pr, pt, pb))
    k = torch.as_tensor(np.asarray(kernel_f32, np.float32))
    cols = F.unfold(x, k.shape[2:], stride=int(geo["stride"]))      # (B, C_in·kh·kw, Ho·Wo)
    y = k.reshape(k.shape[0], -1) @ cols                              # (B, C_out, Ho·Wo)
    return y.reshape(B, -1).numpy()
