"""The IO map of a compiled network, and the one input validator.

Every :class:`~nmc.backends.base.Program` carries an :class:`IOMap`: its input
and output :class:`Port` s, each with a name (the graph's Input/Output node),
a shape, a kind and a latency, and the ports a device can record besides
(``recorded``: the layers the lowering placed, named by their graph node, kind
``spikes`` or ``voltage`` as the layer is read — ``graded`` for a layer that
sends values — and the latency of its device trace). Devices, the host session
and the streaming client read shapes from it; nothing reads them back from the
graph. The map is built from the program when it is lowered or loaded, not
stored in the bundle.

* ``kind``: ``spikes`` (0/1 events), ``graded`` (values: graded events, the
  reference's float inputs and outputs, counts of repeated events) or
  ``voltage`` (a membrane read out of a non-spiking layer).
* ``latency``: device steps an output trails the float reference's step
  (each chip synapse adds one); 0 for inputs and for devices without lag.

:func:`validate_inputs` is the one check of user inputs against an IO map: the
reference simulator, every device's ``run`` and the streaming session call it
(target-specific value checks, e.g. Loihi 2's payload bits, follow it in the
device). It lives in the foundation so that the reference, the backends and
the runtime can all import it without a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EventFormatError, OptionError, ShapeError

KINDS = ("spikes", "graded", "voltage")


@dataclass(frozen=True)
class Port:
    name: str
    shape: tuple[int, ...]
    kind: str = "graded"
    latency: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in KINDS:
            raise ValueError(f"port '{self.name}': kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class IOMap:
    """Input and output ports of a program, in the graph's order."""

    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    #: the layers a device can record (``run(..., record=[name])``), in the program's order
    recorded: tuple[Port, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "recorded", tuple(self.recorded))

    @classmethod
    def of_shapes(cls, inputs: dict, outputs: dict) -> "IOMap":
        """From ``{name: shape}`` dicts (kinds and latencies unknown: graded, 0)."""
        return cls(tuple(Port(k, tuple(v)) for k, v in inputs.items()),
                   tuple(Port(k, tuple(v)) for k, v in outputs.items()))

    @classmethod
    def of_graph(cls, graph, input_kind: str = "graded", kinds: dict | None = None,
                 latency: dict | None = None) -> "IOMap":
        """The graph's Input/Output nodes and shapes; ``kinds``/``latency`` per output name
        (default: graded, 0)."""
        kinds, latency = kinds or {}, latency or {}
        return cls(tuple(Port(k, tuple(graph.shape_out(k)), input_kind) for k in graph.inputs),
                   tuple(Port(k, tuple(graph.shape_in(k)), kinds.get(k, "graded"), int(latency.get(k, 0)))
                         for k in graph.outputs))

    # ------------------------------------------------------------ access
    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: p.shape for p in self.inputs}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: p.shape for p in self.outputs}

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.outputs]

    def input(self, name: str) -> Port:
        return next(p for p in self.inputs if p.name == name)

    def output(self, name: str) -> Port:
        return next(p for p in self.outputs if p.name == name)

    @property
    def recorded_names(self) -> list[str]:
        return [p.name for p in self.recorded]

    def record(self, name: str, *, hint: str = "") -> Port:
        """The recorded port ``name``; an :class:`~nmc.errors.OptionError` naming the recordable
        layers when the program has none of that name."""
        for p in self.recorded:
            if p.name == name:
                return p
        raise OptionError(f"cannot record '{name}': not a layer of the program", node=name,
                          hint=hint or ("recordable layers: " + ", ".join(self.recorded_names[:20])
                                        + (", ..." if len(self.recorded) > 20 else "") if self.recorded
                                        else "this program records no layers"))

    def size(self, name: str, kind: str = "in") -> int:
        return (self.input(name) if kind == "in" else self.output(name)).size

    def as_dict(self) -> dict:
        port = lambda p: {"name": p.name, "shape": list(p.shape), "kind": p.kind, "latency": p.latency}  # noqa: E731
        out = {"inputs": [port(p) for p in self.inputs], "outputs": [port(p) for p in self.outputs]}
        if self.recorded:
            out["recorded"] = [port(p) for p in self.recorded]
        return out


