"""The contracts every target implements: :class:`Backend`, :class:`Program`,
:class:`Device`, and the shared ways a device streams.

* A :class:`Backend` (one per target, registered by name in
  :mod:`nmc.backends`) lowers a compiled graph to its :class:`Program`, reads
  one back from a bundle's files, and opens its devices.
* A :class:`Program` is a frozen dataclass: the target's lowered network
  (per-core arrays, routing, native scripts) plus its IO map
  (:class:`nmc.iomap.IOMap`: input/output names, shapes, kinds, latencies),
  from which devices and the host runtime read shapes.
* A :class:`Device` runs a Program: ``run`` a whole recording, or ``reset`` +
  ``advance`` window by window with its state carried (what a streaming
  session drives). Every device has ``advance``: natively (``streams =
  True``: :class:`SteppedStreaming` for a one-timestep ``step``,
  :class:`LaggedStreaming` for chip emulators whose outputs lag their
  inputs), or through :class:`ReplayStreaming`, which re-runs the history
  since ``reset`` for a device that can only run whole recordings.

``docs/new_target.md`` shows how a new target is written against these.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from nmc.errors import OptionError
from nmc.iomap import IOMap, validate_inputs
from nmc.target_model import TargetModel

__all__ = ["Backend", "Device", "IOMap", "LaggedStreaming", "Program", "ReplayStreaming", "SteppedStreaming",
           "validate_inputs"]


@dataclass(frozen=True, eq=False)
class Program:
    """A lowered network for one target. Subclasses are frozen dataclasses too
    (``@dataclass(frozen=True, eq=False)``) holding per-core arrays, routing
    tables and native scripts; ``io`` (keyword-only) is the IO map, built by
    the backend's ``lower`` and again by ``load_program`` (the bundle does not
    store it: it follows from the graph and the program files)."""

    io: IOMap = field(default_factory=IOMap, kw_only=True)

    def files(self) -> dict[str, bytes]:
        """``{relative path: bytes}`` written under the bundle's ``program/`` (deterministic)."""
        return {}

    def summary(self) -> dict:
        """Resource use for ``nmc inspect`` and the compile report."""
        return {}


