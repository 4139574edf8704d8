"""The fidelity check every compile runs after lowering (``reports/fidelity.json``).

On the calibration data (``--calibrate``), or without it on a seeded synthetic
probe (:data:`PROBE`: Bernoulli(p) spikes on every input, ``steps`` steps,
``samples`` samples; both bounded, and shortened further for huge networks by
:func:`nmc.passes.fidelity.fit_budget`), the float reference of the compiled
graph and the target's default device (its emulator) run the same inputs. The
report gives:

* per neuron layer: activity (events per neuron and step) on the reference and
  the device, the peak membrane as a fraction of the threshold, the input
  drive per step (mean |input| × the neuron's per-step gain: dt·r for IF/I,
  (dt/τ)·r for Euler LIF, (1 − e^{−dt/τ})·r exact, times (dt/τ_syn)·w_in for
  CubaLIF); a spiking layer that never fires is **dead**, one that fires in
  more than :data:`SATURATED` of its steps is **saturated**, each with the likely
  cause and a fix (a leak-free network exported in discrete time — r = 1, one
  unit of input per step, as sinabs exports — compiled at dt ≪ 1 has an input
  drive of about dt per step: "compile with --dt 1"). A silent layer whose
  membrane is still rising when the probe ends, and would reach the threshold
  at its present rise (:func:`first_spike_after`: linear for IF, the
  exponential approach over the slowest τ for leaky neurons) within
  :data:`LATE_WITHIN` probe lengths, is **late**, not dead: "no spike within
  the probe of N steps", with the estimated step of its first spike;
* spike-count agreement per layer between device and reference
  (1 − Σ|n_dev − n_ref| / Σ max(n_dev, n_ref) over neurons), class agreement
  per output (argmax of the summed output per sample), and the membrane error
  (mean |v_dev − v_ref| in units of the layer's threshold) where both record v;
* per layer, where the lowering states it (loihi2's 12-bit decay), ``timing``:
  how far spike times drift from the reference per step of an inter-spike
  interval, and the longest interval that stays within one step.

A finding below :data:`THRESHOLDS` is a warning (printed by the CLI); with
``strict`` it is a :class:`~nmc.errors.FidelityError`. ``fidelity_check=False``
(``--no-fidelity-check``) skips it. The report is deterministic (seeded probe,
rounded numbers), so bundles stay byte-identical.
"""
from __future__ import annotations

import numpy as np

from nmc import semantics
from nmc.errors import FidelityError, NmcError, OptionError
from nmc.graph_meta import GraphMeta
from nmc.nodes import EGRU, DiagSSM, StochasticSSMNeuron, is_neuron, is_spiking_neuron

#: The synthetic probe when no calibration data is given.
PROBE = {"kind": "Bernoulli spikes", "p": 0.2, "steps": 100, "samples": 4}
#: Calibration data is cut to at most this many steps and samples.
MAX_STEPS, MAX_SAMPLES = 200, 8
#: Synaptic operations one simulation may cost (the probe is shortened beyond it).
MAX_SYNOPS = 2e8
#: A spiking layer firing in more than this fraction of its neuron-steps is saturated.
SATURATED = 0.9
#: A silent layer whose membrane would reach the threshold within this many probe lengths after the
#: probe ends is late (no spike within the probe), not dead.
LATE_WITHIN = 10
#: Warn below these agreements of the device with the reference.
THRESHOLDS = {"class_agreement": 0.9, "spike_count_agreement": 0.8}


def _r(x, digits: int = 6):
    return float(f"{float(x):.{digits}g}")


def probe_inputs(g, data: dict | None, seed: int) -> tuple[dict, dict]:
    """(inputs (T, B, *shape), description) — calibration data cut to the bounds, else the seeded probe."""
    from nmc.passes.fidelity import fit_budget

    if data and all(k in data for k in g.inputs):
        arrs = {}
        for k in g.inputs:
            a = np.asarray(data[k], dtype=np.float64)
            if a.ndim == len(g.shape_out(k)) + 1:
                a = a[:, None]
            arrs[k] = a[:MAX_STEPS, :MAX_SAMPLES]
        desc = {"source": "calibration data"}
    else:
        rng = np.random.default_rng([seed, 0xF1D])
        arrs = {k: (rng.random((PROBE["steps"], PROBE["samples"], *g.shape_out(k))) < PROBE["p"]).astype(np.float64)
                for k in g.inputs}
        desc = {"source": "synthetic probe", **PROBE, "seed": seed}
    arrs, sim = fit_budget(g, arrs, MAX_SYNOPS, budget="nmc.driver.fidelity_check.MAX_SYNOPS")
    return arrs, {**desc, **sim}


