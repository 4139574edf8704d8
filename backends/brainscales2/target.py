"""BrainScaleS-2's target model: hemispheres as cores, read from
``hw_configs/brainscales2.toml``.

A hemisphere holds ``core.neurons_max`` neuron circuits (one per synapse
column) and ``synapse_array.rows`` rows; a chip has
``synapse_array.hemispheres`` of them. The placement granularity is a
*logical neuron* (one or more merged circuits that never straddle a
hemisphere), and a layer's rows are paid once per hemisphere that holds any of
its neurons. The ``partition`` pass (:mod:`nmc.passes.hemispheres`) packs the
layers' :meth:`~BrainScaleS2Target.layer_demands` into
:meth:`~BrainScaleS2Target.hemisphere_limits` and writes the Placement that
lowering reads.
"""
from __future__ import annotations

from nmc.target_model import TargetModel, spec_value


class BrainScaleS2Target(TargetModel):
    """BrainScaleS-2 hemispheres (module docstring)."""

    granularity = "logical neuron"

    def hemisphere_limits(self) -> dict:
        """``{circuits_per_hemisphere, rows_per_hemisphere, hemispheres}`` for :func:`.placement.place`."""
        s = self.spec
        return {"circuits_per_hemisphere": int(spec_value(s, "core.neurons_max")),
                "rows_per_hemisphere": int(spec_value(s, "synapse_array.rows")),
                "hemispheres": int(spec_value(s, "synapse_array.hemispheres"))}

    def layer_demands(self, graph, ctx) -> tuple[list[dict], list[tuple[str, str]]]:
        """What each layer of ``graph`` needs, from the layer plan lowering builds
        (:func:`.lower.plan`: 6-bit weights, circuits per logical neuron, synapse rows):
        ``([{name, circuits, rows}] in schedule order, recurrent (pre, post) projections)``."""
        from .lower import plan

        return plan(graph, ctx).demands()


def target_model(spec, options=None) -> BrainScaleS2Target:
    return BrainScaleS2Target(spec)
