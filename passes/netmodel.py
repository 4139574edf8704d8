"""The neuron-level network model the placement passes work on.

:func:`build_network` turns a :class:`~nmc.ir.Graph` into a :class:`Network`:

* **units**: every neuron of every *unit node* — the graph's Input nodes
  (host sources, never placed) and its neuron nodes (``nmc.nodes.is_neuron``,
  placed) — numbered globally in graph node order;
* ``A``: sparse (N × N) synapse counts, ``A[t, s]`` = synapses from unit s to
  unit t. Built by walking back from each neuron node through non-unit nodes
  (Affine/Linear/Conv1d/Conv2d/pooling/Flatten/Scale/Delay/Threshold),
  multiplying their sparse connection patterns. An EGRU's internal input
  weights (3 gates) and its recurrent weights (a self-projection) are included;
* per-unit synapse bytes (the target model's byte model,
  :meth:`nmc.target_model.TargetModel.synapse_bytes`; for a target that stores
  no zero weights, ``TargetModel.stores_zero_weights``, counted on the synapses
  whose float weight is non-zero), per placed node the
  bytes a core pays once per run of its units (``run_bytes``), distinct
  fan-in, expected synaptic events per step (``work``) and firing ``rate``.

Every builder takes the :class:`~nmc.target_model.TargetModel` (or bare
:class:`~nmc.target_model.CoreLimits`, read with the generic model).

Rates (events per step) come from one run of the reference simulator on the
calibration data (every neuron node recorded; a unit's rate is the fraction of
(step, batch) samples where its output is non-zero). The passes get that data
from :func:`activity_inputs`: ``--calibrate`` data when given, else a seeded
synthetic probe (:func:`nmc.passes.fidelity.layer_inputs`: Bernoulli(0.2)
spikes, :data:`PROBE_STEPS` steps, 4 samples) — an estimate, stated in the
placement report — and only with ``worst_case`` (``--worst-case``) no data:
uniform rates of 1.0 (every source fires every step, the bound).

Sharing: the synapse structure (everything but the rates) depends only on the
nodes, edges, ``Quant``/``Sparsity`` annotations and the core limits.
:func:`network_for` keeps it in the pass context's cache under
:func:`structure_key` (a digest of exactly those inputs), so partition, place
and route build it once per compile; a pass that changes any of them changes
the key and the next reader rebuilds. Rates are never cached: each caller
states where they come from (simulation or ``Placement.rate``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp

from nmc.annotations import Quant, Sparsity
from nmc.errors import GraphError, UnsupportedNodeError
from nmc.ir import Graph
from nmc import semantics
from nmc.nodes import EGRU, is_neuron, is_weight
from nmc.readonly import frozen
from nmc.rowblocks import row_blocks
from nmc.semantics import Kind

from nmc.target_model import CoreLimits, TargetModel


@dataclass
class Network:
    unit_names: list[str]          # Input + neuron nodes, graph order
    unit_offset: np.ndarray        # start of each unit node (len + 1)
    unit_placed: np.ndarray        # bool per unit node (neuron nodes)
    A: sp.csr_matrix               # (N, N) synapse counts, A[target, source]
    bytes_: np.ndarray             # per unit: synapse (+ state) bytes
    fan_in: np.ndarray             # per unit: distinct sources
    work: np.ndarray               # per unit: expected synaptic events per step
    rate: np.ndarray               # per unit: events per step
    pop_bits: list[int] = field(default_factory=list)   # dominant weight bits per placed node
    rates_from: str = "uniform"
    key: str = ""                  # structure_key of the graph it was built from ("" when not computed)
    run_bytes: list = field(default_factory=list)      # per placed node: bytes paid once per run on a core
    work_model: Any = field(default=None, repr=False)   # (A, rate[, event_work]) -> work: the target model's work model
    event_work: Any = field(default=None, repr=False)   # per unit: work per synaptic event (None: 1 each)
    dense_rows: list = field(default_factory=list)   # (r0, r1, c0, c1): rows r0:r1 of A hold exactly columns c0:c1, ascending, each 1

    def run_bytes_of(self, k: int) -> float:
        """Bytes a core pays once per run of placed node k's units (0 for most node kinds)."""
        return float(self.run_bytes[k]) if k < len(self.run_bytes) else 0.0

    def __post_init__(self):
        self.pop_units = [i for i, p in enumerate(self.unit_placed) if p]
        self.pop_names = [self.unit_names[i] for i in self.pop_units]
        self.placed_mask = np.zeros(self.n_units, dtype=bool)
        for i in self.pop_units:
            self.placed_mask[self.unit_offset[i]:self.unit_offset[i + 1]] = True
        self._AT = None
        #: values derived from this model and its rates, by key (e.g. :func:`nmc.passes.rules.cores_lower_bound`);
        #: a model is not changed once built, and :meth:`with_rates` starts a new one empty
        self.memo: dict = {}

    @property
    def n_units(self) -> int:
        return int(self.unit_offset[-1])

    @property
    def placed_count(self) -> int:
        return int(self.placed_mask.sum())

    def pop_slice(self, k: int) -> slice:
        i = self.pop_units[k]
        return slice(int(self.unit_offset[i]), int(self.unit_offset[i + 1]))

    def pop_size(self, k: int) -> int:
        s = self.pop_slice(k)
        return s.stop - s.start

    @property
    def AT(self) -> sp.csr_matrix:
        """(N, N) source → target pattern (csr, rows = sources, column indices sorted)."""
        if self._AT is None:
            AT = self.A.T.tocsr()
            if not AT.has_sorted_indices:
                AT.sort_indices()
            self._AT = AT
        return self._AT

    def with_rates(self, rate: np.ndarray, rates_from: str) -> "Network":
        """This network with other rates (work recomputed); shares A, its transpose and the bytes."""
        rate = np.asarray(rate, dtype=np.float64)
        if self.work_model is None:
            work = np.asarray(self.A @ rate, np.float64) * (1.0 if self.event_work is None else self.event_work)
        else:
            work = self.work_model(self.A, rate, self.event_work, dense_rows=self.dense_rows)
        out = replace(self, rate=rate, rates_from=rates_from, work=work)
        out._AT = self.AT
        return out

    @property
    def n_sources_used(self) -> int:
        return int(np.count_nonzero(np.diff(self.AT.indptr)))

    def unit_pop(self) -> np.ndarray:
        """Placed-node index per unit (-1 for host inputs)."""
        out = np.full(self.n_units, -1, dtype=np.int64)
        for k in range(len(self.pop_names)):
            out[self.pop_slice(k)] = k
        return out


