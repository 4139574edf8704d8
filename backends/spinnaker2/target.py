"""SpiNNaker 2's target model: the one byte model and one work model of a PE,
read by the design rules, the partition pass and the cost report alike.

Bytes of PE SRAM (``core.data_bytes``; the partition packs against
``core.synapse_memory_bytes``, the same 96 KB):

* **neuron layers** (py-spinnaker2 populations): what the run script
  (:mod:`.emit`) hands py-spinnaker2 for a PE, one connection per non-zero
  weight of the emitted ``proj<i>/weights`` grouped into rows by source. The PE
  stores per non-zero synapse a weight (``core.weight_bits`` rounded up to
  bytes: 1) and a ``uint16`` index of the neuron it targets
  (:attr:`~SpiNNaker2Target.row_synapse_bytes`), per source row with a
  non-zero onto the PE a row pointer (``core.row_pointer_bytes``, 4 when absent),
  and per neuron ``core.neuron_state_bytes``. The cost report counts exactly
  that per PE (:meth:`~SpiNNaker2Target.projection_bytes`). The partition packs
  with the same numbers: per neuron its synapses whose float weight is non-zero
  (:attr:`~SpiNNaker2Target.stores_zero_weights`; never fewer than the emitted
  non-zeros: lowering rounds the float weights with a scale of its own per
  population, so a weight may still round to zero there, but a zero is never
  emitted) and its state; the rows
  are a table of at most ``core.input_axons_max`` pointers (the partition keeps
  every PE's distinct sources within it), so the PE's other bytes get
  ``core.synapse_memory_bytes`` less that table
  (:attr:`~SpiNNaker2Target.row_table_bytes`): the partition charges a neuron's
  bytes × M / (M − table) against M (:attr:`~SpiNNaker2Target.row_share`),
  which keeps its packing per neuron (any neuron to any PE) and every PE it
  fills with neuron layers within M. A conv projection emitted as one
  ``Conv2DProjection`` (both populations whole, :func:`.program.emitted_whole`)
  stores its int8 kernel once per PE instead
  (:meth:`~SpiNNaker2Target.conv_kernel_bytes`); split over explicit PEs the
  script expands it to rows, counted as rows. The partition packs conv layers
  as rows, the form the script falls back to (the kernel, C_out·C_in·kh·kw
  bytes, is the smaller one on a PE holding more than C_out/3 neurons away
  from the padded border, each with C_in·kh·kw synapses of 3 bytes).
* **EGRU kernels** (generated C, :mod:`.egru`): what the emitted arrays hold, per
  PE and run of consecutive units (one ``.c`` file each):
  the CSC column pointers, ``uint32`` per input column and per recurrent
  column plus one each (:meth:`~SpiNNaker2Target.run_overhead_bytes`, paid once
  per run, with room for the one unused element C gives an empty array); per kept weight a ``uint16`` row index and the weight (1 byte int8,
  4 bytes float32); per unit 20 float32 values (scales, biases of 3 gate rows
  each for input and recurrent weights, threshold, state, two scratch
  accumulators of 3 gate rows) — :data:`EGRU_UNIT_BYTES`. The partition pass
  packs with exactly these numbers (kept weights counted on the graph's
  structure, an upper bound of the quantised kernel's), so the kernels it
  places always fit; :meth:`~SpiNNaker2Target.kernel_bytes` is the exact count
  the cost report and lowering's check use. **Ternary kernels** (packed 2-bit
  codes, :mod:`.egru_packed`) store every column of the run densely instead:
  ``(n_in + H)·⌈3n/4⌉`` bytes and no pointers or indices; the partition packs
  them (Quant bits = 2, or ``egru_weights=ternary``) at 0.75 byte per unit and
  column plus, per run, one byte per column for the rounding.

* **SSM kernels** (generated C, :mod:`.ssm`; ``nmc.DiagSSM``, ``nmc.StochasticSSMNeuron``):
  float32 words, per run of units on a PE, exactly what :func:`.ssm.run_floats` counts
  (a DiagSSM run holds the whole state Λ̄, B̄, x, acc: 6P + 2PH per run, and 2P + 3 per
  output channel; a stochastic run 8N + 1 per neuron) plus the PE's input stage, the float32
  input weights and bias it applies to the source's events before the kernel (a DiagSSM run
  needs all H inputs: n_src·H + H per run; a stochastic run its neurons' columns: n_src + 1
  per neuron) — :meth:`~SpiNNaker2Target.ssm_run_bytes`, the same numbers the partition packs with.

Work per tick (time a PE needs for one step, :meth:`~SpiNNaker2Target.pe_time`):
expected synaptic events × ``core.cycles_per_synop`` + int8 MACs (conv) ×
``core.cycles_per_mac_int8`` + neurons × ``core.cycles_per_neuron_update``,
over ``core.clock_hz``; the partition bounds the events alone
(``work_max`` = clock × tick / cycles_per_synop; a ternary EGRU unit's events
weigh cycles_per_ternary_code / cycles_per_synop each there,
:meth:`~SpiNNaker2Target.event_work`). An EGRU event costs one MAC
per kept weight in its column (:meth:`~SpiNNaker2Target.kernel_events`); on a
ternary kernel it decodes all 3n codes of its column, each costing
``core.cycles_per_ternary_code`` (counted from the generated decode loop,
:mod:`.kernel_cycles`; 19 against the int8 MAC's 11) instead
(:meth:`~SpiNNaker2Target.egru_weight_cycles`).

Placement: every population the lowering runs is placed by the ``partition`` pass (the
Placement's only writer; lowering reads it). Neuron layers, EGRU and SSM kernels are its
units, packed by the models above; a LayerNorm kernel is no unit (not a neuron) and takes one
PE of its own after all of theirs (:meth:`~SpiNNaker2Target.own_core_nodes`).
"""
from __future__ import annotations

