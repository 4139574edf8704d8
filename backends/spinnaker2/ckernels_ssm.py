"""Run one generated SSM PE kernel (:func:`backends.spinnaker2.ssm.kernel_files`) on the host:
compiled with the host C compiler (the flags of :mod:`.ckernels`: ``-O2 -std=c99
-ffp-contract=off -fno-fast-math``) and stepped through ctypes, one sample per step —
how the tests check the kernels bit for bit against the emulation.
"""
from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nmc.errors import DeviceError
from nmc.nodes_ssm import DiagSSM

from .ckernels import FLAGS, compiler
from .ssm import kernel_files

EXPORTS = r"""
#include "nmc_ssm.h"
void nmc_export_diag(nmc_ssm_diag *s, const float *u, float *out, uint8_t *fired) { nmc_ssm_diag_step(s, u, out, fired); }
void nmc_export_stoch(nmc_ssm_stoch *s, const float *u, float *spikes, float *prob) { nmc_ssm_stoch_step(s, u, spikes, prob); }
"""


EXPORTS_NORM = r"""
#include "nmc_ssm_norm.h"
void nmc_export_norm(const nmc_ssm_norm *s, const float *u, float *out) { nmc_ssm_norm_step(s, u, out); }
"""


class SSMKernel:
    """One node's kernel as a host library; ``step(u)`` → (out, fired) or (spikes, prob), float32."""

    def __init__(self, name: str, node, q):
        cc = compiler()
        if cc is None:
            raise DeviceError("no host C compiler (cc/gcc) to build the SSM kernel", hint="install gcc")
        self.node, self._dir = node, tempfile.TemporaryDirectory(prefix="nmc-ssm-")
        d = Path(self._dir.name)
        (d / "kernels").mkdir()
        files = kernel_files(name, node, q)
        for k, v in files.items():
            (d / k).write_bytes(v)
        (d / "kernels" / "nmc_exports.c").write_text(EXPORTS)
        lib = d / "libnmc_ssm.so"
        r = subprocess.run([cc, *FLAGS, "-o", str(lib), *sorted(map(str, (d / "kernels").glob("*.c")))],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DeviceError(f"the generated SSM kernel did not compile: {r.stderr.strip()[:400]}")
        self.lib = ctypes.CDLL(str(lib))
        tag = next(k for k in files if k not in ("kernels/nmc_ssm.h", "kernels/nmc_tanh_lut.c"))[8:-2]
        self.addr = ctypes.addressof(ctypes.c_char.in_dll(self.lib, tag))
        self.diag = isinstance(node, DiagSSM)
        self.n = node.channels if self.diag else node.lam.shape[0]

    def step(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.ascontiguousarray(u, np.float32).reshape(self.n)
        a = np.zeros(self.n, np.float32)
        f32p = ctypes.POINTER(ctypes.c_float)
        if self.diag:
            fired = np.zeros(self.n, np.uint8)
            self.lib.nmc_export_diag(ctypes.c_void_p(self.addr), u.ctypes.data_as(f32p), a.ctypes.data_as(f32p),
                                     fired.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
            return a, fired.astype(bool)
        b = np.zeros(self.n, np.float32)
        self.lib.nmc_export_stoch(ctypes.c_void_p(self.addr), u.ctypes.data_as(f32p), a.ctypes.data_as(f32p),
                                  b.ctypes.data_as(f32p))
        return a, b

    def close(self) -> None:
        self._dir.cleanup()


def run_files(files: dict[str, bytes], pop, u: np.ndarray) -> np.ndarray:
    """Step every per-PE kernel file of an ``ssm_kernel`` population (as :meth:`S2Program.files` emits them)
    over u (T, H_in) float32, one sample, each file given the whole input; their outputs (T, size) joined
    in unit order — what the PEs of the node send together. A LayerNorm's (:mod:`.ssm_norm`): u is its
    input stage's values (T, H)."""
    from .egru import kernel_tags
    from .program import pe_slices
    from .ssm import _tag

    cc = compiler()
    if cc is None:
        raise DeviceError("no host C compiler (cc/gcc) to build the SSM kernels", hint="install gcc")
    diag, norm = "theta" in pop.kernel, "gamma" in pop.kernel
    slices = pe_slices(pop)
    tags = kernel_tags(_tag(pop.name), slices)
    u = np.ascontiguousarray(u, np.float32)
    out = np.zeros((u.shape[0], pop.size), np.float32)
    f32p = ctypes.POINTER(ctypes.c_float)
    with tempfile.TemporaryDirectory(prefix="nmc-ssm-") as tmp:
        d = Path(tmp)
        (d / "kernels").mkdir()
        heads = ("kernels/nmc_ssm_norm.h",) if norm else ("kernels/nmc_ssm.h", "kernels/nmc_tanh_lut.c")
        for k in (*heads, *(f"kernels/{t}.c" for t in tags)):
            (d / k).write_bytes(files[k])
        (d / "kernels" / "nmc_exports.c").write_text(EXPORTS_NORM if norm else EXPORTS)
        lib = d / "libnmc_ssm.so"
        r = subprocess.run([cc, *FLAGS, "-o", str(lib), *sorted(map(str, (d / "kernels").glob("*.c")))],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DeviceError(f"the generated SSM kernels did not compile: {r.stderr.strip()[:400]}")
        so = ctypes.CDLL(str(lib))
        for (_, units), tag in zip(slices, tags):
            addr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.in_dll(so, tag)))
            n = units.stop - units.start
            for t in range(u.shape[0]):
                a, b = np.zeros(n, np.float32), np.zeros(n, np.float32)
                if norm:
                    so.nmc_export_norm(addr, u[t].ctypes.data_as(f32p), a.ctypes.data_as(f32p))
                elif diag:
                    fired = np.zeros(n, np.uint8)
                    so.nmc_export_diag(addr, u[t].ctypes.data_as(f32p), a.ctypes.data_as(f32p),
                                       fired.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
                else:
                    so.nmc_export_stoch(addr, u[t].ctypes.data_as(f32p), a.ctypes.data_as(f32p), b.ctypes.data_as(f32p))
                out[t, units] = a
    return out
