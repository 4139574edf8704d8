"""The network model's weight patterns are built one row block at a time (netmodel._mask_csr):
the same pattern as the whole-matrix mask (netmodel._mask), for every source of the mask."""
import nir
import numpy as np
import pytest
import scipy.sparse as sp

import nmc.rowblocks
from nmc.annotations import Quant, Sparsity
from nmc.ir import Graph
from nmc.passes import netmodel


def graph(w, ann=()):
    n_out, n_in = w.shape
    g = Graph({"in": nir.Input(input_type={"input": np.array([n_in])}), "fc": nir.Linear(weight=w),
               "l": nir.IF(r=np.ones(n_out), v_threshold=np.ones(n_out), v_reset=np.zeros(n_out)),
               "out": nir.Output(output_type={"output": np.array([n_out])})},
              [("in", "fc"), ("fc", "l"), ("l", "out")], meta={"dt": 1e-3})
    for a in ann:
        g.annotate("fc", a)
    return g


@pytest.mark.parametrize("block", [7, 64, 1 << 20])   # elements per row block: several rows, one row, all
@pytest.mark.parametrize("case", ["dense", "zeros", "mask", "w_int", "sparse_w"])
@pytest.mark.parametrize("nonzero", [False, True])
def test_row_block_pattern_equals_the_whole_mask(monkeypatch, block, case, nonzero):
    monkeypatch.setattr(nmc.rowblocks, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(1)
    w = rng.normal(size=(23, 17)).astype(np.float32)
    ann = ()
    if case != "dense":
        w[rng.random(w.shape) < 0.3] = 0.0
    if case == "mask":
        ann = (Sparsity(density=0.5, format="csr", mask=rng.random(w.shape) < 0.5),)
    elif case == "w_int":
        w_int = np.where(rng.random(w.shape) < 0.4, 0, rng.integers(1, 100, size=w.shape))
        ann = (Sparsity(density=0.6, format="csr"), Quant(bits=8, w_int=w_int, scale=1.0))
    elif case == "sparse_w":
        ann = (Sparsity(density=0.7, format="csr"),)
    g = graph(w, ann)
    whole = netmodel._mask(g, "fc", w, nonzero)
    got = netmodel._mask_csr(g, "fc", w, nonzero)
    if whole is None:
        assert got is None
    else:
        assert got.has_sorted_indices and got.dtype == np.float32
        np.testing.assert_array_equal(got.toarray(), whole.astype(np.float32))
        assert sp.csr_matrix(whole.astype(np.float32)).nnz == got.nnz
    assert (netmodel.op_pattern(g, "fc", nonzero) != sp.csr_matrix(
        whole.astype(np.float32) if whole is not None else np.ones(w.shape, np.float32))).nnz == 0
