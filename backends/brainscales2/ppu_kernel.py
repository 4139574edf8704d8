"""The plasticity processor's program for a plastic projection: C++ kernel source for the vendor
stack (``pynn_brainscales.brainscales2.PlasticityRule.generate_kernel``), generated from the same
:class:`.ppu.PPURule` constants the emulator runs.

The source has two parts. :func:`c_core` is plain C (``stdint.h`` only): ``nmc_update`` (the weight
update of one row's synapses, :func:`.ppu.update_row`), ``nmc_xorshift32``, ``nmc_rewire`` (one
column's label rewrites, :func:`.ppu.rewire`) and, for SPORE, ``nmc_spore_row``
(:func:`.ppu_spore.update`). The tests compile it here with the host's ``cc`` and
a small driver and compare it bit for bit with the numpy model. :func:`kernel_source` wraps it in
the kernel the PPU runs each timer period: per row of the projection's synapse view it reads the
weights and both correlation rows (8-bit CADC codes), resets the correlation, runs ``nmc_update``
and writes the weights; with rewiring it then walks the columns and rewrites labels. The wrapper
follows grenade's ``SynapseArrayViewHandle`` (``rows``, ``columns``, ``get_weights``/``set_weights``,
``get_causal_correlation``/``get_acausal_correlation``, ``reset_correlation``) and reaches the labels
through libnux's row access to the synapses' label memory (``dls_decoder_base``); there is no PPU
toolchain here, so the tests compile the whole kernel with the host's g++ against small stand-in
headers for those calls and run it on the emulator learner's correlation codes (weights and labels
bit-exact): that checks the kernel's logic, not its fit to the vendor's headers. The kernel walks
every column of the view, a slot without a synapse included (its label matches no source); the
emulator's SPORE draws its noise for those slots too, so the generator stays in step. ``NMC_SIGN`` (the PyNN projection's row sign: the script makes one projection per
receptor type) and ``NMC_REWARD_INIT`` (the reward the host writes into ``nmc_reward`` in PPU memory
with the program) are defined by the script before the source. The kernel assumes nmc's labelling:
label = source index within the projection's one label group (rewiring only).
"""
from __future__ import annotations

from . import ppu

