"""The work model's uniform-rate shortcut (entries per row) gives the product's exact float64 values."""
import numpy as np
import scipy.sparse as sp

import nets
from nmc.passes.netmodel import build_structure
from nmc.target_model import CoreLimits, TargetModel


def test_uniform_work_equals_the_product_bit_for_bit():
    t = TargetModel(None, CoreLimits(neurons_max=64))
    for model in (nets.ff_lif(), nets.conv_pool(), nets.recurrent_cubalif(), nets.egru_net()):
        n = build_structure(nets.normalized(model), t)
        ones = np.ones(n.n_units)
        want = np.asarray(n.A @ ones, np.float64)
        assert t.work(n.A, ones).tobytes() == want.tobytes()
        assert n.work.tobytes() == want.tobytes()


def test_counts_and_other_rates_take_the_product():
    t = TargetModel(None, CoreLimits(neurons_max=64))
    A = sp.csr_matrix(np.array([[2, 1, 0], [0, 0, 0], [1, 1, 1]], np.float32))   # a count of 2: not entries
    assert t.work(A, np.ones(3)).tolist() == [3.0, 0.0, 3.0]
    ones = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]], np.float32))
    assert t.work(ones, np.ones(3)).tolist() == [2.0, 0.0, 3.0]
    assert t.work(ones, np.array([0.5, 0.25, 1.0]), np.array([2.0, 1.0, 1.0])).tolist() == [1.5, 0.0, 1.75]


def test_dense_rows_give_the_product_bit_for_bit():
    """Dense projections' rows are one left-to-right sum of their sources' rates: the values of
    ``A @ rate``, to the bit, on dense layers, a conv net (no dense rows) and shared sources."""
    from bench.workloads import dense_feedforward

    t = TargetModel(None, CoreLimits(neurons_max=64))
    rng = np.random.default_rng(3)
    for model in (nets.ff_lif(), dense_feedforward(40, 3), nets.conv_pool(), nets.recurrent_cubalif()):
        n = build_structure(nets.normalized(model), t)
        for r0, r1, c0, c1 in n.dense_rows:   # what the model claims of those rows holds
            rows = n.A[r0:r1]
            assert rows.nnz == (r1 - r0) * (c1 - c0) and np.all(rows.data == 1)
            assert np.array_equal(rows.indices, np.tile(np.arange(c0, c1), r1 - r0))
        for _ in range(3):
            rate = rng.random(n.n_units) ** 3
            want = np.asarray(n.A @ rate, np.float64)
            assert t.work(n.A, rate, dense_rows=n.dense_rows).tobytes() == want.tobytes()
            assert n.with_rates(rate, "test").work.tobytes() == want.tobytes()
    assert build_structure(nets.normalized(dense_feedforward(40, 3)), t).dense_rows   # the shortcut is taken
