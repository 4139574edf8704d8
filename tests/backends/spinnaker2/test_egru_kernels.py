"""EGRU on SpiNNaker 2: generated C kernels compiled with the host compiler
agree bit-exactly with the emulator on an event stream; the emulator agrees
with the float reference within the quantization error; arithmetic rules."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import nmc
from nets import currents, egru_net
from nmc.reference import ReferenceSimulator

CC = shutil.which("cc") or shutil.which("gcc")

HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "nmc_egru.h"
%(externs)s
static nmc_egru_pe *PES[] = {%(pes)s};
int main(int argc, char **argv) {
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    int T, n_in, H; fread(&T, 4, 1, in); fread(&n_in, 4, 1, in); fread(&H, 4, 1, in);
    uint32_t *yi = calloc(H, 4), *oi = calloc(H, 4); float *yv = calloc(H, 4), *ov = calloc(H, 4);
    uint32_t *xi = calloc(n_in, 4); float *xv = calloc(n_in, 4); float *dense = calloc(H, 4);
    int ny = 0;
    for (int t = 0; t < T; t++) {
        int nx; fread(&nx, 4, 1, in); fread(xi, 4, nx, in); fread(xv, 4, nx, in);
        int no = 0;
        for (unsigned p = 0; p < sizeof(PES) / sizeof(PES[0]); p++)
            no += nmc_egru_step(PES[p], xi, xv, nx, yi, yv, ny, oi + no, ov + no);
        for (int u = 0; u < H; u++) dense[u] = 0.0f;
        for (int e = 0; e < no; e++) { dense[oi[e]] = ov[e]; yi[e] = oi[e]; yv[e] = ov[e]; }
        ny = no;
        fwrite(dense, 4, H, out);
    }
    fclose(out); return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no host C compiler")
@pytest.mark.parametrize("atoms", [None, 3])
def test_generated_c_is_bit_exact_with_the_emulator(tmp_path, atoms):
    opts = {"max_atoms_per_core": atoms} if atoms else {}
    b = nmc.compile(egru_net(hidden=7), target="spinnaker2", dt=1e-3, integrator="euler", reset="subtract",
                    passes="normalize", **opts)
    files = b.program.files()
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    for k, v in files.items():
        if k.startswith("kernels/"):
            (tmp_path / k).write_bytes(v)
    pe_files = sorted(p.stem for p in kdir.glob("egru_pe*.c"))
    assert len(pe_files) == (1 if atoms is None else 3)
    (kdir / "harness.c").write_text(HARNESS % {"externs": "\n".join(f"extern nmc_egru_pe {t};" for t in pe_files),
                                               "pes": ", ".join(f"&{t}" for t in sorted(pe_files, key=lambda s: int(s.split("pe")[-1])))})
    exe = tmp_path / "h"
    cmd = [CC, "-O2", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-o", str(exe), *map(str, kdir.glob("*.c"))]
    subprocess.run(cmd, check=True, capture_output=True)
    x = currents((5,), T=25, seed=4).astype(np.float32)
    emu = b.device("emulator", align=False)
    res = emu.run({"input": x}, record=["egru"])
    y = res["egru.out"].astype(np.float32)  # chip steps (T + latency)
    lat = b.program.pop("egru").latency
    assert lat == 1 and not y[:lat].any()  # the kernel starts at its latency tick
    y = y[lat:]
    T = y.shape[0]
    with open(tmp_path / "in.bin", "wb") as f:
        np.array([T, 5, 7], np.int32).tofile(f)
        for t in range(T):  # chip step t + 1 sees the input injected at step t
            row = x[t] if t < x.shape[0] else np.zeros(5, np.float32)
            idx = np.flatnonzero(row).astype(np.uint32)
            np.array([idx.size], np.int32).tofile(f)
            idx.tofile(f)
            row[idx].astype(np.float32).tofile(f)
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    c_y = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(T, 7)
    assert np.array_equal(c_y.view(np.uint32), y.view(np.uint32))  # bit for bit
    assert (y != 0).mean() > 0.1  # events flow


def test_emulator_within_quantization_error_of_reference():
    b = nmc.compile(egru_net(), target="spinnaker2", dt=1e-3, integrator="euler", reset="subtract")
    ref = nmc.compile(egru_net(), target="reference", dt=1e-3, integrator="euler")
    x = currents((5,), T=40, seed=5)
    a, r = b.run({"input": x}, record=["egru"]), ref.run({"input": x}, record=["egru"])
    assert np.mean((a["egru.out"] != 0) == (r["egru.out"] != 0)) > 0.93
    rel = np.abs(a["output"] - r["output"]).max() / np.abs(r["output"]).max()
    assert rel < 0.25
    kern = {k for k in b.program.files() if k.startswith("kernels/")}
    assert {"kernels/nmc_egru.h", "kernels/nmc_tanh_lut.c"} <= kern


def test_lut_nonlinearities():
    from nmc.backends.spinnaker2.egru import sigmoid_f32, tanh_f32

    x = np.linspace(-12, 12, 20001).astype(np.float32)
    assert np.abs(tanh_f32(x) - np.tanh(x.astype(float))).max() < 5e-4
    assert np.abs(sigmoid_f32(x) - 1 / (1 + np.exp(-x.astype(float)))).max() < 3e-4
    assert tanh_f32(np.float32([-100, 100])).tolist() == pytest.approx([-1, 1], abs=1e-6)


ARM = shutil.which("arm-none-eabi-gcc")


@pytest.mark.skipif(ARM is None, reason="arm-none-eabi-gcc (Debian gcc-arm-none-eabi) not installed")
def test_kernels_cross_compile_for_cortex_m4f_within_sram(tmp_path):
    b = nmc.compile(egru_net(hidden=7), target="spinnaker2", dt=1e-3, integrator="euler", reset="subtract")
    for k, v in b.program.files().items():
        if k.startswith("kernels/"):
            (tmp_path / k).parent.mkdir(exist_ok=True)
            (tmp_path / k).write_bytes(v)
    for c in (tmp_path / "kernels").glob("*.c"):
        subprocess.run([ARM, "-c", "-O2", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
                        "-ffp-contract=off", "-o", str(c.with_suffix(".o")), str(c)], check=True)
        size = subprocess.run(["arm-none-eabi-size", str(c.with_suffix(".o"))], capture_output=True, text=True).stdout
        text, data, bss = (int(v) for v in size.splitlines()[1].split()[:3])
        assert text + data + bss <= 128 * 1024


def test_cost_report_counts_kernel_sram():
    b = nmc.compile(egru_net(hidden=7), target="spinnaker2", dt=1e-3, integrator="euler", reset="subtract")
    rep = b.report("spinnaker2")
    pe = next(v for v in rep["per_pe"].values() if "kernel" in v)
    from nmc.backends.spinnaker2.egru import data_bytes

    p = b.program.pop("egru")
    assert pe["sram_bytes"] >= data_bytes(p.kernel, slice(0, p.size))


def test_batched_step_is_bit_equal_to_the_per_sample_step():
    from nmc.backends.spinnaker2.egru import step_batch, step_f32

    b = nmc.compile(egru_net(hidden=7), target="spinnaker2", dt=1e-3, integrator="euler", reset="subtract",
                    passes="normalize")
    k = b.program.pop("egru").kernel
    rng = np.random.default_rng(0)
    B = 6
    c = rng.normal(0, 0.3, (B, 7)).astype(np.float32)
    x = (rng.normal(0, 1, (B, 5)) * (rng.random((B, 5)) < 0.5)).astype(np.float32)
    yp = (rng.normal(0, 1, (B, 7)) * (rng.random((B, 7)) < 0.4)).astype(np.float32)
    x[0] = 0  # a sample without input events
    y, cn = step_batch(k, c, x, yp)
    for i in range(B):
        xi, yi = np.flatnonzero(x[i]), np.flatnonzero(yp[i])
        y1, c1 = step_f32(k, c[i], xi, x[i][xi], yi, yp[i][yi], slice(0, 7))
        assert np.array_equal(y[i].view(np.uint32), y1.view(np.uint32))
        assert np.array_equal(cn[i].view(np.uint32), c1.view(np.uint32))
