"""PyTorch frontend, conversion: one module (layer) → nmc nodes.

:func:`_convert` maps a layer to a :class:`_Sub` (its nodes, internal edges,
annotations, warnings); :func:`_attach` adds it to the graph. Tracing (which
layers, in which order: :mod:`.trace`) and files (:mod:`.files`) are beside it;
the package docstring (:mod:`nmc.frontends.torch`) lists the exact mappings.
"""
from __future__ import annotations

from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from nmc import nn as nnn
from nmc.annotations import Reset
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes import EGRU as EGRUNode
from nmc.semantics import lookup

from . import ssm as _ssm

DEFAULT_DT = 1e-3


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=float)


def _full(v, shape) -> np.ndarray:
    return np.broadcast_to(_np(v) if not np.isscalar(v) else np.asarray(float(v)), shape).astype(float).copy()


# ---------------------------------------------------------------- layers
class _Sub:
    """A converted layer: nodes in order, internal edges, entry/exit, annotations."""

    def __init__(self):
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.anns: list[tuple[str, Any]] = []
        self.entry: str | None = None
        self.exit: str | None = None
        self.warnings: list[tuple[str, str]] = []

    def chain(self, name, node):
        if self.exit is not None:
            self.edges.append((self.exit, name))
        self.nodes[name] = node
        self.entry = self.entry or name
        self.exit = name


def _lif_node(shape, tau, r, v_leak, thr, v_reset):
    return nir.LIF(tau=_full(tau, shape), r=_full(r, shape), v_leak=_full(v_leak, shape),
                   v_threshold=_full(thr, shape), v_reset=_full(v_reset, shape))


