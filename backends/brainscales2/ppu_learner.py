"""The emulator's side of the plasticity processor: one :class:`PPULearner` per plastic projection
(the array's plastic synapses, the correlation sensors, eligibility, θ, generator and reward) and the
hooks :class:`~.emulator.BSS2Emulator` calls (:func:`initial_state`, :func:`after_step`,
:func:`record_weights`, :func:`set_rule`). The fixed-point rule itself is :mod:`.ppu`'s (and
:mod:`.ppu_spore`'s); the sensor model and the cadence are written down there.
"""
from __future__ import annotations

import numpy as np

from nmc.errors import OptionError

from . import fast
from .ppu import (PPURule, compile_rule, read_sensor, refusal, reward_code, rewire, seed_state,
                  update_row)


class PPULearner:
    """One plastic projection on the emulator: the synapse array's plastic part (magnitudes, labels),
    the sensors, the eligibility, the generator and the host's reward; ``weights()`` the effective
    (post, pre) matrix in LSBs (label matching, row signs: :func:`.synapses.effective_matrix`)."""

    def __init__(self, rule: PPURule, proj, circuits):
        self.rule, self.q, self.circuits = rule, proj, np.asarray(circuits, np.int64)
        self.col_neuron = np.repeat(np.arange(self.circuits.size), self.circuits)
        self.rr, self.cc = np.nonzero(proj.arr_label >= 0)         # the synapses (fixed positions)
        self.sign = proj.row_sign[self.rr]
        self.j = self.col_neuron[self.cc]
        self.reward = 0
        self.trace = None          # a list when the node is recorded (model weights per step)
        self.reset(1)

    def reset(self, batch: int) -> None:
        q = self.q
        self.w = q.arr_w[self.rr, self.cc].astype(np.int64)
        self.lab = q.arr_label[self.rr, self.cc].astype(np.int64)
        self.state = seed_state(self.rule.seed)
        self.runs = self.steps = 0
        self._src = None
        # SPORE: θ (Q.12) from the weights, as the kernel sets it on its first run (:mod:`.ppu_spore`)
        self.theta = np.asarray(self.rule.th_init, np.int64)[self.w] if self.rule.rule == "spore" else None
        self.reset_traces(batch)

    def reset_traces(self, batch: int) -> None:
        n_post, n_pre = self.q.w6.shape
        self.x, self.y = np.zeros((batch, n_pre)), np.zeros((batch, n_post))
        self.causal, self.acausal = np.zeros(self.w.size), np.zeros(self.w.size)
        self.e = np.zeros(self.w.size, np.int64)

    def sources(self) -> np.ndarray:
        """The source index of every synapse (its row group and stored label); kept until a rewiring."""
        if self._src is None:
            q = self.q
            lut = np.full((int(q.group.max(initial=0)) + 1, 64), -1, np.int64)
            lut[q.group, q.label] = np.arange(q.group.size)
            self._src = lut[q.row_group[self.rr], self.lab]
        return self._src

    def weights(self) -> np.ndarray:
        n_post, n_pre = self.q.w6.shape
        W = np.zeros((n_post, n_pre), np.int64)
        np.add.at(W, (self.j, self.sources()), self.sign * self.w)
        return W

    def modulate(self, value) -> None:
        v = np.asarray(value, float)
        if v.size != 1 or not np.isfinite(v).all():
            raise OptionError(f"the reward for '{self.rule.node}' must be one finite number (the host writes one "
                              f"{self.rule.fmt.reward_bits}-bit reward into the plasticity processor's memory), "
                              f"got shape {v.shape}",
                              node=self.rule.node)
        self.reward = reward_code(float(v.reshape(-1)[0]), self.rule.fmt)

    def step(self, pre: np.ndarray, post: np.ndarray) -> bool:
        """Sensors after one model step (pre (B, in), post (B, out) spikes); the PPU run when the
        period ends. True when the weights changed."""
        r = self.rule
        self.x *= r.decay_plus
        self.y *= r.decay_minus
        i = self.sources()
        self.causal += (self.x[:, i] * post[:, self.j]).mean(0)
        self.acausal += (self.y[:, self.j] * pre[:, i]).mean(0)
        self.x += pre
        self.y += post
        self.steps += 1
        if self.steps % r.period:
            return False
        self.run_ppu()
        return True

    def run_ppu(self) -> None:
        r = self.rule
        c, a = read_sensor(self.causal, r.fmt), read_sensor(self.acausal, r.fmt)
        self.causal[:] = 0.0
        self.acausal[:] = 0.0
        if r.rule == "spore":
            from .ppu_spore import update

            n_rows, n_cols = self.q.arr_label.shape     # the kernel draws for every slot of the rows
            self.theta, self.w, e, self.state = update(r, self.theta, self.w, c, a, self.e, self.reward, self.state,
                                                       self.rr * n_cols + self.cc, n_rows * n_cols)
        else:
            self.w, e = update_row(r, self.w, c, a, self.sign, self.e, self.reward)
        if e is not None:
            self.e = e
        self.runs += 1
        if r.fan_in and self.runs % r.rewire_runs == 0:
            n_pre = self.q.w6.shape[1]
            for col in range(self.col_neuron.size):
                at = np.flatnonzero(self.cc == col)                # its synapses, in row order
                at = at[np.argsort(self.rr[at], kind="stable")]
                w, lab = self.w[at].copy(), self.lab[at].copy()
                self.state, made = rewire(r, w, lab, n_pre, self.state)
                self.w[at], self.lab[at] = w, lab
                self.e[at[made]] = 0
            self._src = None


