"""Plasticity: a learning rule annotated on a projection (an ``Affine``/``Linear`` weight node).

A :class:`Plasticity` annotation on weight node ``W`` (shape (out, in)) says how ``W`` changes
while the network runs. ``pre`` spikes s_i are the projection's input, ``post`` spikes s_j the
output of the spiking neuron node it feeds (``post``, by default its one spiking successor). All
updates happen once per timestep ``dt`` after the step's outputs are computed; weights are shared
by every batch element and a change is the **mean over the batch** (so a batch is a mini-batch of
one learner, never B learners).

Traces (pair STDP with all-to-all interaction, as in Morrison et al. 2008, Biol. Cybern. 98:459)::

    x_i ← x_i·exp(−dt/τ+)              y_j ← y_j·exp(−dt/τ−)          (decay first)
    D_ij = A+ · x_i · s_j  −  A− · y_j · s_i                             (pairs with earlier spikes)
    x_i ← x_i + s_i                     y_j ← y_j + s_j                (then this step's spikes)

so a pre spike at t0 and a post spike at t1 > t0 give ΔW = A+·exp(−(t1−t0)/τ+), a post spike
before a pre spike gives −A−·exp(−(t1−t0)/τ−), and spikes in the same step pair with nothing.

``rule="stdp"``:

* ``third_factor="none"``: W ← W + D.
* ``third_factor="reward"`` (reward-modulated STDP, Izhikevich 2007, Cereb. Cortex 17:2443): an
  eligibility trace e_ij ← e_ij·exp(−dt/τe) + D_ij, and W ← W + η·M·e with the broadcast
  M = r − r̄, r the reward given to the simulator (:meth:`nmc.reference.ReferenceSimulator.modulate`),
  r̄ ← r̄ + (dt/τr)(r − r̄) its running mean (``tau_baseline``; 0: r̄ = 0).
* ``third_factor="error"`` (error-modulated, the delta rule on traces): e_ij ← e_ij·exp(−dt/τe) + s_i
  (the presynaptic eligibility), W ← W + η·E_j·e_ij with E_j the error of post neuron j
  (target − output, given per batch element and neuron).

then W ← W·(1 − decay) and W ← clip(W, w_min, w_max).

``rule="spore"``: reward-based synaptic sampling (Kappel, Legenstein, Habenschuss, Hsieh, Maass 2018,
"A dynamic connectome supports the emergence of stable computational function of neural circuits
through reward-based learning", eNeuro 5(2):ENEURO.0301-17.2018, Methods; Kappel,
Habenschuss, Legenstein, Maass 2015, PLoS Comput. Biol. 11(8):e1004485). Each potential synapse has
a parameter θ_i following the Langevin SDE::

    dθ_i = β ( ∂/∂θ_i log p_S(θ) + ∂/∂θ_i log V(θ) ) dt + sqrt(2 β T) dW_i
    w_i  = exp(θ_i − θ0)  if θ_i > 0,  else 0          (a synapse is retracted while θ_i ≤ 0)

with the Gaussian prior p_S(θ_i) = N(μ, σ²), so ∂/∂θ_i log p_S = (μ − θ_i)/σ², β the learning rate,
T the temperature and W_i independent Wiener processes. The reward term ∂ log V/∂θ_i is estimated
online as in the paper's reward-modulated STDP: ``c_reward``·M·e_ij with the eligibility
e_ij ← e_ij·exp(−dt/τe) + w_ij·D_ij (the STDP pair term times ∂w/∂θ = w) and M = r − r̄ as above.
nmc integrates it with Euler–Maruyama: θ ← θ + β(...)dt + sqrt(2βT·dt)·ξ, ξ ~ N(0, 1) from a
generator seeded with ``seed``, then clips θ to [``theta_min``, ``theta_max``] (as the authors' NEST
implementation, IGITUGraz/spore-nest-module, does with its min_param/max_param: the reward term is
unbounded). Without reward its stationary distribution is p_S(θ)^(1/T): for the
Gaussian prior N(μ, Tσ²) (in discrete time the AR(1) variance Tσ²/(1 − κ/2), κ = β·dt/σ²), truncated
to [theta_min, theta_max]. θ starts at θ0 + log w where w > 0, else at 0 (retracted); SPORE weights are ≥ 0.

Structural rewiring (``fan_in > 0``, with either rule; Billaudelle et al. 2021, "Structural plasticity
on an accelerated analog neuromorphic hardware system", Neural Networks 133:11): every post neuron
j has exactly ``fan_in`` synapses, each with a presynaptic *label* (the input index it listens to);
the rest of row j is 0. Initially the ``fan_in`` largest |W_ji| of each row are kept (ties: lower
index). Every ``rewire_every`` steps, each synapse with |w| < ``prune_below`` (SPORE: θ ≤ 0) is
removed and re-created at once on a presynaptic label drawn uniformly from the inputs row j had no
synapse from before this rewiring (without replacement; when fewer are free than removed, the rest
keep their label), from a ``numpy.random.Generator(PCG64(seed))``; the new synapse starts at
w = ``w_new`` (SPORE: θ = θ0 + log w_new) with cleared traces. Fan-in stays exactly ``fan_in``.

Targets: the float reference runs every rule; a target refuses a rule it cannot run, naming the
projection and why (:func:`refuse`, ``Backend.plasticity_refusal_for``).
brainscales2 runs ``stdp`` (third factor none or reward, rewiring included) and ``spore`` as its
plasticity processor would, every ``ppu_period`` steps on 8-bit correlation reads and 6-bit weights
(fixed-point model: ``backends/brainscales2/ppu.py``, ``ppu_spore.py``); it refuses ``error``,
``tau_baseline``, ``decay`` with stdp and rewiring with spore.
spinnaker2: every rule, in float32 on the post population's PEs (generated C kernels, bit-exact with
the emulator; float32 shadow weights behind the int8 rows, a counter-based generator for SPORE's noise
and the rewiring labels): nmc.backends.spinnaker2.plasticity.
loihi2 runs ``rule="stdp"`` (any third factor) as Lava's LearningDense (its emulator bit-exact with
Lava's fixed_pt model; vs this float reference, Lava's synapse delay pairs a post spike with a pre
spike in its own step: ``backends/loihi2/learning.py``) and refuses SPORE and rewiring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .annotations import Annotation, register
from .errors import PlasticityError

RULES = ("stdp", "spore")
THIRD_FACTORS = ("none", "reward", "error")


@register
@dataclass(frozen=True)
class Plasticity(Annotation):
    """A learning rule on an Affine/Linear projection (equations: :mod:`nmc.plasticity`).
    Times in seconds; ``post``: the spiking neuron node whose spikes are the post spikes
    ("": the projection's one spiking successor)."""

    kind: ClassVar[str] = "plasticity"
    rule: str = "stdp"
    post: str = ""
    tau_plus: float = 20e-3
    tau_minus: float = 20e-3
    a_plus: float = 0.01
    a_minus: float = 0.012
    w_min: float = -1.0
    w_max: float = 1.0
    third_factor: str = "none"
    tau_e: float = 0.5
    lr: float = 1.0
    tau_baseline: float = 0.0
    decay: float = 0.0
    fan_in: int = 0
    prune_below: float = 0.0
    w_new: float = 0.0
    rewire_every: int = 1
    beta: float = 1e-3
    temperature: float = 0.1
    prior_mean: float = 0.0
    prior_std: float = 1.0
    theta0: float = 3.0
    theta_min: float = -10.0
    theta_max: float = 10.0
    c_reward: float = 1.0
    seed: int = 0

    def check(self, name: str, graph) -> None:
        """Raise :class:`PlasticityError` naming projection ``name`` and the bad parameter."""
        def bad(msg, param, hint, actual=None):
            raise PlasticityError(f"plasticity parameter '{param}' {msg}", node=name, actual=actual, hint=hint)

        if self.rule not in RULES:
            bad(f"is {self.rule!r}, not one of {RULES}", "rule", "use rule='stdp' or rule='spore'")
        if self.third_factor not in THIRD_FACTORS:
            bad(f"is {self.third_factor!r}, not one of {THIRD_FACTORS}", "third_factor", "use none, reward or error")
        for p in ("tau_plus", "tau_minus", "tau_e", "prior_std"):
            v = getattr(self, p)
            if not _finite(v) or v <= 0:
                bad("must be a finite number > 0", p, f"give {p} > 0", v)
        for p in ("a_plus", "a_minus", "lr", "tau_baseline", "decay", "prune_below", "beta", "temperature"):
            v = getattr(self, p)
            if not _finite(v) or v < 0:
                bad("must be a finite number ≥ 0", p, f"give {p} ≥ 0", v)
        for p in ("w_new", "prior_mean", "theta0", "c_reward", "w_min", "w_max", "theta_min", "theta_max"):
            if not _finite(getattr(self, p)):
                bad("must be a finite number", p, f"give a finite {p}", getattr(self, p))
        if self.decay >= 1:
            bad("must be < 1 (a fraction of the weight lost per step)", "decay", "give decay in [0, 1)", self.decay)
        if self.w_min > self.w_max:
            bad(f"w_min = {self.w_min} is above w_max = {self.w_max}", "w_min", "give w_min ≤ w_max")
        if self.theta_min > self.theta_max:
            bad(f"theta_min = {self.theta_min} is above theta_max = {self.theta_max}", "theta_min",
                "give theta_min ≤ theta_max")
        for p in ("fan_in", "rewire_every", "seed"):
            v = getattr(self, p)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if p == "rewire_every" else 0):
                bad("must be a whole number" + (" ≥ 1" if p == "rewire_every" else " ≥ 0"), p, f"give an integer {p}", v)
        if self.rule == "spore" and self.third_factor == "error":
            bad("cannot be 'error' with rule='spore' (synaptic sampling learns from a reward)", "third_factor",
                "use third_factor='reward' (or 'none': sampling from the prior)")
        if self.rule == "spore" and self.fan_in and self.w_new <= 0:
            bad("must be > 0 for rewiring under rule='spore' (a new synapse starts at θ = θ0 + log w_new)", "w_new",
                "give w_new > 0", self.w_new)
        node = graph.nodes.get(name)
        from . import semantics
        from .nodes import is_dense

        if not is_dense(node):
            raise PlasticityError(f"a plasticity rule needs an Affine or Linear projection, not "
                                  f"{type(node).__name__}", node=name, hint="annotate the weight node of a dense layer")
        w = np.asarray(node.weight)
        n_out, n_in = w.shape
        if self.fan_in > n_in - 1 and self.fan_in > 0:
            bad(f"is {self.fan_in} but the projection has {n_in} inputs: rewiring needs a free label",
                "fan_in", f"give fan_in ≤ {n_in - 1}", self.fan_in)
        if self.rule == "spore" and np.any(w < 0):
            bad("needs weights ≥ 0 (w = exp(θ − θ0) is positive)", "rule",
                "put inhibitory inputs on a projection of their own without rule='spore'")
        post = post_of(name, graph, self)
        e = semantics.lookup(graph.nodes[post])
        if e is None or not e.spiking:
            raise PlasticityError(f"post node '{post}' is not a spiking neuron: the rule needs post spikes", node=name,
                                  hint="set post= to the spiking neuron node the projection drives")
        shp = graph.shape_out(post)
        if shp is not None and int(np.prod(shp)) != n_out:
            raise PlasticityError(f"post node '{post}' has {int(np.prod(shp))} neurons for {n_out} weight rows",
                                  node=name, hint="set post= to the neuron node this projection drives")


