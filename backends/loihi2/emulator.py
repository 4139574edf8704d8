"""nmc's vectorised emulator of Lava's bit-accurate Loihi fixed-point models.

It reproduces, bit for bit, Lava 0.10's ``PyLifModelBitAcc``
(``lava/proc/lif/models.py``), ``PyDenseModelBitAcc``
(``lava/proc/dense/models.py``) and ``PySparseModelBitAcc`` as they run under
``Loihi2SimCfg(select_tag="fixed_pt")``, on a batch at once (int64 numpy).

Synapse (Dense/Sparse), per step t, weights ``W`` int (out, in):

* at load: ``W = clip(W, −256, 255)`` for mixed signs (``[0, 255]`` excitatory,
  ``[−255, 0]`` inhibitory), then for **mixed signs the lowest bit is dropped**:
  ``W = (W >> 1) << 1`` (8-bit mantissa incl. sign);
* it first **sends** its buffer (computed at t−1; zero at t = 1), then receives
  the source's output s_t and computes ``acc = W · s_t`` (binary spikes:
  ``s ≠ 0`` counts as 1; graded: the integer payload) and
  ``buf = acc << weight_exp`` (``weight_exp ≥ 0``) or ``acc >> −weight_exp``
  (arithmetic shift: rounds toward −∞). So **every synapse adds one step**:
  what a neuron receives at step t was sent by its source at t − 1.

Neuron (LIF process; states u, v int, 24 bit), per step, ``a_in`` = sum of
the buffers of all incoming synapses:

* ``u ← wrap24(trunc0(u · (4096 − (du + 1)) / 2¹²) + (a_in << 6))``: Lava adds
  one to du (``ds_offset = 1``), so du = 4095 clears u every step; trunc0 is
  division rounding toward zero (``sign(x)·(|x| >> 12)``); wrap24: a value
  ``> 2²³`` has 2²⁴ subtracted, a value ``≤ −2²³`` has 2²⁴ added;
* ``v ← clip(trunc0(v · (4096 − dv) / 2¹²) + u + bias, −(2²³ − 1), 2²³ − 1)``
  with ``bias = bias_mant << bias_exp``;
* spike ``s = v > (vth << 6)`` (strictly greater), visible to the next
  synapse in the same step (and so to the next neuron at t + 1);
* reset: ``v ← 0`` where s (Lava's LIF; u is not reset), or, for reset by
  subtraction (nmc's ``LIFSubtract`` process in the emitted module),
  ``v ← v − (vth << 6)``.

The widths above are Lava's (the packaged ``hw_configs/loihi2.toml
[numerics]``); the emulator takes them from the program it runs
(``program.numerics``: 12 = ``decay_bits``, 6 = ``activation_shift`` /
``threshold_shift``, 24 = ``state_bits``, 8 = ``weight_bits``), so a program
lowered for a spec with other widths is emulated in those.

Graded units (sigma, graded, relu, delta) and their Dense/DelayDense links
follow :mod:`.graded`, in the same step: every unit and group reads the
buffers its synapses and links sent at the start of the step; every synapse and
link then receives what its source sent in this step.

Learning synapses (``program.meta["plasticity"]``, Lava's LearningDense) run
Lava's fixed-point learning engine as :mod:`.learning` writes it down: after the
synapse accumulated this step's input with the weights of the step before, its
traces, tag and weights are updated (per batch element); recording the plastic
projection gives ``<node>.w`` / ``<node>.w_int`` (its weights after each step).

Recorded ``v`` is the value after reset, as Lava's Monitor sees it; a unit's
record is its payload (``s`` and ``v`` both).
Inputs: ``x[t]`` (the payload of step t, t = 0..T−1) is what Lava's source
sends at its time step t + 1.

The ``emulator`` device (:class:`EmulatorDevice`) wraps :class:`LoihiEmulator`
with the float ⇄ Lava-integer conversion and latency alignment it shares with
the ``lava`` device (:class:`LoihiDevice`, :mod:`.devices.lava_device`).
"""
from __future__ import annotations