import math

import numpy as np

from nmc.nodes import EGRU
from nmc.nodes_ssm import DiagSSM, LayerNorm, StochasticSSMNeuron
from nmc.target_model import CoreLimits, TargetModel, spec_value

from . import egru_packed as packed

#: bytes of one stored synapse index (a neuron layer's row, an EGRU kernel's ``row``: uint16)
#: and of one EGRU column pointer (``ptr``: uint32)
ROW_INDEX_BYTES, COLUMN_POINTER_BYTES = 2, 4
#: float32 values per EGRU unit: SX, SH, BX, BH (3 gate rows each), THR, C, ACC_X, ACC_H (3 each)
EGRU_FLOATS_PER_UNIT = 4 * 3 + 1 + 1 + 2 * 3
EGRU_UNIT_BYTES = 4 * EGRU_FLOATS_PER_UNIT


def _gate_rows(H: int, units: slice) -> np.ndarray:
    return np.concatenate([np.arange(units.start, units.stop) + g * H for g in range(3)])


class SpiNNaker2Target(TargetModel):
    """The SpiNNaker 2 PE model (module docstring). ``egru_weights``: the
    ``egru_weights`` option (``int8``, ``float32`` or ``ternary``), the kernels' weight type."""

    #: a neuron layer's PE stores rows of its non-zero weights only
    stores_zero_weights = False

    def __init__(self, spec=None, limits: CoreLimits | None = None, egru_weights: str = "int8"):
        super().__init__(spec, limits)
        self.egru_weight_bytes = 4 if str(egru_weights or "int8") == "float32" else 1
        self.egru_packed = str(egru_weights or "int8") == "ternary"
        v = lambda k: spec_value(spec, k)   # noqa: E731
        self.clock_hz, self.cycles_per_synop = v("core.clock_hz"), v("core.cycles_per_synop")
        self.cycles_per_neuron_update, self.cycles_per_mac = v("core.cycles_per_neuron_update"), v("core.cycles_per_mac_int8")
        self.data_bytes = v("core.data_bytes")
        # a packed ternary code's decode (kernel_cycles.py); a spec without it prices a code as a synaptic event
        self.cycles_per_ternary_code = v("core.cycles_per_ternary_code") or self.cycles_per_synop

    def own_core_nodes(self, graph) -> list[str]:
        """The LayerNorm nodes, in schedule order: a LayerNorm kernel (:mod:`.ssm_norm`) is no
        partition unit (not a neuron) and gathers all its channels on one PE, so the partition
        pass gives each one PE of its own after every unit's PE."""
        return [k for k in graph.schedule()[0] if isinstance(graph.nodes[k], LayerNorm)]

    def egru_weight_cycles(self, kernel: dict) -> float:
        """Cycles per weight operation of an EGRU kernel, what :meth:`kernel_events` counts: a packed
        ternary code decoded (``core.cycles_per_ternary_code``), else a kept weight's synaptic event
        (``core.cycles_per_synop``)."""
        return float(self.cycles_per_ternary_code if packed.is_packed(kernel) else self.cycles_per_synop)

    # ----------------------------------------------------- byte model
    @property
    def row_synapse_bytes(self) -> int:
        """Bytes of one stored synapse of a neuron layer: its weight (``core.weight_bits``
        rounded up to bytes) and a ``uint16`` target-neuron index."""
        return math.ceil(int(self.limits.weight_bits) / 8) + ROW_INDEX_BYTES

    @property
    def row_table_bytes(self) -> int:
        """The most bytes a PE's row pointers take: ``core.row_pointer_bytes`` per source row,
        at most ``core.input_axons_max`` rows (0 without that limit)."""
        return int(self.limits.row_pointer_bytes) * int(self.limits.fan_in_max or 0)

    @property
    def row_share(self) -> float:
        """M / (M − :attr:`row_table_bytes`), M = ``core.synapse_memory_bytes``: the factor the
        partition charges a neuron layer's bytes with, so that a PE filled to M with them
        leaves the row table its room (1 without a memory limit, or when an override makes the
        table alone fill M: the cost report then warns of a PE over ``core.data_bytes``)."""
        M = self.limits.memory_bytes
        return float(M) / (M - self.row_table_bytes) if M and M > self.row_table_bytes else 1.0

    def synapse_bytes(self, n_syn, weight_bits, sparse, n_inputs, node=None, kept=None) -> np.ndarray:
        if isinstance(node, EGRU) and kept is not None and (self.egru_packed or weight_bits == packed.WBITS):
            return np.broadcast_to(packed.unit_weight_bytes(n_inputs), np.shape(kept)).astype(np.float64)
        if isinstance(node, EGRU) and kept is not None:   # CSC: row index + weight per kept weight
            return (ROW_INDEX_BYTES + self.egru_weight_bytes) * np.asarray(kept, dtype=np.float64)
        if isinstance(node, DiagSSM):            # its input stage is per run (run_overhead_bytes)
            return np.zeros(np.shape(n_syn))
        if isinstance(node, StochasticSSMNeuron):   # its input column: n_inputs float32 weights
            return np.full(np.shape(n_syn), 4.0 * int(n_inputs))
        # a neuron layer: one stored synapse per synapse with a non-zero weight (dense or sparse
        # alike: the rows hold non-zeros only, stores_zero_weights), charged with the row table's share
        return self.row_share * self.row_synapse_bytes * np.asarray(n_syn, dtype=np.float64)

    def state_bytes(self, node=None) -> float:
        """Bytes the partition charges per neuron for its state: a kernel's exact state (below);
        a neuron layer's ``core.neuron_state_bytes`` with the row table's share (the PE holds
        ``limits.state_bytes`` per neuron, the cost report's count)."""
        if isinstance(node, DiagSSM):            # C̄ row (re, im), D, θ, held: 2P + 3 floats per channel
            return 4 * (2 * node.modes + 3)
        if isinstance(node, StochasticSSMNeuron):   # Λ̄, B̄, C̄ (re, im), x (re, im), D, input bias
            return 4 * (8 * node.state_size + 2)
        if isinstance(node, EGRU):
            return EGRU_UNIT_BYTES
        return self.row_share * super().state_bytes(node)   # a neuron layer: with the row table's share

    def learning_bytes(self, rule, n_inputs: int) -> tuple[float, int]:
        """A plastic projection's learning state (:mod:`.plasticity`): per post neuron its dense row's
        per-synapse state (float32 shadow weight; eligibility, θ, mask byte as the rule needs) and
        its trace (and error word); per run the pre traces, the reward words and the step counter."""
        from .plasticity import state_bytes_per_neuron, state_bytes_per_run, state_bytes_per_synapse

        per = int(n_inputs) * state_bytes_per_synapse(rule) + state_bytes_per_neuron(rule)
        return self.row_share * per, state_bytes_per_run(rule, n_inputs)

    def run_overhead_bytes(self, node, n_inputs: int) -> int:
        if isinstance(node, DiagSSM):   # Λ̄ (2P), B̄ (2PH), x, acc (2P each); the input stage (n_in·H + H)
            P, H = node.modes, node.channels
            return 4 * (6 * P + 2 * P * H + int(n_inputs) * H + H)
        if isinstance(node, EGRU) and self.egru_packed:   # packed codes: each column rounded up to bytes
            return packed.round_up_bytes(n_inputs, node.hidden_size)
        if isinstance(node, EGRU):   # the CSC column pointers of the input and the recurrent weights, and
            # the one unused element C gives a run's index/weight arrays when it keeps no weight (an upper bound)
            return (COLUMN_POINTER_BYTES * (int(n_inputs) + 1 + int(node.hidden_size) + 1)
                    + 2 * (ROW_INDEX_BYTES + self.egru_weight_bytes))
        return 0   # a neuron layer's row pointers: the row table (row_share)

    def projection_bytes(self, nz: np.ndarray) -> int:
        """Bytes of a projection's rows on one PE, exactly as emitted: ``nz`` is the
        (neurons on the PE, sources) non-zero mask of its emitted weights; a stored synapse
        per non-zero and a row pointer per source with a non-zero onto the PE."""
        return (int(nz.sum()) * self.row_synapse_bytes
                + int(np.asarray(nz).any(0).sum()) * int(self.limits.row_pointer_bytes))

    def conv_kernel_bytes(self, kernel: np.ndarray) -> int:
        """Bytes of a ``Conv2DProjection``'s kernel, stored once per PE of its target population."""
        return int(np.size(kernel)) * math.ceil(int(self.limits.weight_bits) / 8)

    @staticmethod
    def kernel_bytes(kernel: dict, units: slice) -> int:
        """SRAM of one EGRU kernel file (a run of units on a PE), exactly as emitted by
        :func:`.egru.kernel_files` (arrays with at least one element)."""
        n = units.stop - units.start
        H, n_in = kernel["thr"].shape[0], kernel["wx"].shape[1]
        if packed.is_packed(kernel):
            return packed.weight_bytes(n_in, H, n) + EGRU_UNIT_BYTES * n
        rows = _gate_rows(H, units)
        kx, kh = int(np.count_nonzero(kernel["wx"][rows])), int(np.count_nonzero(kernel["wh"][rows]))
        wb = np.asarray(kernel["wx"]).dtype.itemsize   # 1 (int8) or 4 (float32)
        return (COLUMN_POINTER_BYTES * (n_in + 1 + H + 1) + (ROW_INDEX_BYTES + wb) * (max(kx, 1) + max(kh, 1))
                + EGRU_UNIT_BYTES * n)

    @staticmethod
    def ssm_run_bytes(kernel: dict, units: slice) -> int:
        """SRAM of one SSM run on a PE (module docstring): its kernel file (:func:`.ssm.run_floats`)
        and its input stage (``w_in`` (n_src, H), ``b_in`` (H) of the population's kernel)."""
        from .ssm import run_floats

        n, (n_src, H) = units.stop - units.start, np.shape(kernel["w_in"])
        stage = n_src * H + H if "theta" in kernel else n_src * n + n
        return 4 * (run_floats(kernel, units) + stage)

    # ----------------------------------------------------- work model
    @staticmethod
    def kernel_events(kernel: dict, units: slice, rate_in, rate_self) -> float:
        """Expected MACs per step of one EGRU kernel: one per kept weight in the column of
        each input event (``rate_in``) and each recurrent event (``rate_self``)."""
        if packed.is_packed(kernel):
            return float(packed.decoded_per_event(units.stop - units.start)
                         * (np.sum(np.asarray(rate_in, float)) + np.sum(np.asarray(rate_self, float))))
        rows = _gate_rows(kernel["thr"].shape[0], units)
        kx = np.count_nonzero(kernel["wx"][rows], axis=0)
        kh = np.count_nonzero(kernel["wh"][rows], axis=0)
        return float(kx @ np.asarray(rate_in, float) + kh @ np.asarray(rate_self, float))

    def event_work(self, node, weight_bits) -> float:
        """A packed ternary EGRU kernel (``egru_weights=ternary`` or Quant bits = 2) spends
        ``core.cycles_per_ternary_code`` per code its events decode, against the
        ``core.cycles_per_synop`` of the synaptic events ``core.work_max`` counts."""
        if isinstance(node, EGRU) and (self.egru_packed or weight_bits == packed.WBITS):
            return float(self.cycles_per_ternary_code) / float(self.cycles_per_synop)
        return 1.0

    def pe_time(self, events: float, macs: float, neurons: int, codes: float = 0.0) -> float:
        """Seconds one PE needs per step (module docstring); ``codes``: packed ternary codes decoded."""
        return (events * float(self.cycles_per_synop) + macs * float(self.cycles_per_mac)
                + codes * float(self.cycles_per_ternary_code)
                + neurons * float(self.cycles_per_neuron_update)) / float(self.clock_hz)


