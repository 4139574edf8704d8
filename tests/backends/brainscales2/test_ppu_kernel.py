"""The PPU kernel's arithmetic (backends/brainscales2/ppu_kernel.py), compiled here with the host's
C compiler against a small driver, is bit-exact with the emulator's fixed-point model
(backends/brainscales2/ppu.py) on the same correlation codes, eligibilities, rewards and labels,
edge values included; the kernel the bundle ships carries exactly that C."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nmc.backends.brainscales2 import ppu
from nmc.backends.brainscales2.ppu_kernel import c_core, kernel_source

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no host C compiler")

DRIVER = r'''
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    char mode[16];
    while (scanf("%15s", mode) == 1) {
        if (mode[0] == 'u') {          /* u n sign reward  w[n] c[n] a[n] e[n] */
            int n, sign, reward;
            if (scanf("%d %d %d", &n, &sign, &reward) != 3) return 2;
            uint8_t *w = malloc(n), *c = malloc(n), *a = malloc(n);
            int32_t *e = malloc(n * sizeof(int32_t));
            int v;
            for (int k = 0; k < n; ++k) { if (scanf("%d", &v) != 1) return 2; w[k] = (uint8_t)v; }
            for (int k = 0; k < n; ++k) { if (scanf("%d", &v) != 1) return 2; c[k] = (uint8_t)v; }
            for (int k = 0; k < n; ++k) { if (scanf("%d", &v) != 1) return 2; a[k] = (uint8_t)v; }
            for (int k = 0; k < n; ++k) { long long x; if (scanf("%lld", &x) != 1) return 2; e[k] = (int32_t)x; }
            nmc_update(n, w, c, a, e, sign, (int8_t)reward);
            for (int k = 0; k < n; ++k) printf("%d %ld\n", w[k], (long)e[k]);
            free(w); free(c); free(a); free(e);
        } else if (mode[0] == 's') {   /* s n reward state  theta[n] w[n] c[n] a[n] e[n] */
#if NMC_SPORE
            int n, reward; unsigned long st;
            if (scanf("%d %d %lu", &n, &reward, &st) != 3) return 2;
            int32_t *th = malloc(n * sizeof(int32_t)), *e = malloc(n * sizeof(int32_t));
            uint8_t *w = malloc(n), *c = malloc(n), *a = malloc(n);
            long long x;
            for (int k = 0; k < n; ++k) { if (scanf("%lld", &x) != 1) return 2; th[k] = (int32_t)x; }
            for (int k = 0; k < n; ++k) { if (scanf("%lld", &x) != 1) return 2; w[k] = (uint8_t)x; }
            for (int k = 0; k < n; ++k) { if (scanf("%lld", &x) != 1) return 2; c[k] = (uint8_t)x; }
            for (int k = 0; k < n; ++k) { if (scanf("%lld", &x) != 1) return 2; a[k] = (uint8_t)x; }
            for (int k = 0; k < n; ++k) { if (scanf("%lld", &x) != 1) return 2; e[k] = (int32_t)x; }
            uint32_t out = nmc_spore_row(n, th, w, c, a, e, (int8_t)reward, (uint32_t)st);
            printf("%lu\n", (unsigned long)out);
            for (int k = 0; k < n; ++k) printf("%ld %d %ld\n", (long)th[k], w[k], (long)e[k]);
            free(th); free(e); free(w); free(c); free(a);
#else
            return 3;
#endif
        } else {                       /* r fan_in n_src state  w[fan_in] lab[fan_in] */
            int f, n_src; unsigned long st;
            if (scanf("%d %d %lu", &f, &n_src, &st) != 3) return 2;
            uint8_t w[64], lab[64]; int32_t e[64]; int v;
            for (int k = 0; k < f; ++k) { if (scanf("%d", &v) != 1) return 2; w[k] = (uint8_t)v; e[k] = 1; }
            for (int k = 0; k < f; ++k) { if (scanf("%d", &v) != 1) return 2; lab[k] = (uint8_t)v; }
            uint32_t out = nmc_rewire(f, w, lab, e, n_src, (uint32_t)st);
            printf("%lu\n", (unsigned long)out);
            for (int k = 0; k < f; ++k) printf("%d %d %ld\n", w[k], lab[k], (long)e[k]);
        }
    }
    return 0;
}
'''


def build(tmp_path, rule, n_src=0):
    src = tmp_path / "ppu_core.c"
    src.write_text(c_core(rule, n_src) + DRIVER)
    exe = tmp_path / "ppu_core"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    return exe


def updates_match(exe, r, cases) -> int:
    """Runs the driver's ``u`` mode (:func:`build`'s ``exe``) on ``cases`` ((w, c, a, e, sign, reward),
    arrays of one length) and checks its weights, and for a reward rule its eligibilities, against
    ``ppu.update_row`` bit for bit; returns how many weights the update moved."""
    lines = [f"u {len(w)} {sign} {reward}\n" + "\n".join(" ".join(map(str, v)) for v in (w, c, a, e))
             for w, c, a, e, sign, reward in cases]
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    got = np.array(out.stdout.split(), np.int64).reshape(len(cases), -1, 2)
    moved = 0
    for (w, c, a, e, sign, reward), g in zip(cases, got):
        w2, e2 = ppu.update_row(r, w, c, a, sign, e, reward)
        np.testing.assert_array_equal(g[:, 0], w2)
        if r.third_factor == "reward":
            np.testing.assert_array_equal(g[:, 1], e2)
        moved += int(np.sum(w2 != w))
    return moved


def rule(**kw):
    base = dict(projection=0, node="w", period=10, third_factor="none", kp=82, km=98, decay_plus=0.9,
                decay_minus=0.9)
    base.update(kw)
    return ppu.PPURule(**base)


RULES = [rule(),
         rule(kp=4096, km=2048, exc_lo=3, exc_hi=60, inh_lo=1, inh_hi=50),
         rule(kp=32767, km=32767),
         rule(third_factor="reward", kp=300, km=310, de=31000, lr=256 * 10),
         rule(third_factor="reward", kp=32767, km=1, de=32767, lr=32767, exc_hi=40)]


@pytest.mark.parametrize("r", RULES, ids=range(len(RULES)))
def test_update_is_bit_exact_with_the_model(tmp_path, r):
    exe = build(tmp_path, r)
    rng = np.random.default_rng(7)
    n = 600
    cases = []
    for sign in (1, -1):
        for reward in (0, 1, -1, 127, -128, 37):
            w = rng.integers(0, 64, n)
            c = rng.integers(0, 256, n)
            a = rng.integers(0, 256, n)
            c[:4], a[:4] = [0, 255, 255, 0], [0, 255, 0, 255]            # the code range's edges
            w[:6] = [0, 63, 0, 63, 1, 62]
            e = rng.integers(-(1 << 31), (1 << 31) - 1, n, dtype=np.int64)
            e[:3] = [-(1 << 31), (1 << 31) - 1, 0]                       # the eligibility's saturation
            cases.append((w, c, a, e, sign, reward))
    assert updates_match(exe, r, cases) > 0            # the cases exercise the update, not only the clamps


def test_rewire_is_bit_exact_with_the_model(tmp_path):
    r = rule(fan_in=6, prune=9, w_new=12, seed=3)
    n_src = 40
    exe = build(tmp_path, r, n_src)
    rng = np.random.default_rng(1)
    cols, lines = [], []
    state = ppu.seed_state(r.seed)
    for k in range(300):
        f = int(rng.integers(1, 7))
        w = rng.integers(0, 64, f)
        lab = rng.choice(n_src if k % 5 else f + 1, f, replace=False)   # every fifth: few labels free
        st = int(rng.integers(1, 1 << 32))
        cols.append((w, lab, st, f))
        lines.append(f"r {f} {n_src if k % 5 else f + 1} {st}\n" + " ".join(map(str, w)) + "\n" + " ".join(map(str, lab)))
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    toks = iter(out.stdout.split())
    made_total = 0
    for k, (w, lab, st, f) in enumerate(cols):
        n = n_src if k % 5 else f + 1
        ww, ll = w.copy(), lab.copy()
        st2, made = ppu.rewire(r, ww, ll, n, st)
        assert int(next(toks)) == st2
        for j in range(f):
            assert [int(next(toks)) for _ in range(3)] == [ww[j], ll[j], 0 if j in made else 1]
        assert len(set(ll.tolist())) == f        # labels stay distinct: the fan-in is kept
        made_total += len(made)
    assert made_total > 50
    assert ppu.xorshift32(1) == 270369 and state == (3 * 2654435761 + 1) % 2 ** 32


@pytest.mark.parametrize("third_factor", ["none", "reward"])
def test_spore_is_bit_exact_with_the_model(tmp_path, third_factor):
    from nmc.backends.brainscales2 import ppu_spore
    from nmc.plasticity import Plasticity

    p = Plasticity(rule="spore", third_factor=third_factor, beta=2.0, temperature=0.3, prior_mean=1.5,
                   prior_std=0.8, theta0=3.0, theta_min=-2.0, theta_max=5.0, c_reward=40.0, w_min=0.0)
    r = ppu.compile_rule(p, "w", 0, lsb=1 / 40, dt=1e-3, period=10)
    assert r.rule == "spore" and r.k_noise > 0 and (r.k_reward > 0) == (third_factor == "reward")
    exe = build(tmp_path, r)
    rng = np.random.default_rng(11)
    n, cases, lines = 500, [], []
    for reward in (0, 32, -128, 127, -7):
        th = rng.integers(r.th_min - 4096, r.th_max + 4096, n)
        w = ppu_spore.weight_of(r, th)
        c, a = rng.integers(0, 256, n), rng.integers(0, 256, n)
        e = rng.integers(-(1 << 31), (1 << 31) - 1, n, dtype=np.int64)
        e[:2] = [-(1 << 31), (1 << 31) - 1]
        st = int(rng.integers(1, 1 << 32))
        cases.append((th, w, c, a, e, reward, st))
        lines.append(f"s {n} {reward} {st}\n" + "\n".join(" ".join(map(str, v)) for v in (th, w, c, a, e)))
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    toks = np.array(out.stdout.split(), np.int64)
    at = 0
    for th, w, c, a, e, reward, st in cases:
        th2, w2, e2, st2 = ppu_spore.update(r, th, w, c, a, e, reward, st)
        assert toks[at] == st2
        got = toks[at + 1: at + 1 + 3 * n].reshape(n, 3)
        at += 1 + 3 * n
        np.testing.assert_array_equal(got[:, 0], th2)
        np.testing.assert_array_equal(got[:, 1], w2)
        if e2 is not None:
            np.testing.assert_array_equal(got[:, 2], e2)
        assert np.any(th2 == r.th_min) or np.any(th2 == r.th_max)     # the clamps are exercised


def test_the_shipped_kernel_carries_the_tested_c():
    r = rule(third_factor="reward", de=30000, lr=512, fan_in=4, prune=3, w_new=20)
    k = kernel_source(r, 16)
    assert c_core(r, 16) in k
    for line in ("#define NMC_KP 82", "#define NMC_DE 30000", "#define NMC_FAN_IN 4", "#define NMC_N_SRC 16",
                 f"#define NMC_SEED_STATE {ppu.seed_state(0)}u"):
        assert line in k
    for call in ("get_causal_correlation(row)", "get_acausal_correlation(row)", "reset_correlation(row)",
                 "set_weights(wr, row)", "PLASTICITY_RULE_KERNEL", "nmc_reward = NMC_REWARD_INIT"):
        assert call in k


def test_a_spore_kernel_carries_its_tables():
    from nmc.plasticity import Plasticity

    r = ppu.compile_rule(Plasticity(rule="spore", beta=1.0, temperature=0.1), "w", 2, lsb=1 / 40, dt=1e-3, period=10)
    k = kernel_source(r, 8)
    assert "#define NMC_SPORE 1\n" in k and "nmc_spore_row(" in k and "nmc_th_init[w[k]]" in k
    assert "#define NMC_W_TABLE " + ", ".join(map(str, r.w_table)) + "\n" in k
    assert "#define NMC_TH_INIT " + ", ".join(map(str, r.th_init)) + "\n" in k