def _convert(name: str, m: nn.Module, in_shape: tuple, out_shape: tuple, dt: float) -> _Sub | None:
    s = _Sub()
    cls = type(m).__name__
    mod = type(m).__module__
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return None
    if isinstance(m, nn.Linear):
        w = _np(m.weight)
        s.chain(name, nir.Affine(weight=w, bias=_np(m.bias)) if m.bias is not None else nir.Linear(weight=w))
    elif isinstance(m, (nn.Conv2d, nn.Conv1d)):
        if m.padding_mode != "zeros":
            raise UnsupportedNodeError(f"padding_mode={m.padding_mode!r} is not supported", node=name)
        b = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
        pad = m.padding if isinstance(m.padding, str) else tuple(m.padding)
        if isinstance(m, nn.Conv2d):
            s.chain(name, nir.Conv2d(input_shape=tuple(in_shape[-2:]), weight=_np(m.weight), stride=tuple(m.stride),
                                     padding=pad, dilation=tuple(m.dilation), groups=m.groups, bias=b))
        else:
            s.chain(name, nir.Conv1d(input_shape=int(in_shape[-1]), weight=_np(m.weight), stride=m.stride[0],
                                     padding=pad if isinstance(pad, str) else pad[0], dilation=m.dilation[0],
                                     groups=m.groups, bias=b))
    elif isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (m.divisor_override is not None):
            raise UnsupportedNodeError("AvgPool2d with ceil_mode or divisor_override is not supported", node=name)
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
        st = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
        pd = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
        node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(st), padding=np.array(pd))
        node.input_type, node.output_type = {"input": np.array(in_shape)}, {"output": np.array(out_shape)}
        s.chain(name, node)
    elif isinstance(m, (nn.MaxPool2d, nn.MaxPool1d)):
        raise UnsupportedNodeError("max pooling has no exact spiking equivalent", node=name,
                                   hint="use nn.AvgPool2d (summed spikes) and retrain")
    elif isinstance(m, nn.Flatten):
        if tuple(out_shape) == tuple(in_shape):
            return None
        s.chain(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=m.start_dim - 1,
                                  end_dim=m.end_dim - 1 if m.end_dim > 0 else m.end_dim))
    elif isinstance(m, nnn.EGRU):
        s.chain(name, EGRUNode(w_x=_np(m.w_x), w_h=_np(m.w_h), b_x=_np(m.b_x), b_h=_np(m.b_h), thr=_np(m.threshold())))
    elif isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI)):
        shp = tuple(out_shape)
        if m.dt != dt:
            s.warnings.append((name, f"layer dt={m.dt} differs from the model dt={dt}; its own dt is used"))
        ratio = dt / m.dt  # scale time constants so dt_graph/tau matches the layer's dt/tau
        if isinstance(m, nnn.CubaLIF):
            node = nir.CubaLIF(tau_mem=_full(m.tau_mem * ratio, shp), tau_syn=_full(m.tau_syn * ratio, shp),
                               r=_full(m.r, shp), v_leak=_full(m.v_leak, shp), v_threshold=_full(m.v_threshold, shp),
                               v_reset=_full(m.v_reset, shp), w_in=_full(m.w_in, shp))
        elif isinstance(m, nnn.IF):
            node = nir.IF(r=_full(m.r / ratio, shp), v_threshold=_full(m.v_threshold, shp), v_reset=_full(m.v_reset, shp))
        elif isinstance(m, nnn.LI):
            node = nir.LI(tau=_full(m.tau * ratio, shp), r=_full(m.r, shp), v_leak=_full(m.v_leak, shp))
        else:
            node = _lif_node(shp, m.tau * ratio, m.r, m.v_leak, m.v_threshold, m.v_reset)
        if isinstance(m, nnn.RLIF):
            s.nodes[name] = node
            s.entry = s.exit = name
            rec = f"{name}.w_rec"
            s.nodes[rec] = nir.Linear(weight=_np(m.recurrent.weight))
            s.edges += [(name, rec), (rec, name)]
        else:
            s.chain(name, node)
        if not isinstance(m, nnn.LI):
            s.anns.append((name, Reset(m.reset)))
        if not isinstance(m, nnn.IF):  # IF has no leak: its integrator does not matter
            s.integrator = m.integrator  # type: ignore[attr-defined]
    elif isinstance(m, (nn.LayerNorm, *_ssm.SSM_LAYERS)):
        _ssm.convert(s, name, m, dt, _convert)
    elif isinstance(m, (nnn.SSMBlock, nnn.DiagSSMStack)):
        raise UnsupportedNodeError(f"{cls} inside another module is not supported (its residual sum needs "
                                   "the graph around it)", node=name,
                                   hint="save the SSMBlock/DiagSSMStack on its own with nmc.save, or build the "
                                        "model from DiagSSM layers")
    elif mod.startswith("snntorch") and cls in ("Leaky", "RLeaky", "Synaptic"):
        _snntorch(s, name, m, tuple(out_shape), dt)
    elif mod.startswith("norse") and cls in ("LIFBoxCell", "LIFCell", "LICell", "LIFBox", "LIF", "LI",
                                             "LIFRecurrentCell"):
        _norse(s, name, m, tuple(out_shape), dt)
    else:
        raise UnsupportedNodeError(f"module {cls} ({mod}) is not supported", node=name,
                                   hint="supported: Linear, Conv1d/2d, AvgPool2d, Flatten, LayerNorm, nmc.nn layers, "
                                        "snnTorch Leaky/RLeaky/Synaptic, Norse LIFBoxCell/LIFCell/LICell")
    return s


