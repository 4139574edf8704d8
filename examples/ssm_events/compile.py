"""Train the SSM models of train.py, save them with nmc.save and measure test accuracy per stage.

Stages (test split of the digit event streams, class = argmax of the time-averaged logits):

* ``float``: the trained PyTorch model, step by step (train.py's ``accuracy_step``);
* ``reference``: ``nmc.compile(model.pt, target="reference")`` run on the test streams
  (float64; the stochastic model's nodes draw the counter-based ξ of nmc.nodes_ssm, so
  ``float_node_noise`` is the PyTorch model given those same ξ);
* ``quantized``: the compiled graph after ``quantize{bits=B}`` (int8 weights, the SSMs'
  Λ̄ in Q1.15 and B̄, C̄, D in B bits), run as its dequantized float meaning;
* ``targets``: ``nmc.compile`` for each chip target, run on the test streams where it
  compiles, else the target's refusal (spinnaker2 runs the SSM nodes and LayerNorm as PE
  kernels; the other targets' refusals name the node and reason);
* per chip target that compiles: ``energy`` per step (``nmc.runtime.energy.profile`` on the first
  16 test streams on the target's emulator: dynamic and total (with static power over the tick)
  joules per step and sample, next to the same model as dense fp32 multiply-adds — every weight
  and each SSM / LayerNorm node's multiply-adds per tick — at the profile's 45 nm fp32 MAC
  energy) and ``streaming``: one test stream token by token
  (one tick per window) through ``nmc.open``: the host emulator's wall time per step (median,
  max; this machine, not the chip) and the chip's pipeline latency (output latency in ticks × tick);
* ``per_event`` (diag): every event at its own sub-tick time (seeded uniform offset in
  its tick), run event by event with Δ_k = Δ·τ_k (nmc.reference_ssm.run_events), logits
  averaged over time (each event's output held until the next, the zero-input output before
  the first), against the same events
  binned into ticks; and the mean relative rms binning error of the outputs
  (nmc.reference_ssm.binning_error).

    .venv/bin/python examples/ssm_events/compile.py --out out/ssm_events
    .venv/bin/python examples/ssm_events/compile.py --quick          # the test's mode
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import nmc
from nmc.errors import NmcError
from nmc.nodes_ssm import noise
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.passes.fidelity import dequantized
from nmc.reference import ReferenceSimulator
from nmc.reference_ssm import binning_error, run_events, with_time


def _load_train():
    """train.py beside this file, under its own module name (another example's ``train`` may be imported)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ssm_events_train", Path(__file__).resolve().parent / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


T = _load_train()

CHIPS = ("spinnaker2", "loihi2", "brainscales2")


def _acc(logits: np.ndarray, y: torch.Tensor) -> float:
    return float((np.asarray(logits).mean(0).argmax(-1) == y.numpy()).mean())


def energy_per_step(bundle, x: np.ndarray) -> dict:
    """Joules per step and sample of a run on the target's emulator, and the dense fp32 MAC baseline."""
    from nmc.runtime import energy

    from nmc import semantics

    rep, _ = energy.profile(bundle, {"input": x})
    n = rep["steps"] * rep["batch"]
    conv = rep["conventional"]
    # the whole model as dense fp32 MACs per step: every weight, and each SSM/LayerNorm node's own
    # multiply-adds per tick (its registry "describe" hook, what nmc inspect shows), at the profile's
    # fp32 MAC constant
    g = bundle.graph
    macs = sum(int(np.size(node.weight)) if hasattr(node, "weight") and semantics.lookup(node).is_linear else
               int((semantics.lookup(node).hook("describe") or (lambda _n: {}))(node).get("macs_per_step", 0))
               for node in g.nodes.values())
    j_per_mac = conv["fp32_j"] / conv["dense_macs"]
    return {"dynamic_j": rep["dynamic_j"] / n, "total_j": rep["per_inference_j"] / rep["steps"], "mode": rep["mode"],
            "dense_macs": macs, "dense_fp32_j": macs * j_per_mac, "synapse_macs": conv["dense_macs"] / n,
            "streams": int(rep["batch"]), "steps": int(rep["steps"])}


def streaming(bundle, x1: np.ndarray) -> dict:
    """One stream (T, 16) token by token through nmc.open (one tick per window): wall time per step on
    this host's emulator and the chip's pipeline latency."""
    from nmc.runtime.events import from_dense

    wall = []
    with nmc.open(bundle, window=1) as s:
        for t in range(x1.shape[0]):
            t0 = time.perf_counter()
            s.step({"input": from_dense(x1[t:t + 1], node="input")})
            wall.append(time.perf_counter() - t0)
        lat = max(p.latency for p in s.io.outputs)
        tick = s.tick
    return {"steps": int(x1.shape[0]), "wall_ms_median": 1e3 * float(np.median(wall)),
            "wall_ms_max": 1e3 * float(np.max(wall)), "latency_ticks": int(lat), "tick_s": float(tick),
            "latency_s": float(lat * tick)}


def quantized_graph(graph, bits: int):
    g = PassManager(parse_pipeline(f"quantize{{bits={bits}}}")).run(graph.copy(), PassContext(options={}))
    return dequantized(g)


def stream_events(x: np.ndarray, rng, dt: float):
    """One stream (T, 16) of per-tick event counts → (event vectors (K, 16), times (K,) in seconds):
    each event at its tick plus a seeded uniform offset, events at the same time merged."""
    t_idx, ch = np.nonzero(x)
    times, vecs = [], []
    for t, c in zip(t_idx, ch):
        for _ in range(int(x[t, c])):
            v = np.zeros(x.shape[1])
            v[c] = 1.0
            times.append((t + rng.random()) * dt)
            vecs.append(v)
    order = np.argsort(times, kind="stable")
    return np.array(vecs)[order], np.array(times)[order]


def per_event(graph, x: np.ndarray, y: torch.Tensor, streams: int, seed: int) -> dict:
    """Per-event Δt vs binned accuracy (module docstring) on the first ``streams`` test streams."""
    ev_graph, tick_graph = with_time(graph, "event"), with_time(graph, "tick")
    dt, T_end = graph.meta["dt"], x.shape[0]
    rng = np.random.default_rng(seed)
    out0 = ReferenceSimulator(tick_graph).run({"input": np.zeros((1, x.shape[2]))})["output"][0]   # before any event
    hit_ev = hit_bin = 0
    errs = []
    for s in range(streams):
        ev, times = stream_events(x[:, s], rng, dt)
        out = run_events(ev_graph, {"input": ev[:, None]}, times[:, None])["output"][:, 0]
        hold = np.diff(np.append(times, T_end * dt))                    # each output held until the next event
        hit_ev += int(((out * hold[:, None]).sum(0) + out0 * times[0]).argmax() == int(y[s]))
        binned = np.zeros_like(x[:, s])
        np.add.at(binned, np.floor(times / dt).astype(int), ev)          # sub-tick times back into their ticks
        ob = ReferenceSimulator(tick_graph).run({"input": binned})["output"]
        hit_bin += int(ob.mean(0).argmax() == int(y[s]))
        errs.append(binning_error(ev_graph, tick_graph, ev, times)["rel_rms"])
    return {"streams": streams, "accuracy_per_event": hit_ev / streams, "accuracy_binned": hit_bin / streams,
            "binning_rel_rms_mean": float(np.mean(errs))}


def lava_check(bundle, x: np.ndarray) -> dict:
    """The loihi2 bundle on Lava's fixed_pt simulator (``device="lava"``, CPU) against nmc's loihi2 emulator
    on the same streams (T, n, 16): bit for bit on the output (the SSM units' payloads, then the same host
    readout), or the reason Lava could not run."""
    from nmc.backends.loihi2.devices.lava_device import lava_available

    why = lava_available()
    if why is not None:
        return {"streams": int(x.shape[1]), "skipped": f"import lava failed: {why}"}
    emu = bundle.run({"input": x})["output"]
    lava = bundle.run({"input": x}, device="lava")["output"]
    return {"streams": int(x.shape[1]), "steps": int(x.shape[0]), "bit_exact": bool(np.array_equal(emu, lava)),
            "max_abs_diff": float(np.abs(emu - lava).max())}


def evaluate(variant: str, model, data, out: Path, bits: int, seed: int, event_streams: int, log=print,
             lava_streams: int = 0) -> dict:
    (_, _), (xte, yte) = data
    path = out / f"{variant}.pt"
    nmc.save(model, path, input_shape=(16,))
    x = xte.numpy().astype(np.float64)
    res: dict = {}
    t0 = time.time()
    b = nmc.compile(path, target="reference", fidelity_check=False)
    res["reference"] = _acc(b.run({"input": x})["output"], yte)
    res["graph_nodes"] = {k: type(v).__name__ for k, v in b.graph.nodes.items()}
    if variant == "stochastic":   # the float model with the nodes' ξ: the same spikes as the reference
        with torch.no_grad():
            h = model.inp(xte)
            xi = torch.as_tensor(noise(model.ssm.seed, h.shape[0], h.shape[1], h.shape[2]), dtype=torch.float32)
            s, _ = model.ssm.scan(h, noise=xi)
            res["float_node_noise"] = _acc(model.out(s).numpy(), yte)
    qg = quantized_graph(b.graph, bits)
    res["quantized"] = _acc(ReferenceSimulator(qg).run({"input": x})["output"], yte)
    res["quantized_bits"] = bits
    res["targets"] = {}
    (xtr, _), _ = data
    # loihi2 sizes its fixed-point SSM scales from the float reference's ranges on calibration data
    # (training streams) where they are below the worst case (backends/loihi2/ssm_lower.py)
    calib = {"loihi2": {"input": xtr[:, :16].numpy().astype(np.float64)}}
    for chip in CHIPS:
        try:
            cb = nmc.compile(path, target=chip, fidelity_check=False, calibrate=calib.get(chip))
            res["targets"][chip] = {"accuracy": _acc(cb.run({"input": x})["output"], yte),
                                    "energy_per_step": energy_per_step(cb, x[:, :16]),
                                    "streaming": streaming(cb, x[:, 0])}
            if chip == "loihi2" and lava_streams:
                res["targets"][chip]["lava_fixed_pt"] = lava_check(cb, x[:, :lava_streams])
        except NmcError as e:
            res["targets"][chip] = {"refused": e.one_line()[:300]}
    if variant == "diag" and event_streams:
        res["per_event"] = per_event(b.graph, xte.numpy(), yte, min(event_streams, xte.shape[1]), seed)
    res["eval_s"] = round(time.time() - t0, 1)
    log(f"{variant}: reference {res['reference']:.3f}, quantized ({bits} bits) {res['quantized']:.3f}"
        + (f", per-event {res['per_event']['accuracy_per_event']:.3f} vs binned {res['per_event']['accuracy_binned']:.3f}"
           if "per_event" in res else ""))
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/ssm_events"), help="folder for the models and results")
    ap.add_argument("--variants", default="diag,diag_loihi,stochastic")
    ap.add_argument("--loihi-output", default=T.OUTPUT["diag_loihi"], choices=["relu", "delta", "none"],
                    help="output stage of the diag_loihi variant's SSM layers")
    ap.add_argument("--lava-streams", type=int, default=8,
                    help="test streams run on Lava's fixed_pt simulator against the loihi2 emulator (0: none)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--bits", type=int, default=8, help="quantize{bits=...} of the quantized stage")
    ap.add_argument("--event-streams", type=int, default=120, help="test streams for the per-event Δt run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="600 streams, 5 epochs, 20 per-event streams (the test)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    data = T.dataset(a.seed, limit=600 if a.quick else None)
    epochs, batch = (5, 32) if a.quick else (a.epochs, 64)
    results = {}
    for v in [v for v in a.variants.split(",") if v]:
        keep: dict = {}
        r = T.train(v, a.loihi_output if v == "diag_loihi" else T.OUTPUT[v], data, epochs=epochs, batch=batch, lr=T.LR[v], seed=a.seed, log=lambda *_: None,
                    keep=keep)
        r["stages"] = evaluate(v, keep["model"], data, a.out, a.bits, a.seed, 20 if a.quick else a.event_streams,
                               lava_streams=min(a.lava_streams, 2) if a.quick else a.lava_streams)
        r["stages"]["float"] = r["accuracy_step"]
        results[v] = r
    (a.out / "compile_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
