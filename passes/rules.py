"""Design rules for mapping a network onto cores: the per-core resource model
and one small named function per rule. Reused by every backend.

Resource model (per neuron i of a placed node; all read through the pass
context's :class:`~nmc.target_model.TargetModel` and its :class:`CoreLimits`,
whose values come from the HardwareSpec or from explicit pass options — no
hardware number lives in this file):

* **synapse bytes** (the target model's byte model; the generic one is
  :func:`~nmc.target_model.synapse_bytes`): the synapses stored for neuron i's
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
  Plus ``core.neuron_state_bytes`` per neuron when the spec gives it. A node
  kind that stores per-core arrays (SpiNNaker 2's EGRU kernels) also pays the
  target model's ``run_overhead_bytes`` once per run of its neurons on a core
  (``Network.run_bytes``): a core's capacity for that node leaves room for it.
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

import numpy as np

from nmc.errors import OptionError, Violation


# ------------------------------------------------------------------ limits
# The limits and the byte model live in the target model (nmc.target_model): import them
# from there (tests/test_layering.py forbids taking them through this module).
from nmc.target_model import CoreLimits, TargetModel  # noqa: E402


def target_for(ctx, **overrides) -> TargetModel:
    """The pass context's :class:`~nmc.target_model.TargetModel` (``ctx.target``,
    else the generic model of ``ctx.spec``), with ``overrides`` (pass options,
    None keeps the spec's value) on its limits; with neither a spec nor a target
    at least ``neurons_max`` must be given, else :class:`OptionError`."""
    if ctx.spec is None and ctx.target is None and overrides.get("neurons_max") is None:
        raise OptionError("core placement needs a hardware spec or explicit per-core limits",
                          hint="compile for a hardware target (e.g. --target spinnaker2) or give "
                               "partition{max_neurons_per_core=256}")
    t = ctx.target_model()
    return t.with_limits(**overrides) if any(v is not None for v in overrides.values()) else t


def limits_for(ctx, **overrides) -> CoreLimits:
    """The limits of :func:`target_for`."""
    return target_for(ctx, **overrides).limits


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
        if limits.memory_bytes and b > 0:   # a run of the node's neurons pays its per-run bytes once
            c = min(c, int((limits.memory_bytes - net.run_bytes_of(k)) // b))
        w = float(net.work[sl].max(initial=0) if not upper else net.work[sl].min(initial=np.inf))
        if limits.work_max and w > 0:
            c = min(c, int(limits.work_max // w))
        caps.append(max(0, c))
    return np.asarray(caps, dtype=np.int64)


def source_cores_min(net, limits: CoreLimits) -> np.ndarray:
    """Per unit s: the fewest cores its placed targets can lie on, max over placed nodes k of
    ⌈t_k(s) / cap_k⌉ with t_k(s) the neurons of k that s has a synapse onto and cap_k the most
    neurons of k any core holds (:func:`max_per_core` with ``upper``, additive limits only,
    at least 1). Each of those cores spends one input axon on s. 0 for a unit with no target."""
    caps = np.maximum(max_per_core(net, limits, upper=True), 1)
    out = np.zeros(net.n_units, dtype=np.int64)
    for k in range(len(net.pop_names)):
        sl = net.pop_slice(k)
        ind = net.A.indices[net.A.indptr[sl.start]:net.A.indptr[sl.stop]]   # one entry per (target, source)
        t = np.bincount(ind, minlength=net.n_units)
        np.maximum(out, -(-t // int(caps[k])), out=out)
    return out


def cores_lower_bound(net, limits: CoreLimits) -> dict:
    """cores ≥ max(⌈neurons/neurons_max⌉, ⌈bytes/memory⌉, ⌈work/work_max⌉,
    ⌈inputs/fan_in_max⌉) where inputs = Σ over source units of the fewest cores
    their targets lie on (:func:`source_cores_min`): every such core spends an
    input axon on the source, so the cores' axons together hold at least that many
    (a source whose targets fit one core counts once; a dense layer too large for
    one core counts each of its sources on each of the layer's cores).

    Computed once per network model and limits: kept in the model's ``memo`` (a model is never
    changed after it is built; other rates make another model, :meth:`Network.with_rates`), so
    the design rules and the partitioner share one pass over the synapses."""
    memo = getattr(net, "memo", None)
    key = ("cores_lower_bound", limits)
    if memo is None or key not in memo:
        lb = _cores_lower_bound(net, limits)
        if memo is None:
            return lb
        memo[key] = lb
    lb = memo[key]
    return {"value": lb["value"], "terms": dict(lb["terms"])}


def _cores_lower_bound(net, limits: CoreLimits) -> dict:
    n = int(net.placed_count)
    parts = {"neurons": limits.cores_for_neurons(n)}
    if limits.memory_bytes:
        runs = sum(net.run_bytes_of(k) for k in range(len(net.pop_names)))   # every node has ≥ 1 run
        parts["bytes"] = math.ceil((float(net.bytes_.sum()) + runs) / limits.memory_bytes)
    if limits.work_max:
        parts["work"] = math.ceil(float(net.work.sum()) / limits.work_max)
    if limits.fan_in_max:
        parts["inputs"] = math.ceil(int(source_cores_min(net, limits).sum()) / limits.fan_in_max)
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
    """A single neuron's synapses (+ state, + its node's per-run bytes) must fit one core's synapse memory."""
    if not limits.memory_bytes:
        return []
    out = []
    for k, name in enumerate(net.pop_names):
        b = float(net.bytes_[net.pop_slice(k)].max(initial=0)) + net.run_bytes_of(k)
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
