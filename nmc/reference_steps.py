"""Each node type's reference-simulator step and linear map (torch), registered
as the ``("reference", "step")`` and shared ``"linear_map"`` hooks of its
registry entry. :class:`nmc.reference.ReferenceSimulator` runs the steps; the
backends' linear composition (:mod:`nmc.backends.linear`) applies the linear maps.

A step class is built once per graph node from a :class:`nmc.reference.SimNode`
(``name``, ``node``, ``in_shape``, ``out_shape``, ``reset``, ``dt``,
``integrator``, ``dtype``) and has ``init_state(batch) -> dict`` and
``step(x, state) -> (out, state, recorded)``; ``x`` is the summed input
(B, *in_shape). Equations: :mod:`nmc.dynamics`; the list per node type is in
:mod:`nmc.reference`'s docstring.
"""
from __future__ import annotations

import warnings
import weakref

import nir
import numpy as np
import torch
import torch.nn.functional as F

from nmc import dynamics as D
from nmc.errors import ShapeError
from nmc.nodes import EGRU
from nmc.semantics import register_hook


def tensor(a, dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64), dtype=dtype)


def pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[-1]))


def _one(v) -> int:
    return int(np.asarray(v).reshape(-1)[0])


def _weight(node, weight):
    """The caller's weight tensor, else the node's weight as float64, shared with the node's
    array without a copy (a read-only array too: the reference never writes a weight)."""
    if weight is not None:
        return weight
    w = np.asarray(node.weight, float)
    if w.flags.writeable:
        return torch.as_tensor(w)
    with warnings.catch_warnings():   # torch warns that writing through the tensor would be undefined
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(w)


# ------------------------------------------------------------- linear maps
# linear_map(node, x, out_shape, weight=None, bias=None): the node's linear map on a batch
# x (k, *in_shape); ``weight``/``bias`` tensors given by the caller (the reference's, in its
# dtype), else the node's weight as float64 and no bias.
@register_hook(None, "linear_map", nir.Affine, nir.Linear)
def _dense_map(node, x, out_shape, weight=None, bias=None):
    out = x.reshape(x.shape[0], -1) @ _weight(node, weight).T
    return out + bias if bias is not None else out


@register_hook(None, "linear_map", nir.Scale)
def _scale_map(node, x, out_shape, weight=None, bias=None):
    return x * (weight if weight is not None else torch.as_tensor(np.asarray(node.scale, float)))


@register_hook(None, "linear_map", nir.Conv2d)
def _conv2d_map(node, x, out_shape, weight=None, bias=None):
    pad = node.padding if isinstance(node.padding, str) else pair(node.padding)
    return F.conv2d(x, _weight(node, weight), bias, stride=pair(node.stride), padding=pad,
                    dilation=pair(node.dilation), groups=int(node.groups))


@register_hook(None, "linear_map", nir.Conv1d)
def _conv1d_map(node, x, out_shape, weight=None, bias=None):
    pad = node.padding if isinstance(node.padding, str) else _one(node.padding)
    return F.conv1d(x, _weight(node, weight), bias, stride=_one(node.stride), padding=pad,
                    dilation=_one(node.dilation), groups=int(node.groups))


@register_hook(None, "linear_map", nir.SumPool2d)
def _sum_pool_map(node, x, out_shape, weight=None, bias=None):
    """Window sums: torch's average pooling with divisor 1."""
    return F.avg_pool2d(x, pair(node.kernel_size), pair(node.stride), pair(node.padding), divisor_override=1)


@register_hook(None, "linear_map", nir.AvgPool2d)
def _avg_pool_map(node, x, out_shape, weight=None, bias=None):
    """Window means (zero padding counted: torch's default count_include_pad)."""
    return F.avg_pool2d(x, pair(node.kernel_size), pair(node.stride), pair(node.padding), divisor_override=None)


@register_hook(None, "linear_map", nir.Flatten)
def _flatten_map(node, x, out_shape, weight=None, bias=None):
    return x.reshape(x.shape[0], *out_shape)


# ------------------------------------------------------------------ steps
class Step:
    """Stateless node: no parameters, output = input."""

    def __init__(self, sn):
        # a weak reference: the SimNode owns this step, and a strong one back would make a cycle that keeps
        # every parameter tensor (a dense layer's float64 weights) alive until the next cycle collection
        self.sn = weakref.proxy(sn)
        self.p: dict[str, torch.Tensor | None] = {}

    def _param(self, a):
        return tensor(a, self.sn.dtype)

    def init_state(self, batch: int) -> dict:
        return {}

    def _zeros(self, batch: int) -> torch.Tensor:
        return torch.zeros((batch, *self.sn.out_shape), dtype=self.sn.dtype)

    def step(self, x, st):
        return x, st, {}


register_hook("reference", "step", nir.Input, nir.Output)(Step)