# ------------------------------------------------------ connection patterns
def _pair(v, n=2):
    a = np.asarray(v).reshape(-1)
    return tuple(int(a[min(i, a.size - 1)]) for i in range(n))


def _conv_pattern(in_shape, out_shape, kernel, stride, padding, dilation, groups, wmask=None) -> sp.csr_matrix:
    """Pattern (out_flat × in_flat) of an N-d (1 or 2 spatial dims) convolution,
    vectorised. ``kernel`` = (Cout, Cin/g, *k); ``wmask`` (same shape) keeps
    only non-zero weights (CSR case)."""
    cin, *isp = in_shape
    cout, *osp = out_shape
    nd = len(isp)
    kin = kernel[1]
    ks = kernel[2:]
    co = np.arange(cout)
    out_idx = np.arange(int(np.prod(out_shape))).reshape(out_shape)
    # broadcast grids: (cout, *osp, kin, *ks)
    shp = (cout, *osp, kin, *ks)
    grids = np.meshgrid(*[np.arange(s) for s in shp], indexing="ij", sparse=True)
    g_co, g_o, g_ci, g_k = grids[0], grids[1:1 + nd], grids[1 + nd], grids[2 + nd:]
    per_group_out = cout // groups
    ci = (g_co // per_group_out) * kin + g_ci
    valid = np.ones(shp, dtype=bool)
    pos = []
    for d in range(nd):
        p = g_o[d] * stride[d] - padding[d] + g_k[d] * dilation[d]
        valid &= (p >= 0) & (p < isp[d])
        pos.append(p)
    if wmask is not None:
        wm = np.asarray(wmask, dtype=bool)  # (cout, kin, *ks) -> broadcast
        wm = wm.reshape(cout, *([1] * nd), kin, *ks)
        valid &= wm
    in_flat = ci
    for d in range(nd):
        in_flat = in_flat * isp[d] + pos[d]
    in_flat = np.broadcast_to(in_flat, shp)[valid]
    rows = np.broadcast_to(out_idx.reshape(cout, *osp, *([1] * (1 + nd))), shp)[valid]
    n_out, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))
    m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows.astype(np.int64), in_flat.astype(np.int64))),
                      shape=(n_out, n_in))
    m.sum_duplicates()
    return m


