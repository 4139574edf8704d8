"""Per-node-type lowering goes through the node registry's per-target hooks (issue #18):
every neuron family each backend maps has its hook, the registry's entry answers the
membrane τ / synaptic-current questions the backends asked with isinstance chains,
and a neuron type without a backend's hook is refused by name (typed), not by an
AttributeError from the wrong branch."""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import pytest

from nmc import semantics
from nmc.backends.brainscales2 import lower as bss2  # noqa: F401  (registers its hooks)
from nmc.backends.loihi2 import lower as loihi2
from nmc.backends.spinnaker2 import lower as s2
from nmc.errors import UnsupportedNodeError
from nmc.semantics import Kind, NodeType, shapes

HOOKS = {("spinnaker2", "dynamics"): (nir.IF, nir.I, nir.LIF, nir.LI, nir.CubaLIF, nir.CubaLI),
         ("loihi2", "neuron_params"): (nir.IF, nir.I, nir.LIF, nir.LI, nir.CubaLIF, nir.CubaLI),
         ("brainscales2", "leaky"): (nir.IF, nir.I)}


def test_each_backend_registers_its_hook_per_neuron_family():
    for (target, hook), classes in HOOKS.items():
        for c in classes:
            assert semantics.lookup(c).hook(hook, target) is not None, (target, hook, c.__name__)
    # BrainScaleS-2 turns only the non-leaky neurons into leaky ones
    assert semantics.lookup(nir.LIF).hook("leaky", "brainscales2") is None


def test_entries_answer_membrane_tau_and_synaptic_current():
    want = {nir.IF: (None, False), nir.I: (None, False), nir.LIF: ("tau", False), nir.LI: ("tau", False),
            nir.CubaLIF: ("tau_mem", True), nir.CubaLI: ("tau_mem", True)}
    for c, (tau, cuba) in want.items():
        e = semantics.lookup(c)
        assert (e.membrane_tau, e.current_based) == (tau, cuba), c.__name__


@dataclass(eq=False)
class Adex:
    """A neuron type no backend maps (registered for this test only)."""

    tau: np.ndarray


ADEX = NodeType(cls=Adex, name="test.Adex", kind=Kind.NEURON, shape=shapes.neuron, counters=(),
                params=("tau",), spiking=True)


def test_a_neuron_type_without_the_backend_hook_is_refused_by_name():
    with semantics.registered(ADEX):
        node = Adex(tau=np.ones(3))
        with pytest.raises(UnsupportedNodeError, match="Adex has no SpiNNaker 2 neuron model"):
            s2._dynamics("adex", node, 1e-3, "euler", 3, lambda *a: None)
        with pytest.raises(UnsupportedNodeError, match="Adex has no Loihi 2 neuron model"):
            loihi2._neuron_params("adex", node, 1e-3, "euler", 3, lambda *a: None, 4096)


def test_brainscales2_refuses_delay_and_threshold_through_their_registered_refusal():
    """Delay and Threshold carry a ``brainscales2`` ``refusal`` hook (reason, target that takes them);
    the chip's rules ask the registry for it, so a graph with either is refused naming the node."""
    from nmc.backends.brainscales2 import rules
    from nmc.ir import Graph

    assert {c for c in semantics.classes() if semantics.lookup(c).hook("refusal", "brainscales2")} == \
        {nir.Delay, nir.Threshold}
    for node, where, words in ((nir.Delay(delay=np.full(3, 2e-3)), "loihi2", "delays"),
                               (nir.Threshold(threshold=np.ones(3)), "spinnaker2 or loihi2", "memoryless")):
        g = Graph.from_nir(nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": np.array([3])}), "x": node,
                   "output": nir.Output(output_type={"output": np.array([3])})},
            edges=[("input", "x"), ("x", "output")]))
        assert rules.rule_refused_types(g) == [("x", *semantics.lookup(node).hook("refusal", "brainscales2")(node))]
        with pytest.raises(UnsupportedNodeError, match=words) as e:
            rules.check(g)
        assert e.value.node == "x" and where.split()[0] in e.value.hint


def test_dense_maps_fold_a_bias_through_their_add_bias_hook():
    """The shared ``add_bias`` hook (the torch frontend folds RLeaky's recurrent bias with it): an
    Affine's bias grows by b, a Linear becomes an Affine with bias b; a convolution has none."""
    w, b0, b = np.arange(6.0).reshape(2, 3), np.array([1.0, -1.0]), np.array([0.5, 0.25])
    a = semantics.lookup(nir.Affine).hook("add_bias")(nir.Affine(weight=w, bias=b0), b)
    lin = semantics.lookup(nir.Linear).hook("add_bias")(nir.Linear(weight=w), b)
    assert isinstance(a, nir.Affine) and np.array_equal(a.weight, w) and np.array_equal(a.bias, b0 + b)
    assert isinstance(lin, nir.Affine) and np.array_equal(lin.weight, w) and np.array_equal(lin.bias, b)
    assert semantics.lookup(nir.Conv2d).hook("add_bias") is None
