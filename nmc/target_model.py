"""The target model: what the compiler knows about a target's cores, read once
from its :class:`~nmc.hw.HardwareSpec`.

One object per compile (``PassContext.target``), built by the backend
(``backend.target_model(spec)``, each backend's ``target.py``) and read by the
design rules, partition, place and route, and by lowering and the cost
reports. It holds:

* **limits** (:class:`CoreLimits`): per core (neurons, synapse memory, input
  axons, work per step), per chip (cores, mesh, cores per router node) and per
  board (chips), read with the spec's canonical keys (the table below) — no
  alias lists;
* the **byte model** (:meth:`TargetModel.synapse_bytes`, per neuron; see
  :func:`synapse_bytes`) and the per-run overhead of node kinds that store
  per-core arrays (:meth:`TargetModel.run_overhead_bytes`, 0 by default);
* the **work model** (:meth:`TargetModel.work`): expected synaptic events per
  step of every neuron, the quantity ``core.work_max`` bounds, each weighted
  by its node kind's work per event (:meth:`TargetModel.event_work`, 1 here);
* the **placement granularity** (:attr:`TargetModel.granularity`) and the nodes that are no
  partition unit but take a core of their own (:meth:`TargetModel.own_core_nodes`);
* the **numerics** (the spec's ``[numerics]`` table).

Subclasses (``backends/<target>/target.py``) add the target's exact per-core
models (e.g. SpiNNaker 2's per-PE SRAM bytes of a generated kernel); the
generic model here is what every target shares. No hardware number lives in
this file: every value comes from the spec, or from explicit pass options.

Canonical spec keys (``CoreLimits`` field ← key):

=====================  ==============================================
neurons_max            ``core.neurons_max``
memory_bytes           ``core.synapse_memory_bytes``
fan_in_max             ``core.input_axons_max``
work_max               ``core.work_max``, else ``core.clock_hz`` ×
                       ``timing.sys_tick_s`` / ``core.cycles_per_synop``
weight_bits            ``core.weight_bits`` (8 when absent)
index_bits             ``core.sparse_index_bits``
row_pointer_bytes      ``core.row_pointer_bytes`` (4 when absent)
state_bytes            ``core.neuron_state_bytes`` (0 when absent)
cores_per_chip         ``chip.cores_usable`` (else mesh × cores_per_router)
mesh_x, mesh_y         ``chip.mesh`` (else the most square grid)
cores_per_node         ``chip.cores_per_router`` (1 when absent)
chips_x, chips_y       ``board.chips_grid``, else ``board.chips`` (1)
router_entries_max     ``chip.router_entries_max``
target                 ``spec.target``
=====================  ==============================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

_MISSING = object()


def spec_value(spec, key: str, default: Any = None) -> Any:
    """The value at dotted ``key`` of ``spec`` — a :class:`~nmc.hw.HardwareSpec`
    (through its ``get`` accessor) or a nested dict (``{"value": ..}`` entries
    unwrapped, as in the hw_configs) — else ``default``."""
    if spec is None:
        return default
    if hasattr(spec, "get") and hasattr(spec, "has") and not isinstance(spec, dict):
        return spec.get(key, default)
    cur: Any = spec
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return default
    if isinstance(cur, dict) and "value" in cur:
        cur = cur["value"]
    return default if cur is None else cur


def _int(v):
    return None if v is None else int(v)


def near_square(n: int) -> tuple[int, int]:
    """The most square (x, y) grid with x·y ≥ n, x ≥ y."""
    n = max(1, int(n))
    y = int(math.isqrt(n))
    while y > 1 and n % y:
        y -= 1
    x = n // y
    if x > 4 * y:  # a prime count: take a slightly larger, squarer grid
        y = int(math.isqrt(n))
        x = math.ceil(n / y)
    return x, y


@dataclass(frozen=True)
class CoreLimits:
    """Per-core, per-chip and per-board limits used by partition/place/route.

    ``None`` means "not limited" (the spec gives no such limit). Mesh: each
    chip is a ``mesh_x × mesh_y`` grid of router nodes with ``cores_per_node``
    cores each; chips form a ``chips_x × chips_y`` grid on the board.
    """

    neurons_max: int | None = None
    memory_bytes: int | None = None
    fan_in_max: int | None = None
    work_max: float | None = None
    weight_bits: int = 8
    index_bits: int | None = None
    row_pointer_bytes: int = 4
    state_bytes: int = 0
    cores_per_chip: int | None = None
    mesh_x: int = 1
    mesh_y: int = 1
    cores_per_node: int = 1
    chips_x: int = 1
    chips_y: int = 1
    router_entries_max: int | None = None
    target: str = ""

    @property
    def chips(self) -> int:
        return self.chips_x * self.chips_y

    @property
    def cores_total(self) -> int | None:
        return None if self.cores_per_chip is None else self.cores_per_chip * self.chips

    @classmethod
    def from_spec(cls, spec, **overrides) -> "CoreLimits":
        """Read the limits from a HardwareSpec (or its dict form) with the
        canonical keys (module docstring); keyword overrides (pass options, not
        None) win."""
        def V(key, default=None):
            return spec_value(spec, key, default)

        work = V("core.work_max")
        if work is None:
            clk, tick, cyc = V("core.clock_hz"), V("timing.sys_tick_s"), V("core.cycles_per_synop")
            if clk and tick and cyc:
                work = float(clk) * float(tick) / float(cyc)
        mesh, grid = V("chip.mesh"), V("board.chips_grid")
        kw = dict(
            neurons_max=_int(V("core.neurons_max")), memory_bytes=_int(V("core.synapse_memory_bytes")),
            fan_in_max=_int(V("core.input_axons_max")),
            work_max=None if work is None else float(work), weight_bits=int(V("core.weight_bits", 8)),
            index_bits=_int(V("core.sparse_index_bits")),
            row_pointer_bytes=int(V("core.row_pointer_bytes", 4)),
            state_bytes=int(V("core.neuron_state_bytes", 0)),
            cores_per_chip=_int(V("chip.cores_usable")), cores_per_node=int(V("chip.cores_per_router", 1)),
            router_entries_max=_int(V("chip.router_entries_max")),
            target=str(V("spec.target", "")),
        )
        cpc_i = kw["cores_per_chip"]
        if mesh is not None:
            kw["mesh_x"], kw["mesh_y"] = (int(m) for m in list(mesh)[:2])
        elif cpc_i:
            kw["mesh_x"], kw["mesh_y"] = near_square(math.ceil(cpc_i / kw["cores_per_node"]))
        if grid is not None:
            kw["chips_x"], kw["chips_y"] = (int(m) for m in list(grid)[:2])
        else:
            kw["chips_x"], kw["chips_y"] = near_square(int(V("board.chips", 1)))
        if cpc_i is None and mesh is not None:
            kw["cores_per_chip"] = kw["mesh_x"] * kw["mesh_y"] * kw["cores_per_node"]
        lim = cls(**kw)
        return replace(lim, **{k: v for k, v in overrides.items() if v is not None})

    def cores_for_neurons(self, n: int) -> int:
        """⌈n / neurons_max⌉ (1 without a limit): the cores ``n`` neurons need by their count
        alone — the neuron term of the design rules' lower bound (and of a lowering's report)."""
        return math.ceil(int(n) / self.neurons_max) if self.neurons_max else 1

    def positions_per_chip(self) -> int:
        return self.mesh_x * self.mesh_y * self.cores_per_node


# ------------------------------------------------------------ byte model
def index_bits_for(n_inputs: int, limits: CoreLimits) -> int:
    """Bits of one stored synapse index: the spec's ``core.sparse_index_bits``,
    else the bits to address ``n_inputs`` inputs rounded up to 8, 16, 32 or 64."""
    if limits.index_bits:
        return int(limits.index_bits)
    need = max(1, math.ceil(math.log2(max(2, n_inputs))))
    return next(b for b in (8, 16, 32, 64) if b >= need)


def synapse_bytes(n_syn, weight_bits: int, sparse: bool, n_inputs: int, limits: CoreLimits) -> np.ndarray:
    """Bytes to store one neuron's row(s) of a projection.

    Dense storage: ``ceil(n · w / 8)`` with n the structural fan-in (zeros
    included) and w the weight bits. CSR storage: ``ceil(nnz · (w + x) / 8) + p``
    with x the index bits (:func:`index_bits_for`) and p the row-pointer bytes.
    ``n_syn``: array of per-neuron synapse counts (structural fan-in when dense,
    non-zeros when sparse); ``n_inputs``: the projection's input width.
    """
    n = np.asarray(n_syn, dtype=np.float64)
    if not sparse:
        return np.ceil(n * weight_bits / 8.0)
    xb = index_bits_for(n_inputs, limits)
    return np.ceil(n * (weight_bits + xb) / 8.0) + limits.row_pointer_bytes


class TargetModel:
    """The generic target model (see module docstring). Backends subclass it in
    ``backends/<target>/target.py``; ``TargetModel.from_spec(None)`` is the
    model with no limits (the reference target has no cores)."""

    #: what one placement decision moves, which selects the ``partition`` pass's packer:
    #: ``"neuron"`` (any neuron to any core under :class:`CoreLimits`: the block packer of
    #: :mod:`nmc.passes.partition`) or ``"logical neuron"`` (merged circuits on cores with a
    #: row budget per layer: :mod:`nmc.passes.hemispheres`; the model then provides
    #: ``hemisphere_limits()`` and ``layer_demands(graph, ctx)``, as BrainScaleS-2's does)
    granularity = "neuron"
    #: whether a core stores a weight matrix's zeros (dense storage). False: only non-zero
    #: weights are stored (SpiNNaker 2's rows), so the partition's synapse bytes count the
    #: synapses whose float weight is non-zero (:func:`nmc.passes.netmodel.build_structure`;
    #: not ``Quant.w_int``: a backend may quantise again with scales of its own); the
    #: connections (fan-in, work, traffic) stay structural
    stores_zero_weights = True

    def __init__(self, spec=None, limits: CoreLimits | None = None):
        self.spec = spec
        self.limits = limits if limits is not None else CoreLimits.from_spec(spec)
        if hasattr(spec, "section") and spec.has("numerics"):
            self.numerics: dict = spec.section("numerics")
        else:
            num = spec_value(spec, "numerics", None)
            self.numerics = dict(num) if isinstance(num, dict) else {}

    @classmethod
    def from_spec(cls, spec) -> "TargetModel":
        return cls(spec)

    @property
    def name(self) -> str:
        return self.limits.target

    def with_limits(self, **overrides) -> "TargetModel":
        """The same model with some limits replaced (pass options; None keeps the spec's)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.limits = replace(self.limits, **{k: v for k, v in overrides.items() if v is not None})
        return out

    def for_limits(self, limits: CoreLimits) -> "TargetModel":
        """The same model with exactly these limits (e.g. a place pass's mesh option)."""
        if limits == self.limits:
            return self
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.limits = limits
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.limits!r})"

    # ----------------------------------------------------- byte model
    def synapse_bytes(self, n_syn, weight_bits: int, sparse: bool, n_inputs: int, node=None,
                      kept=None) -> np.ndarray:
        """Bytes per neuron of one projection into it (:func:`synapse_bytes`);
        ``node``: the neuron node and ``kept``: for a gated cell (EGRU), its
        structurally non-zero weights per neuron counted once per gate row (a
        subclass may store such node kinds differently; the generic model
        counts ``n_syn``)."""
        return synapse_bytes(n_syn, weight_bits, sparse, n_inputs, self.limits)

    def state_bytes(self, node=None) -> int:
        """Bytes of one neuron's state (``core.neuron_state_bytes``)."""
        return int(self.limits.state_bytes)

    def learning_bytes(self, rule, n_inputs: int) -> tuple[float, int]:
        """(bytes per post neuron, bytes per run) of the state a learning rule
        (:class:`nmc.plasticity.Plasticity`) keeps on a core for a plastic projection of
        ``n_inputs`` inputs; (0, 0) where the target keeps none on the cores."""
        return 0.0, 0

    def run_overhead_bytes(self, node, n_inputs: int) -> int:
        """Bytes a core pays once per run of consecutive neurons of ``node`` it
        holds (arrays indexed by input, e.g. column pointers), beside the
        per-neuron bytes; 0 for every node kind of the generic model."""
        return 0

    # ----------------------------------------------------- placement
    def own_core_nodes(self, graph) -> list[str]:
        """Nodes of ``graph`` that are no partition unit (not neurons) but that the target runs
        on a core of their own, in schedule order: the ``partition`` pass gives the i-th of them
        core K + i, K the cores its units use, and writes their Placement like the units'
        (:func:`nmc.passes.partition.annotate_own_cores`). None in the generic model (SpiNNaker 2:
        a LayerNorm kernel, which gathers all its channels on one PE)."""
        return []

    # ----------------------------------------------------- work model
    def work(self, A, rate, event_work=None, dense_rows=()) -> np.ndarray:
        """Expected synaptic events per step of every unit: ``A @ rate`` with
        ``A[t, s]`` the synapses from s to t and ``rate`` events per step, each
        unit's events × its ``event_work`` (per unit, :meth:`event_work`) when given.

        Uniform rates of 1 with every count 1 (structural patterns: one synapse per entry):
        each unit's events are its entries, ``diff(A.indptr)``, the very float64 values the
        product gives (a sum of ones is exact), without the product's float64 copy of ``A``
        (800 MB and a pass over it at 10⁸ synapses).

        ``dense_rows`` ((r0, r1, c0, c1), from the network model: rows r0:r1 of ``A`` hold
        exactly the columns c0:c1, ascending, each a count of 1 — a dense projection): those
        rows' events are one sum, ``rate[c0:c1]`` added left to right from 0 (``cumsum``), the
        order and rounding of the product's row sums, so the values are the product's bit for
        bit; the product runs on the other rows only."""
        rate = np.asarray(rate, dtype=np.float64)
        if getattr(A, "format", None) == "csr" and rate.size == A.shape[1] and np.all(rate == 1.0) and np.all(A.data == 1):
            w = np.diff(A.indptr).astype(np.float64)
        elif dense_rows:
            w = np.empty(A.shape[0], dtype=np.float64)
            r = 0
            for r0, r1, c0, c1 in sorted(dense_rows):
                if r0 > r:
                    w[r:r0] = A[r:r0] @ rate
                w[r0:r1] = np.cumsum(rate[c0:c1])[-1]
                r = r1
            if r < A.shape[0]:
                w[r:] = A[r:] @ rate
        else:
            w = np.asarray(A @ rate, dtype=np.float64)
        return w if event_work is None else w * np.asarray(event_work, dtype=np.float64)

    def event_work(self, node, weight_bits) -> float:
        """Work of one synaptic event into a unit of ``node`` (weights of ``weight_bits``), in the
        synaptic events ``core.work_max`` bounds: 1 for every node kind of the generic model (a
        target whose kernel spends more per event on some node kind says so)."""
        return 1.0


def target_model(spec) -> TargetModel:
    """The generic model of ``spec`` (None: no limits)."""
    return TargetModel.from_spec(spec)
