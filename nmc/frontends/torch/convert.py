"""PyTorch frontend: nmc.nn, snnTorch and Norse models → nmc Graph; safe files.

**Modules** (:func:`from_module`): a ``nn.Sequential`` (or Norse
``SequentialState``) is converted layer by layer; any other module is traced
with ``torch.fx`` (neuron layers as leaves; ``+`` of two branches becomes
summed edges). Layers: ``nn.Linear`` → Affine/Linear, ``nn.Conv1d/2d`` →
Conv1d/2d, ``nn.AvgPool2d`` → AvgPool2d, ``nn.Flatten`` → Flatten,
``nn.Identity``/``nn.Dropout`` skipped; nmc.nn LIF/RLIF/CubaLIF/IF/LI/EGRU;
snnTorch ``Leaky``/``RLeaky``/``Synaptic``; Norse ``LIFBoxCell``/``LIFCell``/
``LICell``. ``nn.MaxPool2d`` is refused (no exact spiking equivalent); other
modules raise :class:`UnsupportedNodeError` naming their path.

Exact mappings (tested against the libraries):

* snnTorch ``Leaky(β, threshold)`` → LIF with τ = dt/(1−β), R = τ/dt (Euler:
  v ← βv + x), reset per ``reset_mechanism``. snnTorch's default
  ``reset_delay=True`` applies the reset one step after the spike; the
  reference resets in the spike's step (``reset_delay=False``): such layers are
  converted with a compile warning naming them.
* ``Synaptic(α, β)`` → CubaLIF with τ_syn = dt/(1−α), w_in = τ_syn/dt.
* ``RLeaky`` → LIF ⇄ Affine(recurrent); its recurrent bias is moved into the
  feed-forward layer's bias (same value every step, and nonzero at t = 0 as in
  snnTorch) when that layer is an Affine.
* Norse ``LIFBoxCell`` → LIF (R = 1); ``LIFCell``/``LICell`` (Norse 1.1: the
  input jumps into the current, the membrane integrates that current, then
  the current decays) → CubaLIF/CubaLI with R = 1, w_in = τ_syn/dt (Euler).
  With j_t = i_{t−1} + x_t Norse's current is j_t = (1 − dt/τ_syn)·j_{t−1} + x_t,
  the reference's Euler current, and v_t integrates j_t in both: no delay.
  (Older Norse releases integrated v with the old current and added the input
  after, i.e. the input one step late; 1.1, installed here, does not.)
  ``LIFRecurrentCell`` → Linear(W_in) → CubaLIF ⇄ Linear(W_rec) (autapses
  zeroed unless ``autapses=True``).

**Files**: :func:`save` writes a dict that ``torch.load(weights_only=True)``
reads (format tag, the graph as plain data with tensors, the module's
constructor config and state_dict). :func:`load_file` reads it without
unpickling code; a file that needs unpickling is refused
(:class:`UntrustedPickleError`) unless ``trust_pickle``. An EvNN-layout
state_dict (``kernel``, ``recurrent_kernel``, ``bias``, ``recurrent_bias``,
``thr``, optionally prefixed per layer) becomes EGRU nodes. ``.pt2``
(``torch.export``) programs of nmc.nn / torch layers are accepted, read by
:mod:`nmc.frontends.pt2` without unpickling (``torch.export.load`` only with
``trust_pickle``). Type and class strings from a file resolve through explicit
allow-lists (:func:`nmc.nodes.node_class`, :func:`_build`), never ``getattr``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from nmc.annotations import Reset
from nmc.errors import InputFileError, ShapeError, UnsupportedNodeError, UntrustedPickleError
from nmc.ir import Graph
from nmc.nodes import EGRU as EGRUNode

FORMAT = "nmc-torch"
VERSION = 1
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
    from nmc import nn as nnn

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
    elif mod.startswith("snntorch") and cls in ("Leaky", "RLeaky", "Synaptic"):
        _snntorch(s, name, m, tuple(out_shape), dt)
    elif mod.startswith("norse") and cls in ("LIFBoxCell", "LIFCell", "LICell", "LIFBox", "LIF", "LI",
                                             "LIFRecurrentCell"):
        _norse(s, name, m, tuple(out_shape), dt)
    else:
        raise UnsupportedNodeError(f"module {cls} ({mod}) is not supported", node=name,
                                   hint="supported: Linear, Conv1d/2d, AvgPool2d, Flatten, nmc.nn layers, "
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


# ------------------------------------------------------------- structure
def _is_leaf(m: nn.Module) -> bool:
    from nmc import nn as nnn

    mod = type(m).__module__
    return (isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI, nnn.EGRU)) or mod.startswith(("snntorch", "norse"))
            or not any(True for _ in m.children()))


def _flatten_seq(m: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]] | None:
    """Layers of a Sequential-like container in order (nested ones inlined), else None."""
    names = {"Sequential", "SequentialState"}
    if type(m).__name__ not in names:
        return None
    out = []
    for k, c in m.named_children():
        sub = _flatten_seq(c, f"{prefix}{k}.")
        out += sub if sub is not None else [(f"{prefix}{k}", c)]
    return out


def _guess_input_shape(m: nn.Module):
    from nmc import nn as nnn

    for c in m.modules():
        if isinstance(c, nn.Linear):
            return (c.in_features,)
        if isinstance(c, nnn.EGRU):
            return (c.input_size,)
        if type(c).__name__ == "LIFRecurrentCell":
            return (int(c.input_size),)
        if isinstance(c, (nn.Conv1d, nn.Conv2d)) or (c is not m and any(True for _ in c.children()) is False
                                                        and not isinstance(c, (nn.Flatten, nn.Identity, nn.Dropout))):
            return None
    return None


def _is_neuron_module(m: nn.Module) -> bool:
    from nmc import nn as nnn

    return isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI, nnn.EGRU)) or type(m).__module__.startswith(
        ("snntorch", "norse"))


def _run_step(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of one layer for shape inference, without touching neuron state."""
    from nmc import nn as nnn

    if isinstance(m, nnn.EGRU):
        return x.new_zeros(x.shape[0], m.hidden_size)
    if type(m).__name__ == "LIFRecurrentCell":  # Norse: input_size → hidden_size
        if x[0].numel() != int(m.input_size):
            raise ValueError(f"expects {int(m.input_size)} inputs, got {x[0].numel()}")
        return x.new_zeros(x.shape[0], int(m.hidden_size))
    if _is_neuron_module(m):
        return x
    out = m(x.to(next(iter(m.parameters()), x).dtype))
    if isinstance(out, tuple):
        out = out[0]
    return out


