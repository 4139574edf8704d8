"""Lava's floating-point CPU simulator (``Loihi2SimCfg(select_tag="floating_pt")``)
on a LIF MLP built directly from Lava's processes: RingBuffer source → Dense →
LIF → Dense → LIF → RingBuffer sink (the peer for the ``lif_mlp`` workload).

Lava's float LIF: u ← u·(1 − du) + a_in; v ← v·(1 − dv) + u + bias; spike and
v ← 0 when v > vth. nmc's normalised LIF (Euler, r = τ/dt) is the same with
du = 1 (no synaptic current), dv = dt/τ, bias = the Affine bias. Lava's Dense
delivers spikes one step later per layer, so outputs are compared by spike
count (:func:`bench.peers.agreement`), not step by step.

Run in a child process (Lava starts worker processes; the parent kills the
process group)::

    python -m bench.lava_float NET.npz OUT.npz --steps N

NET.npz: ``x`` (T, n_in) 0/1, ``w1, b1, dv1, w2, b2, dv2``. OUT.npz: ``s`` (N, n_out).
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("net")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, required=True)
    a = ap.parse_args(argv)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    z = np.load(a.net)
    x = z["x"][: a.steps].T.astype(float)                      # (n_in, T)
    src = Source(data=x)
    d1 = Dense(weights=z["w1"])
    l1 = LIF(shape=(z["w1"].shape[0],), du=1.0, dv=z["dv1"], vth=1.0, bias_mant=z["b1"])
    d2 = Dense(weights=z["w2"])
    l2 = LIF(shape=(z["w2"].shape[0],), du=1.0, dv=z["dv2"], vth=1.0, bias_mant=z["b2"])
    sink = Sink(shape=(z["w2"].shape[0],), buffer=a.steps)
    src.s_out.connect(d1.s_in)
    d1.a_out.connect(l1.a_in)
    l1.s_out.connect(d2.s_in)
    d2.a_out.connect(l2.a_in)
    l2.s_out.connect(sink.a_in)
    src.run(condition=RunSteps(num_steps=a.steps), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
    s = sink.data.get().T
    src.stop()
    np.savez(a.out, s=s)


if __name__ == "__main__":
    main()