def _padding(pad, ks, dil, nd):
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * nd
        if pad == "same":
            return tuple((k - 1) * d // 2 for k, d in zip(ks, dil))
        raise UnsupportedNodeError(f"unknown padding {pad!r}")
    return _pair(pad, nd)


def _is_sparse(g: Graph, name: str) -> bool:
    """CSR storage: a Sparsity annotation asking for it, or a scipy-sparse weight."""
    if sp.issparse(getattr(g.nodes[name], "weight", None)):
        return True
    s = g.ann(name, Sparsity)
    return s is not None and (float(s.density) < 1.0 or str(s.format).lower() in ("csr", "ell", "sparse"))


def _dense_pattern(n_out: int, n_in: int) -> sp.csr_matrix:
    """All-ones (n_out × n_in) pattern built directly in CSR form (no dense scan)."""
    idx = np.int64 if n_out * n_in >= 2 ** 31 else np.int32
    return sp.csr_matrix((np.ones(n_out * n_in, np.float32), np.tile(np.arange(n_in, dtype=idx), n_out),
                          np.arange(0, n_out * n_in + 1, n_in, dtype=idx)), shape=(n_out, n_in))


def _mask(g: Graph, name: str, w: np.ndarray, nonzero: bool = False) -> np.ndarray | None:
    """Non-zero pattern of a sparse weight node (Sparsity.mask, else w != 0); None when dense.
    ``nonzero``: of those synapses, the ones whose float weight is non-zero (the stored synapses
    of a target that stores no zero weights, ``TargetModel.stores_zero_weights``); None when
    that is every weight."""
    m = _structural_mask(g, name, w)
    if not nonzero:
        return m
    m = w != 0 if m is None else m & (w != 0)
    return None if m.all() else m


def _mask_csr(g: Graph, name: str, w: np.ndarray, nonzero: bool = False) -> sp.csr_matrix | None:
    """:func:`_mask` of a 2-d weight as a CSR 0/1 pattern (float32 ones, sorted columns), built
    one row block at a time (:func:`nmc.rowblocks.row_blocks`): no boolean or float matrix of
    the weight's size exists at once (10⁸ weights: 100 MB of bool and 400 MB of float32 before)."""
    if not _is_sparse(g, name) and not nonzero:
        return None
    whole = None   # the structural mask's source: Sparsity.mask, Quant.w_int, else the weight
    if _is_sparse(g, name):
        s, q = g.ann(name, Sparsity), g.ann(name, Quant)
        if s.mask is not None and np.shape(s.mask) == w.shape:
            whole = ("mask", np.asarray(s.mask))
        elif q is not None and q.w_int is not None and np.shape(q.w_int) == w.shape:
            whole = ("nz", np.asarray(q.w_int))
        else:
            whole = ("nz", w)
    counts, cols = [], []
    for rb in row_blocks(w.shape):
        m = None if whole is None else (whole[1][rb].astype(bool) if whole[0] == "mask" else whole[1][rb] != 0)
        if nonzero:
            m = w[rb] != 0 if m is None else m & (w[rb] != 0)
        cnt = np.count_nonzero(m, axis=1)   # the row block's columns from one flat scan (no row-index array)
        flat = np.flatnonzero(m)
        counts.append(cnt)
        cols.append(flat - np.repeat(np.arange(m.shape[0], dtype=np.int64) * m.shape[1], cnt))
    nnz = int(sum(c.size for c in cols))
    if nonzero and nnz == w.size:   # every weight is a stored synapse: the dense pattern (as _mask)
        return None
    idx = np.int64 if max(nnz, w.shape[1]) >= 2 ** 31 else np.int32
    indptr = np.zeros(w.shape[0] + 1, idx)
    np.cumsum(np.concatenate(counts) if counts else np.zeros(0, idx), out=indptr[1:])
    indices = np.concatenate(cols).astype(idx, copy=False) if cols else np.zeros(0, idx)
    return sp.csr_matrix((np.ones(nnz, np.float32), indices, indptr), shape=w.shape)


def weight_mask(g: Graph, name: str) -> np.ndarray | None:
    """The synapses of weight node ``name`` as a boolean array of its weight's shape
    (:func:`op_pattern`'s structural pattern), None when every weight is one."""
    return _structural_mask(g, name, np.asarray(g.nodes[name].weight))


def _structural_mask(g: Graph, name: str, w: np.ndarray) -> np.ndarray | None:
    if not _is_sparse(g, name):
        return None
    s = g.ann(name, Sparsity)
    if s.mask is not None and np.shape(s.mask) == w.shape:
        return np.asarray(s.mask, dtype=bool)
    q = g.ann(name, Quant)
    if q is not None and q.w_int is not None and np.shape(q.w_int) == w.shape:
        return np.asarray(q.w_int) != 0
    return w != 0


# Connection patterns per node type: the shared ``connections`` hook ``(g, name, node, nonzero)`` of
# each linear map a placement counts synapses through (sparse (out_flat × in_flat), 1 per connection).
@semantics.register_hook(None, "connections", nir.Affine, nir.Linear)
def _dense_connections(g: Graph, name: str, node, nonzero: bool) -> sp.csr_matrix:
    if sp.issparse(node.weight):   # scipy-sparse weights: the stored non-zeros are the synapses
        m = sp.csr_matrix(node.weight, copy=True)
        m.eliminate_zeros()
        m.sum_duplicates()
        m.data = np.ones(m.nnz, np.float32)
        return m
    m = _mask_csr(g, name, np.asarray(node.weight), nonzero)
    return _dense_pattern(int(np.prod(g.shape_out(name))), int(np.prod(g.shape_in(name)))) if m is None else m


@semantics.register_hook(None, "connections", nir.Conv1d, nir.Conv2d)
def _conv_connections(g: Graph, name: str, node, nonzero: bool) -> sp.csr_matrix:
    w = np.asarray(node.weight)
    nd = w.ndim - 2
    ks = w.shape[2:]
    dil = _pair(node.dilation, nd)
    return _conv_pattern(g.shape_in(name), g.shape_out(name), w.shape, _pair(node.stride, nd),
                         _padding(node.padding, ks, dil, nd), dil, int(node.groups), _mask(g, name, w, nonzero))


@semantics.register_hook(None, "connections", nir.SumPool2d, nir.AvgPool2d)
def _pool_connections(g: Graph, name: str, node, nonzero: bool) -> sp.csr_matrix:
    c = g.shape_in(name)[0]
    ks = _pair(node.kernel_size)
    return _conv_pattern(g.shape_in(name), g.shape_out(name), (c, 1, *ks), _pair(node.stride),
                         _pair(node.padding), (1, 1), c)


@semantics.register_hook(None, "connections", nir.Scale)
def _scale_connections(g: Graph, name: str, node, nonzero: bool) -> sp.csr_matrix:
    n_out = int(np.prod(g.shape_out(name)))
    s = np.broadcast_to(np.asarray(node.scale, dtype=float).reshape(-1), (n_out,)) if np.size(node.scale) in (1, n_out) else np.ones(n_out)
    return sp.diags((s != 0).astype(np.float32), format="csr")


def op_pattern(g: Graph, name: str, nonzero: bool = False) -> sp.csr_matrix | None:
    """Sparse (out_flat × in_flat) pattern of a non-unit node (None: the identity), by its type's
    ``connections`` hook; ``nonzero``: a weight node's zero weights are left out (the stored synapses
    of a target that stores non-zeros only, ``TargetModel.stores_zero_weights``)."""
    node = g.nodes[name]
    connections = semantics.hook_of(node, "connections")
    if connections is not None:
        return connections(g, name, node, nonzero)
    if semantics.kind_of(node) in (Kind.INDEX, Kind.ELEMENTWISE) or isinstance(node, nir.Output) \
            or type(node).__name__ == "Identity":
        n_in = int(np.prod(g.shape_in(name)))
        n_out = int(np.prod(g.shape_out(name)))
        if n_in != n_out:
            raise GraphError(f"{type(node).__name__} changes the size {n_in} -> {n_out}", node=name)
        return None
    raise UnsupportedNodeError(f"placement has no connection model for {type(node).__name__}", node=name,
                               hint="remove or lower the node before partitioning")


# ------------------------------------------------------------- build
def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    """The 0/1 pattern of ``m`` (explicit zeros dropped)."""
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    return m


def _mul(a: sp.csr_matrix | None, b: sp.csr_matrix | None) -> sp.csr_matrix | None:
    """Product of connection patterns, None standing for the identity (skips copies of big patterns)."""
    if a is None:
        return b
    if b is None:
        return a
    return (a @ b).tocsr()


@dataclass
class _Term:
    src: str
    m: sp.csr_matrix | None   # (size of the node it leads into × source size), counts; None = identity
    bits: int | None
    sparse: bool
    width: int            # input width of the weight node (for index bits)


def _weight_bits(g: Graph, name: str) -> int | None:
    q = g.ann(name, Quant)
    return int(q.bits) if q is not None else None


def _array_digest(a: np.ndarray, memo: dict | None) -> bytes:
    """SHA-1 of ``a``'s bytes (object arrays: of their repr). With ``memo`` (the pass context's
    :attr:`~nmc.passes.manager.PassContext.digests`), the digest of a read-only array
    (:func:`nmc.readonly.frozen`) is computed once and kept under ``id(a)`` with the array itself (so the
    id is not reused while the entry lives): the pass manager holds node arrays read-only while
    passes run and drops the memo when it makes them writable again, so an entry never outlives
    its array's content. Writable arrays are hashed on every call."""
    hit = memo.get(id(a)) if memo is not None else None
    if hit is not None and hit[0] is a and frozen(a):
        return hit[1]
    c = np.ascontiguousarray(a)
    d = hashlib.sha1(c.reshape(-1).view(np.uint8) if c.dtype != object else repr(c.tolist()).encode()).digest()
    if memo is not None and frozen(a):
        memo[id(a)] = (a, d)
    return d


def _feed(h, v, memo: dict | None = None) -> None:
    """Hash ``v`` (arrays by dtype, shape and the digest of their bytes, :func:`_array_digest`;
    scipy-sparse by its arrays)."""
    if isinstance(v, np.ndarray):
        h.update(f"a{v.dtype}{v.shape}".encode())
        h.update(_array_digest(v, memo))
    elif sp.issparse(v):
        c = v.tocsr()
        h.update(f"s{c.shape}".encode())
        for a in (c.data, c.indices, c.indptr):
            _feed(h, np.asarray(a))
    elif isinstance(v, dict):
        h.update(b"{")
        for k in sorted(v, key=str):
            h.update(str(k).encode())
            _feed(h, v[k], memo)
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _feed(h, x, memo)
        h.update(b"]")
    else:
        h.update(repr(v).encode())


def as_target(limits: CoreLimits | TargetModel, ctx=None) -> TargetModel:
    """A target model: ``limits`` itself, else the pass context's target model
    (:meth:`~nmc.passes.manager.PassContext.target_model`) with exactly these
    limits, else (no context) the generic model with them."""
    if isinstance(limits, TargetModel):
        return limits
    if ctx is not None:
        return ctx.target_model().for_limits(limits)
    return TargetModel(None, limits)


def structure_key(g: Graph, limits: CoreLimits | TargetModel, digests: dict | None = None) -> str:
    """Digest of everything :func:`build_structure` reads: every node's type and
    parameters, the edges, the ``Quant`` and ``Sparsity`` annotations and the limits.
    ``digests``: the memo of read-only arrays' digests (:func:`_array_digest`; the pass context's),
    so a request whose weights no pass replaced makes no pass over them (the same key either way)."""
    h = hashlib.sha1()   # a content fingerprint (not security): the fastest digest here
    for name, node in g.nodes.items():
        h.update(f"<{name}:{type(node).__module__}.{type(node).__qualname__}>".encode())
        _feed(h, {k: v for k, v in vars(node).items() if not isinstance(v, nir.NIRNode)}, digests)
    _feed(h, list(g.edges))
    for name in g.nodes:
        for cls in (Quant, Sparsity):
            a = g.ann(name, cls)
            if a is not None:
                h.update(f"<{name}:{cls.kind}>".encode())
                _feed(h, a.fields(), digests)
    h.update(repr(limits).encode())
    return h.hexdigest()


#: Steps of the synthetic activity probe used when no calibration data is given.
PROBE_STEPS = 100
WORST_CASE = "uniform"


def activity_inputs(g: Graph, ctx) -> tuple[dict | None, str | None]:
    """(inputs, what they are) that the placement passes estimate activity on:
    ``ctx.data``; else, unless the ``worst_case`` option is set, the seeded
    synthetic probe; else (None, None) — uniform rates, the worst case."""
    if ctx is None:
        return None, None
    if ctx.data:
        return ctx.data, None
    if ctx.options.get("worst_case"):
        return None, None
    from .fidelity import layer_inputs

    key = ("probe", tuple(g.inputs), tuple(tuple(g.shape_out(k)) for k in g.inputs), ctx.seed)
    arrs, what = ctx.cached("activity_probe", key, lambda: layer_inputs(g, None, PROBE_STEPS, ctx.seed))
    return arrs, (f"estimate from a synthetic probe ({what}, {PROBE_STEPS} steps, seed {ctx.seed}); "
                  "--calibrate D.npz for measured activity, --worst-case for the bound")


def network_for(g: Graph, limits: CoreLimits | TargetModel, ctx=None, data: dict | None = None, rate_steps: int = 200,
                from_placement: bool = False, data_source: str | None = None) -> Network:
    """:func:`build_network`, with the structure shared through ``ctx.cache``
    (see module docstring); without a context it is built afresh. ``data_source``
    names where ``data`` comes from when it is not calibration data (the probe)."""
    if ctx is None:
        return build_network(g, limits, data, rate_steps, from_placement)
    target = as_target(limits, ctx)
    key = structure_key(g, target, ctx.digests)
    base = ctx.cached("netmodel", key, lambda: replace(build_structure(g, target), key=key))
    return _with_rates(base, g, data, rate_steps, from_placement, data_source)


def _with_rates(base: Network, g: Graph, data, rate_steps: int, from_placement: bool,
                data_source: str | None = None) -> Network:
    units = base.unit_names
    sizes = np.diff(base.unit_offset).tolist()
    short = ""
    if from_placement:
        rate, src = placement_rates(g, units, sizes, data)
    else:
        rate, src, short = unit_rates(g, units, sizes, data, rate_steps)
    return base.with_rates(rate, (data_source if (data_source and data) else src) + short)


def build_network(g: Graph, limits: CoreLimits | TargetModel, data: dict | None = None, rate_steps: int = 200,
                  from_placement: bool = False) -> Network:
    """Extract the :class:`Network` of ``g`` (see module docstring).

    ``from_placement``: take the neuron rates from the ``Placement.rate``
    annotations (written by ``partition``) instead of simulating again; host
    input rates are then read from ``data`` directly (1.0 without data)."""
    return _with_rates(build_structure(g, limits), g, data, rate_steps, from_placement)


def _terms_builder(g: Graph, uidx: dict, sizes: list, nonzero: bool):
    """``terms_into(name)``: the terms giving the output of ``name`` as a function of unit
    outputs (memoised); ``nonzero``: weight nodes' zero weights are no synapses (:func:`op_pattern`)."""
    memo: dict[str, list[_Term]] = {}
    visiting: set[str] = set()

    def terms_into(name: str) -> list[_Term]:
        if name in uidx:
            n = sizes[uidx[name]]
            return [_Term(name, None, None, False, n)]
        if name in memo:
            return memo[name]
        if name in visiting:
            raise GraphError("a cycle without any neuron node cannot be placed", node=name)
        visiting.add(name)
        M = op_pattern(g, name, nonzero)
        node = g.nodes[name]
        is_w = is_weight(node)
        out = []
        for p in g.preds(name):
            for t in terms_into(p):
                m = _mul(M, t.m)
                if is_w:
                    out.append(_Term(t.src, m, _weight_bits(g, name), _is_sparse(g, name), M.shape[1]))
                else:
                    out.append(_Term(t.src, m, t.bits, t.sparse, t.width))
        visiting.discard(name)
        memo[name] = out
        return out

    return terms_into


def _has_zero_weights(g: Graph) -> bool:
    """Whether a weight node (Affine/Linear/Conv, weights as an array) holds a zero weight."""
    return any(is_weight(n) and not sp.issparse(n.weight) and not np.all(np.asarray(n.weight))
               for n in g.nodes.values())


def _learning_into(g: Graph, k: str) -> list:
    """[(rule, inputs)] of the plastic projections (:mod:`nmc.plasticity`) whose post neurons are ``k``."""
    from nmc.plasticity import plastic, post_of

    return [(r, int(np.asarray(g.nodes[p].weight).shape[1])) for p, r in plastic(g).items()
            if post_of(p, g, r) == k]


def build_structure(g: Graph, limits: CoreLimits | TargetModel) -> Network:
    """The network of ``g`` with uniform rates (1.0 per unit)."""
    target = as_target(limits)
    limits = target.limits
    units = [k for k, n in g.nodes.items() if isinstance(n, nir.Input) or is_neuron(n)]
    placed = np.array([is_neuron(g.nodes[k]) for k in units], dtype=bool)
    sizes = [int(np.prod(g.shape_out(k))) for k in units]
    offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    uidx = {k: i for i, k in enumerate(units)}
    N = int(offset[-1])
    terms_into = _terms_builder(g, uidx, sizes, nonzero=False)
    # a target that stores no zero weights: its synapse bytes count the non-zero weights' terms
    # (same order as terms_into's); the connections (A: fan-in, work, traffic) stay structural
    terms_nz = None if target.stores_zero_weights or not _has_zero_weights(g) else \
        _terms_builder(g, uidx, sizes, nonzero=True)

    row_blocks = []
    dense_rows = []
    bytes_ = np.zeros(N)
    pop_bits = []
    run_bytes = []
    event_work = np.ones(N)
    for k in units:
        i = uidx[k]
        n = sizes[i]
        if not placed[i]:
            row_blocks.append(sp.csr_matrix((n, N), dtype=np.float32))
            continue
        node = g.nodes[k]
        o = int(offset[i])
        terms: list[_Term] = []
        for p in g.preds(k):
            terms += terms_into(p)
        own_bits = _weight_bits(g, k)
        kept = {}   # EGRU: per term, the gate rows' structurally non-zero weights per unit (0/1 per gate and source)
        n_in = sum(sizes[uidx[s]] for s in dict.fromkeys(t.src for t in terms))   # source units feeding it
        nz_m = None if terms_nz is None or isinstance(node, EGRU) else [t.m for p in g.preds(k) for t in terms_nz(p)]
        if isinstance(node, EGRU):
            h = node.hidden_size
            gx = np.abs(np.asarray(node.w_x)).reshape(3, h, -1) != 0 if _is_sparse(g, k) else np.ones((3, h, node.w_x.shape[1]), bool)
            gh = np.abs(np.asarray(node.w_h)).reshape(3, h, h) != 0 if _is_sparse(g, k) else np.ones((3, h, h), bool)
            Gx = sp.csr_matrix(gx.sum(0).astype(np.float32))
            new = []
            for t in terms:
                gm = _mul(Gx, t.m)   # width: the source's size, the columns of the kernel's composed input weights
                new.append(_Term(t.src, gm, own_bits, _is_sparse(g, k), gm.shape[1]))
                kept[len(new) - 1] = sum(np.diff(_binary(_mul(sp.csr_matrix(gx[q].astype(np.float32)), t.m)).indptr)
                                         for q in range(3))
            terms = new
            kept[len(terms)] = gh.sum(axis=(0, 2))
            terms.append(_Term(k, sp.csr_matrix(gh.sum(0).astype(np.float32)), own_bits, _is_sparse(g, k), h))
        bits_used = []
        block = None
        if len(terms) == 1 and terms[0].m is not None and _all_ones(terms[0].m):   # a dense projection, alone
            c0 = int(offset[uidx[terms[0].src]])
            dense_rows.append((o, o + n, c0, c0 + terms[0].m.shape[1]))
        for ti, t in enumerate(terms):
            m = t.m if t.m is not None else sp.identity(n, dtype=np.float32, format="csr")
            if m.shape[0] != n:
                raise GraphError(f"connection from '{t.src}' has {m.shape[0]} rows for {n} neurons", node=k)
            # the term's columns shifted to its source's units: no sort, no duplicate merge
            shifted = sp.csr_matrix((m.data.astype(np.float32, copy=False), m.indices.astype(np.int64) + int(offset[uidx[t.src]]),
                                     m.indptr), shape=(n, N))
            block = shifted if block is None else (block + shifted).tocsr()   # shared sources: counts add
            bits = t.bits or limits.weight_bits
            bits_used.append(bits)
            c = m if nz_m is None or nz_m[ti] is None else nz_m[ti]   # the stored synapses' pattern
            nsyn = np.diff(c.indptr) if c.nnz and np.all(c.data == 1) else np.asarray(c.sum(axis=1)).reshape(-1)
            bytes_[o:o + n] += target.synapse_bytes(nsyn, bits, t.sparse, t.width, node=node, kept=kept.get(ti))
        row_blocks.append(block if block is not None else sp.csr_matrix((n, N), dtype=np.float32))
        bytes_[o:o + n] += target.state_bytes(node)
        pop_bits.append(max(bits_used) if bits_used else limits.weight_bits)
        event_work[o:o + n] = target.event_work(node, own_bits)
        run_bytes.append(target.run_overhead_bytes(node, n_in))
        for rule, width in _learning_into(g, k):   # a learning rule's state on the post neuron's core
            per_neuron, per_run = target.learning_bytes(rule, width)
            bytes_[o:o + n] += per_neuron
            run_bytes[-1] += per_run
    A = sp.vstack(row_blocks, format="csr") if row_blocks else sp.csr_matrix((N, N), dtype=np.float32)
    A.eliminate_zeros()
    fan_in = np.diff(A.indptr).astype(np.int64)
    rate = np.ones(N)
    ew = None if np.all(event_work == 1.0) else event_work
    return Network(units, offset, placed, A, bytes_, fan_in, target.work(A, rate, ew, dense_rows=dense_rows), rate,
                   pop_bits, "uniform", run_bytes=run_bytes, work_model=target.work, event_work=ew,
                   dense_rows=dense_rows)


def _all_ones(m: sp.csr_matrix) -> bool:
    """Whether every row of ``m`` holds every column once, ascending, each a count of 1
    (a dense projection's pattern): its rows' work is one sum of the source rates."""
    return (m.nnz == m.shape[0] * m.shape[1] and m.nnz > 0 and m.has_canonical_format
            and bool(np.all(m.data == 1)))


#: Synaptic operations the activity simulation of :func:`unit_rates` may cost (synapses × steps ×
#: samples); beyond it the inputs are shortened by :func:`nmc.passes.fidelity.fit_budget` (fewer steps
#: down to 16, then fewer samples) and ``rates_from`` says so. 10¹⁰: networks up to 2.5·10⁷ synapses
#: per step keep the probe's 100 steps × 4 samples; a dense 10⁸-synapse one gets 25 steps × 4 samples
#: (the whole probe would be 4·10¹⁰ multiply-accumulates, about a minute of one core).
RATE_MAX_SYNOPS = 1e10


def unit_rates(g: Graph, units, sizes, data: dict | None, rate_steps: int) -> tuple[np.ndarray, str, str]:
    """Events per step of every unit (see module docstring), where they come from, and (when the
    inputs were shortened to :data:`RATE_MAX_SYNOPS`) "; shortened to …" ("" otherwise)."""
    N = int(sum(sizes))
    if not data:
        return np.ones(N), "uniform", ""
    from nmc.iomap import IOMap, validate_inputs
    from nmc.reference import ReferenceSimulator

    from .fidelity import fit_budget

    arrs, T, _ = validate_inputs(IOMap.of_graph(g), data)
    arrs = {k: v[:rate_steps, :16] for k, v in arrs.items()}
    arrs, sim = fit_budget(g, arrs, RATE_MAX_SYNOPS, budget="RATE_MAX_SYNOPS")
    short = (f"; shortened to {sim['steps']} steps × {sim['samples']} samples ({sim['shortened']})"
             if "shortened" in sim else "")
    rec = [k for k in units if k not in g.inputs]
    res = ReferenceSimulator(g).run({k: v for k, v in arrs.items()}, record=rec, batched=True)
    out = []
    for k, n in zip(units, sizes):
        x = arrs[k] if k in arrs else res[f"{k}.out"]
        x = np.asarray(x).reshape(x.shape[0] * x.shape[1], n)
        out.append((x != 0).mean(axis=0))
    return np.concatenate(out).astype(np.float64), "reference simulation on the calibration data", short


def placement_rates(g: Graph, units, sizes, data: dict | None) -> tuple[np.ndarray, str]:
    from nmc.annotations import Placement
    from nmc.errors import PassError

    out = []
    for k, n in zip(units, sizes):
        if k in g.inputs:
            if data and k in data:
                x = np.asarray(data[k])
                out.append((x.reshape(-1, n) != 0).mean(axis=0))
            else:
                out.append(np.ones(n))
            continue
        p = g.ann(k, Placement)
        if p is None or p.core is None:
            raise PassError("neuron node has no Placement", node=k, hint="run the partition pass first")
        out.append(np.ones(n) if p.rate is None else np.asarray(p.rate, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0), "Placement.rate annotations"