def from_module(module: nn.Module, *, input_shape=None, dt: float | None = None) -> Graph:
    """Convert a PyTorch module (nmc.nn / snnTorch / Norse / torch layers) to a Graph."""
    # the user's module is never run or copied: stateless layers are evaluated on a dummy
    # input for their output shapes; neuron layers keep the shape (EGRU: its hidden size)
    from nmc import nn as nnn

    if isinstance(module, nnn.EGRULanguageModel):
        return _lm_graph(module, dt)
    dts = {float(m.dt) for m in module.modules() if hasattr(m, "dt") and isinstance(getattr(m, "dt"), (int, float))
           and type(m).__module__.startswith(("nmc", "norse"))}
    dt = float(dt) if dt is not None else (min(dts) if dts else (1e-4 if _has_snntorch(module) else DEFAULT_DT))
    if input_shape is None:
        input_shape = _guess_input_shape(module)
        if input_shape is None:
            raise ShapeError("cannot infer the model's input shape from its first layer", node=type(module).__name__,
                             hint="pass input_shape=(C, H, W) (CLI: --input-shape C,H,W)")
    input_shape = tuple(int(x) for x in input_shape)
    seq = _flatten_seq(module)
    g = Graph(meta={"dt": dt})
    g.add_node("input", nir.Input(input_type={"input": np.array(input_shape)}))
    warnings: list[tuple[str, str]] = []
    integrators: dict[str, str] = {}  # leaky node -> the integrator its layer was trained with
    pdt = next((q.dtype for q in module.parameters()), torch.get_default_dtype())
    x = torch.zeros((1, *input_shape), dtype=pdt)
    with torch.no_grad():
        if seq is not None:
            prev = "input"
            for name, m in seq:
                try:
                    y = _run_step(m, x)
                except Exception as e:
                    raise ShapeError(f"layer rejects an input of shape {tuple(x.shape[1:])}: {e}", node=name,
                                     hint="check input_shape / --input-shape") from None
                sub = _convert(name, m, tuple(x.shape[1:]), tuple(y.shape[1:]), dt)
                x = y
                if sub is None:
                    continue
                prev = _attach(g, sub, [prev], warnings, integrators)
            exits = [prev]
        else:
            exits = _trace(module, g, x, dt, warnings, integrators)
    out_shape = g.shape_out(exits[0]) if exits[0] != "input" else input_shape
    g.add_node("output", nir.Output(output_type={"output": np.array(out_shape)}))
    for e in exits:
        g.add_edge(e, "output")
    if integrators:
        _unify_integrators(g, integrators, dt, warnings)
    if warnings:
        g.meta["warnings"] = [{"node": n, "message": msg} for n, msg in warnings]
    return g


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
        fields = ("tau",) if isinstance(node, (nir.LIF, nir.LI)) else ("tau_mem", "tau_syn")
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