def validate_inputs(io: IOMap, inputs, steps: int | None = None, batched: bool | None = None, *,
                    stream: bool = False):
    """Check user inputs against ``io``'s input ports.

    Recordings (``stream=False``, what ``run`` takes): ``inputs`` is ``{input:
    (T[, B], *shape)}`` (a bare array for a one-input program); every input
    must be given, numeric and finite, with T ≥ 1 and B ≥ 1. Inputs shorter
    than ``steps`` are padded with zeros (silence), never truncated silently:
    ``steps`` smaller than the input length is an error. Returns ``({input:
    (T, B, *shape)}, T, batched)``.

    Streams (``stream=True``, what a session's ``run_dense`` takes): ``{input:
    (T, *shape)}``, unbatched, inputs may be left out (no events), a node that
    is not an input is an :class:`~nmc.errors.EventFormatError`. Returns
    ``{input: array}``.
    """
    if stream:
        return _validate_stream(io, inputs)
    names = io.input_names
    if not isinstance(inputs, dict):
        if len(names) == 1:
            inputs = {names[0]: inputs}
        else:
            raise ShapeError(f"graph has {len(names)} inputs; pass a dict keyed by {names}")
    missing = [k for k in names if k not in inputs]
    extra = [k for k in inputs if k not in names]
    if missing:
        raise ShapeError("no input given for this input node", node=missing[0],
                         hint=f"provide arrays named {names}")
    if extra:
        raise ShapeError("input given for a node that is not an input of the graph", node=extra[0],
                         hint=f"input nodes: {names}")
    out, T, bflag = {}, None, batched
    for port in io.inputs:
        k, shp = port.name, port.shape
        a = np.asarray(inputs[k])
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise ShapeError(f"input array has dtype {a.dtype}, expected numbers", node=k)
        if bflag is None:
            bflag = a.ndim == len(shp) + 2
        want = len(shp) + (2 if bflag else 1)
        if a.ndim != want or tuple(a.shape[-len(shp):] if shp else ()) != shp:
            raise ShapeError(f"input array has shape {a.shape}, expected (T, {', '.join(map(str, shp))})"
                             + (" with a batch axis after T" if bflag else ""), node=k,
                             hint="arrays are time-major: (timesteps, *node shape)")
        if not np.all(np.isfinite(a)):
            raise ShapeError("input array has non-finite values", node=k)
        if a.shape[0] < 1 or (bflag and a.shape[1] < 1):
            raise ShapeError(f"input array has shape {a.shape}: " + ("no timesteps (T = 0)" if a.shape[0] < 1
                             else "an empty batch (batch = 0)"), node=k,
                             hint="give at least one timestep and one sample: (T >= 1[, batch >= 1], *node shape)")
        if not bflag:
            a = a[:, None]
        out[k] = a
        T = a.shape[0] if T is None else max(T, a.shape[0])
    if steps is not None:
        if steps < 1:
            raise OptionError(f"--steps must be >= 1, got {steps}", limit=1, actual=steps,
                              hint="omit --steps to run the input's length")
        from .limits import check_shape_alloc

        B = max(a.shape[1] for a in out.values())
        for p in io.outputs:  # each output is recorded for every step: (steps, B, *shape) float64
            check_shape_alloc((steps, B, *p.shape), 8, f"--steps {steps}: output '{p.name}'", node=p.name,
                              error=OptionError, hint="run fewer steps")
        if steps < T:
            raise ShapeError(f"--steps {steps} is shorter than the input ({T} steps); events would be lost",
                             limit=steps, actual=T, hint="omit --steps or pass a larger value")
        T = steps
    return out, T, bflag


def _validate_stream(io: IOMap, inputs) -> dict[str, np.ndarray]:
    names, shapes = io.input_names, io.input_shapes
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise EventFormatError(f"bundle has {len(names)} inputs; pass {{node: array}}",
                                   hint=f"input nodes: {names}")
        inputs = {names[0]: inputs}
    out = {}
    for k, v in inputs.items():
        if k not in shapes:
            raise EventFormatError("input given for a node that is not an input of the bundle", node=k,
                                   hint=f"input nodes: {names}")
        v = np.asarray(v)
        if v.ndim < 1 or tuple(v.shape[1:]) != shapes[k]:
            raise ShapeError(f"input has shape {v.shape}, expected (T, {', '.join(map(str, shapes[k]))})",
                             node=k, hint="one (T, *node shape) array per input node, unbatched")
        out[k] = v
    if not out:
        raise EventFormatError("no inputs given", hint=f"input nodes: {names}")
    return out
