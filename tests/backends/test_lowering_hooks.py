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
