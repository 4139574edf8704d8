"""The ``loihi2`` target: Intel Loihi 2 through Lava (``lava-nc``).

Pipeline: normalize → (quantize, partition, place, route when registered) → lower
(:mod:`.lower`) to a :class:`~.program.LoihiProgram` of Lava processes. The
bundle holds ``program/lava_net.py`` (:mod:`.emit`), ``program.json`` and
arrays.

Devices:

* ``emulator`` (default): :class:`~.emulator.LoihiEmulator`, nmc's vectorised
  re-implementation of Lava's bit-accurate fixed-point models (bit-exact).
* ``lava``: the emitted module run in Lava's ``Loihi2SimCfg(select_tag="fixed_pt")``
  in a child process under a timeout (:mod:`.lava_device`); ``hw=True`` uses
  ``Loihi2HwCfg`` (needs Intel's lava-loihi). Streaming sessions keep one Lava
  network running in a child process and feed it through Lava's Injector /
  Extractor processes (:mod:`.lava_stream`, :mod:`.lava_stream_worker`).

Both devices stream (``reset`` + ``advance``, see :class:`~..base.LaggedStreaming`):
a session window costs O(window), and the rows equal ``run``'s bit for bit.

Both return what :class:`nmc.reference.ReferenceSimulator` returns, in float
units: ``{output: (T[, B], *shape)}`` (spikes 0/1, or membrane v for LI
readouts) and, for recorded nodes, ``<node>.spikes``, ``<node>.v`` (float) and
``<node>.v_int``/``<node>.s_int`` (Lava integers). With ``align=True``
(default) every group is shifted back by its latency (``out[t] = lava[t + L]``,
simulating T + max latency Lava steps), so rows line up with the reference;
``align=False`` gives raw Lava time.

Inputs: with ``input_bits = 0`` (default) the input must be 0/1 spikes; with
``input_bits = k`` graded spikes, integers in ``[−2^(k−1), 2^(k−1))``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import OptionError, ShapeError
from nmc.ir import Graph
from nmc.reference import check_inputs
from nmc.target_options import TargetOption

from ..base import Device, LaggedStreaming
from .emulator import LoihiEmulator
from .program import LoihiProgram, load_program


def _payload(program: LoihiProgram, graph_inputs: dict, steps, batched):
    shapes = {p.name: p.shape for p in program.inputs}
    import nir

    g = Graph({k: nir.Input(input_type={"input": np.array(s)}) for k, s in shapes.items()})
    arrs, T, batched = check_inputs(g, graph_inputs, steps, batched)
    out = {}
    for p in program.inputs:
        a = arrs[p.name]
        if np.any(a != np.rint(a)):
            raise ShapeError("Loihi 2 inputs must be integers (0/1 spikes, or graded payloads with input_bits)",
                             node=p.name, hint="threshold or scale the input, or compile with --option input_bits=8")
        if p.bits == 0 and np.any((a != 0) & (a != 1)):
            raise ShapeError("input has values other than 0/1 but the program was compiled for binary spikes",
                             node=p.name, hint="compile with --option input_bits=8 for graded spikes")
        if p.bits > 0 and (a.min() < -(2 ** (p.bits - 1)) or a.max() >= 2 ** (p.bits - 1)):
            raise ShapeError(f"graded input exceeds {p.bits}-bit payloads", node=p.name,
                             limit=2 ** (p.bits - 1) - 1, actual=float(np.abs(a).max()))
        out[p.name] = a.reshape(a.shape[0], a.shape[1], -1).astype(np.int64)
    return out, T, batched


class LoihiDevice(Device):
    """Shared conversion (float ⇄ Lava integers, latency alignment) for both devices."""

    def __init__(self, program: LoihiProgram, align: bool = True):
        self.program = program
        self.align = align

    def reset(self, batch: int = 1) -> None:
        """Every run starts from reset (zero state); nothing is kept between runs."""

    def _simulate(self, payload, steps, need):  # pragma: no cover - interface
        """Run; return ``{"<group>.s"|"<group>.v": (steps, B, n)}`` for at least the groups in ``need``."""
        raise NotImplementedError

    # ------------------------------------------- streaming helpers (both devices)
    def _lags(self) -> dict[str, int]:
        return {o.name: self.program.group(o.src).latency if self.align else 0 for o in self.program.outputs}

    def _zero_window(self, n: int) -> dict[str, np.ndarray]:
        return {p.name: np.zeros((n, self.batch, *p.shape)) for p in self.program.inputs}

    def _stream_payload(self, inputs, n: int) -> dict[str, np.ndarray]:
        """A window's inputs (n, B, *shape), checked as ``run`` checks them → Lava payloads (n, B, size)."""
        payload, _, _ = _payload(self.program, _graph_inputs(self.program, inputs), n, True)
        return payload

    def _stream_outputs(self, n: int, spikes_of, v_int_of) -> dict[str, np.ndarray]:
        """Outputs in ``run``'s units from per-group (n, B, size) spikes / integer voltages."""
        out = {}
        for o in self.program.outputs:
            g = self.program.group(o.src)
            if o.read == "spikes":
                a = np.asarray(spikes_of(o.src)).astype(np.float64)
            else:
                a = np.asarray(v_int_of(o.src)) / np.asarray(g.v_scale, float).reshape(-1)
            out[o.name] = a.reshape(n, self.batch, *o.shape)
        return out

    def run(self, inputs, steps: int | None = None, record: Iterable[str] = (), batched: bool | None = None):
        _fix = _graph_inputs(self.program, inputs)
        payload, T, batched = _payload(self.program, _fix, steps, batched)
        record = list(record)
        names = {g.name for g in self.program.groups}
        for r in record:
            if r not in names:
                raise OptionError(f"cannot record '{r}' on loihi2", node=r,
                                  hint=f"neuron layers: {', '.join(sorted(names))}")
        extra = self.program.max_latency if self.align else 0
        need = {o.src for o in self.program.outputs} | set(record)
        raw = self._simulate(payload, T + extra, need)
        res: dict[str, np.ndarray] = {}
        for g in self.program.groups:
            if g.name not in need:
                continue
            lat = g.latency if self.align else 0
            s = raw[f"{g.name}.s"][lat:lat + T].astype(np.float64)
            vi = raw[f"{g.name}.v"][lat:lat + T]
            v = vi / np.asarray(g.v_scale, float).reshape(-1)
            res[g.name] = (s, v, vi)
        out = {}
        for o in self.program.outputs:
            s, v, _ = res[o.src]
            out[o.name] = (s if o.read == "spikes" else v).reshape(T, -1, *o.shape)
        for r in record:
            g = self.program.group(r)
            s, v, vi = res[r]
            shp = (T, -1, *g.shape)
            out[f"{r}.out"] = (s if g.spiking else v).reshape(shp)
            out[f"{r}.v"] = v.reshape(shp)
            out[f"{r}.v_int"] = vi.reshape(shp)
            if g.spiking:
                out[f"{r}.spikes"] = s.reshape(shp)
        if not batched:
            out = {k: a[:, 0] for k, a in out.items()}
        return out