from functools import cached_property
from typing import Iterable

import numpy as np

from nmc.errors import OptionError, ShapeError

from ..base import Device, LaggedStreaming, validate_inputs
from .graded import link_buffer, link_receive, unit_state, unit_step
from .numerics import LoihiNumerics, packaged_numerics
from .payload import NOT_BINARY, NOT_INTEGER, OUT_OF_RANGE, payload_of
from .program import LoihiProgram, NeuronGroup, Synapse


def lava_weights(w: np.ndarray, bits: int | None = None) -> np.ndarray:
    """The weights Lava's fixed-point Dense actually uses (clip to ``bits`` (default: Lava's 8)
    by sign mode, then drop the lowest bit when signs are mixed)."""
    bits = packaged_numerics().weight_bits if bits is None else bits
    top = 2 ** bits - 1
    w = np.asarray(w).astype(np.int64)
    if w.size == 0 or w.min() >= 0:          # SignMode.EXCITATORY (also all-zero)
        return np.clip(w, 0, top)
    if w.max() <= 0:                          # SignMode.INHIBITORY
        return -np.clip(-w, 0, top)
    w = np.clip(w, -top - 1, top)             # SignMode.MIXED: `bits` incl. sign
    return (w >> 1) << 1


def lava_weights_f64(w: np.ndarray, bits: int | None = None, order: str = "K") -> np.ndarray:
    """:func:`lava_weights` as float64 in ``w``'s shape, the same values (integers below 2^53, so
    exact): one array, clipped and evened in place (``(w >> 1) << 1`` is ``2·floor(w / 2)``), no int64
    copy or temporaries beside it (a 10⁸-synapse matrix is 800 MB in float64). ``order``: its memory
    order (``"C"``: row-major whatever ``w``'s, converted in the one cast, not by a transposing copy after)."""
    bits = packaged_numerics().weight_bits if bits is None else bits
    top = 2 ** bits - 1
    w = np.asarray(w)
    x = w.astype(np.float64, order=order)
    if w.dtype.kind not in "biu":
        np.trunc(x, out=x)                    # as lava_weights' astype(int64): toward zero
    if w.size == 0 or w.min() >= 0:          # SignMode.EXCITATORY (also all-zero)
        return np.clip(x, 0, top, out=x)
    if w.max() <= 0:                          # SignMode.INHIBITORY
        return np.clip(x, -top, 0, out=x)
    np.clip(x, -top - 1, top, out=x)          # SignMode.MIXED: `bits` incl. sign
    x *= 0.5
    np.floor(x, out=x)
    x *= 2.0
    return x


def trunc0_shift(x: np.ndarray, k: int) -> np.ndarray:
    """x / 2^k rounded toward zero (Lava: ``sign(x) * (|x| >> k)``)."""
    return np.sign(x) * (np.abs(x) >> k)


def wrap24(x: np.ndarray, v_max: int | None = None) -> np.ndarray:
    """Lava's wrap of the current u (note the asymmetric bounds) at ``v_max`` = 2^(state_bits − 1)
    (default: Lava's, 2^23)."""
    v_max = packaged_numerics().v_max if v_max is None else v_max
    w = np.where(x > v_max, x - 2 * v_max, x)
    return np.where(w <= -v_max, x + 2 * v_max, w)


def shift_exp(acc: np.ndarray, e: int) -> np.ndarray:
    return np.left_shift(acc, e) if e > 0 else np.right_shift(acc, -e)


