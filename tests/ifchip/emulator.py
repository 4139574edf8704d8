"""The ``emulator`` device: :func:`.emit.chip_step` in numpy, batched, int64.

``run`` simulates T + L chip steps (L = the deepest layer's latency, zero input
after the last one) and shifts each output back by its latency, so row t lines
up with the reference's step t. ``reset`` + ``advance`` stream the same rows
window by window (:class:`nmc.backends.base.LaggedStreaming`).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.backends.base import Device, LaggedStreaming, validate_inputs
from nmc.errors import OptionError, ShapeError

from .emit import chip_step
from .program import IFChipProgram


class IFChipEmulator(LaggedStreaming, Device):
    name = "emulator"
    _stream_state = ("_v", "_s", "_t")

    def __init__(self, program: IFChipProgram, align: bool = True):
        self.program, self.align = program, bool(align)

    def reset(self, batch: int = 1) -> None:
        self.batch = int(batch)
        self._v = {l.name: np.zeros((self.batch, l.size), np.int64) for l in self.program.layers}
        self._s = {**{l.name: np.zeros((self.batch, l.size), np.int64) for l in self.program.layers},
                   **{k: np.zeros((self.batch, n), np.int64) for k, n in self.program.inputs.items()}}
        self._t = 0

    @staticmethod
    def _spikes(arrs: dict) -> None:
        for k, a in arrs.items():
            if not np.all((a == 0) | (a == 1)):
                raise ShapeError("ifchip inputs are spikes (0/1)", node=k, hint="encode values as spikes")

    def _device_steps(self, inputs, n: int) -> dict[str, np.ndarray]:
        self._spikes(inputs)
        B, p = self.batch, self.program
        rows = {o: [] for o in p.outputs}
        for i in range(n):
            chip_step(p.layers, self._v, self._s, {k: np.asarray(a[i]).reshape(B, -1) for k, a in inputs.items()},
                      self._t)
            self._t += 1
            for o, lname in p.outputs.items():
                rows[o].append(self._s[lname].astype(np.float64))
        return {o: np.stack(r).reshape(n, B, *p.io.output(o).shape) for o, r in rows.items()}

    def run(self, inputs, steps: int | None = None, record: Iterable[str] = ()) -> dict[str, np.ndarray]:
        p = self.program
        arrs, T, batched = validate_inputs(p.io, inputs, steps)
        self._spikes(arrs)
        record = list(record)
        for r in record:
            if r not in {l.name for l in p.layers}:
                raise OptionError(f"cannot record '{r}': not an IF layer of the ifchip program", node=r)
        B = next(iter(arrs.values())).shape[1]
        L = max(l.latency for l in p.layers) if self.align else 0
        self.reset(B)
        hist = {l.name: ([], []) for l in p.layers}
        for t in range(T + L):
            ext = {k: (a[t] if t < a.shape[0] else np.zeros_like(a[0])).reshape(B, -1) for k, a in arrs.items()}
            chip_step(p.layers, self._v, self._s, ext, t)
            for l in p.layers:
                hist[l.name][0].append(self._s[l.name].astype(np.float64))
                hist[l.name][1].append(self._v[l.name] / l.scale)

        def series(name, i):
            lat = p.layer(name).latency if self.align else 0
            return np.stack(hist[name][i])[lat: lat + T]

        res = {o: series(n, 0).reshape(T, B, *p.io.output(o).shape) for o, n in p.outputs.items()}
        for r in record:
            res[f"{r}.spikes"] = res[f"{r}.out"] = series(r, 0)
            res[f"{r}.v"] = series(r, 1)
        return res if batched else {k: v[:, 0] for k, v in res.items()}
