"""Shared pieces of every backend: the Program and Device interfaces, and the
window-by-window streaming protocol the host runtime drives devices with."""
from __future__ import annotations

import copy
from typing import Iterable

import numpy as np


class Program:
    """A lowered network for one target. Subclasses hold per-core arrays,
    routing tables, io maps, native scripts."""

    def files(self) -> dict[str, bytes]:
        return {}

    def summary(self) -> dict:
        return {}


class Device:
    """Runs a Program. Emulators, third-party simulators and hardware adapters
    all implement this; vendor packages are imported inside the adapter only.

    Streaming (used by :mod:`nmc.runtime.session`): a device with ``streams =
    True`` keeps its state between calls. ``reset(batch)`` puts it in its
    initial state and ``advance({input: (n, B, *shape)})`` runs ``n`` more
    timesteps from where the previous call stopped, returning ``{output: (n, B,
    *shape)}`` — exactly the rows ``run`` would return for those timesteps of
    the whole input (the tests check this bit for bit for every emulator). The
    default ``advance`` calls a one-timestep ``step(inputs_t)`` n times (the
    reference device). A device without streaming is replayed by the session.

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

    def reset(self, batch: int = 1) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray], steps: int | None = None,
            record: Iterable[str] = ()) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``n`` timesteps with state kept: ``inputs[name]`` is (n, B, *shape)."""
        n = _window_steps(inputs)
        rows = [self.step({k: v[i] for k, v in inputs.items()}) for i in range(n)]
        if not rows:
            raise ValueError("advance needs at least one input node")
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _window_steps(inputs: dict[str, np.ndarray]) -> int:
    ns = {int(np.shape(v)[0]) for v in inputs.values()}
    if len(ns) != 1:
        raise ValueError(f"every input of a window needs the same number of timesteps, got {sorted(ns)}")
    return ns.pop()


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

    Subclasses provide ``_stream_state`` (attribute names holding all device
    state, deep-copied for the look-ahead; or override ``_save_state`` /
    ``_restore_state`` when the state lives elsewhere), ``_lags()`` (``{output: L_o}``),
    ``_zero_window(n)`` (inputs of n steps of silence) and ``_device_steps(inputs,
    n)`` (n device steps from the current state → ``{output: (n, B, *shape)}``
    in device time, already in the units ``run`` returns).
    """

    streams = True
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

    def _save_state(self):
        return {k: copy.deepcopy(getattr(self, k)) for k in self._stream_state}

    def _restore_state(self, saved) -> None:
        for k, v in saved.items():
            setattr(self, k, v)
