"""The network model is built once per compile and shared by partition, place
and route through ``PassContext.cache``; a graph change rebuilds it."""
import numpy as np

import nets
from nmc.annotations import Quant, Sparsity
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.passes import netmodel
from nmc.target_model import CoreLimits
from placement_helpers import spec


def _counting(monkeypatch):
    calls = []
    real = netmodel.build_structure

    def counted(g, limits):
        calls.append(sorted(g.nodes))
        return real(g, limits)

    monkeypatch.setattr(netmodel, "build_structure", counted)
    return calls


def test_one_model_per_compile(monkeypatch):
    calls = _counting(monkeypatch)
    sp = spec(neurons=8, cores=64, mesh=(4, 4))
    ctx = PassContext(spec=sp)
    PassManager(parse_pipeline("partition,place,route")).run(nets.normalized(nets.ff_lif(n_hid=40)), ctx)
    assert len(calls) == 1
    assert set(ctx.cache) == {"netmodel", "coregraph", "activity_probe"}  # the probe is built once too
    # the shared model equals a fresh build
    g = nets.normalized(nets.ff_lif(n_hid=40))
    fresh = netmodel.build_network(g, CoreLimits.from_spec(sp))
    cached = ctx.cache["netmodel"][1]
    assert (cached.A != fresh.A).nnz == 0 and np.array_equal(cached.bytes_, fresh.bytes_)


def test_key_follows_what_the_model_reads():
    lim = CoreLimits.from_spec(spec(neurons=8))
    g = nets.normalized(nets.ff_lif(n_hid=12))
    k0 = netmodel.structure_key(g, lim)
    assert netmodel.structure_key(g.copy(), lim) == k0                       # same content, same key
    w = next(n for n, node in g.nodes.items() if hasattr(node, "weight"))
    g2 = g.copy()
    g2.nodes[w].weight = g2.nodes[w].weight.copy()
    g2.nodes[w].weight.flat[0] += 1.0
    assert netmodel.structure_key(g2, lim) != k0                            # a weight
    g3 = g.copy()
    g3.annotate(w, Sparsity(density=0.5, format="csr"))
    assert netmodel.structure_key(g3, lim) != k0                            # a sparsity annotation
    g4 = g.copy()
    g4.annotate(w, Quant(bits=4, scale=np.float64(1.0), w_int=np.zeros_like(g.nodes[w].weight)))
    assert netmodel.structure_key(g4, lim) != k0                            # a quant annotation
    assert netmodel.structure_key(g, CoreLimits.from_spec(spec(neurons=9))) != k0   # the limits


def test_graph_change_between_passes_rebuilds(monkeypatch):
    """A pass between partition and place that prunes weights must not see the old model."""
    calls = _counting(monkeypatch)
    sp = spec(neurons=8, cores=64, mesh=(4, 4))
    ctx = PassContext(spec=sp)
    PassManager(parse_pipeline("partition,sparsify{density=0.3},place,route")).run(
        nets.normalized(nets.ff_lif(n_hid=40)), ctx)
    assert len(calls) == 2            # partition's, then one shared by place and route
    g_ctx = PassContext(spec=sp)
    out = PassManager(parse_pipeline("partition,sparsify{density=0.3}")).run(nets.normalized(nets.ff_lif(n_hid=40)), g_ctx)
    fresh = netmodel.build_network(out, CoreLimits.from_spec(sp))
    assert (ctx.cache["netmodel"][1].A != fresh.A).nnz == 0


def test_read_only_weights_hashed_once_per_compile(monkeypatch):
    """Frozen (read-only) node arrays are hashed once per compile: the memo gives the key a
    fresh hash gives, a writable array is never memoised, and the memo is emptied when the
    manager makes the arrays writable again (a later change cannot reuse an old digest)."""
    lim = CoreLimits.from_spec(spec(neurons=8))
    g = nets.normalized(nets.ff_lif(n_hid=12))
    k0 = netmodel.structure_key(g, lim)
    memo: dict = {}
    assert netmodel.structure_key(g, lim, memo) == k0 and not memo          # writable: nothing kept
    frozen = g.freeze_arrays()
    assert netmodel.structure_key(g, lim, memo) == k0 and memo              # same key, digests kept
    hashed = []
    real = netmodel.hashlib.sha1

    def counting(*a):
        hashed.append(len(a[0]) if a else 0)
        return real(*a)

    monkeypatch.setattr(netmodel.hashlib, "sha1", counting)
    assert netmodel.structure_key(g, lim, memo) == k0
    w = next(n for n, node in g.nodes.items() if hasattr(node, "weight"))
    assert max(hashed) < g.nodes[w].weight.nbytes                           # the weights were not read again
    monkeypatch.setattr(netmodel.hashlib, "sha1", real)
    g.thaw_arrays(frozen)                                                   # writable again: the memo is bypassed
    g.nodes[w].weight.flat[0] += 1.0
    assert netmodel.structure_key(g, lim, memo) != k0
    ctx = PassContext(spec=spec(neurons=8, cores=64, mesh=(4, 4)))
    PassManager(parse_pipeline("partition,place,route")).run(nets.normalized(nets.ff_lif(n_hid=40)), ctx)
    assert ctx.digests == {}                                                # emptied with the thaw
