"""Graded-spike units and links of a Loihi 2 program: Lava's fixed-point sigma-delta and graded processes.

Besides LIF groups (:mod:`.emulator`), a :class:`~.program.LoihiProgram` may hold
**units** (:class:`GradedUnit`, one Lava process each) that send integer graded
payloads, and **links** (:class:`GradedLink`, one Lava ``Dense`` or ``DelayDense``
each) into them. nmc's emulator reproduces, bit for bit, the fixed_pt models of
Lava 0.10 (``lava/proc/sdn/models.py``, ``lava/proc/graded/models.py``,
``lava/proc/dense/models.py``) as they run under
``Loihi2SimCfg(select_tag="fixed_pt")``; every value is an integer (int64 here,
int32 in Lava: the mapping keeps every value below 2^31, see :mod:`.ssm`).

Unit kinds, per step, ``a`` = the sum of this step's link buffers into the unit:

* ``sigma`` (``Sigma``): ``σ ← σ + a``; sends ``σ`` (an accumulator, no decay:
  a decay is a negative feedback link from the unit to itself);
* ``graded`` (``GradedVec``): sends ``a·[|a| > vth]`` (vth = 0: ``a`` itself);
* ``relu`` (``GradedReluVec``): sends ``a·[a > vth]`` (vth = 0: ReLU);
* ``delta`` (``Delta``, ``cum_error`` off, ``spike_exp = state_exp = 0``):
  ``d = a − act + residue``; sends ``s = d·[|d| ≥ vth]``; ``residue ← d − s``;
  ``act ← a``. By induction ``residue = act − Σs``: it sends the change of
  its input since what the receiver holds, once that change reaches vth (a
  receiving ``sigma`` reconstructs ``Σs``).

Links (weights ``W`` int (n_dst, n_src), one sign per link, so Lava keeps all
8 bits: ``[0, 255]`` or ``[−255, 0]``; ``num_message_bits`` 0 = binary spikes,
> 0 graded payloads):

* ``Dense`` (``delay == 0``): each step it first **sends** its buffer (zero at
  step 1), then receives the source's output ``s_t`` and computes
  ``buf = (W·s_t) << e`` (``e ≥ 0``) or ``(W·s_t) >> −e`` (arithmetic shift:
  rounds toward −∞); the product is exact (int32 in Lava);
* ``DelayDense`` (``delay = d ≥ 1``, the same for every synapse of the link):
  a buffer of ``d + 1`` columns; each step it sends column 0, clears it,
  rotates the columns left by one and adds the shifted product to column d:
  what a source sends at step t arrives at step t + 1 + d.

So a link from a unit to itself closes a one-step loop (``σ_t`` sees
``W·σ_{t−1}``), and each link on a path adds one step (plus its delay).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: unit kinds and the Lava process each becomes (the emitted lava_net.py holds the same table)
UNIT_KINDS = {"sigma": "lava.proc.sdn.process.Sigma", "graded": "lava.proc.graded.process.GradedVec",
              "relu": "lava.proc.graded.process.GradedReluVec", "delta": "lava.proc.sdn.process.Delta"}


@dataclass
class GradedUnit:
    name: str
    kind: str              # a key of UNIT_KINDS
    shape: tuple
    vth: int = 0           # graded/relu: send when |a| > vth (a > vth); delta: when |d| >= vth
    scale: float = 1.0     # float value = payload / scale
    latency: int = 1       # Lava steps behind the float reference
    node: str = ""         # the graph node it implements (errors, reports)

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class GradedLink:
    name: str
    src: str               # InputPort, NeuronGroup or GradedUnit name
    dst: str               # GradedUnit name
    weights: np.ndarray    # int32 (n_dst, n_src), one sign, |w| <= 255
    weight_exp: int = 0
    num_message_bits: int = 24
    delay: int = 0         # 0: Dense; d >= 1: DelayDense, every synapse delayed by d


def shift_exp(acc: np.ndarray, e: int) -> np.ndarray:
    """Lava's Dense exponent: ``acc << e`` for e > 0, else ``acc >> −e`` (rounds toward −∞)."""
    return np.left_shift(acc, e) if e > 0 else np.right_shift(acc, -e)


def unit_state(u: GradedUnit, batch: int) -> dict[str, np.ndarray]:
    """A unit's Lava state before step 1 (arrays only: the streaming server slices them by batch row)."""
    z = lambda: np.zeros((batch, u.n), np.int64)  # noqa: E731
    return {"sigma": z()} if u.kind == "sigma" else {"act": z(), "residue": z()} if u.kind == "delta" else {}


def unit_step(u: GradedUnit, st: dict, a: np.ndarray) -> np.ndarray:
    """One step of unit ``u`` (state ``st`` updated in place) on input ``a``; returns what it sends."""
    k, vth = u.kind, u.vth
    if k == "sigma":
        st["sigma"] = st["sigma"] + a
        return st["sigma"]
    if k == "graded":
        return a * (np.abs(a) > vth)
    if k == "relu":
        return a * (a > vth)
    d = a - st["act"] + st["residue"]                    # delta
    s = np.where(np.abs(d) >= vth, d, 0)
    st["residue"] = d - s
    st["act"] = a
    return s


def link_buffer(link: GradedLink, batch: int) -> np.ndarray:
    """A link's buffer before step 1: (batch, n_dst, delay + 1) zeros; column 0 is sent next."""
    return np.zeros((batch, link.weights.shape[0], link.delay + 1), np.int64)


def link_receive(link: GradedLink, wt: np.ndarray, buf: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The buffer after ``link`` (weights ``wt`` = W.T as float64, exact below 2^53) received ``s`` (B, n_src)."""
    x = (s != 0).astype(np.float64) if link.num_message_bits == 0 else s.astype(np.float64)
    acc = shift_exp((x @ wt).astype(np.int64), link.weight_exp)
    buf = buf.copy()
    buf[:, :, 0] = 0
    buf = np.roll(buf, -1, axis=2)
    buf[:, :, link.delay] += acc
    return buf