def _graph_inputs(program, inputs):
    if not isinstance(inputs, dict) and len(program.inputs) == 1:
        return {program.inputs[0].name: inputs}
    return inputs


class EmulatorDevice(LaggedStreaming, LoihiDevice):
    """``run``: the whole recording (numba loop when available); ``reset(B)`` +
    ``advance``: window by window with Lava's state carried (numpy step,
    :class:`~..base.LaggedStreaming` look-ahead for the latency alignment)."""

    name = "emulator"
    _stream_state = ("_state",)
    #: where the streaming state keeps its batch rows (``nmc.runtime.serve.batching``)
    batch_slots = {"_state": 0}

    def _simulate(self, payload, steps, need):
        rec = LoihiEmulator(self.program).run(payload, steps, record=need)
        return {f"{k}.{x}": r[x] for k, r in rec.items() for x in ("s", "v")}

    def reset(self, batch: int = 1) -> None:
        """Initial (Lava reset) state for streaming; ``run`` always starts from it anyway."""
        if getattr(self, "_emu", None) is None:
            self._emu = LoihiEmulator(self.program)
        self.batch = int(batch)
        self._state = self._emu.initial_state(self.batch)

    def _device_steps(self, inputs, n: int) -> dict[str, np.ndarray]:
        payload = self._stream_payload(inputs, n)
        rows: dict[str, list] = {o.src: [] for o in self.program.outputs}
        for t in range(n):
            res = self._emu.step(self._state, {k: x[t] for k, x in payload.items()})
            for g in rows:
                _, v, sp = res[g]
                rows[g].append((sp, v))
        return self._stream_outputs(n, lambda g: np.stack([r[0] for r in rows[g]]),
                                    lambda g: np.stack([r[1] for r in rows[g]]))