def _has_snntorch(m) -> bool:
    return any(type(c).__module__.startswith("snntorch") for c in m.modules())


def _reset_all(m):
    for c in m.modules():
        if hasattr(c, "reset_state"):
            c.reset_state()


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
            if isinstance(node, (nir.LIF, nir.LI, nir.CubaLIF, nir.CubaLI)):
                integrators[k] = sub.integrator
    rb = getattr(sub, "rec_bias", None)
    if rb is not None:  # snnTorch RLeaky: fold the recurrent bias into the feed-forward Affine
        ff = preds[0] if len(preds) == 1 else None
        node = g.nodes.get(ff) if ff else None
        if isinstance(node, nir.Affine) and g.succs(ff) == [sub.entry]:
            g.nodes[ff] = nir.Affine(weight=node.weight, bias=node.bias + rb)
        elif isinstance(node, nir.Linear) and g.succs(ff) == [sub.entry]:
            g.nodes[ff] = nir.Affine(weight=node.weight, bias=rb)
        else:
            raise UnsupportedNodeError("RLeaky's recurrent bias needs a Linear layer directly before it",
                                       node=sub.entry, hint="put an nn.Linear before the RLeaky layer")
    return sub.exit


def _trace(module: nn.Module, g: Graph, x: torch.Tensor, dt, warnings, integrators) -> list[str]:
    import operator

    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return _is_leaf(m)

    try:
        graph = _Tracer().trace(module)
    except Exception as e:
        raise UnsupportedNodeError(f"cannot trace the model's forward with torch.fx ({type(e).__name__}: {e})",
                                   node=type(module).__name__,
                                   hint="write the model as nn.Sequential or avoid data-dependent control flow") from None
    class _Shape(nn.Module):  # stands in for a neuron layer during shape propagation only
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, *a, **k):
            return _run_step(self.m, x)

    root = {n.target: (_Shape(module.get_submodule(n.target)) if _is_neuron_module(module.get_submodule(n.target))
                       else module.get_submodule(n.target)) for n in graph.nodes if n.op == "call_module"}
    ShapeProp(fx.GraphModule(root, graph)).propagate(x)
    gm = fx.GraphModule(module, graph)
    where: dict[str, list[str]] = {}  # fx node -> graph nodes whose summed output it is
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if where:
                raise UnsupportedNodeError("models with several inputs are not supported", node=n.name)
            where[n.name] = ["input"]
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            src = n.args[0]
            in_shape = tuple(src.meta["tensor_meta"].shape[1:])
            tm = n.meta.get("tensor_meta")
            tm = tm if hasattr(tm, "shape") else tm[0]
            sub = _convert(str(n.target), m, in_shape, tuple(tm.shape[1:]), dt)
            where[n.name] = where[src.name] if sub is None else [_attach(g, sub, where[src.name], warnings, integrators)]
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            a, b = n.args[:2]
            if not all(isinstance(v, fx.Node) for v in (a, b)):
                raise UnsupportedNodeError("adding a constant is not supported (use a bias)", node=n.name)
            where[n.name] = where[a.name] + where[b.name]
        elif n.op == "call_function" and n.target is operator.getitem and n.args[1] == 0:
            where[n.name] = where[n.args[0].name]
        elif n.op == "call_function" and n.target in (torch.flatten,):
            src = n.args[0]
            in_shape = tuple(src.meta["tensor_meta"].shape[1:])
            name = n.name
            for p_ in where[src.name]:
                pass
            g.add_node(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1))
            for p_ in where[src.name]:
                g.add_edge(p_, name)
            where[n.name] = [name]
        elif n.op == "output":
            res = n.args[0]
            if isinstance(res, (tuple, list)):
                res = res[0]
            return where[res.name]
        else:
            raise UnsupportedNodeError(f"operation {n.op} {getattr(n.target, '__name__', n.target)} is not supported",
                                       node=n.name, hint="use nn modules (Linear, Conv2d, AvgPool2d, Flatten) and +")
    raise UnsupportedNodeError("model has no output", node=type(module).__name__)


