"""Bit-accurate emulator of the lowered SpiNNaker 2 program.

Arithmetic, per chip step t (all state float32 as on the Cortex-M4F; weights
are the program's integers, exactly representable in float32; sums of
integer weights are exact in float32 below 2²⁴):

    syn_k   = Σ_pre W_int · s_pre[t−1−d]         (one step of latency per projection, plus the
                                                  synapse's delay d of the lif/lif_curr_exp models;
                                                  positive weights → exc, negative → inh)
    lif(_no_delay), lif_conv2d: v = alpha_decay·v + syn + i_offset   (conv: syn by pooling + conv, conv.apply)
    lif_curr_exp(_no_delay): chip order:   i_exc = exc_decay·i_exc + syn_exc;  i_inh = inh_decay·i_inh + syn_inh
                                           v = alpha_decay·v + (i_exc + i_inh) + i_offset
                             brian2 order: v first with the previous currents, then the currents update
    spike when v > threshold (strict);  reset_by_subtraction: v −= threshold;  reset_to_v_reset: v = v_reset
    v starts at v_init (cancels the constant drive of the steps before the first input arrives)
    egru_kernel: :func:`.egru.step_batch` on the source's events of step t−1 and its own; the kernel
             starts at chip step = its latency (before, no input has reached it; an EGRU stepped on
             zeros would move its state, which no initial value can cancel)
    ssm_kernel: :func:`.ssm_lower.step` (the input stage, then :func:`.ssm.diag_step` /
             :func:`.ssm.stochastic_step` / :func:`.ssm_norm.norm_step`, the functions the generated C
             matches bit for bit) on the source's values of step t−1 (a LayerNorm: each source's of
             step t−1−d_s, its delay line), from its latency tick on; a stochastic kernel's counter
             k = chip tick − latency

Each float32 operation is rounded as written, left to right. ``spike_list``
populations emit the given input as events: 0/1 spikes, or k = x/quantum
repeated events of one source in a step (graded inputs, see
:func:`.lower.graded_inputs`), each adding its integer weight (Σ k·W, exact). A run of T reference steps takes
T + L_max chip steps; with ``align`` (default) each output is shifted by its
population's latency so ``out[t]`` lines up with the reference's step t.
Vectorised over neurons and the batch; the LIF models' update runs as one
compiled pass per population (:mod:`.lif_step`, the same float32 operations); a
population fed by one conv projection alone sums it with the signed kernel through two
arrays kept across steps (:mod:`.conv_lif`), and one fed by fixed dense projections of 0/1
spikes by one signed matmul per delay (``Wsig``): both exact integer sums, so equal to the
W⁺/W⁻ halves summed apart; an EGRU
kernel, a DiagSSM kernel (input stage included) and a graded projection's accumulation run as one
compiled call per population and step (:mod:`.kernel_fused`, the same float32 operations per sample).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import OptionError, ShapeError
from ..base import Device, LaggedStreaming, validate_inputs
from . import conv, conv_lif, kernel_fused, lif_step
from .program import KERNEL_MODELS, S2Program

F32 = np.float32


def _accumulate(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (B, n) graded events · w (n, m), float32, accumulated per event in increasing
    index order over the indices that carry an event in any row. A row without an event at
    index i adds w·0 = ±0, which leaves its sum bit for bit unchanged (it starts at +0, and
    round-to-nearest never makes −0 from +0), so each row's result is independent of the
    other rows (a BLAS matmul picks its summation order by batch size). The numpy form of
    :func:`.kernel_fused.accumulate`, used when :data:`.kernel_fused.ENABLED` is off (no numba; the
    tests compare both)."""
    a = np.zeros((x.shape[0], w.shape[1]), F32)
    for i in np.flatnonzero(np.any(x != 0, axis=0)):
        a = a + x[:, i:i + 1] * w[i][None, :]
    return a