class LinearStep(Step):
    """Affine/Linear/Scale/Conv/pooling/Flatten: the linear map (+ bias)."""

    def __init__(self, sn):
        super().__init__(sn)
        n = sn.node
        self.map = sn.entry.hook("linear_map")
        # the parameters the registry names: a weight map's weight and its bias (Linear has none),
        # a Scale's per-element scale; pooling and Flatten have none
        if sn.entry.weights:
            self.p["w"] = self._param(getattr(n, sn.entry.weights[0]))
            self.p["b"] = self._param(n.bias) if hasattr(n, "bias") else None
        elif sn.entry.params:
            self.p["s"] = self._param(getattr(n, sn.entry.params[0]))

    def step(self, x, st):
        return self.map(self.sn.node, x, self.sn.out_shape, self.p.get("w", self.p.get("s")), self.p.get("b")), st, {}


register_hook("reference", "step", nir.Affine, nir.Linear, nir.Scale, nir.Conv1d, nir.Conv2d, nir.SumPool2d,
              nir.AvgPool2d, nir.Flatten)(LinearStep)


@register_hook("reference", "step", nir.Threshold)
class ThresholdStep(Step):
    def __init__(self, sn):
        super().__init__(sn)
        self.p["thr"] = self._param(sn.node.threshold)

    def step(self, x, st):
        out = D.heaviside(x - self.p["thr"])
        return out, st, {"spikes": out}


@register_hook("reference", "step", nir.Delay)
class DelayStep(Step):
    def __init__(self, sn):
        super().__init__(sn)
        steps = np.rint(np.asarray(sn.node.delay, dtype=float) / sn.dt).astype(np.int64)
        if np.any(steps < 0):
            raise ShapeError("negative delay", node=sn.name)
        self.delay_steps = torch.as_tensor(np.broadcast_to(steps, sn.out_shape).copy())
        self.depth = int(self.delay_steps.max()) + 1

    def init_state(self, batch):
        return {"buf": torch.zeros((self.depth, batch, *self.sn.out_shape), dtype=self.sn.dtype), "pos": 0}

    def step(self, x, st):
        buf, pos = st["buf"], st["pos"]
        buf[pos] = x
        idx = (pos - self.delay_steps) % self.depth
        out = torch.gather(buf, 0, idx.expand(x.shape[0], *self.sn.out_shape).unsqueeze(0)).squeeze(0)
        return out, {"buf": buf, "pos": (pos + 1) % self.depth}, {}


class NeuronStep(Step):
    """NIR neurons: per-neuron parameters (the entry's ``params``) as tensors of the output shape."""

    def __init__(self, sn):
        super().__init__(sn)
        n = sn.node
        for k in sn.entry.params:
            if getattr(n, k, None) is not None:
                self.p[k] = self._param(np.broadcast_to(np.asarray(getattr(n, k), dtype=float), sn.out_shape))

    def init_state(self, batch):
        return {k: self._zeros(batch) for k in self.sn.entry.state}

    def fire(self, v, rec):
        """Spike and reset for spiking types; the membrane as output for the others."""
        if not self.sn.entry.spiking:
            return v, v
        out, v = D.fire(v, self.p["v_threshold"], self.p["v_reset"], self.sn.reset)
        rec["spikes"] = out
        return out, v


@register_hook("reference", "step", nir.I, nir.IF)
class IntegratorStep(NeuronStep):
    def step(self, x, st):
        rec: dict = {}
        out, v = self.fire(D.integrate(st["v"], x, self.p["r"], self.sn.dt), rec)
        return out, {"v": v}, rec


@register_hook("reference", "step", nir.LI, nir.LIF)
class LeakyStep(NeuronStep):
    def step(self, x, st):
        p, sn = self.p, self.sn
        rec: dict = {}
        out, v = self.fire(D.leaky(st["v"], x, p["tau"], p["r"], p["v_leak"], sn.dt, sn.integrator), rec)
        return out, {"v": v}, rec


@register_hook("reference", "step", nir.CubaLI, nir.CubaLIF)
class CubaStep(NeuronStep):
    def step(self, x, st):
        p, sn = self.p, self.sn
        i = D.synaptic(st["i"], x, p["tau_syn"], p["w_in"], sn.dt, sn.integrator)
        rec: dict = {}
        out, v = self.fire(D.leaky(st["v"], i, p["tau_mem"], p["r"], p["v_leak"], sn.dt, sn.integrator), rec)
        rec["i"] = i
        return out, {"v": v, "i": i}, rec


@register_hook("reference", "step", EGRU)
class EGRUStep(NeuronStep):
    """:func:`nmc.dynamics.egru_step`: output the graded events y, record the event flags o as spikes."""

    def __init__(self, sn):
        Step.__init__(self, sn)
        for k in ("w_x", "w_h", "b_x", "b_h", "thr"):
            self.p[k] = self._param(getattr(sn.node, k))

    def step(self, x, st):
        p = self.p
        y, c, o = D.egru_step(x.reshape(x.shape[0], -1), st["v"], st["y"], p["w_x"], p["w_h"], p["b_x"], p["b_h"],
                              p["thr"])
        return y, {"v": c, "y": y}, {"spikes": o}
