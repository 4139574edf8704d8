"""Design rules for mapping a network onto cores: the per-core resource model
and one small named function per rule. Reused by every backend.

Resource model (per neuron i of a placed node; all read through
:class:`CoreLimits`, whose values come from the HardwareSpec or from explicit
pass options — no hardware number lives in this file):

* **synapse bytes** (:func:`synapse_bytes`): the synapses stored for neuron i's
  incoming connections, one term per incoming projection (path of weight
  nodes ending at i):

  - dense storage (no ``Sparsity`` annotation on the projection's weight node,
    or density 1): ``ceil(n · w / 8)`` with n = the structural fan-in of the
    projection (every position of the weight row / receptive field, zeros
    included) and w the weight bits;
  - CSR storage (``Sparsity`` with density < 1 or format csr/ell):
    ``ceil(nnz · (w + x) / 8) + p`` with nnz the non-zero weights of the row,
    x the index bits (the spec's ``core.sparse_index_bits``, else the bits to
    address the projection's inputs, rounded up to 8, 16 or 32) and p the
    row-pointer bytes (spec ``core.row_pointer_bytes``, else 4 — a 32-bit
    offset);
  - w = the ``Quant`` annotation's ``bits`` on the weight node when present,
    else the spec's ``core.weight_bits``.

  Convolutions are counted expanded (one stored synapse per connection, as
  Lava/Loihi store them); weight sharing is not modelled (conservative).
  Plus ``core.neuron_state_bytes`` per neuron when the spec gives it.
* **input axons** of a core: the number of distinct source neurons (host
  inputs included) with a synapse onto any neuron of the core.
* **work per step** of neuron i: the expected synaptic events it receives per
  timestep, ``Σ_s syn(s→i) · rate_s`` (rate in events per step), plus one
  neuron update. A core's work is the sum over its neurons.

Every rule function has the signature ``rule_x(net, limits) -> list[Violation]``
and reports every offending node at once, with a concrete fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nmc.errors import OptionError, Violation


# ------------------------------------------------------------------ limits
def _spec_dict(spec) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return spec
    for attr in ("to_dict", "as_dict"):
        f = getattr(spec, attr, None)
        if callable(f):
            return f()
    return dict(getattr(spec, "data", {}) or {})


def _value(v):
    if isinstance(v, dict) and "value" in v:
        return v["value"]
    return v


def spec_lookup(spec, *paths: str, default=None):
    """First present value among dotted ``section.key`` paths of ``spec``
    (a HardwareSpec, or a nested dict). ``{"value": ..}`` entries are unwrapped."""
    d = _spec_dict(spec)
    for p in paths:
        cur: Any = d
        for part in p.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                cur = None
                break
        cur = _value(cur)
        if cur is not None:
            return cur
    return default


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
        """Read the limits from a HardwareSpec; keyword overrides (pass options,
        not None) win. Accepts the key names the hw_configs use."""
        L = spec_lookup
        neurons = L(spec, "core.neurons_max", "core.neurons", "core.max_neurons", "core.atoms_max")
        mem = L(spec, "core.synapse_memory_bytes", "core.data_bytes", "core.memory_bytes", "core.sram_data_bytes")
        fan_in = L(spec, "core.input_axons_max", "core.fan_in_max", "core.axons_in_max")
        work = L(spec, "core.work_max", "core.synops_per_step_max", "core.synaptic_events_per_step_max")
        if work is None:
            clk = L(spec, "core.clock_hz", "chip.clock_hz")
            tick = L(spec, "timing.sys_tick_s", "timing.tick_s", "core.tick_s", "chip.tick_s", "runtime.tick_s")
            cyc = L(spec, "core.cycles_per_synop", "core.cycles_per_synaptic_event")
            if clk and tick and cyc:
                work = float(clk) * float(tick) / float(cyc)
        wbits = L(spec, "core.weight_bits", "synapse.weight_bits", "chip.weight_bits", default=8)
        cpc = L(spec, "chip.cores_usable", "chip.cores", "chip.cores_per_chip", "chip.pes_usable", "chip.pes")
        mesh = L(spec, "chip.mesh", "chip.mesh_dims", "chip.noc_mesh")
        cpn = L(spec, "chip.cores_per_router", "chip.cores_per_node", "chip.pes_per_qpe", default=1)
        grid = L(spec, "board.chips_grid", "board.grid", "board.mesh")
        nchips = L(spec, "board.chips", "board.chips_max", default=1)
        kw = dict(
            neurons_max=_int(neurons), memory_bytes=_int(mem), fan_in_max=_int(fan_in),
            work_max=None if work is None else float(work), weight_bits=int(wbits),
            index_bits=_int(L(spec, "core.sparse_index_bits")),
            row_pointer_bytes=int(L(spec, "core.row_pointer_bytes", default=4)),
            state_bytes=int(L(spec, "core.neuron_state_bytes", default=0)),
            cores_per_chip=_int(cpc), cores_per_node=int(cpn),
            router_entries_max=_int(L(spec, "chip.router_entries_max", "router.entries_max", "chip.router_entries")),
            target=str(L(spec, "spec.target", "name", "target", "meta.name", default="")),
        )
        cpc_i = kw["cores_per_chip"]
        if mesh is not None:
            kw["mesh_x"], kw["mesh_y"] = (int(m) for m in list(mesh)[:2])
        elif cpc_i:
            kw["mesh_x"], kw["mesh_y"] = near_square(math.ceil(cpc_i / kw["cores_per_node"]))
        if grid is not None and not isinstance(grid, (int, float)):
            kw["chips_x"], kw["chips_y"] = (int(m) for m in list(grid)[:2])
        else:
            kw["chips_x"], kw["chips_y"] = near_square(int(grid if grid is not None else nchips))
        if cpc_i is None and mesh is not None:
            kw["cores_per_chip"] = kw["mesh_x"] * kw["mesh_y"] * kw["cores_per_node"]
        lim = cls(**kw)
        return replace(lim, **{k: v for k, v in overrides.items() if v is not None})

    def positions_per_chip(self) -> int:
        return self.mesh_x * self.mesh_y * self.cores_per_node


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


def limits_for(ctx, **overrides) -> CoreLimits:
    """CoreLimits from ``ctx.spec`` (+ overrides); with no spec at least
    ``max_neurons_per_core`` must be given, else :class:`OptionError`."""
    if ctx.spec is None and overrides.get("neurons_max") is None:
        raise OptionError("core placement needs a hardware spec or explicit per-core limits",
                          hint="compile for a hardware target (e.g. --target spinnaker2) or give "
                               "partition{max_neurons_per_core=256}")
    return CoreLimits.from_spec(ctx.spec, **overrides)


# ------------------------------------------------------------ byte model
def index_bits_for(n_inputs: int, limits: CoreLimits) -> int:
    if limits.index_bits:
        return int(limits.index_bits)
    need = max(1, math.ceil(math.log2(max(2, n_inputs))))
    return next(b for b in (8, 16, 32, 64) if b >= need)


def synapse_bytes(n_syn, weight_bits: int, sparse: bool, n_inputs: int, limits: CoreLimits) -> np.ndarray:
    """Bytes to store one neuron's row(s) of a projection (see module docstring).

    ``n_syn``: array of per-neuron synapse counts (structural fan-in when dense,
    non-zeros when sparse); ``n_inputs``: the projection's input width.
    """
    n = np.asarray(n_syn, dtype=np.float64)
    if not sparse:
        return np.ceil(n * weight_bits / 8.0)
    xb = index_bits_for(n_inputs, limits)
    return np.ceil(n * (weight_bits + xb) / 8.0) + limits.row_pointer_bytes


def max_per_core(net, limits: CoreLimits, upper: bool = False) -> np.ndarray:
    """Per placed node: how many of its neurons one core holds under the
    additive limits (neurons, bytes, work) — the node's core capacity, sized by
    its largest neuron (any ``cap`` of them fit). With ``upper``: sized by its
    smallest neuron, an upper bound on what any core can hold (for bounds)."""
    caps = []
    for k in range(len(net.pop_names)):
        sl = net.pop_slice(k)
        c = limits.neurons_max or net.n_units
        b = float(net.bytes_[sl].max(initial=0) if not upper else net.bytes_[sl].min(initial=np.inf))
        if limits.memory_bytes and b > 0:
            c = min(c, int(limits.memory_bytes // b))
        w = float(net.work[sl].max(initial=0) if not upper else net.work[sl].min(initial=np.inf))
        if limits.work_max and w > 0:
            c = min(c, int(limits.work_max // w))
        caps.append(max(0, c))
    return np.asarray(caps, dtype=np.int64)


def cores_lower_bound(net, limits: CoreLimits) -> dict:
    """cores ≥ max(⌈neurons/neurons_max⌉, ⌈bytes/memory⌉, ⌈work/work_max⌉,
    ⌈inputs/fan_in_max⌉) where inputs = distinct source neurons with a synapse
    onto a placed neuron (every such source occupies an input axon of at least
    one core)."""
    n = int(net.placed_count)
    parts = {"neurons": math.ceil(n / limits.neurons_max) if limits.neurons_max else 1}
    if limits.memory_bytes:
        parts["bytes"] = math.ceil(float(net.bytes_.sum()) / limits.memory_bytes)
    if limits.work_max:
        parts["work"] = math.ceil(float(net.work.sum()) / limits.work_max)
    if limits.fan_in_max:
        parts["inputs"] = math.ceil(int(net.n_sources_used) / limits.fan_in_max)
    return {"value": int(max(parts.values())) if n else 0, "terms": parts}


# ------------------------------------------------------------------ rules
def _bits_hint(bytes_now: float, limit: float, bits: int) -> str | None:
    b = int(bits * limit // max(bytes_now, 1))
    if b >= 2 and b < bits:
        return f"quantize{{bits={b}}}"
    return None


def _activity_hint(net) -> str:
    return activity_hint(getattr(net, "rates_from", ""))


def activity_hint(src: str) -> str:
    """How the activity the work bounds used (``src``: a Network's ``rates_from``)
    can be made more accurate (see :func:`nmc.passes.netmodel.activity_inputs`)."""
    src = src or ""
    if src == "uniform":
        return ("; the activity assumed is the worst case (every source fires every step, --worst-case): "
                "give measured activity with --calibrate D.npz, or drop --worst-case to use the synthetic-probe estimate")
    if src.startswith("estimate"):
        return "; the activity is an estimate from a synthetic probe: give measured activity with --calibrate D.npz"
    return ""


def _density_hint(ratio: float) -> str:
    d = max(0.001, math.floor(1000 * ratio * 0.95) / 1000)
    return f"sparsify{{density={d:g}}}"


def rule_neuron_fan_in(net, limits: CoreLimits) -> list[Violation]:
    """A single neuron's distinct sources must fit a core's input axons."""
    if not limits.fan_in_max:
        return []
    out = []
    for k, name in enumerate(net.pop_names):
        f = int(net.fan_in[net.pop_slice(k)].max(initial=0))
        if f > limits.fan_in_max:
            out.append(Violation("core.input_axons", name, limits.fan_in_max, f,
                                 _density_hint(limits.fan_in_max / f) + " (prune inputs) or split the layer's inputs",
                                 "max distinct inputs of one neuron"))
    return out


def rule_neuron_memory(net, limits: CoreLimits) -> list[Violation]:
    """A single neuron's synapses (+ state) must fit one core's synapse memory."""
    if not limits.memory_bytes:
        return []
    out = []
    for k, name in enumerate(net.pop_names):
        b = float(net.bytes_[net.pop_slice(k)].max(initial=0))
        if b > limits.memory_bytes:
            hint = _bits_hint(b, limits.memory_bytes, net.pop_bits[k]) or _density_hint(limits.memory_bytes / b)
            out.append(Violation("core.synapse_memory", name, int(limits.memory_bytes), int(b), hint,
                                 "bytes of one neuron's synapses"))
    return out


def rule_neuron_work(net, limits: CoreLimits) -> list[Violation]:
    """A single neuron's expected synaptic events per step must fit a core's budget."""
    if not limits.work_max:
        return []
    out = []
    for k, name in enumerate(net.pop_names):
        w = float(net.work[net.pop_slice(k)].max(initial=0))
        if w > limits.work_max:
            out.append(Violation("core.work_per_step", name, round(limits.work_max, 3), round(w, 3),
                                 _density_hint(limits.work_max / w) + " or lower the input activity"
                                 + _activity_hint(net),
                                 "synaptic events per step of one neuron"))
    return out


def rule_total_cores(net, limits: CoreLimits) -> list[Violation]:
    """The cores needed (lower bound) must not exceed the cores of all chips."""
    total = limits.cores_total
    if not total:
        return []
    lb = cores_lower_bound(net, limits)
    if lb["value"] <= total:
        return []
    # name the node that needs the most cores on its own
    caps = max_per_core(net, limits)
    need = [math.ceil(net.pop_size(k) / max(int(c), 1)) for k, c in enumerate(caps)]
    worst = net.pop_names[int(np.argmax(need))] if need else "<graph>"
    factor = total / lb["value"]
    binding = max(lb["terms"], key=lb["terms"].get)
    if binding == "bytes":
        hint = (_bits_hint(1.0, factor, limits.weight_bits) or _density_hint(factor))
    elif binding == "work":
        hint = _density_hint(factor) + _activity_hint(net)
    elif binding == "inputs":
        hint = _density_hint(factor)
    else:
        hint = "prune units (sparsify activity-based) to shrink the layers"
    chips_needed = math.ceil(lb["value"] / max(limits.cores_per_chip or 1, 1))
    hint += f", or a bigger spec with ≥ {chips_needed} chips (e.g. --hw spinnaker2-48chip)"
    return [Violation("board.cores", worst, total, lb["value"], hint,
                      f"cores needed by the whole network (bound on {binding}: {lb['terms']})")]


RULES = (rule_neuron_fan_in, rule_neuron_memory, rule_neuron_work, rule_total_cores)


def check(net, limits: CoreLimits, rules=RULES) -> list[Violation]:
    """Run every rule; return all violations (empty when the network fits)."""
    out: list[Violation] = []
    for r in rules:
        out += r(net, limits)
    return out