def _snntorch(s: _Sub, name: str, m, shp, dt):
    """snnTorch Leaky/RLeaky/Synaptic → LIF/CubaLIF (+ loops that reproduce ``reset_delay=True``).

    snnTorch (Euler, dt = 1e-4 by its NIR convention): ``syn ← α·syn + x``;
    ``mem ← β·mem + (x or syn) − r·ϑ`` with ``r = H(mem_prev − ϑ)``; spike
    ``H(mem − ϑ)``. With ``reset_delay=True`` (snnTorch's default) the reset
    term r is the *previous* step's spike, and mem is not reset after firing.
    The reference resets in the spike's step, so (u = pre-reset membrane):

    * ``Leaky``, subtract: ``u_t = β(u_{t−1} − ϑs_{t−1}) + x_t + w·s_{t−1}`` with a
      self-loop ``w = (β − 1)·ϑ`` (a ``Scale`` node ``<name>.reset_delay`` on a
      back edge, one step late) gives snnTorch's ``β·u_{t−1} + x_t − ϑ·s_{t−1}``.
    * ``RLeaky``, subtract: the same w is added to the recurrent weight's diagonal.
    * ``Synaptic``, subtract: the loop enters the synaptic current, which decays by
      α; a second loop ``Delay(dt) → Scale(−α·w)`` cancels the decayed part, so the
      current carries exactly ``w·s_{t−1}``.
    * reset to zero: ``Leaky`` is the same with and without the delay
      (``mem ← β(1 − s_{t−1})·mem + x``). ``RLeaky``/``Synaptic`` with a delayed
      zero reset also drop the step's input after a spike (``mem ← (1 − s_{t−1})·(…)``):
      not expressible in NIR; converted with a warning.

    Only floating-point rounding differs (snnTorch sums in another order), so
    spike trains agree except at exact threshold ties. snnTorch's
    ``reset_delay=False`` code subtracts once more when a membrane stays above ϑ
    after its reset ("double reset" guard); the reference does not: only
    inputs that drive a membrane above 2ϑ in one step see the difference.
    """
    cls = type(m).__name__
    if getattr(m, "inhibition", False) or getattr(m, "state_quant", False):
        raise UnsupportedNodeError("snnTorch inhibition/state_quant has no NIR equivalent", node=name)
    gsf = getattr(m, "graded_spikes_factor", 1.0)
    if not np.all(_np(gsf) == 1.0):
        raise UnsupportedNodeError("snnTorch graded_spikes_factor != 1 is not supported", node=name,
                                   hint="fold the factor into the next layer's weights and set it to 1")
    thr = _full(m.threshold, shp)
    mech = {0: "subtract", 1: "zero"}.get(int(getattr(m, "reset_mechanism_val", 0)))
    if mech is None:
        raise UnsupportedNodeError("snnTorch reset_mechanism='none' is not supported", node=name)
    beta = _full(_np(m.beta.clamp(0, 1)), shp)
    if np.any(beta >= 1):
        raise UnsupportedNodeError("snnTorch beta = 1 (no leak) has no finite time constant", node=name,
                                   hint="use beta < 1, or nmc.nn.IF for a non-leaky neuron")
    tau = dt / (1 - beta)
    delay = bool(getattr(m, "reset_delay", True))
    alpha = None
    if cls == "Synaptic":
        alpha = _full(_np(m.alpha.clamp(0, 1)), shp)
        if np.any(alpha >= 1):
            raise UnsupportedNodeError("snnTorch alpha = 1 (no current decay) is not supported", node=name)
        tsyn = dt / (1 - alpha)
        s.chain(name, nir.CubaLIF(tau_mem=tau, tau_syn=tsyn, r=tau / dt, v_leak=_full(0.0, shp), v_threshold=thr,
                                  v_reset=_full(0.0, shp), w_in=tsyn / dt))
    else:
        s.chain(name, _lif_node(shp, tau, tau / dt, 0.0, thr, 0.0))
    s.anns.append((name, Reset(mech)))
    w_delay = (beta - 1) * thr if (delay and mech == "subtract") else None
    if cls == "RLeaky":
        if not getattr(m, "all_to_all", True) or not hasattr(m, "recurrent") or not isinstance(m.recurrent, nn.Linear):
            raise UnsupportedNodeError("only all-to-all (Linear) RLeaky recurrence is supported", node=name)
        rec = f"{name}.w_rec"
        w = _np(m.recurrent.weight)
        if w_delay is not None:
            w = w + np.diag(w_delay.reshape(-1))
        s.nodes[rec] = nir.Linear(weight=w)
        s.edges += [(name, rec), (rec, name)]
        if m.recurrent.bias is not None:
            s.rec_bias = _np(m.recurrent.bias)  # type: ignore[attr-defined]
    elif w_delay is not None:
        loop = f"{name}.reset_delay"
        s.nodes[loop] = nir.Scale(scale=w_delay)
        s.edges += [(name, loop), (loop, name)]
        if alpha is not None:
            d, c = f"{name}.reset_delay2", f"{name}.reset_delay2.scale"
            s.nodes[d] = nir.Delay(delay=_full(dt, shp))
            s.nodes[c] = nir.Scale(scale=-alpha * w_delay)
            s.edges += [(name, d), (d, c), (c, name)]
    if delay and mech == "zero" and cls != "Leaky":
        s.warnings.append((name, f"snnTorch {cls} with reset_delay=True and reset to zero ignores the input of the "
                                 "step after a spike; nmc integrates it, so spikes may differ (build the layer "
                                 "with reset_delay=False)"))