class LavaDevice(LaggedStreaming, LoihiDevice):
    """``run``: the emitted module in a child process per call. ``reset(1)`` +
    ``advance``: one Lava network kept running in a child process
    (:mod:`.lava_stream`), fed through Lava's ``Injector`` and read through its
    ``Extractor`` processes window by window; the look-ahead of the latency
    alignment saves and restores Lava's state Vars. One sample at a time (Lava
    has no batch axis); ``close()`` (or the session's) ends the child."""

    name = "lava"

    def __init__(self, program, align: bool = True, timeout: float = 300.0, hw: bool = False):
        super().__init__(program, align)
        self.timeout, self.hw = timeout, hw
        self._stream = None

    def _simulate(self, payload, steps, need):  # Lava probes every group
        from .lava_device import run_lava

        return run_lava(self.program, payload, steps, timeout=self.timeout, hw=self.hw)

    def reset(self, batch: int = 1) -> None:
        """(Re)start the streaming Lava network from its initial state."""
        if int(batch) != 1:
            raise OptionError(f"the lava device streams one sample at a time (Lava has no batch axis), got batch {batch}",
                              hint="open one session per sample, or use the emulator device")
        from .lava_stream import LavaStream

        self.close()
        self.batch = 1
        self._stream = LavaStream(self.program, timeout=self.timeout, hw=self.hw)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _device_steps(self, inputs, n: int) -> dict[str, np.ndarray]:
        if self._stream is None:
            raise OptionError("reset() the lava device before advancing it")
        payload = self._stream_payload(inputs, n)
        want_v = sorted({o.src for o in self.program.outputs if o.read != "spikes"})
        raw = self._stream.call("run", {k: x[:, 0] for k, x in payload.items()}, want_v)
        return self._stream_outputs(n, lambda g: raw[f"{g}.s"][:, None], lambda g: raw[f"{g}.v"][:, None])

    def _save_state(self):
        self._stream.call("save")

    def _restore_state(self, saved) -> None:
        self._stream.call("restore")


class Loihi2Backend:
    name = "loihi2"
    summary = "Intel Loihi 2 via Lava: fixed-point LIF/Dense programs, bit-exact emulator, Lava sim or hardware"
    spec_name = "loihi2"
    devices = ("emulator", "lava")
    default_device = "emulator"
    #: compile options (``--option KEY=VALUE``), checked by :mod:`nmc.target_options`
    options = {
        "vth_mant": TargetOption("threshold mantissa (Lava's 17-bit vth)", int, 1, 131071),
        "weight_bits": TargetOption("weight bits inside Lava's 8-bit weight", int, 1, 8),
        "input_bits": TargetOption("graded input bits (0: spikes)", int, 0, 24),
        "sparse_below": TargetOption("weight density below which a Sparse process is used", float, 0, 1),
    }

    def default_pipeline(self, options: dict) -> str:
        from nmc.passes import REGISTRY

        want = ["quantize{bits=8}", "partition", "place", "route"]
        steps = ["normalize"] + [p for p in want if p.split("{")[0] in REGISTRY]
        return ",".join(steps)

    def lower(self, graph: Graph, ctx) -> LoihiProgram:
        from .lower import lower

        return lower(graph, ctx)

    def load_program(self, files: dict[str, bytes], graph: Graph) -> LoihiProgram:
        return load_program(files)

    def device(self, name: str, program: LoihiProgram, **opts) -> Device:
        if name == "emulator":
            return EmulatorDevice(program, **opts)
        if name == "lava":
            return LavaDevice(program, **opts)
        raise OptionError(f"target 'loihi2' has no device '{name}'", hint="use --device emulator or --device lava")


BACKEND = Loihi2Backend()