C_CORE = r'''
#include <stdint.h>

static uint32_t nmc_xorshift32(uint32_t x)
{
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* round half away from zero: sign(x) * ((|x| + 2^(s-1)) >> s) */
static int64_t nmc_rnd(int64_t x, int s)
{
    int64_t m = x < 0 ? -x : x;
    m = (m + ((int64_t)1 << (s - 1))) >> s;
    return x < 0 ? -m : m;
}

/* One PPU update of n synapses of a row of sign `sign` (+1/-1): w magnitudes 0..63,
   causal/acausal the 8-bit CADC codes, elig the eligibility (reward rules), reward @REWARD_Q@. */
static void nmc_update(int n, uint8_t *w, const uint8_t *causal, const uint8_t *acausal,
                       int32_t *elig, int sign, int8_t reward)
{
    int lo = sign < 0 ? NMC_INH_LO : NMC_EXC_LO;
    int hi = sign < 0 ? NMC_INH_HI : NMC_EXC_HI;
    for (int k = 0; k < n; ++k) {
        int32_t d = NMC_KP * (int32_t)causal[k] - NMC_KM * (int32_t)acausal[k];
#if NMC_REWARD
        int64_t e = nmc_rnd((int64_t)elig[k] * NMC_DE, NMC_DE_FRAC) + d;
        if (e > INT32_MAX) e = INT32_MAX;
        if (e < INT32_MIN) e = INT32_MIN;
        elig[k] = (int32_t)e;
        int64_t dw = nmc_rnd((int64_t)NMC_LR * reward * e, NMC_FRAC + NMC_REWARD_FRAC + NMC_LR_FRAC);
#else
        (void)elig; (void)reward;
        int64_t dw = nmc_rnd(d, NMC_FRAC);
#endif
        int64_t v = (int64_t)w[k] + (sign < 0 ? -dw : dw);
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        w[k] = (uint8_t)v;
    }
}


#if NMC_SPORE
static const int32_t nmc_w_table[63] = {NMC_W_TABLE};

/* SPORE's weight: 0 while theta <= 0, else the number of table entries theta reaches */
static uint8_t nmc_weight_of(int32_t theta)
{
    int w = 0;
    if (theta <= 0)
        return 0;
    while (w < 63 && theta >= nmc_w_table[w])
        ++w;
    return (uint8_t)w;
}

/* One SPORE run over n synapses (theta Q.12): prior, reward and Irwin-Hall noise from one
   xorshift32 output per synapse (its four bytes); returns the generator state after. */
static uint32_t nmc_spore_row(int n, int32_t *theta, uint8_t *w, const uint8_t *causal, const uint8_t *acausal,
                              int32_t *elig, int8_t reward, uint32_t state)
{
    for (int k = 0; k < n; ++k) {
        int32_t d = NMC_KP * (int32_t)causal[k] - NMC_KM * (int32_t)acausal[k];
        int64_t r = 0;
#if NMC_REWARD
        int64_t e = nmc_rnd((int64_t)elig[k] * NMC_DE, NMC_DE_FRAC) + (int64_t)w[k] * d;
        if (e > INT32_MAX) e = INT32_MAX;
        if (e < INT32_MIN) e = INT32_MIN;
        elig[k] = (int32_t)e;
        r = nmc_rnd((int64_t)NMC_K_REWARD * reward * e, NMC_S_REWARD);
#else
        (void)d; (void)elig; (void)reward;
#endif
        state = nmc_xorshift32(state);
        int32_t s = (int32_t)(state & 255u) + (int32_t)((state >> 8) & 255u) + (int32_t)((state >> 16) & 255u)
                    + (int32_t)(state >> 24) - 510;
        int64_t t = (int64_t)theta[k] + nmc_rnd((int64_t)NMC_K_PRIOR * ((int64_t)NMC_MU - theta[k]), 15) + r
                    + nmc_rnd((int64_t)NMC_K_NOISE * s, NMC_S_NOISE);
        if (t < NMC_TH_MIN) t = NMC_TH_MIN;
        if (t > NMC_TH_MAX) t = NMC_TH_MAX;
        theta[k] = (int32_t)t;
        w[k] = nmc_weight_of((int32_t)t);
    }
    return state;
}
#endif

/* Rewire one column: w, lab, elig its fan_in synapses in row order; n_src sources (<= 64) with
   labels 0..n_src-1. A synapse with w < NMC_PRUNE takes the (u mod n_free)-th free label (ascending;
   free: no synapse of the column had it before this rewiring), u the next xorshift32 output, or
   keeps its label when none is free; it restarts at NMC_W_NEW with no eligibility. */
static uint32_t nmc_rewire(int fan_in, uint8_t *w, uint8_t *lab, int32_t *elig, int n_src, uint32_t state)
{
    uint64_t used = 0;
    for (int k = 0; k < fan_in; ++k)
        used |= (uint64_t)1 << lab[k];
    int n_free = 0;
    for (int i = 0; i < n_src; ++i)
        n_free += !((used >> i) & 1);
    for (int k = 0; k < fan_in; ++k) {
        if (w[k] >= NMC_PRUNE)
            continue;
        if (n_free > 0) {
            state = nmc_xorshift32(state);
            uint32_t pick = state % (uint32_t)n_free;
            for (int i = 0; i < n_src; ++i) {
                if ((used >> i) & 1)
                    continue;
                if (pick-- == 0) {
                    lab[k] = (uint8_t)i;
                    used |= (uint64_t)1 << i;
                    break;
                }
            }
            --n_free;
        }
        w[k] = NMC_W_NEW;
        elig[k] = 0;
    }
    return state;
}
'''

KERNEL = r'''
#include <array>
#include <stddef.h>
#include "grenade/vx/ppu/neuron_view_handle.h"
#include "grenade/vx/ppu/synapse_array_view_handle.h"
#include "libnux/vx/dls.h"
#include "libnux/vx/vector.h"

using namespace grenade::vx::ppu;
using namespace libnux::vx;

volatile int8_t nmc_reward = NMC_REWARD_INIT;   /* written by the host into PPU memory */
static int32_t nmc_elig[256][256];
#if NMC_SPORE
static const int32_t nmc_th_init[64] = {NMC_TH_INIT};   /* theta of each 6-bit weight (first run) */
static int32_t nmc_theta[256][256];
#endif
#if NMC_SPORE || NMC_FAN_IN
static uint32_t nmc_state = NMC_SEED_STATE;     /* the xorshift32 generator */
#endif
static uint32_t nmc_runs = 0;

void PLASTICITY_RULE_KERNEL(std::array<SynapseArrayViewHandle, 1>& synapses, std::array<NeuronViewHandle, 0>&)
{
    SynapseArrayViewHandle& view = synapses[0];
    size_t n_cols = view.columns.size();
    uint8_t w[256], c[256], a[256];
    for (size_t row = 0; row < view.rows.size(); ++row) {
        if (!view.rows.test(row))
            continue;
        auto wr = view.get_weights(row);
        auto cr = view.get_causal_correlation(row);
        auto ar = view.get_acausal_correlation(row);
        view.reset_correlation(row);
        for (size_t k = 0; k < n_cols; ++k) {
            w[k] = (uint8_t)wr[view.columns[k]];
            c[k] = (uint8_t)cr[view.columns[k]];
            a[k] = (uint8_t)ar[view.columns[k]];
        }
#if NMC_SPORE
        if (nmc_runs == 0)   /* theta starts from the weights */
            for (size_t k = 0; k < n_cols; ++k)
                nmc_theta[row][k] = nmc_th_init[w[k]];
        nmc_state = nmc_spore_row((int)n_cols, nmc_theta[row], w, c, a, nmc_elig[row], nmc_reward, nmc_state);
#else
        nmc_update((int)n_cols, w, c, a, nmc_elig[row], NMC_SIGN, nmc_reward);
#endif
        for (size_t k = 0; k < n_cols; ++k)
            wr[view.columns[k]] = w[k];
        view.set_weights(wr, row);
    }
    ++nmc_runs;
#if NMC_FAN_IN
    if (nmc_runs % NMC_REWIRE_RUNS != 0)
        return;
    uint8_t lw[NMC_FAN_IN], ll[NMC_FAN_IN];
    int32_t le[NMC_FAN_IN];
    size_t rows[NMC_FAN_IN];
    size_t n = 0;
    for (size_t row = 0; row < view.rows.size() && n < NMC_FAN_IN; ++row)
        if (view.rows.test(row))
            rows[n++] = row;
    for (size_t k = 0; k < n_cols; ++k) {
        size_t col = view.columns[k];
        for (size_t r = 0; r < NMC_FAN_IN; ++r) {
            lw[r] = (uint8_t)view.get_weights(rows[r])[col];
            ll[r] = (uint8_t)get_row_via_vector(rows[r], dls_decoder_base)[col];
            le[r] = nmc_elig[rows[r]][k];
        }
        nmc_state = nmc_rewire(NMC_FAN_IN, lw, ll, le, NMC_N_SRC, nmc_state);
        for (size_t r = 0; r < NMC_FAN_IN; ++r) {
            auto wr = view.get_weights(rows[r]);
            wr[col] = lw[r];
            view.set_weights(wr, rows[r]);
            auto lr = get_row_via_vector(rows[r], dls_decoder_base);
            lr[col] = ll[r];
            set_row_via_vector(lr, rows[r], dls_decoder_base);
            nmc_elig[rows[r]][k] = le[r];
        }
    }
#endif
}
'''