def _norse(s: _Sub, name: str, m, shp, dt):
    p = m.p
    mdt = float(getattr(m, "dt", dt))
    if abs(mdt - dt) > 1e-15:
        raise ShapeError(f"Norse cell dt={mdt} differs from the model dt={dt}", node=name, hint=f"compile with --dt {mdt}")
    tau_m = 1.0 / _np(p.tau_mem_inv)
    cls = type(m).__name__
    if cls in ("LIFBoxCell", "LIFBox"):
        s.chain(name, _lif_node(shp, tau_m, 1.0, _np(p.v_leak), _np(p.v_th), _np(p.v_reset)))
        s.anns.append((name, Reset("zero")))
        s.integrator = "euler"  # type: ignore[attr-defined]
        return
    tau_s = 1.0 / _np(p.tau_syn_inv)
    # Norse 1.1: i_jump = i + x; v += dt/τ_mem·(v_leak − v + i_jump); i = i_jump·(1 − dt/τ_syn):
    # the reference's Euler CubaLIF/CubaLI with w_in = τ_syn/dt, R = 1
    if cls == "LIFRecurrentCell":
        # i_jump = i + W_in·x + W_rec·z_{t−1}: Linear(W_in) → CubaLIF ⇄ Linear(W_rec) (back edge = z_{t−1})
        win, wrec = _np(m.input_weights), _np(m.recurrent_weights)
        if not getattr(m, "autapses", False):
            np.fill_diagonal(wrec, 0.0)  # Norse zeroes them at construction; keep that for edited weights too
        s.chain(f"{name}.w_in", nir.Linear(weight=win))
        s.chain(name, nir.CubaLIF(tau_mem=_full(tau_m, shp), tau_syn=_full(tau_s, shp), r=_full(1.0, shp),
                                  v_leak=_full(_np(p.v_leak), shp), v_threshold=_full(_np(p.v_th), shp),
                                  v_reset=_full(_np(p.v_reset), shp), w_in=_full(tau_s / dt, shp)))
        rec = f"{name}.w_rec"
        s.nodes[rec] = nir.Linear(weight=wrec)
        s.edges += [(name, rec), (rec, name)]
        s.anns.append((name, Reset("zero")))
    elif cls in ("LIFCell", "LIF"):
        s.chain(name, nir.CubaLIF(tau_mem=_full(tau_m, shp), tau_syn=_full(tau_s, shp), r=_full(1.0, shp),
                                  v_leak=_full(_np(p.v_leak), shp), v_threshold=_full(_np(p.v_th), shp),
                                  v_reset=_full(_np(p.v_reset), shp), w_in=_full(tau_s / dt, shp)))
        s.anns.append((name, Reset("zero")))
    else:
        s.chain(name, nir.CubaLI(tau_mem=_full(tau_m, shp), tau_syn=_full(tau_s, shp), r=_full(1.0, shp),
                                 v_leak=_full(_np(p.v_leak), shp), w_in=_full(tau_s / dt, shp)))
    s.integrator = "euler"  # type: ignore[attr-defined]


def _is_neuron_module(m: nn.Module) -> bool:
    return isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI, nnn.EGRU, *_ssm.SSM_LAYERS)) or type(m).__module__.startswith(
        ("snntorch", "norse"))