class _Group:
    def __init__(self, g: NeuronGroup, num: LoihiNumerics):
        self.g = g
        self.decay_shift, self.act_shift, self.v_max = num.decay_bits, num.activation_shift, num.v_max
        n = g.n
        self.du = np.broadcast_to(np.asarray(g.du, dtype=np.int64), (n,))
        self.dv = np.broadcast_to(np.asarray(g.dv, dtype=np.int64), (n,))
        self.bias = shift_exp_arr(np.asarray(g.bias_mant, dtype=np.int64).reshape(-1),
                                  np.asarray(g.bias_exp, dtype=np.int64).reshape(-1))
        self.vth = np.int64(g.vth) << num.threshold_shift
        # loop invariants (same arithmetic as written in the module docstring)
        self.ku = (num.decay_scale - (self.du + 1)).copy()
        self.kv = (num.decay_scale - self.dv).copy()
        self.subtract = g.reset == "subtract"

    def step(self, u, v, a_in):
        u = u * self.ku
        u = np.sign(u) * (np.abs(u) >> self.decay_shift)     # trunc0: toward zero
        u = u + (a_in << self.act_shift)
        vm = self.v_max
        if (u > vm).any() or (u <= -vm).any():                 # wrap24 (rare: only on overflow)
            u = wrap24(u, vm)
        v = v * self.kv
        v = np.sign(v) * (np.abs(v) >> self.decay_shift)
        v = np.minimum(np.maximum(v + u + self.bias, -vm + 1), vm - 1)
        s = v > self.vth
        if self.subtract:
            v = v - s * self.vth
        else:
            v = np.where(s, 0, v)
        return u, v, s