def defines(r: ppu.PPURule, n_src: int) -> str:
    """The rule's constants as C ``#define`` lines (the same numbers the emulator uses)."""
    f = r.fmt          # the rule's format (the spec's [plasticity]): the emulator runs the same numbers
    vals = {"NMC_KP": r.kp, "NMC_KM": r.km, "NMC_FRAC": f.coef_frac, "NMC_REWARD": int(r.third_factor == "reward"),
            "NMC_DE": r.de, "NMC_DE_FRAC": f.decay_frac, "NMC_LR": r.lr, "NMC_REWARD_FRAC": f.reward_frac,
            "NMC_LR_FRAC": f.lr_frac, "NMC_EXC_LO": r.exc_lo, "NMC_EXC_HI": r.exc_hi, "NMC_INH_LO": r.inh_lo,
            "NMC_INH_HI": r.inh_hi, "NMC_FAN_IN": r.fan_in, "NMC_PRUNE": r.prune, "NMC_W_NEW": r.w_new,
            "NMC_REWIRE_RUNS": r.rewire_runs, "NMC_SEED_STATE": f"{ppu.seed_state(r.seed)}u", "NMC_N_SRC": n_src,
            "NMC_SPORE": int(r.rule == "spore"), "NMC_K_PRIOR": r.k_prior, "NMC_MU": r.mu, "NMC_K_REWARD": r.k_reward,
            "NMC_S_REWARD": r.s_reward, "NMC_K_NOISE": r.k_noise, "NMC_S_NOISE": r.s_noise, "NMC_TH_MIN": r.th_min,
            "NMC_TH_MAX": r.th_max}
    if r.rule == "spore":
        vals.update(NMC_W_TABLE=", ".join(map(str, r.w_table)), NMC_TH_INIT=", ".join(map(str, r.th_init)))
    return "".join(f"#define {k} {v}\n" for k, v in vals.items())


def c_core(r: ppu.PPURule, n_src: int) -> str:
    """The plain-C arithmetic with the rule's constants (compiled by the tests on the host); its
    comment names the reward's format (Q2.5 in the packaged spec)."""
    f = r.fmt
    return defines(r, n_src) + C_CORE.replace("@REWARD_Q@", f"Q{f.reward_bits - 1 - f.reward_frac}.{f.reward_frac}")


def kernel_source(r: ppu.PPURule, n_src: int) -> str:
    """The PPU kernel for ``PlasticityRule.generate_kernel`` (``NMC_SIGN``, ``NMC_REWARD_INIT``
    defined before it by the script)."""
    head = (f"/* nmc: plasticity rule of projection {r.projection} ('{r.node}'), run every {r.period} model "
            "steps by the plasticity processor; generated, do not edit */\n")
    return head + c_core(r, n_src) + KERNEL


def kernel_files(rules: list[dict]) -> dict[str, bytes]:
    """``{"ppu_rule_<projection>.cpp": source}`` for the program's rules (JSON)."""
    out = {}
    for d in rules:
        r = ppu.PPURule.from_json(d)
        out[f"ppu_rule_{r.projection}.cpp"] = kernel_source(r, r.n_src).encode()
    return out
