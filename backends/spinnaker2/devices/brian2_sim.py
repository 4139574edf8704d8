"""The ``brian2`` device: the same SpiNNaker 2 program built in Brian2.

Brian2 is the engine behind py-spinnaker2's own software backend; this device
rebuilds the lowered program as Brian2 objects and runs it with Brian2's
numpy code generator, in float32 (``prefs.core.default_float_dtype``), so its
spike trains can be compared exactly with nmc's emulator:

* each population is a ``NeuronGroup`` whose per-step update runs in the
  ``groups`` slot (``run_regularly``): ``v = alpha_decay*v + syn + i_offset``
  (``lif_no_delay``) or the current-based update in the chip's order;
* ``threshold='v > threshold'``; reset ``v -= threshold`` or ``v = v_reset``;
* each projection is a ``Synapses`` object with ``on_pre: syn_post += w``:
  a spike at step t is added in step t's ``synapses`` slot, after the update,
  so it acts at t + 1 — the chip's one-step latency; a synaptic delay d
  (``lif``/``lif_curr_exp`` models) is the Synapses' ``delay`` = d·dt;
* inputs are ``SpikeGeneratorGroup``s emitting at step t.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.errors import DeviceError, OptionError
from ...base import Device, ReplayStreaming, validate_inputs


class Brian2Device(ReplayStreaming, Device):
    """Rebuilt per run: a session streams it by replay (:class:`~...base.ReplayStreaming`)."""

    name = "brian2"
    #: importing brian2 installs a SIGINT handler (main thread only) and Brian2 keeps global state
    main_thread_only = True

    def __init__(self, program, curr_exp_order: str | None = None, **_):
        import importlib.util

        if importlib.util.find_spec("brian2") is None:  # found, not imported: see Device.main_thread_only
            raise DeviceError("the brian2 device needs the brian2 package", hint="pip install brian2")
        self.p = program
        self.order = curr_exp_order or program.curr_exp_order

    def run(self, inputs, steps=None, record: Iterable[str] = (), align: bool = True):
        import brian2 as b2

        if any(p.model in ("egru_kernel", "ssm_kernel") for p in self.p.populations):
            raise DeviceError("Brian2 cannot run generated EGRU or SSM kernels", hint="use --device emulator")
        arrs, T, batched = validate_inputs(self.p.io, inputs, steps)
        record = list(record)
        for r in record:     # the IO map's recorded ports: the populations the lowering placed
            self.p.io.record(r)
        if next(iter(arrs.values())).shape[1] != 1:
            raise OptionError("the brian2 device runs one sample at a time", hint="pass (T, *shape) inputs")
        arrs = {k: self.p.input_events(k, a) for k, a in arrs.items()}
        for k, a in arrs.items():
            if np.any(a > 1):
                raise DeviceError("Brian2's SpikeGeneratorGroup takes one spike per neuron and step: graded "
                                  f"inputs ({int(a.max())} events in one step) run on the emulator", node=k,
                                  hint="use --device emulator")
        L = max(p.latency for p in self.p.populations)
        total = T + L
        b2.prefs.codegen.target = "numpy"
        b2.prefs.core.default_float_dtype = np.float32
        try:
            b2.start_scope()
            dt = self.p.sys_tick_s * b2.second
            net = b2.Network()
            groups, mons = {}, {}
            for pop in self.p.populations:
                if pop.model == "spike_list" and pop.constant_events:
                    if pop.constant_events > 1:
                        raise DeviceError("Brian2's SpikeGeneratorGroup takes one spike per neuron and step: a bias "
                                          f"source with {pop.constant_events} events per step runs on the emulator",
                                          node=pop.name, hint="use --device emulator")
                    a = np.zeros((total, 1))
                    a[pop.latency:] = 1
                    t, i = np.nonzero(a)
                    grp = b2.SpikeGeneratorGroup(pop.size, i, t * dt, dt=dt, name=f"in_{len(groups)}")
                elif pop.model == "spike_list":
                    a = arrs[next(k for k, v in self.p.inputs.items() if v == pop.name)][:, 0].reshape(-1, pop.size)
                    t, i = np.nonzero(a)
                    grp = b2.SpikeGeneratorGroup(pop.size, i, t * dt, dt=dt, name=f"in_{len(groups)}")
                else:
                    cur = pop.model in ("lif_curr_exp_no_delay", "lif_curr_exp")
                    eqs = "v : 1\nsyne : 1\nsyni : 1\nalpha_decay : 1 (constant)\ni_offset : 1 (constant)\n" \
                          "threshold : 1 (constant)\nv_reset : 1 (constant)\n"
                    if cur:
                        eqs += "ie : 1\nii : 1\nexc_decay : 1 (constant)\ninh_decay : 1 (constant)\n"
                        if self.order == "chip":
                            upd = ("ie = exc_decay*ie + syne\nii = inh_decay*ii + syni\n"
                                   "v = alpha_decay*v + (ie + ii) + i_offset")
                        else:
                            upd = ("v = alpha_decay*v + (ie + ii) + i_offset\nie = exc_decay*ie + syne\n"
                                   "ii = inh_decay*ii + syni")
                    else:
                        upd = "v = alpha_decay*v + (syne + syni) + i_offset"
                    reset = "v -= threshold" if pop.reset == "reset_by_subtraction" else "v = v_reset"
                    grp = b2.NeuronGroup(pop.size, eqs, threshold="v > threshold", reset=reset, method=None, dt=dt,
                                         name=f"pop_{len(groups)}")
                    grp.run_regularly(upd + "\nsyne = 0\nsyni = 0", when="groups")
                    for k, v in pop.params.items():
                        setattr(grp, "v" if k == "v_init" else k, np.asarray(v, np.float32))
                    mons[pop.name] = (b2.SpikeMonitor(grp), b2.StateMonitor(grp, "v", record=True, when="end"))
                    net.add(*mons[pop.name])
                groups[pop.name] = grp
                net.add(grp)
            for q in self.p.projections:
                post, pre = np.nonzero(q.weights)
                if post.size == 0:
                    continue
                w = q.weights[post, pre].astype(np.float32)
                dl = np.zeros(post.size) if q.delay is None else np.asarray(q.delay)[post, pre]
                for sign, target in ((w > 0, "syne"), (w < 0, "syni")):
                    if not sign.any():
                        continue
                    syn = b2.Synapses(groups[q.pre], groups[q.post], "w : 1 (constant)",
                                      on_pre=f"{target}_post += w", dt=dt)
                    syn.connect(i=pre[sign], j=post[sign])
                    syn.w = w[sign]
                    if q.delay is not None:  # delay d: the spike of step t acts at t + d + 1
                        syn.delay = dl[sign] * dt
                    net.add(syn)
            net.run(total * dt)
        except Exception as e:
            raise DeviceError(f"the Brian2 run failed: {type(e).__name__}: {e}") from e
        finally:
            b2.prefs.core.default_float_dtype = np.float64

        def spikes(name):
            pop = self.p.pop(name)
            mon = mons[name][0]
            out = np.zeros((total, pop.size), np.float32)
            steps_ = np.rint(np.asarray(mon.t / dt)).astype(int)
            out[steps_, np.asarray(mon.i)] = 1
            return out[pop.latency: pop.latency + T] if align else out

        def volts(name):
            pop = self.p.pop(name)
            v = np.asarray(mons[name][1].v).T.astype(np.float64) * pop.scale
            return v[pop.latency: pop.latency + T] if align else v

        res = {}
        for o, name in self.p.outputs.items():
            y = spikes(name) if self.p.output_kind[o] == "spikes" else volts(name)
            res[o] = self.p.read_out(o, y).reshape(-1, *self.p.io.output(o).shape)
        for r in record:
            shp = self.p.io.record(r).shape
            res[f"{r}.spikes"] = spikes(r).reshape(-1, *shp)
            res[f"{r}.v"] = volts(r).reshape(-1, *shp)
        if batched:
            res = {k: v[:, None] for k, v in res.items()}
        return res