def step_gain(g, name: str) -> float:
    """Median per-step gain from the input current x to the membrane (see module doc)."""
    meta = GraphMeta.of(g)
    node, dt, integ = g.nodes[name], meta.dt, meta.integrator

    def a(tau):
        tau = np.asarray(tau, float)
        return dt / tau if integ == "euler" else 1 - np.exp(-dt / tau)

    def p(k, default=1.0):
        v = getattr(node, k, None)
        return np.asarray(default if v is None else v, float)

    e = semantics.lookup(node)   # the neuron's family, by its registered parameters
    if e is None or not e.is_neuron or "r" not in e.params:
        return float("nan")
    if e.current_based:                     # CubaLIF, CubaLI: through the synaptic current, then the membrane
        gain = a(p("tau_syn")) * p("w_in") * a(p(e.membrane_tau)) * p("r")
    elif e.membrane_tau is not None:        # LIF, LI
        gain = a(p(e.membrane_tau)) * p("r")
    else:                                   # IF, I: no leak
        gain = dt * p("r")
    return float(np.median(gain))


def slowest_tau_steps(g, name: str) -> float:
    """The neuron's slowest time constant in steps (τ/dt; τ_mem or τ_syn for CubaLIF); inf without a leak."""
    node, dt = g.nodes[name], GraphMeta.of(g).dt
    taus = [np.asarray(getattr(node, k), float) for k in ("tau", "tau_mem", "tau_syn")
            if getattr(node, k, None) is not None]
    return float(max(np.max(t) for t in taus) / dt) if taus else float("inf")