class S2Emulator(LaggedStreaming, Device):
    """``run`` simulates a whole recording; ``reset(B)`` + ``advance`` stream it
    window by window with the state carried (:class:`~..base.LaggedStreaming`:
    the same rows as ``run``, bit for bit)."""

    name = "emulator"
    _stream_state = ("state", "past", "t", "learn")

    #: Where the streaming state keeps its batch rows (``nmc.runtime.serve.batching``). The
    #: chip tick ``t`` is one counter per row (bias sources and EGRU kernels start at their
    #: latency tick), so a session that joins a batch later keeps its own time.
    _batch_slots = {"state": 0, "past": 0, "t": 0}

    @property
    def batch_slots(self) -> dict[str, int] | None:
        """None when the program learns: its batch rows are one learner, not independent sessions."""
        return None if self.plastic else self._batch_slots

    def __init__(self, program: S2Program, curr_exp_order: str | None = None, align: bool = True):
        self.p = self.program = program
        self.order = curr_exp_order or program.curr_exp_order
        if self.order not in ("chip", "brian2"):
            raise OptionError("curr_exp_order must be 'chip' or 'brian2'")
        self.align = align
        self.into = {pop.name: [q for q in program.projections if q.post == pop.name] for pop in program.populations}
        self.Wk = {}  # id(q) -> stacked conv kernel [W⁺; W⁻] (conv projections)
        self.Kc = {}  # id(q) -> signed conv kernel where its sums are exact (.conv_lif)
        self._scratch = {}  # population -> the (n, B) and (B, n) float32 arrays of its conv sums (.conv_lif)
        self.W = {}  # id(q) -> [(delay d, W⁺, W⁻)]: one pair per distinct delay value
        for q in program.projections:
            if q.conv is not None:
                # W⁺ and W⁻ stacked on the output channels: conv.apply gives [Σ W⁺·s | Σ W⁻·s]
                self.Wk[id(q)] = np.concatenate([np.maximum(q.kernel, 0), np.minimum(q.kernel, 0)]).astype(F32)
                if conv_lif.fits(q.kernel, int(q.conv["pool"])):   # the signed kernel, fused into its LIF update
                    self.Kc[id(q)] = np.ascontiguousarray(q.kernel, F32)
                continue
            if q.delay is None:   # every synapse at delay 0: no int64 delay array of the weights' shape to compare
                self.W[id(q)] = [(0, np.maximum(q.weights, 0).astype(F32).T, np.minimum(q.weights, 0).astype(F32).T)]
                continue
            dl = np.asarray(q.delay)
            self.W[id(q)] = [(int(d), np.where(dl == d, np.maximum(q.weights, 0), 0).astype(F32).T,
                              np.where(dl == d, np.minimum(q.weights, 0), 0).astype(F32).T)
                             for d in np.unique(dl[q.weights != 0] if np.any(q.weights) else [0])]
        # populations that send graded values (EGRU kernels): their projections accumulate event by
        # event in index order (_accumulate), as the receiving PE does; spikes (0/1 or counts times
        # weights on the int8 grid) sum exactly in float32 in any order, so a matmul serves them
        self.graded = {pop.name for pop in program.populations if pop.model in KERNEL_MODELS}
        #: plastic projections (index → Projection): their learning rule runs after each tick (.plasticity)
        self.plastic = {i: q for i, q in enumerate(program.projections) if q.plastic}
        if self.plastic:
            from .plasticity import learner

        self.learn = {i: learner(q) for i, q in self.plastic.items()}
        # the LIF populations whose update runs fused in numba (.lif_step; None: the numpy expressions)
        self._fused = {pop.name: lif_step.params(pop) for pop in program.populations}
        self.Wsig = self._signed_rows(program)
        # the EGRU and DiagSSM kernels and the graded projections that run compiled (.kernel_fused)
        self._kf = {}
        if kernel_fused.ENABLED:
            for pop in program.populations:
                if pop.model == "egru_kernel":
                    self._kf[pop.name] = kernel_fused.egru_params(pop.kernel)
                elif pop.model == "ssm_kernel" and "theta" in pop.kernel:
                    self._kf[pop.name] = kernel_fused.diag_params(pop.kernel)
            for q in program.projections:
                if q.pre in self.graded and id(q) in self.W:
                    self._kf[id(q)] = [(np.ascontiguousarray(wp), np.ascontiguousarray(wn))
                                       for _, wp, wn in self.W[id(q)]]
        self.depth = 1 + max([d for v in self.W.values() for d, _, _ in v]   # synaptic delays and the delay
                             + [int(d) for pop in program.populations      # lines of multi-source kernels
                                for d in np.asarray(pop.kernel.get("delay", [])).reshape(-1)], default=0)

    def _signed_rows(self, program: S2Program) -> dict[str, list]:
        """population -> [(pre, delay d, (W⁺ + W⁻)ᵀ float32)] for a fused LIF population whose every
        projection is dense, fixed (not plastic) and from a population that spikes 0/1 (not an input
        of counts, not graded): its update needs only Σ W⁺·s + Σ W⁻·s, which equals Σ (W⁺ + W⁻)·s bit
        for bit when every partial sum is an integer below 2²⁴ (integer weights, Σ_q max column
        Σ|w| below 2²⁴), so one matmul per delay serves both halves. Their W⁺/W⁻ pairs are dropped
        (``self.W`` keeps the delays): nothing else reads them."""
        def bound(w) -> float:   # max column Σ|w| of integer weights, else inf
            w = np.asarray(w)
            if w.dtype.kind == "f" and not np.all(w == np.round(w)):
                return np.inf
            a = np.abs(w) if w.dtype.kind in "iu" else np.abs(w.astype(np.float64))
            return float(a.sum(axis=1, dtype=np.float64).max(initial=0.0))

        out = {}
        for pop in program.populations:
            qs = self.into[pop.name]
            if self._fused.get(pop.name) is None or not qs or any(
                    q.conv is not None or q.plastic or q.pre in self.graded
                    or program.pop(q.pre).model == "spike_list" for q in qs):
                continue
            if sum(bound(q.weights) for q in qs) >= 2 ** 24:
                continue
            out[pop.name] = [(q.pre, d, np.ascontiguousarray(wp + wn)) for q in qs for d, wp, wn in self.W[id(q)]]
            for q in qs:
                self.W[id(q)] = [(d, None, None) for d, _, _ in self.W[id(q)]]
        return out

    def reset(self, batch: int = 1) -> None:
        self.batch = batch
        self.t = np.zeros(batch, np.int64)  # the chip tick, per batch row (rows of a served batch start apart)
        self.state = {}
        for pop in self.p.populations:
            z = np.zeros((batch, pop.size), F32)
            v0 = np.broadcast_to(pop.params.get("v_init", np.zeros(pop.size, F32)), z.shape).astype(F32)
            self.state[pop.name] = {"v": v0.copy(), "ie": z.copy(), "ii": z.copy(), "s": z.copy()}
            if pop.model == "ssm_kernel":   # the kernel's state x (and held values), batch rows first
                from .ssm_lower import init_state

                self.state[pop.name]["ssm"] = init_state(pop.kernel, batch)
        # past[k][j] = spikes of population k at step t − 1 − j (j < depth): the delay lines
        self.past = {pop.name: [np.zeros((batch, pop.size), F32) for _ in range(self.depth)]
                     for pop in self.p.populations}
        self._pending = False
        for i, lr in self.learn.items():   # the initial weights: run() always starts from them
            lr.reset(batch)
            self._set_rows(i)

    def _step(self, ext: dict[str, np.ndarray]) -> dict[str, dict]:
        prev = {k: st["s"] for k, st in self.state.items()}
        for k, line in self.past.items():  # shift the delay lines: line[0] = s[t − 1]
            line.insert(0, prev[k])
            line.pop()
        for pop in self.p.populations:
            st = self.state[pop.name]
            if pop.model == "spike_list":
                if pop.constant_events:   # a bias source: k events every step from its latency on
                    on = (self.t >= pop.latency)[:, None]
                    st["s"] = np.where(on, F32(pop.constant_events), F32(0)) * np.ones_like(st["v"])
                    continue
                st["s"] = ext[pop.name]
                continue
            if pop.model == "egru_kernel":
                from .egru import step_batch

                on = self.t >= pop.latency  # the kernel starts at its latency tick: before, no input has
                if not on.any():            # reached it, and stepping on zeros would move its gated state
                    continue
                prm = self._kf.get(pop.name)   # None only when kernel_fused is off (no numba; tests)
                s, v = (kernel_fused.egru_step(prm, st["v"], prev[pop.source], prev[pop.name]) if prm is not None
                        else step_batch(pop.kernel, st["v"], prev[pop.source], prev[pop.name]))
                if not on.all():  # rows of a served batch that have not reached the latency tick keep their state
                    s, v = np.where(on[:, None], s, st["s"]), np.where(on[:, None], v, st["v"])
                st["s"], st["v"] = s, v
                continue
            if pop.model == "ssm_kernel":
                x = (np.concatenate([self.past[s][int(d)] for s, d in zip(pop.sources, pop.kernel["delay"])], axis=1)
                     if pop.sources else prev[pop.source])   # a LayerNorm: its sources' delay lines
                self._ssm_step(pop, st, x)
                continue
            prm = self._fused.get(pop.name)
            qs = self.into[pop.name]
            if prm is not None and len(qs) == 1 and id(qs[0]) in self.Kc:
                # one conv projection alone: its signed sums through arrays kept per population, then the
                # fused update (.conv_lif)
                buf = self._scratch.get(pop.name)
                if buf is None or buf[1].shape != st["v"].shape:
                    buf = self._scratch[pop.name] = conv_lif.scratch_for(pop.size, st["v"].shape[0])
                st["v"], st["s"] = conv_lif.step(self.Kc[id(qs[0])], qs[0].conv, prev[qs[0].pre], st["v"], prm,
                                                 pop.reset == "reset_by_subtraction", buf)
                continue
            rows = self.Wsig.get(pop.name)
            if rows is not None:   # fixed dense projections of 0/1 spikes: one signed matmul per delay
                syn = None
                for pre, d, w in rows:
                    t = self.past[pre][d] @ w
                    syn = t if syn is None else syn + t
                st["v"], st["s"] = lif_step.step1(st["v"], syn, prm, pop.reset == "reset_by_subtraction")
                continue
            se = np.zeros_like(st["v"])
            si = np.zeros_like(st["v"])
            for q in qs:
                if q.conv is not None:  # Conv2DProjection: pool + conv of the spikes (exact, see conv.apply)
                    both = conv.apply(self.Wk[id(q)], q.conv, prev[q.pre])  # one pass for both halves
                    se = se + both[:, : se.shape[1]]
                    si = si + both[:, se.shape[1]:]
                    continue
                graded = q.pre in self.graded
                kf = self._kf.get(id(q)) if graded else None
                for j, (d, wp, wn) in enumerate(self.W[id(q)]):
                    x = self.past[q.pre][d]
                    if kf is not None:   # compiled, the same per-event order (.kernel_fused)
                        se = se + kernel_fused.accumulate(x, kf[j][0])
                        si = si + kernel_fused.accumulate(x, kf[j][1])
                        continue
                    se = se + (_accumulate(x, wp) if graded else x @ wp)
                    si = si + (_accumulate(x, wn) if graded else x @ wn)
            P = pop.params
            if prm is not None:  # one compiled pass, the same float32 operations (.lif_step)
                st["v"], st["s"] = lif_step.step(st["v"], se, si, prm, pop.reset == "reset_by_subtraction")
                continue
            if pop.model in ("lif_no_delay", "lif_conv2d", "lif"):
                v = P["alpha_decay"] * st["v"] + (se + si) + P["i_offset"]
            elif self.order == "chip":
                st["ie"] = P["exc_decay"] * st["ie"] + se
                st["ii"] = P["inh_decay"] * st["ii"] + si
                v = P["alpha_decay"] * st["v"] + (st["ie"] + st["ii"]) + P["i_offset"]
            else:
                v = P["alpha_decay"] * st["v"] + (st["ie"] + st["ii"]) + P["i_offset"]
                st["ie"] = P["exc_decay"] * st["ie"] + se
                st["ii"] = P["inh_decay"] * st["ii"] + si
            s = (v > P["threshold"]).astype(F32)
            if pop.reset == "reset_by_subtraction":
                v = v - s * P["threshold"]
            else:
                v = np.where(s > 0, P["v_reset"], v).astype(F32)
            st["v"], st["s"] = v.astype(F32), s
        for i, lr in self.learn.items():   # learning rules, after the neurons (.plasticity: step order)
            q = self.plastic[i]
            if np.all(self.t >= self.p.pop(q.post).latency):
                lr.step(self.past[q.pre][0], self.state[q.post]["s"])
                self._set_rows(i)
        return self.state

    def advance(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().advance(inputs)
        self._pending = True   # the window's last steps reach the deeper learners in the next ticks
        return out

    def reset_state(self, batch: int = 1) -> None:
        """Like :meth:`reset`, but plastic projections keep what they learned (weights, θ, the
        connectome, the step count that drives the generator): a new trial for a learner. After
        ``advance``, the trial is finished first: L ticks with zero input (L the deepest
        latency, what ``run`` adds after the last step), so each learner has seen every step."""
        if self.learn and getattr(self, "_pending", False):
            L = max(pop.latency for pop in self.p.populations)
            self._device_steps(self._zero_window(L), L)
        self._pending = False
        learned, self.learn = self.learn, {}
        try:
            self.reset(batch)
        finally:
            self.learn = learned
        for i, lr in self.learn.items():
            lr.reset_traces(batch)
            self._set_rows(i)

    def _restore_state(self, saved) -> None:
        learned = saved.pop("learn", {})
        super()._restore_state(saved)
        for i, lr in learned.items():   # into the same learner objects (callers hold them); the synapse
            self.learn[i].__dict__.update(lr.__dict__)   # rows follow (a look-ahead learned too)
            self._set_rows(i)

    def _set_rows(self, i: int) -> None:
        """The synapse rows of plastic projection ``i`` from its learner's integer weights."""
        w = self.learn[i].q
        self.W[id(self.plastic[i])] = [(0, np.maximum(w, 0).astype(F32).T, np.minimum(w, 0).astype(F32).T)]

    @property
    def takes_modulator(self) -> bool:
        return any(q.plastic["rule"]["third_factor"] != "none" for q in self.plastic.values())

    def modulate(self, value) -> None:
        """The third factor of every plastic projection with one: the reward word (scalar or per
        batch row) or the error per post neuron the host writes to the PEs (:mod:`.plasticity`)."""
        if not self.takes_modulator:
            return super().modulate(value)
        for lr in self.learn.values():
            if lr.rule.third_factor != "none":
                lr.modulate(value)

    def set_rule(self, projection: str | None = None, **changes) -> None:
        """Change running rule parameters (the host rewrites the kernels' constants)."""
        hit = [lr for lr in self.learn.values() if projection in (None, lr.name)]
        if not hit:
            raise OptionError(f"'{projection}' is not a plastic projection", node=projection)
        for lr in hit:
            lr.set_rule(**changes)

    def _ssm_step(self, pop, st: dict, x: np.ndarray) -> None:
        """One step of an ssm_kernel population (module docstring); rows before its latency tick keep
        their state. A DiagSSM runs compiled (:func:`.kernel_fused.diag_step`); the numpy step
        (:func:`.ssm_lower.step`) stays for the kernels it does not compile, a stochastic SSM and a
        LayerNorm, and for every kernel when :data:`.kernel_fused.ENABLED` is off (no numba; the
        tests' reference for the compiled loops)."""
        from .ssm_lower import step

        on = self.t >= pop.latency
        if not on.any():
            return
        prm = self._kf.get(pop.name)
        if prm is not None:   # a DiagSSM: input stage and kernel compiled, its state updated in place
            out = kernel_fused.diag_step(prm, st["ssm"], x, on)
            if not on.all():
                st["s"], st["v"] = np.where(on[:, None], out, st["s"]), np.where(on[:, None], out, st["v"])
            else:
                st["s"], st["v"] = out, out.copy()
            return
        s, v, k_st = step(pop.kernel, st["ssm"], x, self.t - pop.latency)
        if not on.all():
            s, v = np.where(on[:, None], s, st["s"]), np.where(on[:, None], v, st["v"])
            k_st = {k: np.where(on.reshape((-1,) + (1,) * (a.ndim - 1)), a, st["ssm"][k]) for k, a in k_st.items()}
        st["s"], st["v"], st["ssm"] = s.astype(F32), v.astype(F32), k_st

    def _check_spikes(self, arrs: dict[str, np.ndarray]) -> None:
        """Graded inputs become events (in place): an EGRU kernel takes the values as graded events;
        every other consumer takes x/quantum repeated events per step (:meth:`S2Program.input_events`)."""
        for k, a in list(arrs.items()):
            consumers = {q.post for q in self.p.projections if q.pre == k} | {
                pop.name for pop in self.p.populations if k in pop.kernel_inputs}
            graded_ok = consumers and all(self.p.pop(c).model in KERNEL_MODELS for c in consumers)
            if not graded_ok:
                arrs[k] = self.p.input_events(k, a)
                if arrs[k] is None:
                    arrs[k] = a

    # ------------------------------------------------------------ streaming
    def _device_steps(self, inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """n chip steps from the current state; outputs in chip time, in ``run``'s units."""
        arrs = {k: np.asarray(inputs[k], dtype=np.float64) for k in self.p.inputs}
        self._check_spikes(arrs)
        B = self.batch
        rows: dict[str, list] = {o: [] for o in self.p.outputs}
        for t in range(n):
            st = self._step({self.p.inputs[k]: a[t].reshape(B, -1).astype(F32) for k, a in arrs.items()})
            self.t += 1  # the chip tick (EGRU kernels start at their latency tick)
            for o, pn in self.p.outputs.items():
                rows[o].append(st[pn]["v" if self.p.output_kind[o] == "v" else "s"].copy())
        out = {}
        for o, pn in self.p.outputs.items():
            a = np.stack(rows[o]) if rows[o] else np.zeros((0, B, self.p.pop(pn).size), F32)
            if self.p.output_kind[o] == "v":
                a = a.astype(np.float64) * self.p.pop(pn).scale
            if o in self.p.readout:  # linear readout on the host, float64 (as in run)
                a = self.p.read_out(o, a.reshape(n, B, -1))
            out[o] = a.reshape(n, B, *self.p.io.output(o).shape)
        return out

    def run(self, inputs, steps: int | None = None, record: Iterable[str] = (), align: bool | None = None):
        align = self.align if align is None else align
        arrs, T, batched = validate_inputs(self.p.io, inputs, steps)
        self._check_spikes(arrs)
        B = next(iter(arrs.values())).shape[1]
        record = list(record)
        for r in record:     # the IO map's recorded ports: the populations the lowering placed
            self.p.io.record(r)
        L = max(pop.latency for pop in self.p.populations)
        total = T + (L if align else 0)
        self.reset(B)
        want: dict[str, set] = {}   # population -> the variables read back: an output's, or both when recorded
        for o, pn in self.p.outputs.items():
            want.setdefault(pn, set()).add("v" if self.p.output_kind[o] == "v" else "s")
        for r in record:
            want.setdefault(r, set()).update(("s", "v"))
        hist = {k: {} for k in want}   # (total, B, size) per variable, filled step by step
        xs = {self.p.inputs[k]: a.reshape(a.shape[0], B, -1).astype(F32) for k, a in arrs.items()}
        for t in range(total):
            self.t[:] = t
            ext = {k: x[t] if t < x.shape[0] else np.zeros(x.shape[1:], F32) for k, x in xs.items()}
            st = self._step(ext)
            for k, var in ((k, v) for k, vs in want.items() for v in vs):
                val = st[k][var]
                h = hist[k].get(var)
                if h is None:
                    h = hist[k][var] = np.empty((total, *val.shape), val.dtype)
                h[t] = val
        res = {}

        def series(pop_name, var, shape):
            pop = self.p.pop(pop_name)
            a = hist[pop_name].get(var)
            if a is None:   # no step run
                a = np.zeros((0, B, pop.size), F32)
            if align:
                a = a[pop.latency: pop.latency + T]
            if var == "v":
                a = a.astype(np.float64) * pop.scale  # back to the reference's voltage units
            return a.reshape(a.shape[0], B, *shape)

        for o, pop_name in self.p.outputs.items():
            if o in self.p.readout:  # linear readout on the host, float64
                y = series(pop_name, "v" if self.p.output_kind[o] == "v" else "s", (self.p.pop(pop_name).size,))
                res[o] = self.p.read_out(o, y).reshape(y.shape[0], B, *self.p.io.output(o).shape)
                continue
            res[o] = series(pop_name, "v" if self.p.output_kind[o] == "v" else "s", self.p.io.output(o).shape)
        for r in record:
            shp = self.p.io.record(r).shape  # a recorded population: its port's shape
            pop = self.p.pop(r)
            if pop.model in KERNEL_MODELS:  # graded events y (SSM: or spikes), cell state c (SSM: held / σ(y))
                res[f"{r}.out"] = series(r, "s", shp)
                res[f"{r}.spikes"] = (res[f"{r}.out"] != 0).astype(np.float64)
                res[f"{r}.v"] = series(r, "v", shp) / pop.scale
                continue
            res[f"{r}.spikes"] = series(r, "s", shp)
            res[f"{r}.v"] = series(r, "v", shp)
            res[f"{r}.out"] = res[f"{r}.spikes"] if pop.spiking else res[f"{r}.v"]
        if not batched:
            res = {k: v[:, 0] for k, v in res.items()}
        return res
