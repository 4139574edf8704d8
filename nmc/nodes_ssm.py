"""nmc's state-space-model extension nodes (issue #16): diagonal SSMs, stochastic spiking SSM neurons.

Imported by :mod:`nmc.nodes` (which re-exports the classes); each registers its
:class:`~nmc.semantics.NodeType` entry right after its class, as EGRU does. The
equations are :mod:`nmc.ssm_math`'s (the single statement of the semantics);
the reference steps are in :mod:`nmc.reference_steps_ssm`.

**Time.** Both nodes count time in *ticks* (one reference/chip step). Their
step size Δ is dimensionless (the model's own time unit per tick, as learned
by :class:`nmc.nn.DiagSSM`); the graph's ``dt`` (seconds per tick) does not
enter the equations. ``time`` selects how each step's Δ_k is formed:

* ``"tick"`` (fixed tick, what chips run): every step is one tick, Δ_k = Δ;
* ``"event"`` (per-event Δt, the event-by-event formulation for asynchronous
  input): every step is one *event* (one input vector) and Δ_k = Δ·τ_k, τ_k
  the event's interval since the previous one in ticks (fractional allowed),
  given to :func:`nmc.reference_ssm.run_events`. A fixed-tick simulator runs
  an event-mode node as τ_k = 1 (the binned approximation);
  :func:`nmc.reference_ssm.binning_error` reports the difference.

**Stochastic spikes.** ξ comes from a counter-based generator, written down
here so every target can reproduce it bit for bit (:func:`hash_uniform`)::

    mix32(x) = lowbias32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
               (all uint32, products mod 2³²)
    r(seed, k, j) = mix32( mix32( mix32(seed) + k ) + j )     (+ mod 2³²)
    ξ = (r >> 8) · 2⁻²⁴        (24 bits, exact in float32/float64, in [0, 1))

with k the step index since reset (0, 1, …; the event index in event mode)
and j = b·H + h (b the batch element, 0 on a chip; h the neuron). The spike is
``s = [ξ < σ(y)]``; a fixed-point target compares the 24-bit integer ``r >> 8``
with its σ(y) scaled by 2²⁴.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import semantics
from .errors import ShapeError, UnsupportedNodeError
from .extension_node import ExtensionNode
from .semantics import shapes
from .semantics.nir_types import GRADED, SPIKES
from .ssm_math import METHODS

#: Output stages of :class:`DiagSSM` (a spiking output is a separate LIF node after it).
SSM_OUTPUTS = ("none", "gelu", "relu", "delta")
#: Time modes of the SSM nodes (module docstring).
TIME_MODES = ("tick", "event")


def _choice(node, field: str, allowed) -> str:
    v = getattr(node, field)
    v = v.decode() if isinstance(v, bytes) else v
    if not isinstance(v, str) or v not in allowed:   # a string from a file: allow-listed, never code
        raise UnsupportedNodeError(f"{type(node).__name__} {field} {str(v)[:40]!r} is not supported",
                                   hint=f"{field} is one of {', '.join(allowed)}")
    return v


def _arr(v) -> np.ndarray:
    a = np.asarray(v)
    return a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64)


class _DiagonalModes(ExtensionNode):
    """The base of the SSM node types with diagonal modes Λ (``lam``), step Δ (``step``), B and C."""

    @property
    def complex(self) -> bool:
        """Complex modes (conjugate pairs, ρ = 2), else real (ρ = 1)."""
        return bool(np.iscomplexobj(self.lam))

    def _check_modes(self, shapes_: dict, dims: str, stable_hint: str | None = None) -> None:
        """The checks both SSM node types make (:class:`~nmc.errors.ShapeError` naming the node type):
        every field in ``shapes_`` has its shape (``dims`` says what the letters are), Δ is finite and
        > 0, Re Λ < 0 (a stable system), and B and C are real when Λ is."""
        kind = type(self).__name__
        for f, shp in shapes_.items():
            if getattr(self, f).shape != shp:
                raise ShapeError(f"{kind} field '{f}' has shape {getattr(self, f).shape}, expected {shp} ({dims})")
        if not np.all(self.step > 0) or not np.all(np.isfinite(self.step)):
            raise ShapeError(f"{kind} step Δ must be finite and > 0")
        if not np.all(self.lam.real < 0):
            raise ShapeError(f"{kind} eigenvalues need Re Λ < 0 (a stable system)", hint=stable_hint)
        if not self.complex and (np.iscomplexobj(self.b) or np.iscomplexobj(self.c)):
            raise ShapeError(f"{kind} with real Λ needs real B and C")


@dataclass(eq=False)
class DiagSSM(_DiagonalModes):
    """Diagonal state-space model on H channels with P modes (S4D / S5 layout), one step per tick or event.

    Fields (continuous time, as :class:`nmc.nn.DiagSSM` learns them)::

        lam   (P,)    Λ, eigenvalues, real (float) or complex; Re Λ < 0. For complex Λ only one mode of
                      each conjugate pair is stored (ρ = 2 below), else ρ = 1.
        step  (P,)    Δ > 0, the learned step per mode (model time per tick, dimensionless)
        b     (P, H)  B, real or complex (complex only with complex Λ)
        c     (H, P)  C, real or complex
        d     (H,)    D, the direct path
        method        "zoh" | "bilinear"  (discretisation, :func:`nmc.ssm_math.discretize`)
        output        "none" | "gelu" | "relu" | "delta"  (output stage)
        theta (H,)    θ of the delta output (> 0; unused otherwise, 0)
        time          "tick" | "event"  (module docstring)

    Step k with input u_k (H,) (Δ_k = Δ in tick mode, Δ·τ_k in event mode)::

        Λ̄_k, γ_k = discretize(Λ, Δ_k, method)         zoh: Λ̄ = exp(Δ_kΛ), γ = expm1(Δ_kΛ)/Λ
                                                      bilinear: Λ̄ = (1+Δ_kΛ/2)/(1−Δ_kΛ/2), γ = Δ_k/(1−Δ_kΛ/2)
        x_k = Λ̄_k ⊙ x_{k−1} + γ_k ⊙ (B·u_k)           x (P,), complex for complex Λ, x_0 = 0
        y_k = ρ·Re(C·x_k) + D ⊙ u_k                   (H,)
        out = y (none) | GELU(y) (erf form) | ReLU(y) | ŷ_k (delta)
        delta: fire_k = |y_k − ŷ_{k−1}| > θ;  ŷ_k = y_k where fire_k else ŷ_{k−1} (ŷ_0 = 0);
               the node outputs the held value ŷ_k; the events on the wire are y_k − ŷ_{k−1} where fire_k

    A spiking output (:class:`nmc.nn.DiagSSM` ``output="lif"``) is this node with ``output="none"``
    followed by a NIR ``LIF`` node. State (reference): ``x`` (P,) and ``held`` (H,).
    Units: u, y, x in the model's units (no physical scale); Λ per model time unit.
    """

    lam: np.ndarray
    step: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    method: str = "zoh"
    output: str = "none"
    theta: np.ndarray | float = 0.0
    time: str = "tick"

    nmc_type = "nmc.DiagSSM"

    def __post_init__(self):
        for f in ("lam", "step", "b", "c", "d"):
            setattr(self, f, _arr(getattr(self, f)))
        self.method = _choice(self, "method", METHODS)
        self.output = _choice(self, "output", SSM_OUTPUTS)
        self.time = _choice(self, "time", TIME_MODES)
        P = self.lam.reshape(-1).shape[0]
        self.lam = self.lam.reshape(P)
        H = int(self.d.reshape(-1).shape[0])
        self.d = self.d.reshape(H)
        self.step = self.step.reshape(-1)
        self.step = np.broadcast_to(self.step, (P,)).copy() if self.step.size == 1 else self.step
        theta = np.asarray(self.theta, dtype=np.float64).reshape(-1)
        if theta.size not in (1, H):
            raise ShapeError(f"DiagSSM theta has {theta.size} values for {H} channels")
        self.theta = np.broadcast_to(theta, (H,)).copy()
        self._check_modes({"step": (P,), "b": (P, H), "c": (H, P)}, f"P = {P} modes, H = {H} channels",
                          stable_hint="train with nmc.nn.DiagSSM")
        if self.output == "delta" and not np.all(self.theta > 0):
            raise ShapeError("DiagSSM delta output needs θ > 0")
        self.input_type = {"input": np.array([H])}
        self.output_type = {"output": np.array([H])}

    @property
    def modes(self) -> int:
        return int(self.lam.shape[0])

    @property
    def channels(self) -> int:
        return int(self.d.shape[0])


semantics.register(semantics.NodeType(
    cls=DiagSSM, name=DiagSSM.nmc_type, kind=semantics.Kind.NEURON, shape=shapes.fixed, counters=GRADED,
    weights=("b", "c"), state=("x", "held"), arrays=("lam", "step", "b", "c"), complex_fields=("lam", "b", "c"),
    doc="nmc.ssm_math discretize/ssm_step/readout, then the output stage; output y (graded)"))


@dataclass(eq=False)
class StochasticSSMNeuron(_DiagonalModes):
    """H stochastic spiking neurons, each an N-dimensional single-input diagonal SSM with a Bernoulli spike.

    Fields (continuous time, as :class:`nmc.nn.StochasticSpikingSSM` learns them)::

        lam   (H, N)  Λ per neuron, real or complex (complex: conjugate pairs, ρ = 2, else ρ = 1); Re Λ < 0
        step  (H,)    Δ > 0 per neuron (model time per tick)
        b     (H, N)  B;   c (H, N)  C;   d (H,)  D
        method        "zoh" | "bilinear";   time  "tick" | "event" (module docstring)
        seed          the generator's seed (uint32)

    Step k with input u_k (H,)::

        x_{k,h} = Λ̄_h ⊙ x_{k−1,h} + γ_h ⊙ B_h·u_{k,h}                x (H, N), x_0 = 0
        y_{k,h} = ρ·Re(Σ_n C_hn·x_{k,hn}) + D_h·u_{k,h}
        p_{k,h} = σ(y_{k,h});   s_{k,h} = [ξ_{k,h} < p_{k,h}]        ξ = hash_uniform(seed, k, b·H + h)

    Output: the spikes s (0/1). State (reference): ``x`` (H, N) and the step counter ``k``.
    The generator is :func:`hash_uniform` (module docstring): the same ξ on every target.
    """

    lam: np.ndarray
    step: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    method: str = "zoh"
    seed: int = 0
    time: str = "tick"

    nmc_type = "nmc.StochasticSSMNeuron"

    def __post_init__(self):
        for f in ("lam", "step", "b", "c", "d"):
            setattr(self, f, _arr(getattr(self, f)))
        self.method = _choice(self, "method", METHODS)
        self.time = _choice(self, "time", TIME_MODES)
        seed = np.asarray(self.seed)
        if seed.size != 1 or seed.dtype.kind not in "iu" or not 0 <= int(seed) < 2 ** 32:
            raise ShapeError(f"StochasticSSMNeuron seed must be an integer in [0, 2^32), got {self.seed!r}")
        self.seed = int(seed)
        if self.lam.ndim != 2:
            raise ShapeError(f"StochasticSSMNeuron lam must be (H, N), got shape {self.lam.shape}")
        H, N = self.lam.shape
        self.step = self.step.reshape(-1)
        self.step = np.broadcast_to(self.step, (H,)).copy() if self.step.size == 1 else self.step
        self.d = self.d.reshape(-1)
        self._check_modes({"step": (H,), "b": (H, N), "c": (H, N), "d": (H,)},
                          f"H = {H} neurons, N = {N} state dimensions")
        self.input_type = {"input": np.array([H])}
        self.output_type = {"output": np.array([H])}

    @property
    def state_size(self) -> int:
        return int(self.lam.shape[1])


semantics.register(semantics.NodeType(
    cls=StochasticSSMNeuron, name=StochasticSSMNeuron.nmc_type, kind=semantics.Kind.NEURON, shape=shapes.fixed,
    counters=SPIKES, spiking=True, weights=("b", "c"), state=("x", "k"), arrays=("lam", "b", "c"),
    complex_fields=("lam", "b", "c"),
    doc="per-neuron nmc.ssm_math SSM, spike [ξ < σ(y)] with ξ = hash_uniform(seed, k, j)"))


@dataclass(eq=False)
class LayerNorm(ExtensionNode):
    """Layer normalisation over the channels of each step (the pre-norm of :class:`nmc.nn.SSMBlock`).

    ``y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ weight + bias`` over the H channels of x (H,), var the
    biased variance (torch.nn.LayerNorm). Stateless; ``weight``, ``bias`` (H,), ``eps`` > 0.
    """

    weight: np.ndarray
    bias: np.ndarray
    eps: float = 1e-5

    nmc_type = "nmc.LayerNorm"

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float64).reshape(-1)
        self.bias = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        self.eps = float(np.asarray(self.eps))
        if self.bias.shape != self.weight.shape:
            raise ShapeError(f"LayerNorm bias has shape {self.bias.shape}, weight {self.weight.shape}")
        if not self.eps > 0:
            raise ShapeError(f"LayerNorm eps must be > 0, got {self.eps}")
        self.input_type = {"input": np.array(self.weight.shape)}
        self.output_type = {"output": np.array(self.weight.shape)}


semantics.register(semantics.NodeType(
    cls=LayerNorm, name=LayerNorm.nmc_type, kind=semantics.Kind.ELEMENTWISE, shape=shapes.fixed, counters=(),
    params=(), doc="(x − mean)/sqrt(var + eps)·weight + bias over the channels"))


# ---------------------------------------------------------------- describe (nmc inspect)
@semantics.register_hook(None, "describe", DiagSSM)
def describe_diag(node: DiagSSM) -> dict:
    """What ``nmc inspect`` shows: the state (P modes; a complex mode is two reals) and the real
    multiply-adds of one tick for a dense input (B̄·u: 2PH complex / PH real, Λ̄ ⊙ x: 4P / P,
    Re(C̄·x): 2HP / HP, D ⊙ u: H)."""
    P, H, c = node.modes, node.channels, node.complex
    macs = (4 * P * H + 4 * P + H) if c else (2 * P * H + P + H)
    return {"state": f"{P} {'complex' if c else 'real'} modes ({(2 if c else 1) * P} reals)",
            "macs_per_step": int(macs), "output": node.output, "time": node.time}


@semantics.register_hook(None, "describe", StochasticSSMNeuron)
def describe_stochastic(node: StochasticSSMNeuron) -> dict:
    """H neurons × N states: per neuron and tick B̄·u (2N / N), Λ̄ ⊙ x (4N / N), Re(C̄·x) (2N / N), D·u (1)."""
    H, N, c = node.lam.shape[0], node.state_size, node.complex
    return {"state": f"{H} neurons × {N} {'complex' if c else 'real'} states ({(2 if c else 1) * H * N} reals)",
            "macs_per_step": int(H * ((8 * N + 1) if c else (3 * N + 1))), "output": "Bernoulli spikes",
            "seed": int(node.seed)}


@semantics.register_hook(None, "describe", LayerNorm)
def describe_layer_norm(node: LayerNorm) -> dict:
    """Stateless; per tick H adds (mean), H multiply-adds (variance), 2H (normalise, γ·+β), 1 square root."""
    H = int(node.weight.shape[0])
    return {"state": "none", "macs_per_step": 4 * H, "eps": node.eps}


# ---------------------------------------------------------------- the generator
_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)


def mix32(x) -> np.ndarray:
    """lowbias32 (C. Wellons): a bijective 32-bit integer hash, uint32 in, uint32 out."""
    x = np.asarray(x, dtype=np.uint32).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= _M1
        x ^= x >> np.uint32(15)
        x *= _M2
        x ^= x >> np.uint32(16)
    return x


def hash_u32(seed: int, k, j) -> np.ndarray:
    """r(seed, k, j) = mix32(mix32(mix32(seed) + k) + j) (uint32, + mod 2³²); k, j broadcast."""
    with np.errstate(over="ignore"):
        a = mix32(np.uint32(seed)) + np.asarray(k, dtype=np.uint32)
        return mix32(mix32(a) + np.asarray(j, dtype=np.uint32))


def hash_uniform(seed: int, k, j) -> np.ndarray:
    """ξ = (r >> 8)·2⁻²⁴ in [0, 1) (float64, exact), r = :func:`hash_u32`."""
    return (hash_u32(seed, k, j) >> np.uint32(8)).astype(np.float64) * 2.0 ** -24


def noise(seed: int, steps: int, batch: int, size: int, start: int = 0) -> np.ndarray:
    """ξ for steps ``start`` … ``start+steps−1`` as (steps, batch, size): what the node draws.
    Pass it as ``noise=`` to :class:`nmc.nn.StochasticSpikingSSM` to make the layer draw the same."""
    k = np.arange(start, start + steps, dtype=np.uint64)[:, None, None]
    j = (np.arange(batch, dtype=np.uint64)[:, None] * size + np.arange(size, dtype=np.uint64)[None, :])[None]
    return hash_uniform(seed, (k % 2 ** 32).astype(np.uint32), (j % 2 ** 32).astype(np.uint32))
