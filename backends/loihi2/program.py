"""The Loihi 2 Program: integer arrays for Lava processes, one to one.

A :class:`LoihiProgram` is a list of

* :class:`InputPort` — one Lava source (RingBuffer / Injector) per graph Input;
  payload integers: 0/1 spikes (``bits == 0``) or graded spikes (``bits > 0``).
* :class:`NeuronGroup` — one Lava ``LIF`` process (bit-accurate fixed-point
  model) per graph neuron node: ``du``, ``dv`` (12-bit decays, scalar or per
  neuron), ``vth`` (17-bit threshold mantissa), ``bias_mant``/``bias_exp``
  (13-bit mantissa, 3-bit exponent, per neuron), ``reset`` (zero|subtract),
  ``v_scale`` (float membrane = v_int / v_scale), ``latency`` (Lava steps
  behind the float reference). The widths are the program's ``numerics``
  (:class:`~.numerics.LoihiNumerics`, from the spec; Lava's are 12-bit decays,
  shifts of 6, 24-bit state, 8-bit weights).
* :class:`Synapse` — one Lava ``Dense`` (or ``Sparse``) process: int weights
  (out, in) as Lava receives them (8-bit; mixed signs keep only even values),
  ``weight_exp``, ``num_message_bits`` (0 = binary spikes, >0 graded).
* :class:`OutputPort` — which group feeds a graph Output, and whether it reads
  spikes or the membrane (non-spiking LI/CubaLI readouts), or which graded
  unit feeds it (``read == "graded"``: its payload / its ``scale``), and an
  optional linear readout on the host (``readout_w``, ``readout_b``: a graph
  Output fed through linear layers, e.g. a decoder after the last SSM).
* :class:`~.graded.GradedUnit` / :class:`~.graded.GradedLink` — Lava's
  fixed-point sigma-delta and graded processes and the Dense/DelayDense links
  into them (:mod:`.graded`; diagonal SSMs map onto them, :mod:`.ssm`).
  Written to ``program.json`` only when the program has any, so programs
  without them keep their bytes.

``files()`` is deterministic: ``program.json`` (sorted) + one ``.npy`` per
array + the emitted ``lava_net.py``; :func:`load_program` reverses it. The IO
map (:func:`io_map`) follows from the ports: inputs spikes (``bits == 0``) or
graded, outputs spikes or voltage with their group's latency.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nmc.filebytes import dumps_json
from nmc.errors import InputFileError
from nmc.iomap import IOMap, Port

from ..base import Program

from .graded import GradedLink, GradedUnit
from .numerics import LoihiNumerics, packaged_numerics

ARRAY_DIR = "arrays"


@dataclass
class InputPort:
    name: str
    shape: tuple
    bits: int = 0          # 0: binary spikes; k > 0: graded payload, signed k-bit integers


@dataclass
class NeuronGroup:
    name: str
    kind: str              # NIR type name (LIF, CubaLIF, IF, LI, CubaLI)
    shape: tuple
    du: Any                # int or int array (n,), 0..4095
    dv: Any                # int or int array (n,), 0..4095
    vth: int               # threshold mantissa, 0..2^17-1 (Lava compares v > vth << 6)
    bias_mant: np.ndarray  # int32 (n,)
    bias_exp: np.ndarray   # int32 (n,)
    reset: str = "zero"
    spiking: bool = True
    v_scale: float = 1.0   # float v ≈ v_int / v_scale
    latency: int = 1
    v_init: Any = 0        # int32 (n,) or 0: initial v, so the bias pre-roll ends at v = 0 (see lower.py)
    u_init: Any = 0        # int32 (n,) or 0: initial current u, the transient of a current-based bias (lower.py)

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Synapse:
    name: str
    src: str               # InputPort or NeuronGroup name
    dst: str               # NeuronGroup name
    weights: np.ndarray    # int32 (n_dst, n_src), as handed to Lava
    weight_exp: int = 0
    num_message_bits: int = 0
    format: str = "dense"  # dense | sparse
    recurrent: bool = False

    @property
    def sign_mixed(self) -> bool:
        return bool(self.weights.min() < 0 < self.weights.max())


@dataclass
class OutputPort:
    name: str
    src: str               # NeuronGroup (or GradedUnit) name
    read: str = "spikes"   # spikes | v (groups) | graded (units)
    shape: tuple = ()
    # a linear readout on the host (float64, e.g. a classifier's decoder after an SSM): output = read·W + b,
    # W (n_src, n_out), b (n_out,); None: the read values themselves
    readout_w: np.ndarray | None = None
    readout_b: np.ndarray | None = None

    def read_out(self, a: np.ndarray) -> np.ndarray:
        """The port's value from its source's read values (..., n_src) → (..., *shape)."""
        if self.readout_w is None:
            return a
        w = np.asarray(self.readout_w, np.float64)
        return np.asarray(a, np.float64).reshape(*a.shape[:-1], w.shape[0]) @ w + np.asarray(self.readout_b, np.float64)


@dataclass(frozen=True, eq=False)
class LoihiProgram(Program):
    inputs: list[InputPort] = field(default_factory=list)
    groups: list[NeuronGroup] = field(default_factory=list)
    synapses: list[Synapse] = field(default_factory=list)
    outputs: list[OutputPort] = field(default_factory=list)
    meta: dict = field(default_factory=dict)   # dt, fidelity notes, placement summary
    #: the fixed-point format it was lowered for (the spec's [numerics]); the emulator follows it
    numerics: LoihiNumerics = field(default_factory=packaged_numerics)
    units: list[GradedUnit] = field(default_factory=list)
    links: list[GradedLink] = field(default_factory=list)

    # ---------------------------------------------------------------- access
    def group(self, name: str) -> NeuronGroup:
        return next(g for g in self.groups if g.name == name)

    def unit(self, name: str) -> GradedUnit:
        return next(u for u in self.units if u.name == name)

    def latency_of(self, name: str) -> int:
        """A group's or unit's latency (Lava steps behind the float reference)."""
        return next(x.latency for x in (*self.groups, *self.units) if x.name == name)

    @property
    def max_latency(self) -> int:
        return max((x.latency for x in (*self.groups, *self.units)), default=0)

    def summary(self) -> dict:
        return {"lava_processes": len(self.inputs) + len(self.groups) + len(self.synapses)
                + len(self.units) + len(self.links),
                "neurons": sum(g.n for g in self.groups) + sum(u.n for u in self.units),
                "synapses": int(sum(np.count_nonzero(s.weights) for s in (*self.synapses, *self.links))),
                "latency_steps": self.max_latency,
                **{k: v for k, v in self.meta.items() if k in ("cores_used", "cores_lower_bound")}}

    # ----------------------------------------------------------- (de)serialise
    def to_json(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}

        def enc(prefix, obj):
            d = {}
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if isinstance(v, np.ndarray):
                    key = f"{prefix}.{f.name}"
                    arrays[key] = v
                    d[f.name] = {"array": key}
                elif isinstance(v, tuple):
                    d[f.name] = list(v)
                else:
                    d[f.name] = v
            return d

        doc = {"format": 1,
               "inputs": [enc(f"in.{p.name}", p) for p in self.inputs],
               "groups": [enc(f"g.{g.name}", g) for g in self.groups],
               "synapses": [enc(f"s.{s.name}", s) for s in self.synapses],
               # a port without a host readout keeps its bytes (no readout_* keys)
               "outputs": [{k: v for k, v in enc(f"out.{o.name}", o).items()
                            if not (k.startswith("readout_") and v is None)} for o in self.outputs],
               "meta": self.meta}
        if self.units or self.links:    # only then: programs without them keep their bytes
            doc["units"] = [enc(f"u.{u.name}", u) for u in self.units]
            doc["links"] = [enc(f"l.{k.name}", k) for k in self.links]
        if self.numerics != packaged_numerics():   # recorded only when not Lava's (default bundles unchanged)
            doc["numerics"] = self.numerics.to_dict()
        return doc, arrays

    def files(self) -> dict[str, bytes]:
        from .emit import emit_lava_net

        from .learning_format import LearningFormat

        doc, arrays = self.to_json()
        plastic = bool(self.meta.get("plasticity"))
        net = emit_lava_net(graded=bool(self.units), plastic=plastic, decay_bits=self.numerics.decay_bits,
                            trace_max=LearningFormat.of_program(self).trace_max if plastic else None)
        out = {"program.json": dumps_json(doc), "lava_net.py": net.encode()}
        for k, a in sorted(arrays.items()):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
            out[f"{ARRAY_DIR}/{k}.npy"] = buf.getvalue()
        return out


def io_map(prog: LoihiProgram) -> IOMap:
    """Inputs spikes or graded payloads, outputs as their source is read; recorded: every neuron
    group (spikes, or the membrane of a non-spiking one) and graded unit, with its latency."""
    return IOMap(tuple(Port(p.name, p.shape, "graded" if p.bits else "spikes") for p in prog.inputs),
                 tuple(Port(o.name, o.shape, {"spikes": "spikes", "graded": "graded"}.get(o.read, "voltage"),
                            prog.latency_of(o.src)) for o in prog.outputs),
                 tuple(Port(g.name, g.shape, "spikes" if g.spiking else "voltage", g.latency) for g in prog.groups)
                 + tuple(Port(u.name, u.shape, "graded", u.latency) for u in prog.units))


def with_io(prog: LoihiProgram) -> LoihiProgram:
    """The program with its IO map (after lowering, after loading)."""
    return replace(prog, io=io_map(prog))


def load_program(files: dict[str, bytes]) -> LoihiProgram:
    """Rebuild a :class:`LoihiProgram` from the bundle's ``program/`` files."""
    if "program.json" not in files:
        raise InputFileError("bundle has no program/program.json for the loihi2 target",
                             path="program/program.json", hint="recompile with --target loihi2")
    doc = json.loads(files["program.json"])

    def arr(key):
        rel = f"{ARRAY_DIR}/{key}.npy"
        if rel not in files:
            raise InputFileError("program array missing", path=f"program/{rel}", hint="recompile the bundle")
        return np.load(io.BytesIO(files[rel]), allow_pickle=False)

    def dec(cls, d):
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if isinstance(v, dict) and "array" in v:
                v = arr(v["array"])
            elif f.name == "shape":
                v = tuple(v)
            kw[f.name] = v
        return cls(**kw)

    return with_io(LoihiProgram(inputs=[dec(InputPort, d) for d in doc["inputs"]],
                                groups=[dec(NeuronGroup, d) for d in doc["groups"]],
                                synapses=[dec(Synapse, d) for d in doc["synapses"]],
                                outputs=[dec(OutputPort, d) for d in doc["outputs"]],
                                meta=doc.get("meta", {}),
                                units=[dec(GradedUnit, d) for d in doc.get("units", [])],
                                links=[dec(GradedLink, d) for d in doc.get("links", [])],
                                numerics=LoihiNumerics.from_dict(doc["numerics"]) if "numerics" in doc
                                else packaged_numerics()))