class Device(ABC):
    """Runs a Program. Emulators, third-party simulators and hardware adapters
    all implement this; vendor packages are imported inside the adapter only.

    ``run(inputs, steps=None, record=())`` simulates a whole recording
    (``{input: (T[, B], *shape)}`` → ``{output: ...}`` plus ``<node>.<var>`` for
    recorded nodes), checking its inputs with :func:`nmc.iomap.validate_inputs`.

    ``reset(batch)`` puts the device in its initial state and ``advance({input:
    (n, B, *shape)})`` runs ``n`` more timesteps from where the previous call
    stopped, returning ``{output: (n, B, *shape)}`` — exactly the rows ``run``
    would return for those timesteps of the whole input (the tests check this
    bit for bit for every emulator). ``streams`` says whether ``advance``
    carries the state natively (O(window) per call) or replays the history
    (:class:`ReplayStreaming`). ``close()`` releases what the device holds
    (child processes, boards).

    ``main_thread_only = True`` marks a device that can only run in the
    process's main thread (it installs signal handlers or keeps process-global
    state, like Brian2); a session refuses to open it in any other thread (a
    server session, for one), with a :class:`~nmc.errors.DeviceError`. Its
    constructor must not import such a package (check it with
    ``importlib.util.find_spec``), so that the refusal is the error a user sees.
    """

    name = ""
    streams = False
    main_thread_only = False
    #: ``advance`` takes one session window per call, of the session's length (a slot of a batched
    #: device steps in lock-step with the other sessions' windows); otherwise any number of steps
    window_locked = False

    @abstractmethod
    def reset(self, batch: int = 1) -> None:
        """Initial state for ``advance`` (``run`` always starts from it)."""

    @abstractmethod
    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``n`` timesteps with state kept: ``inputs[name]`` is (n, B, *shape)."""

    @abstractmethod
    def run(self, inputs, steps: int | None = None, record: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """A whole recording from the initial state."""

    def close(self) -> None:
        """Release child processes, connections; a no-op for in-process devices."""

    #: the device runs learning rules with a third factor (:mod:`nmc.plasticity`): ``modulate`` works
    takes_modulator = False

    def modulate(self, value) -> None:
        """Set the third factor (reward, or error per post neuron) of the program's plastic
        projections; it holds for the following timesteps. Devices without learning refuse."""
        from nmc.errors import DeviceError

        raise DeviceError(f"device '{self.name}' runs no learning rule that takes a third factor",
                          hint="compile a network with a Plasticity annotation (third_factor='reward' or 'error') "
                          "for the reference target")


def _window_steps(inputs: dict[str, np.ndarray]) -> int:
    if not inputs:
        raise ValueError("advance needs at least one input node")
    ns = {int(np.shape(v)[0]) for v in inputs.values()}
    if len(ns) != 1:
        raise ValueError(f"every input of a window needs the same number of timesteps, got {sorted(ns)}")
    return ns.pop()


class SteppedStreaming:
    """``advance`` for a device with a one-timestep ``step(inputs_t) ->
    outputs_t`` (``{input: (B, *shape)}`` → ``{output: (B, *shape)}``, state
    kept): it calls ``step`` n times (the reference device)."""

    streams = True

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = _window_steps(inputs)
        rows = [self.step({k: v[i] for k, v in inputs.items()}) for i in range(n)]
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


class ReplayStreaming:
    """``reset``/``advance`` for a device that can only run whole recordings
    (a board running an emitted script, a simulator rebuilt per run): each
    window re-runs the input history since ``reset`` from the initial state
    and returns the new rows. Exact for deterministic causal devices, but
    O(T²) time and O(T) memory over a stream's life (``reset()`` clears the
    history); ``streams`` is False so a session can say so."""

    streams = False

    def reset(self, batch: int = 1) -> None:
        self.batch = int(batch)
        self._history: list[dict[str, np.ndarray]] = []

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = _window_steps(inputs)
        if getattr(self, "_history", None) is None:
            raise OptionError(f"reset() the {self.name} device before advancing it")
        self._history.append(inputs)
        full = {k: np.concatenate([w[k] for w in self._history]) for k in inputs}
        try:
            if self.batch == 1:  # as a user runs it: unbatched
                res = {k: np.asarray(v)[:, None] for k, v in self.run({k: v[:, 0] for k, v in full.items()}).items()}
            else:
                res = self.run(full)
        except Exception:
            self._history.pop()  # this window never happened
            raise
        return {k: np.asarray(v)[-n:] for k, v in res.items()}


class LaggedStreaming:
    """Streaming for devices whose outputs lag their inputs in device time.

    A chip emulator runs device steps; output ``o`` of the reference's step t
    is the device's step ``t + L_o`` (``L_o`` = that output's latency, at most
    ``L``), and ``run`` simulates ``T + L`` device steps with zero input after
    the last one. A window of reference steps ``[a, a + n)`` needs device steps
    up to ``a + n − 1 + L``, whose inputs beyond ``a + n − 1`` have not arrived;
    but what those steps compute for the rows of this window does not depend on
    them (a synapse adds one step, so a row at latency ``L_o`` sees inputs up
    to its own reference step only). So ``advance``:

    1. runs the window's n device steps on the real inputs (state kept);
    2. saves the state, runs L *look-ahead* device steps with zero input —
       exactly what ``run`` does after the last window — and restores the state;
    3. returns rows ``[L_o, L_o + n)`` of those ``n + L`` device steps.

    One window costs ``O(n + L)`` device steps, whatever the stream's length.

    The lags are the program's output latencies (``program.io``; zero with
    ``align=False``); the look-ahead's silence has the IO map's input shapes.
    Subclasses set ``program``, ``align`` and ``batch`` and provide
    ``_stream_state`` (attribute names holding all device state, deep-copied
    for the look-ahead; or override ``_save_state`` / ``_restore_state`` when
    the state lives elsewhere) and ``_device_steps(inputs, n)`` (n device steps
    from the current state → ``{output: (n, B, *shape)}`` in device time,
    already in the units ``run`` returns).
    """

    streams = True
    align = True
    _stream_state: tuple[str, ...] = ()

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = _window_steps(inputs)
        lags = self._lags()
        L = max(lags.values(), default=0)
        rows = self._device_steps(inputs, n)
        if L:
            saved = self._save_state()
            ahead = self._device_steps(self._zero_window(L), L)
            self._restore_state(saved)
            rows = {k: np.concatenate([rows[k], ahead[k]]) for k in rows}
        return {k: v[lags[k]: lags[k] + n] for k, v in rows.items()}

    def _lags(self) -> dict[str, int]:
        return {p.name: p.latency if self.align else 0 for p in self.program.io.outputs}

    def _zero_window(self, n: int) -> dict[str, np.ndarray]:
        return {p.name: np.zeros((n, self.batch, *p.shape)) for p in self.program.io.inputs}

    def _save_state(self):
        return {k: copy.deepcopy(getattr(self, k)) for k in self._stream_state}

    def _restore_state(self, saved) -> None:
        for k, v in saved.items():
            setattr(self, k, v)


class Backend(ABC):
    """One target. Registered by name in :mod:`nmc.backends` (built in, by
    :func:`nmc.backends.register`, or through the ``nmc.targets`` entry-point
    group) as ``"module:attribute"`` naming an instance.

    Class attributes: ``name``; ``summary`` (one line for ``nmc targets``);
    ``spec_name`` (the ``hw_configs`` spec it reads, or None); ``devices``
    (names, the first the default unless ``default_device`` says otherwise);
    ``plasticity_refusal`` (why it cannot run learning rules, None when it can);
    ``options`` (``{key: nmc.target_options.TargetOption}``, what ``--option``
    may set)."""

    name: str = ""
    summary: str = ""
    spec_name: str | None = None
    devices: tuple[str, ...] = ()
    default_device: str = ""
    options: dict = {}
    #: why the target cannot run a learning rule (a :class:`nmc.plasticity.Plasticity` annotation);
    #: ``nmc.compile`` refuses such a graph with it, naming the projection. None: it runs them.
    plasticity_refusal: str | None = "its lowering freezes the weights into the program"
    #: annotation kinds the lowering reads and only a pass writes (e.g. ``("placement",)``: lowering
    #: reads the Placement, the passes are its only writer). ``nmc.compile`` appends the default
    #: provider of any of them the pipeline lacks (:func:`nmc.passes.complete_pipeline`, reported
    #: as a warning), and the lowering refuses a graph without them (a PassError naming the pass).
    lowering_requires: tuple[str, ...] = ()

    def plasticity_refusal_for(self, rule) -> str | None:
        """Why this target cannot run ``rule`` (a :class:`nmc.plasticity.Plasticity`), None when it
        can. The default refuses every rule with :attr:`plasticity_refusal`; a target that runs some
        rules overrides this and names the rule or parameter it cannot run."""
        return self.plasticity_refusal

    @abstractmethod
    def default_pipeline(self, options: dict) -> str:
        """The pass pipeline text (``normalize,quantize{bits=8},...``) for these compile options."""

    @abstractmethod
    def lower(self, graph, ctx) -> Program:
        """Graph (after the passes) → Program; ``ctx`` is the :class:`~nmc.passes.PassContext`."""

    @abstractmethod
    def load_program(self, files: dict[str, bytes], graph) -> Program:
        """The Program back from the bundle's ``program/`` files (``{relative path: bytes}``, untrusted)."""

    @abstractmethod
    def device(self, name: str, program: Program, **opts) -> Device:
        """Open device ``name`` (one of ``devices``) on ``program``; unknown names: :meth:`unknown_device`."""

    def target_model(self, spec, options=None) -> TargetModel:
        """The target's :class:`~nmc.target_model.TargetModel` built from its hardware spec
        (default: the generic model of ``spec``; ``backends/<t>/target.py`` subclasses it)."""
        return TargetModel.from_spec(spec)

    def unknown_device(self, name: str) -> OptionError:
        return OptionError(f"target '{self.name}' has no device '{name}'", hint=f"devices: {', '.join(self.devices)}")