def _run_step(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of one layer for shape inference, without touching neuron state."""
    if isinstance(m, nnn.EGRU):
        return x.new_zeros(x.shape[0], m.hidden_size)
    if type(m).__name__ == "LIFRecurrentCell":  # Norse: input_size → hidden_size
        if x[0].numel() != int(m.input_size):
            raise ValueError(f"expects {int(m.input_size)} inputs, got {x[0].numel()}")
        return x.new_zeros(x.shape[0], int(m.hidden_size))
    if _is_neuron_module(m) or isinstance(m, (nnn.SSMBlock, nnn.DiagSSMStack)):
        return x
    out = m(x.to(next(iter(m.parameters()), x).dtype))
    if isinstance(out, tuple):
        out = out[0]
    return out


def _attach(g: Graph, sub: _Sub, preds: list[str], warnings, integrators) -> str:
    for k, node in sub.nodes.items():
        g.add_node(k, node)
    for p in preds:
        g.add_edge(p, sub.entry)
    for a, b in sub.edges:
        g.add_edge(a, b)
    for k, ann in sub.anns:
        g.annotate(k, ann)
    warnings += sub.warnings
    if hasattr(sub, "integrator"):
        for k, node in sub.nodes.items():
            if lookup(node) is not None and lookup(node).membrane_tau is not None:   # the leaky neurons
                integrators[k] = sub.integrator
    rb = getattr(sub, "rec_bias", None)
    if rb is not None:  # snnTorch RLeaky: fold the recurrent bias into the feed-forward Affine
        ff = preds[0] if len(preds) == 1 else None
        node = g.nodes.get(ff) if ff else None
        add_bias = lookup(node).hook("add_bias") if node is not None and lookup(node) is not None else None
        if add_bias is not None and g.succs(ff) == [sub.entry]:   # a dense map (Affine, Linear)
            g.nodes[ff] = add_bias(node, rb)
        else:
            raise UnsupportedNodeError("RLeaky's recurrent bias needs a Linear layer directly before it",
                                       node=sub.entry, hint="put an nn.Linear before the RLeaky layer")
    return sub.exit


def _unify_integrators(g: Graph, integrators: dict[str, str], dt: float, warnings) -> None:
    """One integrator per graph (meta ``integrator``): the one most leaky layers use
    (ties: euler). Layers trained with the other one get the time constants that
    give the same per-step decay a: Euler's ``1 − dt/τ`` equals exact's ``e^{−dt/τ'}``
    (inputs scale the same: R·x·(1 − a), w_in·x·(1 − a)). Mathematically equal;
    rounding differs, so those layers are no longer bit-exact: warned, by name."""
    kinds = sorted(set(integrators.values()))
    main = max(kinds, key=lambda k: (sum(v == k for v in integrators.values()), k == "euler"))
    g.meta["integrator"] = main
    for name, integ in integrators.items():
        if integ == main:
            continue
        node = g.nodes[name]
        e = lookup(node)
        fields = (e.membrane_tau,) + (("tau_syn",) if e.current_based else ())
        kw = {}
        for f in fields:
            tau = np.asarray(getattr(node, f), dtype=float)
            if main == "euler":  # exact decay e^{−dt/τ} as an Euler step 1 − dt/τ'
                kw[f] = dt / (1 - np.exp(-dt / tau))
            else:
                a = 1 - dt / tau
                if np.any(a <= 0):
                    raise UnsupportedNodeError(f"Euler decay 1 − dt/τ ≤ 0 cannot be written as an exact "
                                               f"integrator's e^(−dt/τ)", node=name,
                                               hint="use one integrator for every layer")
                kw[f] = -dt / np.log(a)
        g.nodes[name] = _replace_fields(node, kw)
        warnings.append((name, f"layer trained with the {integ} integrator converted to the graph's {main} "
                               f"integrator (same decay per step, float rounding differs)"))


def _replace_fields(node, kw):
    d = {k: v for k, v in vars(node).items() if k not in ("input_type", "output_type", "metadata")}
    d.update(kw)
    return type(node)(**d)


def _lm_graph(m, dt: float | None) -> Graph:
    """An EGRULanguageModel: one-hot token input → embedding (Linear) → EGRU
    layers → decoder (Affine) → logits; ``meta["lm"]`` names the parts."""
    # an EGRU is a discrete-time cell: no ODE to integrate (the meta says so to silence the default's warning)
    g = Graph(meta={"dt": float(dt) if dt is not None else DEFAULT_DT, "integrator": "euler"})
    g.add_node("input", nir.Input(input_type={"input": np.array([m.vocab])}))
    g.add_node("embed", nir.Linear(weight=_np(m.embed.weight).T.copy()))
    g.add_edge("input", "embed")
    prev = "embed"
    for i, layer in enumerate(m.layers):
        name = f"egru{i}"
        g.add_node(name, EGRUNode(w_x=_np(layer.w_x), w_h=_np(layer.w_h), b_x=_np(layer.b_x), b_h=_np(layer.b_h),
                                  thr=_np(layer.threshold())))
        g.add_edge(prev, name)
        prev = name
    g.add_node("decoder", nir.Affine(weight=_np(m.decoder.weight), bias=_np(m.decoder.bias)))
    g.add_edge(prev, "decoder")
    g.add_node("output", nir.Output(output_type={"output": np.array([m.vocab])}))
    g.add_edge("decoder", "output")
    g.meta["lm"] = {"vocab": m.vocab, "chars": m.chars, "embed": "embed", "decoder": "decoder",
                    "layers": [f"egru{i}" for i in range(len(m.layers))], "tied": m.tie}
    return g
