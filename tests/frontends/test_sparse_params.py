"""In-memory graphs whose weights are scipy-sparse matrices compile (made dense, the caller's
nodes untouched) and run like the dense graph; one too large to densify is a typed error."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import scipy.sparse as sp

import nmc
from nets import ff_lif, spikes
from nmc.errors import ShapeError


def _sparse_copy():
    g = ff_lif()
    nodes = dict(g.nodes)
    for k, n in g.nodes.items():
        if isinstance(n, (nir.Linear, nir.Affine)):
            w = np.asarray(n.weight, float).copy()
            w[np.abs(w) < np.median(np.abs(w))] = 0.0
            nodes[k] = nir.Linear(weight=sp.csr_matrix(w)) if isinstance(n, nir.Linear) else \
                nir.Affine(weight=sp.csr_matrix(w), bias=np.asarray(n.bias))
    return nir.NIRGraph(nodes=nodes, edges=list(g.edges), type_check=False), g


def test_scipy_sparse_weights_compile_and_run_like_dense():
    sg, _ = _sparse_copy()
    def dense(n):
        if isinstance(n, nir.Affine):
            return nir.Affine(weight=n.weight.toarray(), bias=np.asarray(n.bias))
        return nir.Linear(weight=n.weight.toarray()) if isinstance(n, nir.Linear) else n

    dense_nodes = {k: dense(n) for k, n in sg.nodes.items()}
    dg = nir.NIRGraph(nodes=dense_nodes, edges=list(sg.edges), type_check=False)
    x = spikes((8,), T=30, p=0.4, seed=1)
    kw = dict(dt=1e-3, reset="zero", integrator="euler")
    for target in ("reference", "loihi2"):
        a = nmc.compile(sg, target=target, **kw).run({"input": x})["output"]
        b = nmc.compile(dg, target=target, **kw).run({"input": x})["output"]
        assert np.array_equal(a, b)
    assert all(sp.issparse(n.weight) for n in sg.nodes.values() if isinstance(n, (nir.Linear, nir.Affine)))


def test_too_large_sparse_weight_is_a_typed_error(monkeypatch):
    import nmc.frontends as F

    monkeypatch.setattr(F, "MAX_DENSE_PARAM_BYTES", 64)
    sg, _ = _sparse_copy()
    with pytest.raises(ShapeError) as e:
        nmc.compile(sg, target="reference", dt=1e-3)
    assert e.value.node in sg.nodes and "split the layer" in e.value.hint