# ---------------------------------------------------------------- the emulator's hooks
def initial_state(program, rules: list[PPURule], batch: int, P: dict, reward=None) -> dict:
    """The learners' part of the emulator's state (empty without rules): ``ppu`` (one learner per
    rule, fresh weights) and ``P`` (the emulator's input kernels, :class:`.fast.Projection` by
    ``id(projection)``, the plastic ones rebuilt from the learners' weights when they change)."""
    if not rules:
        return {}
    learners = []
    for r in rules:
        q = program.projections[r.projection]
        lr = PPULearner(r, q, program.layer(q.post).circuits)
        lr.reset(batch)
        if reward is not None and r.third_factor == "reward":
            lr.modulate(reward)
        learners.append(lr)
    return {"ppu": learners, "P": dict(P)}


def record_weights(state: dict, record) -> dict[str, list]:
    """``{node: []}`` for the recorded plastic nodes; their learners append the model weights
    (post, pre) broadcast over the batch after every step."""
    out = {}
    for lr in state.get("ppu", []):
        if lr.rule.node in record:
            lr.trace = out[lr.rule.node] = []
    return out


def after_step(program, state: dict, ext: dict, cur_sub: dict, prev_sub: dict) -> None:
    """The learners after one emulator step: pre = the events the projection delivered this step
    (host events, the source layer's spikes, or last step's for a recurrent projection), post =
    the post layer's spikes; changed weights go into ``state['P']`` (integer weights, × the layer's
    LSB once per sum, as every projection's input: :class:`.fast.Projection`)."""
    st = state["st"]
    for lr in state["ppu"]:
        q = lr.q
        if q.pre in ext:
            pre = ext[q.pre]
        else:
            pre = (prev_sub[q.pre] if q.recurrent else cur_sub[q.pre]).max(axis=0)
        if lr.step(pre, st[q.post]["s"]):
            state["P"][id(q)] = fast.Projection(lr.weights(), program.layer(q.post).scale)
        if lr.trace is not None:
            B = pre.shape[0]
            lr.trace.append(np.broadcast_to(lr.weights() * lr.rule.lsb, (B, *q.w6.shape)).copy())


def set_rule(program, rules: list[PPURule], learners: list, projection: str | None, changes: dict,
             current: dict) -> list[PPURule]:
    """Rules with ``changes`` to the annotation of ``projection`` (None: every plastic projection),
    recompiled to the PPU's constants — the host writing new constants into PPU memory; the
    learners' state (weights, labels, eligibility, generator) is kept. ``current``: the rules as
    changed so far (node → Plasticity; starts from the graph's annotations, updated here).
    Returns the new rule list."""
    import dataclasses

    from nmc.plasticity import Plasticity, check_changes

    names = [r.node for r in rules]
    if projection is not None and projection not in names:
        raise OptionError(f"'{projection}' is not a plastic projection", node=projection,
                          hint=f"plastic projections: {', '.join(names) or 'none'}")
    check_changes(changes, projection)
    out = []
    for r in rules:
        if projection is not None and r.node != projection:
            out.append(r)
            continue
        base = current.get(r.node) or (program.graph.ann(r.node, Plasticity) if program.graph is not None else None)
        if base is None:
            raise OptionError("the program carries no graph with the rule to change", node=r.node)
        new = dataclasses.replace(base, **changes)
        why = refusal(new)
        if why is not None:
            raise OptionError(f"the changed rule cannot run on the plasticity processor: {why}", node=r.node)
        current[r.node] = new
        out.append(compile_rule(new, r.node, r.projection, r.lsb, program.dt, r.period, r.n_src, r.fmt))
    for lr, r in zip(learners, out):
        lr.rule = r
    return out
