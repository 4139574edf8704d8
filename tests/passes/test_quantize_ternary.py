"""``quantize{scheme=ternary}``: the absmean rule s = mean|w| per row, t = round(clip(w/s, −1, 1))
with ties away from zero, checked bit for bit on values that are exact in binary floating point,
and against an independent exact-rational implementation of the rule."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import nmc
from nmc.annotations import Quant
from nmc.passes.quantize import quantize_weights, ternary_rows


def exact_rule(row) -> tuple[list[int], Fraction]:
    """The rule in exact rational arithmetic (no rounding anywhere but the final one)."""
    fr = [Fraction(float(v)) for v in row]
    s = sum(abs(v) for v in fr) / len(fr)
    if s == 0:
        return [0] * len(fr), Fraction(1)
    out = []
    for v in fr:
        r = max(Fraction(-1), min(Fraction(1), v / s))
        out.append(int(np.sign(float(r))) * (1 if abs(r) >= Fraction(1, 2) else 0))
    return out, s


def test_absmean_rule_by_hand():
    # row 0: s = 2/4 = 0.5; w/s = 1, −0.5 (a tie: away from zero → −1), 0.2, −2.3 (clipped) → 1, −1, 0, −1
    # row 1: s = 0.25; w/s = 0.4999…(below the tie) → 0, 0, 2 → 1, 1.999… → 1
    # row 2: all zero → t = 0, s = 1
    w = np.array([[0.5, -0.25, 0.1, -1.15],
                  [0.25 * 0.4999, 0.0, 0.5, 0.25 * (4 - 0.4999 - 2)],
                  [0.0, 0.0, 0.0, 0.0]])
    t, s = ternary_rows(w)
    assert t.dtype == np.int8
    assert t.tolist() == [[1, -1, 0, -1], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert s[0] == 0.5 and s[1] == np.mean(np.abs(w[1])) and s[2] == 1.0
    t2, s2 = quantize_weights(w, scheme="ternary", per_channel=True)   # the pass's function, same rule
    assert np.array_equal(t2, t) and np.array_equal(s2.reshape(-1), s)


@pytest.mark.parametrize("seed", range(5))
def test_rule_equals_an_exact_rational_implementation(seed):
    rng = np.random.default_rng(seed)
    # dyadic values (k/64): every quotient w/s is exact in rationals; ties (|w| = s/2) occur
    w = rng.integers(-64, 65, size=(12, 9)) / 64.0
    w[3, :] = [0.5, -0.5, 0.25, -0.25, 0.0, 0.125, -0.125, 0.25, 0.5]   # s = 2.5/9: mixed ties
    t, s = ternary_rows(w)
    for r in range(w.shape[0]):
        want, s_exact = exact_rule(w[r])
        assert t[r].tolist() == want, r
        assert abs(Fraction(float(s[r])) - s_exact) <= s_exact * Fraction(2, 2 ** 52)   # s: one float64 mean


@pytest.mark.parametrize("seed", range(3))
def test_rule_is_idempotent_on_ternary_rows(seed):
    """A row s·t (what nmc.nn.ternary saves) quantizes back to (t, s) exactly, not to mean|s·t|."""
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, (10, 17)).astype(np.int8)
    t[0] = 0                                                          # an all-zero row: scale 1
    s = rng.uniform(0.01, 2.0, 10).astype(np.float32).astype(np.float64)
    w = (s[:, None] * t).astype(np.float32).astype(np.float64)       # float32 weights, as saved
    t2, s2 = ternary_rows(w)
    assert np.array_equal(t2, t) and s2[0] == 1.0 and np.array_equal(s2[1:], s[1:])
    w3 = w.copy()
    w3[1, np.flatnonzero(t[1])[0]] *= 1.5                             # two magnitudes: the mean rule again
    assert ternary_rows(w3)[1][1] == np.mean(np.abs(w3[1]))


def test_per_layer_ternary_and_masked_weights():
    w = np.array([[1.0, -3.0], [0.0, 0.5]])
    t, s = quantize_weights(w, scheme="ternary")            # one s = mean|w| = 1.125 for the layer
    assert s == 1.125 and t.tolist() == [[1, -1], [0, 0]]
    mask = np.array([[True, True], [False, True]])
    t, s = quantize_weights(w, scheme="ternary", mask=mask)   # statistics over the 3 existing weights
    assert s == pytest.approx(4.5 / 3, abs=0) and t.tolist() == [[1, -1], [0, 0]]


def test_quantize_pass_annotates_ternary_egru_rows():
    from nets import egru_net

    b = nmc.compile(egru_net(hidden=6), target="reference", dt=1e-3, integrator="euler", reset="subtract",
                    passes="normalize,quantize{scheme=ternary,per_channel=true}")
    q = b.graph.ann("egru", Quant)
    node = b.graph.nodes["egru"]
    w = np.concatenate([np.asarray(node.w_x), np.asarray(node.w_h)], axis=1)
    t, s = ternary_rows(w)
    assert q.scheme == "ternary" and q.bits == 2
    assert np.array_equal(np.asarray(q.w_int), t) and np.array_equal(np.asarray(q.scale).reshape(-1), s)