def shift_exp_arr(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    return np.where(e >= 0, np.left_shift(m, np.maximum(e, 0)), np.right_shift(m, np.maximum(-e, 0)))


class LoihiEmulator:
    """Runs a :class:`LoihiProgram` with Lava's fixed-point arithmetic.

    ``run(inputs, steps)``: ``inputs[name]`` int payloads (T, B, n); returns
    ``{group: {"s": (T, B, n) bool, "v": (T, B, n) int64, "u": ...}}`` in Lava
    time (row t = Lava time step t + 1).
    """

    def __init__(self, program: LoihiProgram):
        self.p = program
        self.num = program.numerics
        self.groups = {g.name: _Group(g, self.num) for g in program.groups}
        from .learning import Engine
        from .learning_format import LearningFormat

        # plastic synapses (Lava's LearningDense, :mod:`.learning`): weights per batch element, in the state,
        # learning in the widths the program was lowered for (the spec's [plasticity])
        fmt = LearningFormat.of_program(program)
        self.learn = {s.name: Engine(r, s.weights, fmt, self.num.decay_bits) for s in program.synapses
                      if (r := program.meta.get("plasticity", {}).get(s.name)) is not None}
        self.reward = 0.0       # the third factor a run starts with (the devices' modulate sets it)

    @cached_property
    def syn(self) -> list[tuple[Synapse, np.ndarray]]:
        """(synapse, Lava's weights (in, out) float64) per synapse, built on first use. Read by the
        numpy step alone (:meth:`initial_state`, :meth:`step`, so :meth:`run_numpy`), which runs
        what the compiled loops do not: programs with learning synapses, programs mixing LIF groups
        and graded units, ``run(compiled=False)`` (the tests' reference) and the streaming
        :class:`EmulatorDevice` (``reset`` + ``advance``); the compiled loop takes its tables from
        :func:`.fast.tables` and never builds this. Integer weights as float64: matmuls
        go through BLAS and stay exact (|Σ w·x| < 2^53 for 8-bit weights and payloads up to 24 bits
        over < 2^21 inputs; wider weights leave fewer inputs)."""
        return [(s, lava_weights_f64(s.weights, self.num.weight_bits).T.copy()) for s in self.p.synapses]

    @cached_property
    def links(self) -> list:
        return [(k, lava_weights_f64(k.weights, self.num.weight_bits).T.copy()) for k in self.p.links]

    def run(self, inputs: dict[str, np.ndarray], steps: int, compiled: bool | None = None,
            record=None) -> dict[str, dict[str, np.ndarray]]:
        """``compiled``: use the numba loop of :mod:`.fast` or :mod:`.fast_graded` (default: when numba is installed).
        ``record``: the groups to return (default: all)."""
        from . import fast, fast_graded

        # numba: LIF-only programs without learning synapses (.fast); graded units and links alone (.fast_graded)
        if not self.p.units and not self.learn and (compiled or (compiled is None and fast.available())):
            return fast.run(self, inputs, steps, record)
        if fast_graded.applies(self) and (compiled or (compiled is None and fast_graded.available())):
            return fast_graded.run(self, inputs, steps, record)
        rec = self.run_numpy(inputs, steps)
        return rec if record is None else {k: v for k, v in rec.items() if k in set(record)}

    def run_numpy(self, inputs: dict[str, np.ndarray], steps: int) -> dict[str, dict[str, np.ndarray]]:
        """The run through :meth:`step`, step by step: what :meth:`run` takes where the compiled loops
        do not apply (learning synapses, LIF groups beside graded units, ``compiled=False``, no numba)."""
        B = next(iter(inputs.values())).shape[1] if inputs else 1
        state = self.initial_state(B)
        rec = {k: {"s": np.zeros((steps, B, g.g.n), bool), "v": np.zeros((steps, B, g.g.n), np.int64),
                   "u": np.zeros((steps, B, g.g.n), np.int64)} for k, g in self.groups.items()}
        rec.update({u.name: {"s": np.zeros((steps, B, u.n), np.int64)} for u in self.p.units})
        rec.update({k: {"w": np.zeros((steps, B, *e.w0.shape), np.int64)} for k, e in self.learn.items()})
        for t in range(steps):
            x_t = {name: x[t] if t < x.shape[0] else np.zeros_like(x[0]) for name, x in inputs.items()}
            for k, (u, v, sp) in self.step(state, x_t).items():
                r = rec[k]
                if "u" in r:
                    r["s"][t], r["v"][t], r["u"][t] = sp, v, u
                else:
                    r["s"][t] = sp
            for k in self.learn:                    # a plastic synapse's weights after the step
                rec[k]["w"][t] = state["learn"][k]["w"]
        for u in self.p.units:
            rec[u.name]["v"] = rec[u.name]["s"]
        return rec

    def initial_state(self, batch: int) -> dict:
        """``u_init`` currents, ``v_init`` voltages, empty synapse buffers (Lava's state before step 1)."""
        st = {"u": {k: np.broadcast_to(np.asarray(g.g.u_init, np.int64).reshape(-1), (batch, g.g.n)).copy()
                      for k, g in self.groups.items()},
                "v": {k: np.broadcast_to(np.asarray(g.g.v_init, np.int64).reshape(-1), (batch, g.g.n)).copy()
                      for k, g in self.groups.items()},
                "buf": {s.name: np.zeros((batch, s.weights.shape[0]), np.int64) for s, _ in self.syn}}
        if self.learn:                              # only then (state trees of frozen programs unchanged)
            st["learn"] = {k: e.initial_state(batch, self.reward) for k, e in self.learn.items()}
        if self.p.units:                            # only then (state trees of LIF-only programs unchanged)
            st["unit"] = {u.name: unit_state(u, batch) for u in self.p.units}
            st["link"] = {k.name: link_buffer(k, batch) for k, _ in self.links}
        return st

    def step(self, state: dict, x_t: dict[str, np.ndarray]) -> dict[str, tuple]:
        """One Lava time step from ``state`` (updated in place); ``x_t[input]`` (B, n)
        int payloads. Returns ``{group: (u, v, spikes)}`` after the step."""
        B = next(iter(state["u"].values())).shape[0] if state["u"] else \
            next(iter(state["link"].values())).shape[0] if state.get("link") else 1
        a_in = {k: np.zeros((B, g.g.n), np.int64) for k, g in self.groups.items()}
        a_in.update({u.name: np.zeros((B, u.n), np.int64) for u in self.p.units})
        for s, _ in self.syn:                       # synapses send last step's buffer
            a_in[s.dst] += state["buf"][s.name]
        for k, _ in self.links:                     # and so do the links
            a_in[k.dst] += state["link"][k.name][:, :, 0]
        out: dict[str, np.ndarray] = {}
        res = {}
        for k, g in self.groups.items():
            u, v, sp = g.step(state["u"][k], state["v"][k], a_in[k])
            state["u"][k], state["v"][k] = u, v
            out[k] = sp
            res[k] = (u, v, sp)
        for u in self.p.units:
            out[u.name] = unit_step(u, state["unit"][u.name], a_in[u.name])
            res[u.name] = (None, out[u.name], out[u.name])
        out.update(x_t)
        for s, wt in self.syn:                      # then receive this step's source output
            x = out[s.src].reshape(B, -1)
            x = (x != 0).astype(np.float64) if s.num_message_bits == 0 else x.astype(np.float64)
            if s.name in self.learn:                # learning: this step's weights, then the update
                lst = state["learn"][s.name]
                state["buf"][s.name] = shift_exp(self.learn[s.name].accumulate(lst, x), s.weight_exp)
                self.learn[s.name].update(lst, x, out[s.dst].reshape(B, -1))
                continue
            state["buf"][s.name] = shift_exp((x @ wt).astype(np.int64), s.weight_exp)
        for k, wt in self.links:
            state["link"][k.name] = link_receive(k, wt, state["link"][k.name], out[k.src].reshape(B, -1))
        return res


# ------------------------------------------------------------------ devices
def _payload(program: LoihiProgram, inputs, steps, batched):
    """Inputs checked against the program's IO map, then as Lava payloads: integers, 0/1 for
    binary ports, within ``bits`` for graded ones → ``({input: (T, B, size) int64}, T, batched)``."""
    arrs, T, batched = validate_inputs(program.io, inputs, steps, batched)
    out = {}
    for p in program.inputs:
        a = arrs[p.name]
        x, code = payload_of(a, p.bits)              # one pass: the checks and the int64 payloads
        if code == NOT_INTEGER:
            raise ShapeError("Loihi 2 inputs must be integers (0/1 spikes, or graded payloads with input_bits)",
                             node=p.name, hint="threshold or scale the input, or compile with --option input_bits=8")
        if code == NOT_BINARY:
            raise ShapeError("input has values other than 0/1 but the program was compiled for binary spikes",
                             node=p.name, hint="compile with --option input_bits=8 for graded spikes")
        if code == OUT_OF_RANGE:
            raise ShapeError(f"graded input exceeds {p.bits}-bit payloads", node=p.name,
                             limit=2 ** (p.bits - 1) - 1, actual=float(np.abs(a).max()))
        out[p.name] = x.reshape(a.shape[0], a.shape[1], -1)
    return out, T, batched


class LoihiDevice(Device):
    """Shared conversion (float ⇄ Lava integers, latency alignment) for both devices."""

    def __init__(self, program: LoihiProgram, align: bool = True):
        self.program = program
        self.align = align

    def reset(self, batch: int = 1) -> None:
        """Every run starts from reset (zero state); nothing is kept between runs."""

    @property
    def takes_modulator(self) -> bool:
        return any(r.get("third") for r in self.program.meta.get("plasticity", {}).values())

    def modulate(self, value) -> None:
        """The third factor of the learning synapses (:mod:`.learning`) from now on: a reward (scalar or
        one per batch element) or an error per post neuron ((out,) or (B, out)); ``run`` starts with the
        last one set, a stream uses it from the next step."""
        from nmc.errors import OptionError

        if not self.takes_modulator:
            return super().modulate(value)
        v = np.asarray(value, np.float64)
        if v.ndim > 2 or not np.all(np.isfinite(v)):
            raise OptionError(f"the third factor must be finite, a scalar, (B,) or (B, out); got shape {v.shape}")
        self._reward = v
        st = getattr(self, "_state", None)
        if st is not None and "learn" in st:
            for k, r in self.program.meta["plasticity"].items():
                if r.get("third"):
                    st["learn"][k]["r"] = np.broadcast_to(v, st["learn"][k]["r"].shape).astype(np.float64)

    def _reward_payload(self, batch: int, steps: int) -> dict[str, np.ndarray]:
        """``{"<synapse>.reward": (steps, B) y2}`` of a run from the last reward set (:func:`.learning.reward_payload`)."""
        from .learning import reward_payload

        out = {}
        for k, x in self.program.meta.get("plasticity", {}).items():
            if x.get("third"):
                syn = next(s for s in self.program.synapses if s.name == k)
                shape = (batch,) if x["third"] == "reward" else (batch, syn.weights.shape[0])
                r = np.broadcast_to(np.asarray(getattr(self, "_reward", 0.0), np.float64), shape)
                out[f"{k}.reward"] = reward_payload(r, np.zeros(shape), steps, x["baseline_rate"])[0]
        return out

    def _simulate(self, payload, steps, need):  # pragma: no cover - interface
        """Run; return ``{"<group>.s"|"<group>.v": (steps, B, n)}`` for at least the groups in ``need``."""
        raise NotImplementedError

    # ------------------------------------------- streaming helpers (both devices)
    def _stream_payload(self, inputs, n: int) -> dict[str, np.ndarray]:
        """A window's inputs (n, B, *shape), checked as ``run`` checks them → Lava payloads (n, B, size)."""
        payload, _, _ = _payload(self.program, inputs, n, True)
        return payload

    def _stream_outputs(self, n: int, spikes_of, v_int_of) -> dict[str, np.ndarray]:
        """Outputs in ``run``'s units from per-group (n, B, size) spikes / integer voltages."""
        out = {}
        for o in self.program.outputs:
            if o.read == "graded":                  # a unit: payload / scale
                a = np.asarray(v_int_of(o.src)) / float(self.program.unit(o.src).scale)
                out[o.name] = (a if o.readout_w is None else o.read_out(a.reshape(n, self.batch, -1))).reshape(
                    n, self.batch, *o.shape)
                continue
            g = self.program.group(o.src)
            if o.read == "spikes":
                a = np.asarray(spikes_of(o.src)).astype(np.float64)
            else:
                a = np.asarray(v_int_of(o.src)) / np.asarray(g.v_scale, float).reshape(-1)
            out[o.name] = (a if o.readout_w is None else o.read_out(a.reshape(n, self.batch, -1))).reshape(
                    n, self.batch, *o.shape)
        return out

    def run(self, inputs, steps: int | None = None, record: Iterable[str] = (), batched: bool | None = None):
        payload, T, batched = _payload(self.program, inputs, steps, batched)
        record = list(record)
        names = {g.name for g in self.program.groups} | {u.name for u in self.program.units}
        # a graph node mapped onto graded units (an SSM) is recorded as its output unit: ``<node>.out``
        by_node = {}
        for u in self.program.units:
            if u.node and u.node not in names and u.latency >= by_node.get(u.node, (None, -1))[1]:
                by_node[u.node] = (u.name, u.latency)
        alias = {r: by_node[r][0] for r in record if r in by_node}
        record = [alias.get(r, r) for r in record]
        # a plastic projection (.learning) is recorded as its synapse's weights: ``<node>.w``, ``<node>.w_int``
        plastic = {r["node"]: k for k, r in self.program.meta.get("plasticity", {}).items()}
        weights = [r for r in record if r in plastic]
        record = [r for r in record if r not in plastic]
        for r in record:
            if r not in names:
                raise OptionError(f"cannot record '{r}' on loihi2", node=r,
                                  hint=f"neuron layers: {', '.join(sorted(names))}")
        extra = self.program.max_latency if self.align else 0
        need = {o.src for o in self.program.outputs} | set(record) | {plastic[r] for r in weights}
        raw = self._simulate(payload, T + extra, need)
        res: dict[str, np.ndarray] = {}
        for g in self.program.groups:
            if g.name not in need:
                continue
            lat = g.latency if self.align else 0
            s = raw[f"{g.name}.s"][lat:lat + T].astype(np.float64)
            vi = raw[f"{g.name}.v"][lat:lat + T]
            v = vi / np.asarray(g.v_scale, float).reshape(-1)
            res[g.name] = (s, v, vi)
        for u in self.program.units:               # graded units: payload, float = payload / scale
            if u.name not in need:
                continue
            lat = u.latency if self.align else 0
            vi = raw[f"{u.name}.s"][lat:lat + T]
            if vi.dtype == np.float64 and u.name not in record:   # the compiled loop's record (integers as
                f = vi                                             # float64), divided in place: no second
                f /= float(u.scale)                                # array; its v_int is not asked for
                res[u.name] = (f, f, None)
                continue
            res[u.name] = (vi / float(u.scale),) * 2 + (vi.astype(np.int64, copy=False),)
        out = {}
        for o in self.program.outputs:
            s, v, _ = res[o.src]
            a = s if o.read == "spikes" else v
            if o.readout_w is not None:             # a linear readout on the host, float64
                a = o.read_out(a.reshape(T, -1, np.shape(o.readout_w)[0]))
            out[o.name] = a.reshape(T, -1, *o.shape)
        for r in weights:                           # aligned with the post group: its row t holds the update
            syn = plastic[r]                        # of the step whose post spikes are the reference's step t
            dst = next(s.dst for s in self.program.synapses if s.name == syn)
            lat = self.program.latency_of(dst) if self.align else 0
            wi = raw[f"{syn}.w"][lat:lat + T]
            out[f"{r}.w_int"] = wi
            out[f"{r}.w"] = wi * float(self.program.meta["plasticity"][syn]["w_lsb"])
        back = {v: k for k, v in alias.items()}
        for r in record:
            s, v, vi = res[r]
            if r not in {g.name for g in self.program.groups}:
                shp = (T, -1, *self.program.unit(r).shape)
                key = back.get(r, r)
                out[f"{key}.out"], out[f"{key}.v_int"] = v.reshape(shp), vi.reshape(shp)
                continue
            g = self.program.group(r)
            shp = (T, -1, *g.shape)
            out[f"{r}.out"] = (s if g.spiking else v).reshape(shp)
            out[f"{r}.v"] = v.reshape(shp)
            out[f"{r}.v_int"] = vi.reshape(shp)
            if g.spiking:
                out[f"{r}.spikes"] = s.reshape(shp)
        if not batched:
            out = {k: a[:, 0] for k, a in out.items()}
        return out


class EmulatorDevice(LaggedStreaming, LoihiDevice):
    """``run``: the whole recording (numba loop when available); ``reset(B)`` +
    ``advance``: window by window with Lava's state carried (numpy step,
    :class:`~..base.LaggedStreaming` look-ahead for the latency alignment)."""

    name = "emulator"
    _stream_state = ("_state",)

    @property
    def batch_slots(self):
        """Where the streaming state keeps its batch rows (``nmc.runtime.serve.batching``); None for a
        program with learning synapses (one step counter and random stream for the whole batch)."""
        return None if self.program.meta.get("plasticity") else {"_state": 0}

    def _simulate(self, payload, steps, need):
        emu = LoihiEmulator(self.program)
        emu.reward = getattr(self, "_reward", 0.0)
        rec = emu.run(payload, steps, record=need)
        return {f"{k}.{x}": r[x] for k, r in rec.items() for x in ("s", "v", "w") if x in r}

    def reset(self, batch: int = 1) -> None:
        """Initial (Lava reset) state for streaming; ``run`` always starts from it anyway."""
        if getattr(self, "_emu", None) is None:
            self._emu = LoihiEmulator(self.program)
        self._emu.reward = getattr(self, "_reward", 0.0)
        self.batch = int(batch)
        self._state = self._emu.initial_state(self.batch)

    def _device_steps(self, inputs, n: int) -> dict[str, np.ndarray]:
        payload = self._stream_payload(inputs, n)
        rows: dict[str, list] = {o.src: [] for o in self.program.outputs}
        for t in range(n):
            res = self._emu.step(self._state, {k: x[t] for k, x in payload.items()})
            for g in rows:
                _, v, sp = res[g]
                rows[g].append((sp, v))
        return self._stream_outputs(n, lambda g: np.stack([r[0] for r in rows[g]]),
                                    lambda g: np.stack([r[1] for r in rows[g]]))
