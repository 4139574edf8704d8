"""Streaming worker of the loihi2 ``lava`` device: one Lava network kept running.

Run by :mod:`nmc.backends.loihi2.lava_stream` as a child Python in its own
process session (``python lava_stream_worker.py ROOT``; it imports Lava and the
bundle's ``ROOT/lava_net.py``, not nmc). It builds the program of
``ROOT/program.json`` with Lava's own I/O processes — one
``lava.proc.io.injector.Injector`` per input, one
``lava.proc.io.extractor.Extractor`` on every neuron group's spikes — LIF /
LIFSubtract and Dense / Sparse as ``lava_net.build`` does, compiles it once
for ``Loihi2SimCfg(select_tag="fixed_pt")`` (``--hw``: ``Loihi2HwCfg``) and
then serves requests, one at a time, read from stdin and answered on stdout
(each message: u32 length + pickle; the parent is the only peer):

* ``("run", {input: (n, size) int}, [groups whose v is wanted])`` → ``{"<g>.s":
  (n, size) int64, "<g>.v": (n, size) int64}``: n more Lava time steps, the
  inputs sent through the injectors, spikes taken from the extractors (in
  chunks of at most ``CHUNK`` steps, the channels' capacity); when v is wanted
  the steps run one at a time and ``v`` is read after each;
* ``("save",)`` / ``("restore",)``: get / set every state Var (LIF ``u``, ``v``;
  Dense/Sparse ``a_buff``) — the parent's look-ahead (see
  ``nmc.backends.base.LaggedStreaming``);
* ``("stop",)``: stop the Lava runtime and exit.

Errors are answered as ``("error", text)``. The parent bounds every wait and
kills this process group when it is done or a wait runs out.
"""
import pathlib
import pickle
import struct
import sys
import traceback

import numpy as np

CHUNK = 32
_LEN = struct.Struct("<I")


def _read(f):
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    return pickle.loads(f.read(n))


def _write(f, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)) + data)
    f.flush()


class Net:
    def __init__(self, root: pathlib.Path, hw: bool):
        sys.path.insert(0, str(root))
        import lava_net
        from lava.proc.dense.process import Dense
        from lava.proc.io.extractor import Extractor
        from lava.proc.io.injector import Injector
        from lava.proc.lif.process import LIF
        from lava.proc.sparse.process import Sparse
        from scipy.sparse import csr_matrix

        prog = lava_net.load_program(root)
        self.inj, self.ext, self.groups, self.syns, exc = {}, {}, {}, {}, {}
        self.sizes = {}
        from lava.proc.io.extractor import PyLoihiExtractorModel
        from lava.proc.io.injector import PyLoihiInjectorModel

        for p in prog["inputs"]:
            n = int(np.prod(p["shape"]))
            self.inj[p["name"]] = Injector(shape=(n,), buffer_size=CHUNK)
            exc[self.inj[p["name"]]] = PyLoihiInjectorModel  # untagged models: named for select_tag="fixed_pt"
            self.sizes[p["name"]] = n
        for g in prog["groups"]:
            n = int(np.prod(g["shape"]))
            cls, model = (LIF, None) if g["reset"] != "subtract" else lava_net._subtract_classes()
            proc = cls(shape=(n,), du=g["du"], dv=g["dv"], vth=int(g["vth"]),
                       bias_mant=np.asarray(g["bias_mant"]).reshape(-1),
                       bias_exp=np.asarray(g["bias_exp"]).reshape(-1),
                       v=np.broadcast_to(np.asarray(g["v_init"]).reshape(-1), (n,)).astype(np.int32),
                       u=np.broadcast_to(np.asarray(g.get("u_init", 0)).reshape(-1), (n,)).astype(np.int32),
                       name=g["name"])
            if model is not None:
                exc[proc] = model
            self.groups[g["name"]] = proc
            self.ext[g["name"]] = Extractor(shape=(n,), buffer_size=CHUNK)
            exc[self.ext[g["name"]]] = PyLoihiExtractorModel
            proc.s_out.connect(self.ext[g["name"]].in_port)
        src = {**{k: v.out_port for k, v in self.inj.items()}, **{k: v.s_out for k, v in self.groups.items()}}
        for s in prog["synapses"]:
            w = np.asarray(s["weights"]).astype(np.int32)
            kw = dict(weight_exp=int(s["weight_exp"]), num_message_bits=int(s["num_message_bits"]))
            syn = Sparse(weights=csr_matrix(w), **kw) if s["format"] == "sparse" else Dense(weights=w, **kw)
            src[s["src"]].connect(syn.s_in)
            syn.a_out.connect(self.groups[s["dst"]].a_in)
            self.syns[s["name"]] = syn
        if hw:
            from lava.magma.core.run_configs import Loihi2HwCfg

            cfg = Loihi2HwCfg(exception_proc_model_map=exc)
        else:
            from lava.magma.core.run_configs import Loihi2SimCfg

            cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=exc)
        self.first = next(iter(self.groups.values()))
        self.first.create_runtime(run_cfg=cfg)
        self.saved = None

    def _steps(self, x: dict, t0: int, k: int, want_v) -> dict:
        from lava.magma.core.run_conditions import RunSteps

        for name, inj in self.inj.items():
            a = x.get(name)
            for t in range(t0, t0 + k):
                inj.send(np.zeros(self.sizes[name]) if a is None else np.asarray(a[t], dtype=np.float64))
        self.first.run(condition=RunSteps(num_steps=k, blocking=True))
        out = {f"{g}.s": np.stack([np.asarray(e.receive()) for _ in range(k)]).astype(np.int64)
               for g, e in self.ext.items()}
        for g in want_v:
            out[f"{g}.v"] = np.asarray(self.groups[g].v.get()).reshape(1, -1).astype(np.int64)
        return out

    def run(self, x: dict, want_v) -> dict:
        n = int(next(iter(x.values())).shape[0]) if x else 0
        step = 1 if want_v else CHUNK
        parts = [self._steps(x, t, min(step, n - t), want_v) for t in range(0, n, step)]
        keys = [f"{g}.s" for g in self.ext] + [f"{g}.v" for g in want_v]
        return {k: (np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, 0), np.int64)) for k in keys}

    def save(self):
        self.saved = ({k: (np.asarray(p.u.get()).copy(), np.asarray(p.v.get()).copy()) for k, p in self.groups.items()},
                      {k: np.asarray(s.a_buff.get()).copy() for k, s in self.syns.items()})

    def restore(self):
        lif, syn = self.saved
        for k, (u, v) in lif.items():
            self.groups[k].u.set(u)
            self.groups[k].v.set(v)
        for k, a in syn.items():
            self.syns[k].a_buff.set(a)

    def stop(self):
        self.first.stop()


def main(argv):
    root, hw = pathlib.Path(argv[0]), "--hw" in argv[1:]
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # Lava's prints must not corrupt the answers
    try:
        net = Net(root, hw)
    except Exception:
        _write(fout, ("error", traceback.format_exc()[-3000:]))
        return 1
    _write(fout, ("ok", {k: n for k, n in net.sizes.items()}))
    while True:
        msg = _read(fin)
        if msg is None or msg[0] == "stop":
            try:
                net.stop()
            finally:
                _write(fout, ("ok", None))
            return 0
        try:
            if msg[0] == "run":
                res = net.run(msg[1], msg[2])
            elif msg[0] == "save":
                res = net.save()
            elif msg[0] == "restore":
                res = net.restore()
            else:
                raise ValueError(f"unknown request {msg[0]!r}")
            _write(fout, ("ok", res))
        except Exception:
            _write(fout, ("error", traceback.format_exc()[-3000:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
