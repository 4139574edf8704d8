"""Run a program's generated EGRU PE kernels (``program/kernels/*.c``) on the
host: compiled with the host C compiler into a shared library (``-O2
-std=c99 -ffp-contract=off -fno-fast-math``, the arithmetic the kernels'
docstring fixes) and stepped from Python through ctypes.

:class:`CKernels` steps every EGRU population of the program once per
reference step, in graph order, each fed the events its source emitted in the
same step (an input's one-hot or graded events, or the previous layer's) and
its own events of the previous step: the emulator's outputs aligned by
latency. It is how ``nmc run --c-kernels`` streams tokens through the kernels
and how the tests check them bit for bit against the emulator.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nmc.errors import DeviceError

from .egru import kernel_tags
from .program import S2Program, pe_slices

EXPORTS = r"""
#include "nmc_egru.h"
int nmc_export_step(nmc_egru_pe *p, const uint32_t *xi, const float *xv, int nx,
                    const uint32_t *yi, const float *yv, int ny, uint32_t *oi, float *ov) {
    return nmc_egru_step(p, xi, xv, nx, yi, yv, ny, oi, ov);
}
void nmc_export_reset(nmc_egru_pe *p) { for (int u = 0; u < p->n_units; u++) p->c[u] = 0.0f; }
"""
FLAGS = ["-O2", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


class CKernels:
    def __init__(self, program: S2Program):
        cc = compiler()
        if cc is None:
            raise DeviceError("no host C compiler (cc/gcc) to build the EGRU kernels", hint="install gcc")
        self.p = program
        self.pops = [p for p in program.populations if p.model == "egru_kernel"]
        if not self.pops:
            raise DeviceError("the program has no EGRU kernels", hint="use the emulator")
        self._dir = tempfile.TemporaryDirectory(prefix="nmc-ck-")
        d = Path(self._dir.name)
        for k, v in program.files().items():
            if k.startswith("kernels/"):
                (d / k).parent.mkdir(exist_ok=True)
                (d / k).write_bytes(v)
        (d / "kernels" / "nmc_exports.c").write_text(EXPORTS)
        lib = d / "libnmc_egru.so"
        r = subprocess.run([cc, *FLAGS, "-o", str(lib), *sorted(map(str, (d / "kernels").glob("*.c")))],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DeviceError(f"the generated kernels did not compile: {r.stderr.strip()[:400]}")
        self.lib = ctypes.CDLL(str(lib))
        u32p, f32p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_float)
        self.lib.nmc_export_step.argtypes = [ctypes.c_void_p, u32p, f32p, ctypes.c_int, u32p, f32p, ctypes.c_int,
                                             u32p, f32p]
        self.lib.nmc_export_step.restype = ctypes.c_int
        self.lib.nmc_export_reset.argtypes = [ctypes.c_void_p]
        self.pes = {p.name: [ctypes.addressof(ctypes.c_char.in_dll(self.lib, t))
                             for t in kernel_tags(p.name, pe_slices(p))] for p in self.pops}
        self.reset()

    def reset(self) -> None:
        for addrs in self.pes.values():
            for a in addrs:
                self.lib.nmc_export_reset(a)
        self.prev = {p.name: np.zeros(p.size, np.float32) for p in self.pops}

    @staticmethod
    def _events(v: np.ndarray):
        idx = np.ascontiguousarray(np.flatnonzero(v), dtype=np.uint32)
        val = np.ascontiguousarray(v[idx], dtype=np.float32)
        return idx, val

    def step(self, ext: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One reference step for one sample: ``ext`` {input population: (n,) float32 events};
        returns {EGRU population: (H,) float32 graded events}."""
        cur = {k: np.asarray(v, np.float32).reshape(-1) for k, v in ext.items()}
        u32p, f32p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_float)
        for p in self.pops:
            xi, xv = self._events(cur[p.source])
            yi, yv = self._events(self.prev[p.name])
            oi = np.zeros(p.size, np.uint32)
            ov = np.zeros(p.size, np.float32)
            y = np.zeros(p.size, np.float32)
            for a in self.pes[p.name]:
                n = self.lib.nmc_export_step(a, xi.ctypes.data_as(u32p), xv.ctypes.data_as(f32p), xi.size,
                                             yi.ctypes.data_as(u32p), yv.ctypes.data_as(f32p), yi.size,
                                             oi.ctypes.data_as(u32p), ov.ctypes.data_as(f32p))
                y[oi[:n]] = ov[:n]
            self.prev[p.name] = y
            cur[p.name] = y
        return {p.name: cur[p.name] for p in self.pops}

    def close(self) -> None:
        self._dir.cleanup()
