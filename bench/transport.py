"""Runtime transport: events/s and per-window latency, local session vs loopback TCP.

Workloads (windows of ``--window`` steps, Bernoulli spike input):

1. transport alone: an identity bundle (Input(1024) → Output) whose device is
   an echo (each step returns its input), so the figures are framing, sockets,
   event conversions and the session — no simulation;
2. end to end: the quick start's digit classifier (LIF MLP 64→128→10) on the
   reference device (steps one timestep at a time) and on the loihi2 and
   spinnaker2 emulators, which stream with their state carried (``advance``:
   O(window) per window, including the latency look-ahead) —
   ``--emu-windows`` of them.

Modes: ``local`` (``nmc.open``, no sockets), ``tcp step`` (``Client.step``:
one window per round trip; latency = send → output back), ``tcp stream``
(``Client.stream``: pipelined, latency = mean time per window) and ``tcp
stream batch B`` (B windows per frame). The server runs in a process of its own
(forked), as ``nmc serve`` does, and the client is timed. Besides wall time,
``events_per_cpu_s`` counts CPU time (local: the stepping thread's; the tcp
streams: the busier of the client and server processes), which other processes
on a busy machine do not inflate. Loopback only, bounded runs; prints a table
and writes JSON.

    .venv/bin/python bench/transport.py [--windows 400] [--window 4] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import nir
import numpy as np

import nmc
from nmc.backends.base import Device, SteppedStreaming
from nmc.runtime import events as ev
from nmc.runtime.server import SessionServer
from nmc.runtime.session import Session

ROOT = Path(__file__).resolve().parents[1]


class _Echo(SteppedStreaming, Device):
    """Device stand-in for the transport-alone figure: returns each step's input (a window at a
    time: ``advance`` hands the window back whole, so no per-step device loop is timed)."""

    name = "echo"

    def advance(self, inputs):
        return {self.out_name: next(iter(inputs.values()))}

    def __init__(self, out_name):
        self.out_name = out_name

    def reset(self, batch=1):
        pass

    def step(self, inputs_t):
        return {self.out_name: next(iter(inputs_t.values()))}

    def run(self, inputs, steps=None, record=()):
        return {self.out_name: next(iter(inputs.values()))}


def _echo_factory(b, device, window):
    s = Session(b, device=device, window=window)
    s.device = _Echo(s.io.output_names[0])
    return s


def _identity(n):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}),
                            "output": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("input", "output")])
    return nmc.compile(g, target="reference", dt=1e-3)


def _timed_steps(step, wins) -> tuple[float, list[float], float]:
    """(total seconds, per-window latencies, CPU seconds of this thread) of ``step(w)`` over the
    windows, one at a time. The thread's CPU time leaves out the time the thread was not running
    (preempted by other processes on a busy machine): wall time minus it is what the machine's
    load added, which the slow tail of the latencies is made of."""
    lat = []
    c0, t0 = time.thread_time(), time.perf_counter()
    for w in wins:
        t1 = time.perf_counter()
        step(w)
        lat.append(time.perf_counter() - t1)
    return time.perf_counter() - t0, lat, time.thread_time() - c0


def _measure(bundle, x, window, windows, batch, factory=None):
    wins = [ev.from_dense(x[i * window:(i + 1) * window]) for i in range(windows)]
    n_ev = sum(len(w) for w in wins)
    res = {"windows": windows, "window_steps": window, "input_events": n_ev}
    make = factory or (lambda b, d, w: Session(b, device=d, window=w))
    ev.warm_kernels()   # numba: compiled (or loaded from its cache) before anything is timed
    make(bundle, None, window).step(wins[0])  # warm-up (torch first call)
    res["local"] = _fig(n_ev, *_timed_steps(make(bundle, None, window).step, wins))
    proc, address, ctl = _serve_apart(bundle, window, factory)
    try:
        with nmc.connect(*address, window=window) as c:
            res["tcp step"] = _fig(n_ev, *_timed_steps(c.step, wins)[:2])
            for b in (1, batch):
                c.reset()
                s0, c0, t0 = _server_cpu(ctl), time.process_time(), time.perf_counter()
                n_out = sum(1 for _ in c.stream(wins, batch=b))
                dt, client_cpu = time.perf_counter() - t0, time.process_time() - c0
                server_cpu = _server_cpu(ctl) - s0
                assert n_out == windows
                # by CPU time: each process's own (all its threads), the busier one bounds the pipeline
                res["tcp stream" + (f" batch {b}" if b > 1 else "")] = dict(
                    _fig(n_ev, dt, None, max(client_cpu, server_cpu), windows=windows),
                    client_cpu_s=client_cpu, server_cpu_s=server_cpu)
            stats = c.stats()
        assert stats["received"] == stats["processed"] == 3 * n_ev, stats  # nothing lost
    finally:
        ctl.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return res


def _serve_apart(bundle, window, factory):
    """``nmc serve`` as deployed: a :class:`SessionServer` in a process of its own (forked, so it
    inherits the bundle and the compiled event kernels), so that client and server do not share
    one interpreter lock. Returns (process, address, control pipe: send anything to stop it)."""
    ctx = multiprocessing.get_context("fork")
    ctl, child_end = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(bundle, window, factory, child_end), daemon=True,
                       name="nmc-bench-serve")
    proc.start()
    if not ctl.poll(120):
        proc.kill()
        raise RuntimeError("the bench's server process did not start within 120 s")
    return proc, ctl.recv(), ctl


def _server_main(bundle, window, factory, ctl):
    srv = SessionServer(bundle, port=0, window=window, session_factory=factory, queue_frames=8)
    srv.start()
    ctl.send(srv.address)   # listening: connections wait in the backlog until accepted
    try:
        while ctl.recv() == "cpu":   # this process's CPU seconds so far (all its threads); anything else: stop
            ctl.send(time.process_time())
    except EOFError:
        pass
    srv.stop()


def _server_cpu(ctl) -> float:
    ctl.send("cpu")
    return ctl.recv()


def _numpy_conversions(enabled: bool):
    """``True``: run the numpy event conversions (the code the compiled ones of
    :mod:`nmc.runtime.event_kernels` replaced), for the before/after rows of the same run;
    ``False``: the compiled ones again (loaded on next use)."""
    ev._EK = False if enabled else None


def _breakdown(bundle, wins, window, factory, batch=16) -> dict:
    """Mean µs per window of each piece a TCP window goes through, timed one by one in this process
    (best of 3 passes over the windows): the client checking and packing the input table, the server
    decoding it, the session's conversions and device step, the server checking and packing the
    output table, the client decoding it — each as the client and server do it
    (:func:`nmc.runtime.events.window_events`, then :func:`nmc.runtime.protocol.pack_table`); then
    the server's and the client's pieces for frames of ``batch`` windows, as the batched stream
    runs them (one decode, one session call, one pack, one decode per frame:
    :func:`~nmc.runtime.protocol.unpack_tables`, :meth:`Session.step_windows
    <nmc.runtime.session.Session.step_windows>`, :func:`~nmc.runtime.protocol.pack_tables`)."""
    import timeit

    from nmc.runtime import protocol as P

    s = factory(bundle, None, window)
    name, out_name = s.io.input_names[0], s.io.output_names[0]
    size = [int(np.prod(s.io.input_shapes[name]))]
    tables = [P.pack_table([(0, w, False)]) for w in wins]
    dense = [ev.to_dense(w, window, s.io.input_shapes[name], dtype=np.float64) for w in wins]
    outs = [s.step(w)[out_name] for w in wins]
    out_tables = [P.pack_table([(0, o, False)]) for o in outs]
    parts = {
        "client: pack input table": lambda: [P.pack_table([(0, *ev.window_events(w, window, size[0]))])
                                             for w in wins],
        "server: decode input table": lambda: [P.unpack_windows(t, 0, 1, size, window) for t in tables],
        "session: events → dense": lambda: [ev.to_dense(w, window, s.io.input_shapes[name], dtype=np.float64)
                                            for w in wins],
        "session: device advance": lambda: [s._advance({name: d}) for d in dense],
        "session: dense → events": lambda: [ev.from_dense(d) for d in dense],
        "session: whole step": lambda: [s.step(w) for w in wins],
        "server: pack output table": lambda: [P.pack_table([(0, *ev.window_events(o, window, size[0]))])
                                              for o in outs],
        "client: decode output table": lambda: [P.unpack_windows(t, 0, 1, size, window) for t in out_tables],
    }
    frames = [P.pack_windows(tables[i:i + batch]) for i in range(0, len(tables), batch)]
    decoded = [P.unpack_tables(p, fl, 1, size, window, absolute=True) for p, fl in frames]
    outs_b = [s.step_windows({name: d.events[0]}, d.k)[out_name] for d in decoded]
    packed = [P.pack_tables([o], d.k, window, size) for o, d in zip(outs_b, decoded)]
    out_frames = [(b"".join(bytes(x) for x in parts), fl) for parts, fl, _ in packed]
    b = f" (frames of {batch})"
    groups = [wins[i:i + batch] for i in range(0, len(wins), batch)]

    def client_frames():   # as Client._flush: one array of each frame's events, the windows' bounds
        return [P.pack_tables([ev.join(g)], len(g), window, size,
                              bounds=[np.cumsum([0] + [len(w) for w in g])]) for g in groups]

    parts.update({
        "client: pack input frame" + b: client_frames,
        "server: decode input frame" + b: lambda: [P.unpack_tables(p, fl, 1, size, window, absolute=True)
                                                   for p, fl in frames],
        "session: step_windows" + b: lambda: [s.step_windows({name: d.events[0]}, d.k) for d in decoded],
        "server: pack output frame" + b: lambda: [P.pack_tables([o], d.k, window, size)
                                                  for o, d in zip(outs_b, decoded)],
        "client: decode output frame" + b: lambda: [P.unpack_tables(p, fl, 1, size, window) for p, fl in out_frames],
    })
    return {k: min(timeit.repeat(f, number=1, repeat=3)) / len(wins) * 1e6 for k, f in parts.items()}


def _fig(n_ev, dt, lat, cpu=None, windows=None):
    d = {"events_per_s": n_ev / dt, "seconds": dt}
    if cpu:
        d["events_per_cpu_s"] = n_ev / cpu   # by CPU time (local: the stepping thread's; tcp: the busier process)
    if lat is not None:
        d["window_latency_ms"] = float(np.median(lat)) * 1e3
        d["window_latency_p99_ms"] = float(np.percentile(lat, 99)) * 1e3
    else:
        d["window_latency_ms"] = dt / windows * 1e3  # mean time per window when pipelined
    return d


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="windows per frame in the batched stream mode")
    ap.add_argument("--emu-windows", type=int, default=200, help="windows for the chip emulators")
    ap.add_argument("--quick", action="store_true", help="transport alone and the reference device only")
    ap.add_argument("--out", default=str(ROOT / "bench/results/transport.json"))
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    T = a.windows * a.window
    out = {}
    x = (rng.random((T, 1024)) < 0.1).astype(np.float32)
    echo = _identity(1024)
    alone = "transport alone (echo device, 1024 channels, p=0.1)"
    out[alone] = _measure(echo, x, a.window, a.windows, a.batch, _echo_factory)
    _numpy_conversions(True)   # the same, with the numpy event conversions the compiled ones replaced
    try:
        out[alone + ", numpy conversions"] = _measure(echo, x, a.window, a.windows, a.batch, _echo_factory)
    finally:
        _numpy_conversions(False)
    wins = [ev.from_dense(x[i * a.window:(i + 1) * a.window]) for i in range(a.windows)]
    breakdown = {"compiled": _breakdown(echo, wins, a.window, _echo_factory, a.batch)}
    _numpy_conversions(True)
    try:
        breakdown["numpy"] = _breakdown(echo, wins, a.window, _echo_factory, a.batch)
    finally:
        _numpy_conversions(False)
    digits = ROOT / "examples/quickstart/digits_lif.nir"
    x = (rng.random((T, 64)) < 0.3).astype(np.float32)
    ref = nmc.compile(digits, target="reference", dt=1e-3, reset="zero", integrator="euler")
    out["end to end (digits LIF MLP, reference device)"] = _measure(ref, x, a.window, a.windows, a.batch)
    if not a.quick:
        nw = min(a.windows, a.emu_windows)
        for target in ("loihi2", "spinnaker2"):
            b = nmc.compile(digits, target=target, dt=1e-3, reset="zero", integrator="euler")
            out[f"end to end (digits LIF MLP, {target} emulator, {nw} windows)"] = _measure(
                b, x[:nw * a.window], a.window, nw, a.batch)
    _table(out)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"meta": meta, "results": out, "breakdown_us_per_window": breakdown,
                                       "events_per_window": sum(len(w) for w in wins) / len(wins)}, indent=2))
    return out


def _table(out):
    modes = ["local", "tcp step", "tcp stream"] + [m for m in next(iter(out.values())) if "batch" in m]
    print(f"{'workload':62s} {'mode':20s} {'events/s':>12s} {'ms/window':>10s} {'p99 ms':>8s}")
    for k, v in out.items():
        for m in modes:
            f = v[m]
            p99 = f"{f['window_latency_p99_ms']:8.3f}" if "window_latency_p99_ms" in f else f"{'':8s}"
            print(f"{k[:62]:62s} {m:20s} {f['events_per_s']:12,.0f} {f['window_latency_ms']:10.3f} {p99}")


if __name__ == "__main__":
    main()
