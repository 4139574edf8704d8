"""GraphMeta (issue #18 item 3): dt, integrator and reset set once by normalize and
read through ``GraphMeta.of``, with no default anywhere downstream."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nets import ff_lif, normalized, spikes

from nmc.backends import get_backend
from nmc.errors import GraphError, NmcError, OptionError
from nmc.graph_meta import DEFAULTS, GraphMeta
from nmc.ir import Graph
from nmc.passes import PassContext
from nmc.reference import ReferenceSimulator


def test_normalize_sets_graph_meta_once():
    g = normalized(ff_lif(), dt=2e-3, integrator="exact", reset="subtract")
    assert GraphMeta.of(g) == GraphMeta(2e-3, "exact", "subtract")
    # the stored keys are the ones bundles have always held (graph.nir stays byte-identical)
    assert {k: g.meta[k] for k in ("dt", "integrator", "reset")} == {"dt": 2e-3, "integrator": "exact",
                                                                       "reset": "subtract"}


def test_normalize_defaults_are_the_declared_ones():
    from nmc.passes import PassManager, parse_pipeline

    ctx = PassContext(options={})
    g = PassManager(parse_pipeline("normalize")).run(Graph.from_nir(ff_lif()), ctx)
    assert GraphMeta.of(g) == GraphMeta(**DEFAULTS)
    assert any("dt not given" in w["message"] for w in ctx.warnings.items)


@pytest.mark.parametrize("meta", [{}, {"dt": 1e-3}, {"dt": 1e-3, "integrator": "euler"}])
def test_accessor_refuses_a_graph_normalize_has_not_seen(meta):
    g = Graph.from_nir(ff_lif(), meta=meta)
    with pytest.raises(GraphError) as e:
        GraphMeta.of(g)
    missing = [k for k in ("dt", "integrator", "reset") if k not in meta]
    assert all(k in e.value.message for k in missing) and "normalize" in e.value.message


def test_no_downstream_default_dt():
    """Before: the reference and loihi2 silently assumed dt = 1e-4, spinnaker2/brainscales2 1e-3."""
    g = Graph.from_nir(ff_lif(), meta={"integrator": "euler", "reset": "zero"})
    with pytest.raises(GraphError, match="dt"):
        ReferenceSimulator(g)
    for target in ("loihi2", "spinnaker2"):
        with pytest.raises(GraphError, match="dt"):
            get_backend(target).lower(g, PassContext(options={}))


def test_reference_runs_at_the_graph_meta_dt():
    x = spikes(8, T=30, p=0.4)
    a = ReferenceSimulator(normalized(ff_lif(), dt=1e-3)).run({"input": x})["output"]
    b = ReferenceSimulator(normalized(ff_lif(), dt=2e-3)).run({"input": x})["output"]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("bad", [{"dt": 0.0}, {"dt": float("nan")}, {"integrator": "rk4"}, {"reset": "none"}])
def test_graph_meta_values_checked(bad):
    kw = {**DEFAULTS, **bad}
    with pytest.raises(OptionError):
        GraphMeta(**kw)


def test_a_model_stored_integrator_is_checked_by_normalize():
    g = Graph.from_nir(ff_lif(), meta={"dt": 1e-3, "integrator": "rk4"})
    with pytest.raises(NmcError) as e:
        normalized(g, dt=None, integrator=None, reset="zero")
    assert "integrator" in str(e.value) and "rk4" in str(e.value)


def test_graph_meta_is_frozen():
    m = GraphMeta(1e-3, "euler", "zero")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.dt = 2e-3  # type: ignore[misc]
