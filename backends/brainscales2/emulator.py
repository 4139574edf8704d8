"""Emulator of the mixed-signal chip: continuous-time LIF in accelerated time.

Each model step dt is ``substeps`` fine steps of hardware time (dt·1e-3/S).
Per fine step the membrane relaxes exactly toward its leak potential and the
synaptic current decays exactly: with ``a = e^{−h/τ_mem}``, ``b = e^{−h/τ_syn}``

    v ← v_leak + (v − v_leak)·a + (I-driven term)      I ← I·b

(``lif``/``li`` layers take each input event as an instantaneous jump of v by
its weight, ``cuba``/``cubali`` layers add it to I and v integrates it).
With step timing and no noise (the default), a neuron-step in which no
threshold crossing is possible (not refractory; idle decay below threshold)
is computed in closed form over its S fine steps instead of iterating them
(:mod:`.fast` states the rule, when it falls back and its error bound).
``event_timing="real"``: events between layers arrive at their real times,
the fine step in which their source crossed threshold (recurrent ones one
model step later). ``event_timing="step"`` (default): every event is stamped
at the step boundary — the start of the step for current-based layers, its end
for the others — which makes the noiseless emulator the discrete reference's
dynamics on a continuous clock (the agreement the tests check); host input
events are always stamped this way.
A spike is emitted when v > v_threshold (checked every fine step); v then
goes to v_reset. Weights are rebuilt from the synapse-array configuration
(:func:`.synapses.effective_matrix`: an event is sent on the rows serving its
source group and a synapse conducts iff its stored label matches; row sign;
a merged neuron sums its columns) × the layer's LSB: a step's events add
their integer weights (exact) and the sum is scaled once (:class:`.fast.Projection`),
so a sample's input does not depend on the batch. Sequential runs
(placement) change nothing here: each run replays the previous run's spikes.

Analog effects (``mismatch`` ∈ off | calibrated | uncalibrated, ``noise``):
with mismatch off the parameters are the DAC-quantised targets; otherwise
each circuit realises its code through the calibration table's *true* fixed
pattern (codes chosen with the measured table, or with the nominal transfer
when uncalibrated). ``noise`` adds seeded Gaussian membrane noise of
``readout.noise_lsb`` readout LSBs per model step.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import OptionError, ShapeError
from ..base import Device, validate_inputs
from ..program_cache import derived
from . import calibration as C
from . import fast
from . import ppu
from . import ppu_learner as learning
from . import synapses as S
from .program import BSS2Program

MODES = ("off", "calibrated", "uncalibrated")


def input_kernels(program: BSS2Program) -> dict:
    """``{id(projection): fast.Projection}``: the input kernels (integer sums per event, × the
    layer's LSB once; see .fast) of the weights the synapse array realises (label matching, row
    signs, merged columns: :func:`.synapses.effective_matrix`). Built once per program and shared by
    every device of a bundle (:func:`~..program_cache.derived`: the projections' and their layers'
    arrays are read-only, a replaced projection or array rebuilds them; the plasticity processor's
    learners keep their own weights)."""
    def inputs(q):
        l = program.layer(q.post)
        return (q, q.arr_w, q.arr_label, q.row_sign, q.row_group, q.group, q.label, q.w6.shape, l.circuits, l.scale)

    def build():
        return {id(q): fast.Projection(S.effective_matrix(q.arr_w, q.arr_label, q.row_sign, q.row_group, q.group,
                                                          q.label, program.layer(q.post).circuits, q.w6.shape[1]),
                                       program.layer(q.post).scale) for q in program.projections}

    return derived(program, "brainscales2.input_kernels", tuple(inputs(q) for q in program.projections), build)


class BSS2Emulator(Device):
    name = "emulator"

    def __init__(self, program: BSS2Program, mismatch: str = "off", noise: bool = False, seed: int = 0,
                 substeps: int = 10, event_timing: str = "step", compiled: bool = True):
        if mismatch not in MODES:
            raise OptionError(f"mismatch must be one of {', '.join(MODES)}")
        if event_timing not in ("step", "real"):
            raise OptionError("event_timing must be 'step' or 'real'")
        self.event_timing = event_timing
        # the fine-step loop: numba-fused per neuron, or numpy array passes (bit-identical; see .fast)
        self._fine = fast.fine_steps if compiled and fast.available() else fast.fine_steps_numpy
        self.p = self.program = program
        self.mismatch, self.noise, self.seed, self.S = mismatch, bool(noise), int(seed), int(substeps)
        cal = program.calibration
        ro = cal["readout"]
        lo, hi = cal["ranges"]["v_threshold"]  # the readout spans the threshold DAC range (threshold units)
        self.noise_sigma = ro["noise_lsb"] / 2 ** ro["bits"] * (hi - lo)
        self.prm = {}
        for l in program.layers:
            circ = l.params["first_circuit"].astype(int) % len(cal["table"]["tau_mem"]["gain"])
            vals = {}
            for p in C.PARAMS:
                if mismatch == "off":
                    vals[p] = C.realized(l.codes[f"{p}_nominal"], p, circ, cal, "nominal")
                elif mismatch == "calibrated":
                    vals[p] = C.realized(l.codes[p], p, circ, cal, "truth")
                else:
                    vals[p] = C.realized(l.codes[f"{p}_nominal"], p, circ, cal, "truth")
            vals["tau_mem"] = np.maximum(vals["tau_mem"], 1e-9)
            vals["tau_syn"] = np.maximum(vals["tau_syn"], 1e-9)
            h = program.dt / program.speedup / self.S
            vals["a"] = np.exp(-h / vals["tau_mem"])
            vals["b"] = np.exp(-h / vals["tau_syn"])
            tm, ts = vals["tau_mem"], vals["tau_syn"]
            same = np.abs(tm - ts) < 1e-12 * tm
            vals["coef"] = np.where(same, h / tm * vals["a"],
                                    ts / np.where(same, 1.0, ts - tm) * (vals["b"] - vals["a"]))
            if not l.spiking:
                vals["v_threshold"] = np.full(l.size, np.inf)
            self.prm[l.name] = vals
        # the parameters as the chosen fine-step loop takes them (contiguous arrays for the compiled one)
        self._fine_prm = {l.name: fast.pack(self.prm[l.name], l.size) if self._fine is fast.fine_steps
                          else self.prm[l.name] for l in program.layers}
        # with the closed-form constants for the fused step-timing loop (closed form over idle fine steps, see .fast)
        self._step_prm = {l.name: fast.pack_step(self.prm[l.name], l.size, self.S) for l in program.layers} \
            if self._fine is fast.fine_steps else {}
        self.into = {l.name: [q for q in program.projections if q.post == l.name] for l in program.layers}
        self._proj = input_kernels(program)
        # learning rules: the plasticity processor's fixed-point model rewrites plastic rows (.ppu)
        self.ppu_rules = [ppu.PPURule.from_json(d) for d in getattr(program, "plasticity", [])]

    # Streaming: no latency to align (host events reach every layer in the same model step),
    # so ``advance`` runs the window's steps from the carried state, noise generator included.
    streams = True

    @property
    def batch_slots(self) -> dict[str, int] | None:
        """Where the streaming state keeps its batch rows (``nmc.runtime.serve.batching``);
        None with ``noise``: one generator draws for the whole batch, so a row's noise
        would depend on the other rows."""
        return None if self.noise or self.ppu_rules else {"_stream.st": 0, "_stream.prev_sub": 1}

    @property
    def takes_modulator(self) -> bool:
        return any(r.third_factor == "reward" for r in self.ppu_rules)

    def modulate(self, value) -> None:
        """The reward the host writes into the plasticity processor's memory (:func:`.ppu.reward_code`);
        it holds until set again, also across ``reset``."""
        if not self.takes_modulator:
            return super().modulate(value)
        self._reward = value
        for lr in self._stream["ppu"] if hasattr(self, "_stream") else []:
            if lr.rule.third_factor == "reward":
                lr.modulate(value)

    def set_rule(self, projection: str | None = None, **changes) -> None:
        """Change running rules' parameters (a learning-rate schedule): new PPU constants, state kept."""
        self._rule_changes = getattr(self, "_rule_changes", {})
        live = self._stream["ppu"] if hasattr(self, "_stream") else []
        self.ppu_rules = learning.set_rule(self.p, self.ppu_rules, live, projection, changes, self._rule_changes)

    def reset(self, batch: int = 1) -> None:
        """Initial state (v at leak, no current, no refractory time; the noise generator
        re-seeded) for ``advance``; ``run`` always starts from it anyway."""
        self.batch = int(batch)
        self._stream = self._initial_state(self.batch)

    def _initial_state(self, B: int) -> dict:
        return {"st": {l.name: {"v": np.broadcast_to(self.prm[l.name]["v_leak"], (B, l.size)).copy(),
                                "i": np.zeros((B, l.size)), "s": np.zeros((B, l.size)),
                                "ref": np.zeros((B, l.size))} for l in self.p.layers},
                "prev_sub": {l.name: np.zeros((self.S, B, l.size)) for l in self.p.layers},
                "rng": np.random.default_rng(self.seed),
                **learning.initial_state(self.p, self.ppu_rules, B, self._proj, getattr(self, "_reward", None))}

    def _check(self, arrs) -> None:
        for k, a in arrs.items():
            if not np.all(np.isin(a, (0, 1))):
                raise ShapeError("BrainScaleS-2 inputs are spike events (0/1)", node=k, hint="encode analog values as spikes")

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """n model steps from the carried state: ``inputs[name]`` (n, B, *shape) →
        ``{output: (n, B, *shape)}``, the rows ``run`` returns for those steps."""
        arrs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        self._check(arrs)
        n = next(iter(arrs.values())).shape[0]
        hist = self._steps(self._stream, arrs, n, self.batch, keep=set(self.p.outputs.values()))
        return self._outputs(hist, n, self.batch)

    def run(self, inputs, steps: int | None = None, record: Iterable[str] = ()):
        arrs, T, batched = validate_inputs(self.p.io, inputs, steps)
        self._check(arrs)
        B = next(iter(arrs.values())).shape[1]
        record = list(record)
        state = self._initial_state(B)
        res_w = learning.record_weights(state, record)     # plastic nodes recorded: '<node>.w' per step
        record = [r for r in record if r not in res_w]
        for r in record:     # the IO map's recorded ports: the program's neuron layers
            self.p.io.record(r)
        hist = self._steps(state, arrs, T, B, keep=set(self.p.outputs.values()) | set(record))
        res = self._outputs(hist, T, B)
        res.update({f"{k}.w": np.stack(v) for k, v in res_w.items()})
        for r in record:
            shp = self.p.io.record(r).shape  # a recorded layer: its port in the IO map
            res[f"{r}.spikes"] = np.stack(hist[r]["s"]).reshape(T, B, *shp)
            res[f"{r}.v"] = (np.stack(hist[r]["v"]) * self.p.layer(r).params["unit"]).reshape(T, B, *shp)
            res[f"{r}.out"] = res[f"{r}.spikes"] if self.p.layer(r).spiking else res[f"{r}.v"]
        if not batched:
            res = {k: v[:, 0] for k, v in res.items()}
        return res

    def _outputs(self, hist, T: int, B: int) -> dict[str, np.ndarray]:
        res = {}
        for o, lname in self.p.outputs.items():
            l = self.p.layer(lname)
            key = "s" if l.spiking else "v"
            a = np.stack(hist[lname][key])
            res[o] = (a if l.spiking else a * l.params["unit"]).reshape(T, B, *self.p.io.output(o).shape)
        return res

    def _layer_input(self, name: str, P: dict) -> "fast.LayerInput":
        """The fused input of layer ``name`` over the projections ``P`` holds now: built once per program
        like :func:`input_kernels` (:func:`~..program_cache.derived`; every device of a bundle shares it),
        rebuilt when a learner replaces one of the projections (the entry keeps the objects, so ids are
        not reused)."""
        projs = tuple(P[id(q)] for q in self.into[name])
        return derived(self.p, f"brainscales2.layer_input.{name}", projs, lambda: fast.LayerInput(list(projs)))

    def _steps(self, state: dict, arrs: dict[str, np.ndarray], T: int, B: int, keep=None) -> dict:
        """T model steps from ``state`` (updated in place); per-layer history of s and v
        (of the layers in ``keep`` only, when given: the others' lists stay empty)."""
        st, rng = state["st"], state["rng"]
        h = self.p.dt / self.p.speedup / self.S
        hist = {l.name: {"s": [], "v": []} for l in self.p.layers}
        P = state.get("P", self._proj)   # plastic projections: the learners' current weights
        S = self.S
        prev_sub = state["prev_sub"]
        # step timing without noise: one (B, n) drive per layer on its boundary fine step (.fast.fine_steps_step)
        fused = self._fine is fast.fine_steps and not self.noise and self.event_timing == "step"
        for t in range(T):
            ext = {k: a[t].reshape(B, -1).astype(float) for k, a in arrs.items()}
            for c in self.p.constant_inputs:  # bias sources: one event every step
                ext[c] = np.ones((B, 1))
            cur_sub: dict[str, np.ndarray] = {}
            for l in self.p.layers:
                s_ = st[l.name]
                cuba = l.kind in ("cuba", "cubali")
                k_in = 0 if cuba else S - 1
                # input per fine step: events arrive at their real times (the fine step their source fired);
                # host events are stamped at the step boundary: the start of the step for current-based
                # layers, its end for the others (both equal the discrete reference's same-step delivery)
                if fused:
                    for key in ("v", "i", "ref"):  # the kernel updates them in place
                        s_[key] = np.ascontiguousarray(s_[key], dtype=np.float64)
                    xs = []
                    for q in self.into[l.name]:
                        src = ext[q.pre] if q.pre in ext else (prev_sub if q.recurrent else cur_sub)[q.pre]
                        xs.append(src if src.ndim == 2 else src[0] if len(src) == 1 else src.max(axis=0))
                    inp = self._layer_input(l.name, P)
                    if inp.walked:   # each sample's input and neuron update in one kernel (.fast.LayerInput)
                        spk = inp.step(xs, s_["v"], s_["i"], s_["ref"], k_in, cuba, self._step_prm[l.name], h, S)
                    else:
                        d = np.zeros((B, l.size))
                        for q, x in zip(self.into[l.name], xs):
                            P[id(q)].add_to(x, d)
                        spk = fast.fine_steps_step(s_["v"], s_["i"], s_["ref"], d, k_in, cuba,
                                                   self._step_prm[l.name], h, S)
                    s_["s"] = spk
                    cur_sub[l.name] = spk[None]  # the step's events, as one boundary fine step
                    if keep is None or l.name in keep:
                        hist[l.name]["s"].append(spk)
                        hist[l.name]["v"].append(s_["v"].copy())
                    continue
                drive = np.zeros((S, B, l.size))
                for q in self.into[l.name]:
                    if q.pre in ext:
                        drive[k_in] += P[id(q)](ext[q.pre])
                    else:
                        src = prev_sub[q.pre] if q.recurrent else cur_sub[q.pre]
                        if self.event_timing == "real":
                            drive += P[id(q)](src)
                        else:  # all of the source's events of the step at the step boundary
                            drive[k_in] += P[id(q)](src.max(axis=0))
                noise = (rng.standard_normal((S, B, l.size)) * self.noise_sigma / np.sqrt(S)) if self.noise else None
                v, i, ref, spk, fired_sub = self._fine(s_["v"], s_["i"], s_["ref"], drive, noise, cuba,
                                                       self._fine_prm[l.name], h)
                s_["ref"] = ref
                s_["v"], s_["i"], s_["s"] = v, i, spk
                cur_sub[l.name] = fired_sub
                if keep is None or l.name in keep:
                    hist[l.name]["s"].append(spk.copy())
                    hist[l.name]["v"].append(v.copy())
            if state.get("ppu"):   # sensors, and the plasticity processor at the end of its period
                learning.after_step(self.p, state, ext, cur_sub, prev_sub)
            prev_sub = cur_sub
        state["prev_sub"] = prev_sub
        return hist
