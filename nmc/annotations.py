"""Typed per-node annotations.

Annotations are small frozen dataclasses kept per node in
``Graph.annotations[node][kind]`` (``kind`` = the class's ``kind`` string).
They never change what a plain NIR reader sees: they are stored in a separate
``/nmc`` group of the HDF5 file, and a graph without them is still a complete
description of the network. Passes write them; backends read them.

Field values may be: None, bool, int, float, str, tuples/lists of those,
numpy arrays, and dicts of those (JSON-like); :mod:`nmc.serialize` stores
them losslessly.

To add one: subclass :class:`Annotation`, set ``kind``, decorate with
``@register``. The registry is explicit and keyed by class name. Annotations
defined in modules of their own (:class:`nmc.plasticity.Plasticity`) are
registered when :mod:`nmc.serialize` (which imports them) is loaded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

REGISTRY: dict[str, type["Annotation"]] = {}


def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls


@dataclass(frozen=True)
class Annotation:
    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def summary(self) -> str:
        """Stable one-line text for graph dumps (arrays summarised by shape)."""
        parts = []
        for k, v in self.fields().items():
            if isinstance(v, np.ndarray):
                parts.append(f"{k}={v.dtype}{list(v.shape)}")
            elif isinstance(v, float):
                parts.append(f"{k}={v:.6g}")
            elif isinstance(v, dict):
                parts.append(f"{k}={{{', '.join(sorted(map(str, v)))}}}")
            else:
                parts.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@register
@dataclass(frozen=True)
class Reset(Annotation):
    """Reset mode of a spiking neuron node.

    ``zero``: after a spike v ← v_reset (NIR's only reset; the name follows the
    usual v_reset = 0). ``subtract``: v ← v − v_threshold (snnTorch's and
    SpiNNaker 2's ``reset_by_subtraction``); not expressible in NIR, so a graph
    carrying it cannot be exported as pure NIR.
    """

    kind: ClassVar[str] = "reset"
    mode: str = "zero"

    def __post_init__(self):
        if self.mode not in ("zero", "subtract"):
            from .errors import OptionError

            raise OptionError(f"reset mode must be 'zero' or 'subtract', not {self.mode!r}")


@register
@dataclass(frozen=True)
class Quant(Annotation):
    """Quantization of a weight node (written by the quantize pass).

    ``w_int`` holds the integer weights (same shape as the float weight);
    the float weight ≈ w_int · scale, scale per layer (shape ()) or per output
    channel (shape (out,)). ``bits`` ∈ 1..16; ``scheme`` ∈ {"int", "ternary",
    "binary"}.
    """

    kind: ClassVar[str] = "quant"
    bits: int = 8
    scheme: str = "int"
    scale: Any = None
    w_int: Any = None
    method: str = "maxabs"


@register
@dataclass(frozen=True)
class SSMQuant(Annotation):
    """Fixed-point one-tick parameters of an SSM node (written by the quantize pass,
    :mod:`nmc.passes.quantize_ssm`): Λ̄ ≈ lam_int·2^−lam_frac, B̄ = γ ⊙ B ≈ b_int·2^−b_frac,
    C̄ = ρ·C ≈ c_int·2^−c_frac, D ≈ d_int·2^−d_frac; the Λ̄/B̄/C̄ arrays carry a last axis of
    (real, imaginary) parts; ``b_frac``, ``c_frac``: one per row of B̄, C̄ (int32 arrays; a
    scalar: one for the array, :func:`nmc.passes.quantize_ssm.row_scale`). ``bits``: the width
    of B̄, C̄, D (Λ̄'s parts are 16-bit)."""

    kind: ClassVar[str] = "ssm_quant"
    bits: int = 8
    lam_frac: int = 15
    lam_int: Any = None
    b_frac: Any = 0
    b_int: Any = None
    c_frac: Any = 0
    c_int: Any = None
    d_frac: int = 0
    d_int: Any = None


@register
@dataclass(frozen=True)
class Sparsity(Annotation):
    """Weight sparsity of a weight node: density kept and the storage format."""

    kind: ClassVar[str] = "sparsity"
    density: float = 1.0
    format: str = "dense"
    mask: Any = None


@register
@dataclass(frozen=True)
class Placement(Annotation):
    """Placement of a node's neurons: ``core[i]`` is the global (logical) core
    index of neuron i (flat index); ``chip[i]`` its chip. Written by the
    ``partition`` pass; the ``place`` pass adds the physical position of the
    core: ``x[i]``, ``y[i]`` (router node in the chip's mesh) and ``slot[i]``
    (core within that node). ``rate[i]``: the events per step assumed for
    neuron i (from a reference run on data, or 1.0). On a target whose
    placement granularity is a logical neuron (BrainScaleS-2,
    :mod:`nmc.passes.hemispheres`) the core is a hemisphere (run ×
    hemispheres + hemisphere), the chip the sequential run and ``slot[i]`` the
    neuron's first circuit."""

    kind: ClassVar[str] = "placement"
    core: Any = None
    chip: Any = None
    x: Any = None
    y: Any = None
    slot: Any = None
    rate: Any = None


@register
@dataclass(frozen=True)
class Route(Annotation):
    """Multicast routing of a neuron node's spikes (written by the ``route``
    pass): for each core ``cores[k]`` holding neurons of the node, its spikes
    go to the cores ``dest[dest_ptr[k]:dest_ptr[k + 1]]`` (CSR, sorted)."""

    kind: ClassVar[str] = "route"
    cores: Any = None
    dest_ptr: Any = None
    dest: Any = None


@register
@dataclass(frozen=True)
class Note(Annotation):
    """Free-form provenance (e.g. which frontend layer a node came from)."""

    kind: ClassVar[str] = "note"
    text: str = ""


@register
@dataclass(frozen=True)
class RowMap(Annotation):
    """Synapse-row mapping of a weight node (written by the ``rewire`` pass):
    per source ``group[i]`` (label group) and ``label[i]`` (its label in the
    group); per synapse ``synapse_row[j, i]`` (row index, −1 when pruned);
    ``rows`` in total."""

    kind: ClassVar[str] = "rowmap"
    group: Any = None
    label: Any = None
    synapse_row: Any = None
    rows: int = 0
