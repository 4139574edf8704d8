"""The whole PPU kernel the bundle ships (``program/ppu_rule_<i>.cpp``: the C core and its C++ wrapper
walking rows, columns, correlation reads and resets, weight and label writes) compiled on the host
with g++ against small stand-in headers for grenade's SynapseArrayViewHandle and libnux's row
access, run period after period on the same 8-bit correlation codes as the emulator's learner:
weights and labels bit-exact (STDP, reward, rewiring, SPORE). The stand-in headers are not the
vendor's: this checks the kernel's logic, not its fit to the real headers."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nmc.backends.brainscales2 import ppu
from nmc.backends.brainscales2.emulator import BSS2Emulator
from nmc.plasticity import Plasticity
from test_ppu_emulator import compile_, net

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")

HEADERS = {
    "grenade/vx/ppu/synapse_array_view_handle.h": r'''#pragma once
#include <array>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <vector>
namespace standin {
typedef std::array<uint8_t, 256> Row;
inline std::array<Row, 256> weights{}, causal{}, acausal{}, labels{};
}
namespace grenade::vx::ppu {
struct SynapseArrayViewHandle {
    typedef standin::Row Row;
    std::vector<uint8_t> columns;
    std::bitset<256> rows;
    Row get_weights(size_t r) const { return standin::weights[r]; }
    void set_weights(Row const& v, size_t r) const { for (size_t c : columns) standin::weights[r][c] = v[c]; }
    Row get_causal_correlation(size_t r) const { return standin::causal[r]; }
    Row get_acausal_correlation(size_t r) const { return standin::acausal[r]; }
    void reset_correlation(size_t r) const { standin::causal[r].fill(0); standin::acausal[r].fill(0); }
};
}
''',
    "grenade/vx/ppu/neuron_view_handle.h": "#pragma once\nnamespace grenade::vx::ppu { struct NeuronViewHandle {}; }\n",
    "libnux/vx/vector.h": "#pragma once\n",
    "libnux/vx/dls.h": r'''#pragma once
#include "grenade/vx/ppu/synapse_array_view_handle.h"
namespace libnux::vx {
enum Base { dls_weight_base, dls_decoder_base };
inline standin::Row get_row_via_vector(size_t r, Base b)
{ return b == dls_decoder_base ? standin::labels[r] : standin::weights[r]; }
inline void set_row_via_vector(standin::Row const& v, size_t r, Base b)
{ (b == dls_decoder_base ? standin::labels[r] : standin::weights[r]) = v; }
}
''',
}

MAIN = r'''
#include <cstdio>
int main()
{
    int nr, nc, runs, v;
    if (scanf("%d %d %d", &nr, &nc, &runs) != 3) return 2;
    std::array<grenade::vx::ppu::SynapseArrayViewHandle, 1> syn;
    std::array<grenade::vx::ppu::NeuronViewHandle, 0> none;
    for (int c = 0; c < nc; ++c) syn[0].columns.push_back((uint8_t)c);
    for (int r = 0; r < nr; ++r) syn[0].rows.set(r);
    for (int r = 0; r < nr; ++r) for (int c = 0; c < nc; ++c) { if (scanf("%d", &v) != 1) return 2; standin::weights[r][c] = (uint8_t)v; }
    for (int r = 0; r < nr; ++r) for (int c = 0; c < nc; ++c) { if (scanf("%d", &v) != 1) return 2; standin::labels[r][c] = (uint8_t)v; }
    for (int k = 0; k < runs; ++k) {
        for (int r = 0; r < nr; ++r) for (int c = 0; c < nc; ++c) { if (scanf("%d", &v) != 1) return 2; standin::causal[r][c] = (uint8_t)v; }
        for (int r = 0; r < nr; ++r) for (int c = 0; c < nc; ++c) { if (scanf("%d", &v) != 1) return 2; standin::acausal[r][c] = (uint8_t)v; }
        kernel(syn, none);
        for (int r = 0; r < nr; ++r) for (int c = 0; c < nc; ++c) printf("%d %d\n", standin::weights[r][c], standin::labels[r][c]);
    }
    return 0;
}
'''

W = np.array([[0.2, 0.3, 0.1, 0.9], [0.8, 0.2, 0.05, 0.4], [0.5, 0.5, 0.5, 0.5]])
CASES = {
    "stdp": Plasticity(tau_plus=10e-3, a_plus=0.03, a_minus=0.03, w_min=0.0, w_max=1.0),
    "reward": Plasticity(third_factor="reward", a_plus=0.03, a_minus=0.02, w_min=0.0, w_max=1.0, lr=3.0),
    "rewiring": Plasticity(a_plus=0.01, a_minus=0.05, w_min=0.0, w_max=1.0, fan_in=3, prune_below=0.2,
                           w_new=0.3, rewire_every=20, seed=9),
    "spore": Plasticity(rule="spore", third_factor="reward", beta=2.0, temperature=0.3, prior_mean=2.7,
                        prior_std=0.6, theta0=3.0, c_reward=300.0, seed=4),
}


CASES["spore, an empty slot"] = CASES["spore"]


@pytest.mark.parametrize("case", list(CASES))
def test_the_shipped_kernel_runs_like_the_emulators_learner(tmp_path, case):
    w = {"rewiring": np.random.default_rng(2).uniform(0.05, 0.6, (3, 8)),
         # 301 inputs: two merged circuits, 151 rows, the last one with one synapse and one empty slot
         "spore, an empty slot": np.random.default_rng(3).uniform(0.2, 0.9, (1, 301))}.get(case, W)
    b = compile_(net(w, CASES[case]))
    q, rule = b.program.projections[0], ppu.PPURule.from_json(b.program.plasticity[0])
    assert np.sum(q.arr_label < 0) == (1 if "empty" in case else 0)
    reward = 0.75
    for name, text in HEADERS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    src = b.program.files()["ppu_rule_0.cpp"].decode()
    (tmp_path / "k.cpp").write_text(f"#define NMC_SIGN 1\n#define NMC_REWARD_INIT {ppu.reward_code(reward)}\n"
                                    + src + MAIN)
    exe = tmp_path / "k"
    subprocess.run([CXX, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unused-function", "-DPLASTICITY_RULE_KERNEL=kernel",
                    "-I", str(tmp_path), "-o", str(exe), str(tmp_path / "k.cpp")], check=True)
    dev = BSS2Emulator(b.program)
    dev.reset(1)
    dev.modulate(reward) if rule.third_factor == "reward" else None
    lr = dev._stream["ppu"][0]
    rng = np.random.default_rng(5)
    runs = 12
    nr, nc = q.arr_w.shape
    lines = [f"{nr} {nc} {runs}", " ".join(map(str, q.arr_w.ravel())), " ".join(map(str, q.arr_label.ravel()))]
    want = []
    for _ in range(runs):
        c, a = rng.integers(0, 256, (nr, nc)), rng.integers(0, 256, (nr, nc))
        lines += [" ".join(map(str, c.ravel())), " ".join(map(str, a.ravel()))]
        lr.causal[:], lr.acausal[:] = c[lr.rr, lr.cc] / ppu.SENSOR_GAIN, a[lr.rr, lr.cc] / ppu.SENSOR_GAIN
        lr.run_ppu()
        got_w, got_l = np.zeros((nr, nc), np.int64), np.zeros((nr, nc), np.int64)
        got_w[lr.rr, lr.cc], got_l[lr.rr, lr.cc] = lr.w, lr.lab
        want.append((got_w, got_l))
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    got = np.array(out.stdout.split(), np.int64).reshape(runs, nr, nc, 2)
    at = (lr.rr, lr.cc)                                # the synapses (an empty slot's weight is nobody's)
    for k, (ww, ll) in enumerate(want):
        np.testing.assert_array_equal(got[k, ..., 0][at], ww[at], err_msg=f"weights after run {k}")
        np.testing.assert_array_equal(got[k, ..., 1][at], ll[at], err_msg=f"labels after run {k}")
    assert not np.array_equal(want[-1][0], q.arr_w)
    if case == "rewiring":
        assert not np.array_equal(want[-1][1], q.arr_label)