# ------------------------------------------------------------------ files
def _graph_to_data(g: Graph) -> dict:
    def conv(v):
        if isinstance(v, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    nodes = {}
    for k, n in g.nodes.items():
        d = {"type": getattr(n, "nmc_type", type(n).__name__)}
        for f, v in vars(n).items():
            if f in ("metadata",):
                continue
            if f in ("input_type", "output_type"):
                d[f] = {kk: conv(np.asarray(vv)) for kk, vv in v.items()} if v else None
                continue
            d[f] = conv(v)
        nodes[k] = d
    anns = {k: {type(a).__name__: {f: conv(v) for f, v in a.fields().items()} for a in v.values()}
            for k, v in g.annotations.items()}
    return {"nodes": nodes, "edges": [list(e) for e in g.edges], "meta": dict(g.meta), "annotations": anns}


def _graph_from_data(d: dict, path) -> Graph:
    from nmc import annotations as A
    from nmc.nodes import node_class

    def un(v):
        if isinstance(v, torch.Tensor):
            return v.numpy()
        if isinstance(v, list):
            return tuple(un(x) for x in v)
        return v

    g = Graph(meta=dict(d.get("meta", {})))
    try:
        for k, nd in d["nodes"].items():
            t = nd["type"]
            cls = node_class(t, node=k, path=path)  # allow-list: a type string never reaches getattr(nir, ...)
            kw = {f: un(v) for f, v in nd.items() if f not in ("type", "input_type", "output_type")}
            if t in ("Input", "Output"):
                key = "input_type" if t == "Input" else "output_type"
                node = cls(**{key: {("input" if t == "Input" else "output"): un(next(iter(nd[key].values())))}})
            elif t == "Flatten":
                node = nir.Flatten(input_type={"input": un(next(iter(nd["input_type"].values())))},
                                   start_dim=kw["start_dim"], end_dim=kw["end_dim"])
            else:
                node = cls(**kw)
                if t in ("AvgPool2d", "SumPool2d", "Delay", "Scale", "Threshold") and nd.get("input_type"):
                    node.input_type = {"input": un(next(iter(nd["input_type"].values())))}
                    node.output_type = {"output": un(next(iter(nd["output_type"].values())))}
            g.add_node(k, node)
        for a, b in d["edges"]:
            g.add_edge(a, b)
        for k, anns in d.get("annotations", {}).items():
            for cname, fields in anns.items():
                g.annotate(k, A.REGISTRY[cname](**{f: un(v) if not isinstance(v, list) else un(v) for f, v in fields.items()}))
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as e:
        raise InputFileError(f"malformed nmc model file ({type(e).__name__}: {e})", path=path,
                             hint="re-save the model with nmc.save") from None
    return g


def save(module: nn.Module, path, *, input_shape=None, dt: float | None = None) -> Path:
    """Write ``module`` so ``nmc compile`` (and ``torch.load(weights_only=True)``) can read it."""
    g = from_module(module, input_shape=input_shape, dt=dt)
    spec = _module_spec(module)
    data = {"format": FORMAT, "version": VERSION, "graph": _graph_to_data(g),
            "module": spec, "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}
            if spec is not None else None}
    p = Path(path)
    torch.save(data, p)
    return p


def _module_spec(module: nn.Module):
    """Constructor description of a rebuildable module (nmc.nn layers in nn.Sequential), else None."""
    from nmc import nn as nnn

    def one(m):
        if isinstance(m, nn.Linear):
            return {"class": "Linear", "args": [m.in_features, m.out_features], "kw": {"bias": m.bias is not None}}
        if isinstance(m, nn.Conv2d):
            return {"class": "Conv2d", "args": [m.in_channels, m.out_channels, list(m.kernel_size)],
                    "kw": {"stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                           "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}}
        if isinstance(m, nn.AvgPool2d):
            return {"class": "AvgPool2d", "args": [m.kernel_size], "kw": {"stride": m.stride, "padding": m.padding}}
        if isinstance(m, nn.Flatten):
            return {"class": "Flatten", "args": [], "kw": {"start_dim": m.start_dim, "end_dim": m.end_dim}}
        if isinstance(m, nnn.EGRULanguageModel):
            return {"class": "EGRULanguageModel", "args": [], "kw": m.config()}
        if isinstance(m, (nnn.LIF, nnn.CubaLIF, nnn.IF, nnn.LI, nnn.EGRU)):
            return {"class": type(m).__name__, "args": [], "kw": m.config()}
        return None

    if isinstance(module, nn.Sequential):
        parts = [one(c) for c in module.children()]
        return None if any(p is None for p in parts) else {"class": "Sequential", "layers": parts}
    return one(module)


def load_module(path) -> nn.Module:
    """Rebuild the trainable module written by :func:`save` (weights-only load)."""
    d = _load_weights_only(Path(path))
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputFileError("not a file written by nmc.save", path=path)
    spec = d.get("module")
    if spec is None:
        raise InputFileError("this file holds the compiled graph but no rebuildable module (it was not an "
                             "nn.Sequential of nmc.nn/torch layers)", path=path)
    try:
        m = _build(spec)
        m.load_state_dict(d["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise InputFileError(f"malformed module spec or weights ({type(e).__name__}: {str(e)[:120]})", path=path,
                             hint="re-save the model with nmc.save") from None
    return m


def _build(spec):
    from nmc import nn as nnn

    # allow-list: the class string from the file never reaches getattr(module, ...)
    neurons = {"LIF": nnn.LIF, "RLIF": nnn.RLIF, "CubaLIF": nnn.CubaLIF, "IF": nnn.IF, "LI": nnn.LI}
    layers = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "AvgPool2d": nn.AvgPool2d, "Flatten": nn.Flatten}
    name = spec["class"]
    if name == "Sequential":
        return nn.Sequential(*[_build(s) for s in spec["layers"]])
    kw = dict(spec.get("kw", {}))
    if name in neurons:
        return neurons[name](kw.pop("size"), **kw)
    if name == "EGRU":
        return nnn.EGRU(kw.pop("input_size"), kw.pop("hidden_size"), **kw)
    if name == "EGRULanguageModel":
        return nnn.EGRULanguageModel(kw.pop("vocab"), kw.pop("embed"), kw.pop("hidden"), **kw)
    if not isinstance(name, str) or name not in layers:
        raise InputFileError(f"unknown module class {str(name)[:60]!r} in the file's module spec",
                             hint=f"classes nmc.save writes: Sequential, {', '.join(sorted(neurons) + sorted(layers))}, "
                                  "EGRU, EGRULanguageModel; re-save the model with nmc.save")
    cls = layers[name]
    args = [tuple(a) if isinstance(a, list) else a for a in spec.get("args", [])]
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return cls(*args, **kw)


def _load_weights_only(p: Path):
    import zipfile

    if not zipfile.is_zipfile(p):
        raise InputFileError("not a PyTorch file (torch.save writes a zip archive)", path=p,
                             hint="the file is corrupt or not a torch.save file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UntrustedPickleError(
            "the file needs unpickling arbitrary Python objects (e.g. a whole pickled module), which can run code "
            "from the file", path=p,
            hint="save the model with nmc.save(model, path), or pass --trust-pickle if you trust the file") from e
    except MemoryError:
        raise
    except Exception as e:  # torch's unpickler raises IndexError/KeyError/struct.error/... on a corrupt stream
        first = (str(e).splitlines() or [""])[0][:120]
        raise InputFileError(f"not a readable PyTorch file ({type(e).__name__}: {first})",
                             path=p, hint="the file is corrupt or not a torch.save file") from None


_EVNN_KEYS = ("kernel", "recurrent_kernel", "bias", "recurrent_bias", "thr")


def _evnn_graph(sd: dict, path) -> Graph | None:
    """EGRU nodes from an EvNN-layout state_dict (single layer, or 'prefix.kernel' per layer)."""
    prefixes = sorted({k[: -len("kernel")] for k in sd if k.endswith("kernel") and not k.endswith("recurrent_kernel")},
                      key=lambda p: [int(t) if t.isdigit() else t for t in p.replace(".", " ").split()])
    if not prefixes or not all(all(p + k in sd for k in _EVNN_KEYS) for p in prefixes):
        return None
    from nmc import nn as nnn

    g = Graph(meta={"dt": DEFAULT_DT})
    prev = None
    for i, p in enumerate(prefixes):
        layer = nnn.EGRU.from_evnn_state_dict({k: sd[p + k] for k in _EVNN_KEYS})
        if torch.any(torch.as_tensor(sd[p + "thr"]) <= 0):
            from nmc.errors import GraphError

            raise GraphError("EvNN threshold ≤ 0: with a non-positive ϑ the subtractive reset adds to the state",
                             node=f"egru{i}", path=str(path), hint="clamp thr to a positive minimum")
        name = f"egru{i}"
        if prev is None:
            g.add_node("input", nir.Input(input_type={"input": np.array([layer.input_size])}))
            prev = "input"
        elif g.shape_out(prev)[0] != layer.input_size:
            raise ShapeError(f"layer expects {layer.input_size} inputs but the previous layer has {g.shape_out(prev)[0]}",
                             node=name, path=str(path))
        g.add_node(name, EGRUNode(w_x=_np(layer.w_x), w_h=_np(layer.w_h), b_x=_np(layer.b_x), b_h=_np(layer.b_h),
                                  thr=_np(layer.thr)))
        g.add_edge(prev, name)
        prev = name
    g.add_node("output", nir.Output(output_type={"output": np.array(g.shape_out(prev))}))
    g.add_edge(prev, "output")
    return g


def load_file(path, *, trust_pickle: bool = False, input_shape=None) -> Graph:
    p = Path(path)
    if p.suffix.lower() == ".pt2":
        return _load_pt2(p, input_shape, trust_pickle)
    try:
        d = _load_weights_only(p)
    except UntrustedPickleError:
        if not trust_pickle:
            raise
        obj = torch.load(p, map_location="cpu", weights_only=False)
        if not isinstance(obj, nn.Module):
            raise InputFileError(f"the pickled object is a {type(obj).__name__}, not a torch.nn.Module", path=p) from None
        return from_module(obj, input_shape=input_shape)
    if isinstance(d, dict) and d.get("format") == FORMAT:
        if int(d.get("version", 0)) > VERSION:
            raise InputFileError(f"file format version {d['version']} is newer than this nmc ({VERSION})", path=p)
        g = _graph_from_data(d["graph"], p)
        return g
    if isinstance(d, dict):
        g = _evnn_graph(d, p)
        if g is not None:
            return g
        raise InputFileError("the file holds a bare state_dict (weights without an architecture)", path=p,
                             hint="save the model with nmc.save(model, path) so nmc knows its layers")
    raise InputFileError(f"the file holds a {type(d).__name__}, not a model", path=p,
                         hint="save the model with nmc.save(model, path)")


def _load_pt2(p: Path, input_shape, trust_pickle: bool = False) -> Graph:
    """A torch.export program: rebuild the layer chain from the exported graph's
    module stack (nmc.nn and torch layers) and the program's state_dict. The
    archive is read without unpickling unless ``trust_pickle`` (see :mod:`nmc.frontends.pt2`)."""
    from nmc.frontends import pt2

    ex = pt2.read(p, trust_pickle=trust_pickle)
    seq = nn.Sequential()
    for path, qual in ex.layers:
        seq.add_module(path.replace(".", "_") or "layer",
                       _rebuild_from_state(path, qual.rsplit(".", 1)[-1], qual, ex.state, p))
    return from_module(seq, input_shape=input_shape or ex.input_shape)


def _rebuild_from_state(path: str, cls: str, qual: str, sd: dict, p) -> nn.Module:
    from nmc import nn as nnn

    def t(name):
        return sd[f"{path}.{name}" if path else name]

    try:
        if cls == "Linear" and qual.startswith("torch"):
            w = t("weight")
            m = nn.Linear(w.shape[1], w.shape[0], bias=f"{path}.bias" in sd)
        elif cls in ("LIF", "CubaLIF", "IF", "LI") and qual.startswith("nmc"):
            from nmc.nn.neurons import INTEGRATORS, RESETS

            size = tuple(t("v_threshold" if cls != "LI" else "tau").shape)
            kw = {"dt": float(t("cfg_dt"))}
            if cls != "LI":
                kw["reset"] = RESETS[int(t("cfg_reset"))]
            if cls != "IF":
                kw["integrator"] = INTEGRATORS[int(t("cfg_integrator"))]
            m = {"LIF": nnn.LIF, "CubaLIF": nnn.CubaLIF, "IF": nnn.IF, "LI": nnn.LI}[cls](size, **kw)
        else:
            raise UnsupportedNodeError(f"layer {qual} in an exported program is not supported", node=path or cls,
                                       path=str(p), hint="export a chain of nn.Linear and nmc.nn layers, or use nmc.save")
        m.load_state_dict({k.split(".")[-1]: v for k, v in sd.items() if k.rsplit(".", 1)[0] == path}, strict=False)
    except KeyError as e:
        raise InputFileError(f"exported program lacks parameter {e}", path=p) from None
    except (IndexError, TypeError, ValueError, RuntimeError) as e:
        raise InputFileError(f"exported layer '{path}' has malformed parameters ({type(e).__name__}: {str(e)[:120]})",
                             path=p, hint="re-export the program") from None
    return m