def _finite(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and math.isfinite(float(v))


def post_of(name: str, graph, rule: Plasticity) -> str:
    """The post neuron node of projection ``name`` (``rule.post``, else its one successor)."""
    if rule.post:
        if rule.post not in graph.nodes:
            raise PlasticityError(f"post node '{rule.post}' does not exist", node=name,
                                  hint="set post= to a node of the graph")
        if rule.post not in graph.succs(name):
            raise PlasticityError(f"post node '{rule.post}' is not fed by this projection", node=name,
                                  hint="set post= to a successor of the projection")
        return rule.post
    succ = graph.succs(name)
    if len(succ) != 1:
        raise PlasticityError(f"the projection feeds {len(succ)} nodes ({', '.join(succ) or 'none'}): "
                              "which are the post neurons?", node=name, hint="set post= in the Plasticity annotation")
    return succ[0]


def plastic(graph) -> dict[str, Plasticity]:
    """``{projection: rule}`` of every annotated node, in node order."""
    return {k: a for k in graph.nodes if (a := graph.ann(k, Plasticity)) is not None}


#: Parameters a running rule keeps: they set the learner's state (its traces' shapes, its generator).
FIXED_WHILE_RUNNING = ("rule", "third_factor", "fan_in", "post", "seed")


def check_changes(changes: dict, node: str | None = None) -> None:
    """Raise :class:`~nmc.errors.OptionError` (naming projection ``node``) for a change to a running
    rule (a schedule's ``set_rule``) that is not a parameter of :class:`Plasticity` or is one of
    :data:`FIXED_WHILE_RUNNING`. Every target's learner asks this before it replaces its rule."""
    import dataclasses

    from .errors import OptionError

    unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(Plasticity)}]
    if unknown:
        whose = f"plasticity rule of '{node}'" if node is not None else "a plasticity rule"
        raise OptionError(f"{whose} has no parameter '{unknown[0]}'", node=node)
    fixed = [k for k in changes if k in FIXED_WHILE_RUNNING]
    if fixed:
        raise OptionError(f"'{fixed[0]}' of a running rule cannot change (it sets the learner's state)",
                          node=node, hint="compile the network again with the new rule")


def check_graph(graph) -> None:
    for name, rule in plastic(graph).items():
        rule.check(name, graph)


def refuse(graph, target: str, why, where: str = "reference") -> None:
    """Raise for the first plastic projection of ``graph`` whose rule ``target`` cannot run.

    ``why`` is the reason for every rule (a string), or a function ``rule -> reason | None`` (the
    backend's :meth:`~nmc.backends.base.Backend.plasticity_refusal_for`: None where it runs it)."""
    from .errors import UnsupportedNodeError

    for name, r in plastic(graph).items():
        reason = why(r) if callable(why) else why
        if reason is not None:
            raise UnsupportedNodeError(f"{target} cannot run the plasticity rule '{r.rule}' on this projection: "
                                       f"{reason}", node=name, hint=f"compile for --target {where} (the float "
                                       "reference runs it), or drop the Plasticity annotation to deploy the "
                                       "learned weights frozen")
