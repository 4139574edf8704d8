"""Registry entries of NIR 1.0.8's primitives (see :mod:`nmc.semantics.registry`).

Per-element parameters are listed in the order ``normalize`` has always read
them (the first with more than one value fixes a neuron population's shape).
Counters: the energy terms a unit's output events are charged as
(:mod:`nmc.runtime.energy`): ``synaptic_ops`` for spikes, ``macs`` for graded
values; an Input may carry either (its data decides); a neuron is updated every
step (``neuron_updates`` / ``neuron_updates_inactive``; a gated cell such as the
EGRU: ``cell_updates``). Nodes between units
count nothing themselves: their synapses are counted at the events' source.
"""
from __future__ import annotations

import nir
import numpy as np

from . import shapes
from .registry import Kind, NodeType, register

_UPDATES = ("neuron_updates", "neuron_updates_inactive")
SPIKES = ("synaptic_ops",) + _UPDATES
GRADED = ("macs",) + _UPDATES
#: a gated cell (EGRU): graded events, and every unit's whole cell update every step (its own cost)
CELL = ("macs", "cell_updates")


def _add(cls, kind, shape, counters=(), **kw) -> None:
    register(NodeType(cls=cls, name=cls.__name__, kind=kind, shape=shape, counters=counters, **kw))


_add(nir.Input, Kind.IO, shapes.fixed, ("synaptic_ops", "macs"), doc="the given input at t")
_add(nir.Output, Kind.IO, shapes.output, doc="x")

def _affine_add_bias(node, b):
    """W·x + b₀ → W·x + (b₀ + b)."""
    return nir.Affine(weight=node.weight, bias=node.bias + b)


def _linear_add_bias(node, b):
    """W·x → W·x + b (an Affine)."""
    return nir.Affine(weight=node.weight, bias=b)


def _dense_weight(node):
    """The (out, in) weight applied to the flattened input (an array or a scipy-sparse matrix)."""
    return node.weight


def _affine_with_weights(node, w, b):
    return nir.Affine(weight=w, bias=b)


def _conv2d_with_weights(node, w, b):
    """The same convolution (input, stride, padding, dilation, groups) with weight ``w`` and bias ``b``.
    NIR 1.0.8's constructor takes the input channels from ``w.shape[1]`` (C_in / groups for a grouped
    convolution): the node's own input type is kept."""
    out = nir.Conv2d(input_shape=node.input_shape, weight=np.asarray(w, float), stride=node.stride,
                     padding=node.padding, dilation=node.dilation, groups=node.groups, bias=np.asarray(b, float))
    out.input_type = {k: np.array(v) for k, v in node.input_type.items()}
    return out


# shared hooks: ``dense_weight(node)``, the (out, in) matrix of a dense map (a node type with it is
# "dense": :func:`nmc.nodes.is_dense`); ``add_bias(node, b)``, the same dense map with ``b`` added to
# its output (a frontend folding a bias of the layer it feeds into it); ``with_weights(node, w, b)``,
# the same map with weight ``w`` and bias ``b`` (a frontend folding a per-channel scale, e.g. ONNX
# BatchNormalization)
_add(nir.Affine, Kind.WEIGHT, shapes.fixed, weights=("weight",), doc="W·x + b",
     hooks={(None, "dense_weight"): _dense_weight, (None, "add_bias"): _affine_add_bias,
            (None, "with_weights"): _affine_with_weights})
_add(nir.Linear, Kind.WEIGHT, shapes.fixed, weights=("weight",), doc="W·x",
     hooks={(None, "dense_weight"): _dense_weight, (None, "add_bias"): _linear_add_bias})
_add(nir.Conv1d, Kind.WEIGHT, shapes.conv, weights=("weight",), doc="convolution + bias")
_add(nir.Conv2d, Kind.WEIGHT, shapes.conv, weights=("weight",), doc="convolution + bias",
     hooks={(None, "with_weights"): _conv2d_with_weights})
_add(nir.Scale, Kind.LINEAR, shapes.elementwise, params=("scale",), doc="s ⊙ x")
_add(nir.SumPool2d, Kind.LINEAR, shapes.pool2d, doc="window sums")
_add(nir.AvgPool2d, Kind.LINEAR, shapes.pool2d, doc="window means (zero padding counted)")
_add(nir.Flatten, Kind.INDEX, shapes.flatten, doc="reshape to the node's output shape")

_add(nir.Delay, Kind.ELEMENTWISE, shapes.elementwise, params=("delay",), state=("buf",),
     doc="x delayed by round(delay/dt) steps per channel")
_add(nir.Threshold, Kind.ELEMENTWISE, shapes.elementwise, params=("threshold",), spiking=True,
     doc="H(x − θ)")

_add(nir.I, Kind.NEURON, shapes.neuron, GRADED, params=("r",), state=("v",), doc="v += dt·R·x, output v")
_add(nir.IF, Kind.NEURON, shapes.neuron, SPIKES, params=("r", "v_threshold", "v_reset"), state=("v",),
     spiking=True, doc="v += dt·R·x, then spike/reset, output spikes")
_add(nir.LI, Kind.NEURON, shapes.neuron, GRADED, params=("tau", "r", "v_leak"), state=("v",),
     doc="leaky integrator, output v")
_add(nir.LIF, Kind.NEURON, shapes.neuron, SPIKES, params=("tau", "r", "v_leak", "v_threshold", "v_reset"),
     state=("v",), spiking=True, doc="leaky integrate-and-fire, output spikes")
_add(nir.CubaLI, Kind.NEURON, shapes.neuron, GRADED, params=("tau_mem", "tau_syn", "r", "v_leak", "w_in"),
     state=("v", "i"), doc="current-based leaky integrator, output v")
_add(nir.CubaLIF, Kind.NEURON, shapes.neuron, SPIKES,
     params=("tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in"), state=("v", "i"),
     spiking=True, doc="current-based leaky integrate-and-fire, output spikes")