def target_model(spec, options: dict | None = None) -> SpiNNaker2Target:
    """The PE model of ``spec`` for the compile ``options``: ``egru_weights`` sets the EGRU kernels'
    weight type, ``max_atoms_per_core`` (neurons per PE) the ``neurons_max`` the partition pass
    places under (the spec's ``core.neurons_max`` when absent), ``sys_tick`` (seconds) the work a PE
    may take per step, ``work_max`` = core.clock_hz × sys_tick / core.cycles_per_synop (the spec's
    ``timing.sys_tick_s`` when absent): a longer tick packs more synaptic events on a PE."""
    o = options or {}
    t = SpiNNaker2Target(spec, egru_weights=o.get("egru_weights") or "int8")
    atoms, tick = o.get("max_atoms_per_core"), o.get("sys_tick")
    work = None
    if tick is not None:
        work = float(spec.get("core.clock_hz")) * float(tick) / float(spec.get("core.cycles_per_synop"))
    return t.with_limits(neurons_max=None if atoms is None else int(atoms), work_max=work)


def input_rates(graph, ctx, name: str, n: int, quantum: float = 1.0) -> np.ndarray:
    """Events per step of each unit of input ``name``: measured on the calibration data when
    given (a graded value x counts x/quantum repeated events), else 1 (every unit every step)."""
    data = getattr(ctx, "data", None) or {}
    if name in data:
        a = np.asarray(data[name], float).reshape(-1, n)
        if np.all(np.isin(a, (0, 1))):
            return (a != 0).mean(0).astype(float)
        return np.rint(np.abs(a) / quantum).mean(0).astype(float)
    return np.ones(n)