def first_spike_after(v: np.ndarray, thr: float, tau_steps: float) -> float | None:
    """Steps after the last one until the highest membrane trace reaches ``thr`` at its present rise, or
    None when it does not rise (or settles below ``thr``). ``v`` (T, B, ...) is the reference's membrane
    of a layer that did not spike; the sample mean of each neuron is followed, the highest at the end.
    The rise is the slope over the last tenth of the steps (at least 5); a leak-free neuron (``tau_steps``
    inf) keeps it, a leaky one approaches v_end + slope·τ_steps exponentially (the first-order response
    to a constant drive), so the steps are τ_steps·ln((v∞ − v_end)/(v∞ − thr))."""
    v = np.asarray(v, float)
    T = v.shape[0]
    k = max(5, T // 10)
    if T <= k or thr <= 0:
        return None
    m = v.reshape(T, v.shape[1] if v.ndim > 1 else 1, -1).mean(1)      # (T, neurons): sample means
    i = int(np.argmax(m[-1]))
    end, slope = m[-1, i], (m[-1, i] - m[-1 - k, i]) / k
    if not slope > 1e-9 * thr or end >= thr:
        return None
    if not np.isfinite(tau_steps):
        return float((thr - end) / slope)
    v_inf = end + slope * tau_steps
    return float(tau_steps * np.log((v_inf - end) / (v_inf - thr))) if v_inf > thr else None


def _diagnose(g, name: str, entry: dict, steps: int) -> tuple[str, str] | None:
    """(cause, fix) for a dead, late or saturated layer over a probe of ``steps`` steps."""
    node, dt = g.nodes[name], GraphMeta.of(g).dt
    drive, gain = entry.get("drive_per_step"), entry.get("gain_per_step")
    thr = entry.get("threshold")
    r = getattr(node, "r", None)
    unit_r = r is not None and np.allclose(np.asarray(r, float), 1.0)
    # no leak that matters within LATE_WITHIN probe lengths: an integrator, whose drive scales with dt
    integrates = slowest_tau_steps(g, name) > LATE_WITHIN * steps
    if entry["status"] == "late":
        more = entry["first_spike_after_steps"]
        tau = entry.get("slowest_tau_steps")
        cause = (f"no spike within the probe of {steps} steps, but the membrane is still rising "
                 f"({entry['end_v_over_threshold']:.3g} of the threshold at the last step"
                 + (f", slowest τ = {tau:.3g} steps" if tau is not None else ", no leak")
                 + f"): at its present rise the first spike comes about {more:.3g} steps after the probe ends")
        return cause, (f"nothing is wrong if the network integrates that long; to check this layer's spikes "
                       f"give --calibrate data of at least {steps + int(np.ceil(more))} steps (the check uses up "
                       f"to {MAX_STEPS})")
    if entry["status"] == "dead":
        if entry.get("input_mean_abs", 0) == 0:
            return "its input is silent (an upstream layer is dead or late, or the inputs are empty)", \
                   "fix the first dead layer upstream"
        cause = f"inputs × gain = {drive:.3g} per step (gain {gain:.3g}) against a threshold of {thr:.3g}; " \
                f"the membrane peaked at {entry['peak_v_over_threshold']:.3g} of the threshold"
        if "first_spike_after_steps" in entry:
            cause += f" (at its present rise its first spike would come {entry['first_spike_after_steps']:.3g} " \
                     f"steps after the probe's {entry['probe_steps']})"
        if integrates and unit_r and dt < 0.1:
            return cause + f"; inputs × dt·r = {drive:.3g} per step: this network looks exported in discrete " \
                           "time (r = 1, one unit of input per step, as sinabs exports)", "compile with --dt 1"
        elif not integrates and "first_spike_after_steps" not in entry:
            cause += "; at its rise at the end of the probe it settles below the threshold"
        return cause, "check --dt against the exporter's convention (docs/exporters.md), or the input scale"
    cause = f"inputs × gain = {drive:.3g} per step against a threshold of {thr:.3g}: it fires almost every step"
    e = semantics.lookup(node)
    leaky_spiking = e is not None and e.spiking and e.membrane_tau is not None   # LIF, CubaLIF
    if leaky_spiking and r is not None and np.median(np.asarray(r, float)) > 1 / dt / 10:
        return cause + " (r looks like τ/dt of a much smaller export dt)", \
               "compile with the exporter's dt (--dt; snnTorch exports r = τ/dt)"
    return cause, "check --dt, the weights' scale and the thresholds against the source framework"


def _spike_count_agreement(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.abs(a).sum(0).reshape(-1), np.abs(b).sum(0).reshape(-1)
    den = np.maximum(na, nb).sum()
    return 1.0 if den == 0 else float(1 - np.abs(na - nb).sum() / den)


def _device_run(device, inputs, record: list[str]) -> tuple[dict, list[str]]:
    """Run, dropping recorded nodes the program does not have (fused layers)."""
    record = list(record)
    for _ in range(len(record) + 1):
        try:
            return device.run(inputs, record=record), record
        except OptionError as e:
            if e.node in record:
                record.remove(e.node)
                continue
            raise
    return device.run(inputs, record=[]), []


def check(graph, program, backend, target: str, data: dict | None, seed: int) -> tuple[dict, list[dict]]:
    """Run the check; returns (report, findings) where each finding is
    ``{"node", "message"}`` to be warned about (or raised under ``strict``)."""
    from nmc.passes.fidelity import simulate

    inputs, desc = probe_inputs(graph, data, seed)
    neurons = [n for n, nd in graph.nodes.items() if is_neuron(nd) and not _is_egru(nd)]
    feeders = sorted({p for n in neurons for p in graph.preds(n)})
    ref = simulate(graph, inputs, sorted(set(neurons) | set(feeders)))
    report: dict = {"input": desc, "thresholds": {**THRESHOLDS, "saturated_rate": SATURATED},
                    "layers": {}, "outputs": {}}
    findings: list[dict] = []
    dev, recorded, dev_error = None, [], None
    if target != "reference":
        try:
            dev, recorded = _device_run(backend.device(backend.default_device, program), inputs, neurons)
            report["device"] = backend.default_device
        except NmcError as e:
            dev_error = e.one_line()
            report["device_error"] = dev_error
            findings.append({"node": e.node, "message": f"the fidelity check could not run the {target} "
                                                        f"{backend.default_device} on its inputs: {dev_error}"})
    for n in neurons:
        node = graph.nodes[n]
        spiking = is_spiking_neuron(node)
        key = f"{n}.spikes" if spiking else f"{n}.out"
        x = sum(np.asarray(ref[f"{p}.out"], float).reshape(*ref[f"{p}.out"].shape[:2], -1) for p in graph.preds(n))
        thr = float(np.median(np.asarray(getattr(node, "v_threshold", 1.0), float)))
        gain = step_gain(graph, n)
        e: dict = {"type": type(node).__name__, "neurons": int(np.prod(graph.shape_out(n))),
                   "input_mean_abs": _r(np.mean(np.abs(x))), "gain_per_step": _r(gain),
                   "drive_per_step": _r(np.mean(np.abs(x)) * gain), "threshold": _r(thr)}
        e.update(_timing(program, n))
        if f"{n}.v" in ref and thr > 0:
            e["peak_v_over_threshold"] = _r(np.max(ref[f"{n}.v"]) / thr)
        if spiking:
            s = np.asarray(ref[key], float)
            e["rate_reference"] = _r(s.mean())
            e["status"] = "dead" if not s.any() else ("saturated" if s.mean() > SATURATED else "ok")
            if e["status"] == "dead" and f"{n}.v" in ref and e["input_mean_abs"] > 0:
                tau = slowest_tau_steps(graph, n)
                more = first_spike_after(ref[f"{n}.v"], thr, tau)
                if more is not None:
                    e.update(probe_steps=int(s.shape[0]), first_spike_after_steps=_r(more, 3),
                             end_v_over_threshold=_r(np.max(np.mean(ref[f"{n}.v"][-1], 0)) / thr))
                    if np.isfinite(tau):
                        e["slowest_tau_steps"] = _r(tau)
                    if more <= LATE_WITHIN * s.shape[0]:
                        e["status"] = "late"
            if e["status"] != "ok":
                cause, fix = _diagnose(graph, n, e, int(s.shape[0]))
                e["cause"], e["fix"] = cause, fix
                state = "silent (late)" if e["status"] == "late" else e["status"]
                findings.append({"node": n, "fix": fix,
                                 "message": f"layer '{n}' is {state} on the {desc['source']}: {cause}"})
        if dev is not None and n in recorded:
            d = np.asarray(dev[key], float)
            if spiking:
                e["rate_device"] = _r(d.mean())
                e["spike_count_agreement"] = _r(_spike_count_agreement(ref[key], d))
            if f"{n}.v" in ref and f"{n}.v" in dev and thr > 0:
                e["membrane_error"] = _r(np.mean(np.abs(np.asarray(dev[f"{n}.v"]).reshape(-1)
                                                         - np.asarray(ref[f"{n}.v"]).reshape(-1))) / thr)
        report["layers"][n] = e
    if dev is not None:
        for o in graph.outputs:
            a, b = np.asarray(ref[o], float), np.asarray(dev[o], float)
            entry = {"spike_count_agreement": _r(_spike_count_agreement(a, b))}
            ca = a.sum(0).reshape(a.shape[1], -1)
            if ca.shape[1] > 1:
                entry["class_agreement"] = _r(np.mean(ca.argmax(1) == b.sum(0).reshape(b.shape[1], -1).argmax(1)))
            report["outputs"][o] = entry
            for k, lim in THRESHOLDS.items():
                if k in entry and entry[k] < lim:
                    findings.append({"node": o, "fix": "see the per-layer entries of reports/fidelity.json",
                                     "message": f"output '{o}': {k.replace('_', ' ')} of the {target} "
                                                           f"{backend.default_device} with the float reference is "
                                                           f"{entry[k]:.1%} on the {desc['source']} (below {lim:.0%})"})
    report["findings"] = [_text(f) for f in findings]
    return report, findings


#: Per-layer numerics a lowering reports in ``program.meta["fidelity"]`` that bound spike timing.
TIMING_KEYS = ("spike_time_drift_per_step", "one_step_within_steps")


def _timing(program, n: str) -> dict:
    """The target's bound on spike-time drift against the reference, where its lowering states one
    (loihi2: the 12-bit decay, :func:`nmc.backends.loihi2.lower.spike_time_drift`): ``timing`` =
    drift per step of an inter-spike interval, and the longest interval that stays within one step."""
    num = ((getattr(program, "meta", None) or {}).get("fidelity") or {}).get(n) or {}
    if not any(k in num for k in TIMING_KEYS):
        return {}
    eps, horizon = num.get("spike_time_drift_per_step", 0.0), num.get("one_step_within_steps")
    note = ("spike times match the reference's decay exactly" if not eps else
            f"the decay the target realises differs from the reference's: an interval of t steps (to the first "
            f"spike, or between spikes) comes out within ⌈{eps:.3g}·t⌉ steps of the reference's: within one "
            f"step for t ≤ {horizon}")
    return {"timing": {"drift_per_step": eps, "one_step_within_steps": horizon, "note": note}}


def _is_egru(node) -> bool:
    """Cells without a membrane gain/threshold to diagnose: EGRU and the SSM nodes."""
    return isinstance(node, (EGRU, DiagSSM, StochasticSSMNeuron))


def _text(f: dict) -> str:
    return f["message"] + (f"; fix: {f['fix']}" if f.get("fix") else "")


def enforce(findings: list[dict], strict: bool, warnings) -> None:
    """Warn about every finding; under ``strict`` raise on the first."""
    if strict and findings:
        f = findings[0]
        more = f" (and {len(findings) - 1} more finding(s) in reports/fidelity.json)" if len(findings) > 1 else ""
        raise FidelityError(f["message"] + more, node=f["node"],
                            hint=(f.get("fix") or "see reports/fidelity.json") + "; or compile without --strict")
    for f in findings:
        warnings.add(_text(f), node=f["node"], source="fidelity")
