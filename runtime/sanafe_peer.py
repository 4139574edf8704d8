"""SANA-FE as a peer energy model: export a compiled network, run it there.

SANA-FE (``pip install sanafe``; Boyle et al., IEEE TCAD 2025) is an
architecture-level simulator of neuromorphic chips with a Loihi architecture
calibrated on measurements. :func:`export` writes the compiled network in
SANA-FE's YAML SNN format (``network: groups, edges``; ``mappings``: neuron →
``tile.core``), :func:`run` loads it with ``sanafe.load_net`` against an
architecture file (SANA-FE's own ``loihi.yaml`` by default) and simulates each
sample, so the energy and the simulated time come from SANA-FE's model and
SANA-FE's own spikes, not from nmc's counts.

What the export maps (anything else raises :class:`~nmc.errors.UnsupportedNodeError`):
``Input`` → input somas driven by the sample's spikes (one ``loihi_inputs[i]``
unit per input neuron, as SANA-FE's Loihi architecture requires); ``LIF``,
``IF``, ``LI`` (never fires), ``CubaLIF`` → SANA-FE's ``leaky_integrate_fire``
soma with the graph's own discretisation (``leak_decay`` = 1 − dt/τ, or
e^(−dt/τ) for the exact integrator; ``input_decay`` from τ_syn; weight × R·dt/τ;
bias from v_leak and the affine bias; threshold, reset, hard/soft reset);
``Affine``/``Linear`` between them → ``dense`` hyper-edges (source-major
weights, zeros kept as the chip stores them). Values are scaled so the
threshold sits at 2¹⁰, far above SANA-FE's 1/64 potential quantum. Cores: each
nmc core becomes one SANA-FE core (``tile = core // cores_per_tile``); inputs
get their own cores after the placed ones.

SANA-FE's energy is dynamic only (no static power); compare it with nmc's
dynamic energy.
"""
from __future__ import annotations

import re
from pathlib import Path

import nir
import numpy as np

from nmc.annotations import Placement
from nmc.errors import OptionError, UnsupportedNodeError
from nmc.graph_meta import GraphMeta
from nmc.nodes import is_dense
from nmc.semantics import Kind, kind_of, lookup

#: neuron types the export maps to SANA-FE's LIF soma
_NEURONS = (nir.LIF, nir.IF, nir.LI, nir.CubaLIF)
_SCALE_TO = 1024.0


def _name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", s)


def _arch_default() -> Path:
    try:
        import sanafe
    except ImportError:
        raise OptionError("the SANA-FE peer needs the sanafe package", hint="pip install sanafe") from None
    return Path(sanafe.__file__).parent / "examples" / "loihi.yaml"


def _vec(x, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.broadcast_to(a if a.size == n else a[:1], (n,)).astype(np.float64)


def _soma(node, n: int, dt: float, exact: bool) -> dict:
    """Per-neuron SANA-FE soma parameters (unscaled): decay, input decay, gain, bias, threshold, reset
    (the node type's registry entry says which: membrane τ, synaptic current, spiking)."""
    e = lookup(node)
    if e.membrane_tau is None:   # IF: no leak
        return {"n": n, "decay": np.ones(n), "input_decay": np.zeros(n), "gain": _vec(node.r, n) * dt,
                "v_leak_bias": np.zeros(n), "thr": _vec(node.v_threshold, n), "reset": _vec(node.v_reset, n)}
    tau = _vec(getattr(node, e.membrane_tau), n)
    k = 1 - np.exp(-dt / tau) if exact else dt / tau
    out = {"n": n, "decay": 1 - k, "gain": _vec(node.r, n) * k, "v_leak_bias": k * _vec(node.v_leak, n),
           "input_decay": np.zeros(n)}
    if e.current_based:
        ts = _vec(node.tau_syn, n)
        ks = 1 - np.exp(-dt / ts) if exact else dt / ts
        out["input_decay"] = 1 - ks
        out["gain"] = out["gain"] * ks * _vec(getattr(node, "w_in", 1.0), n)
    if not e.spiking:
        out["thr"], out["reset"] = np.full(n, np.inf), np.zeros(n)
    else:
        out["thr"], out["reset"] = _vec(node.v_threshold, n), _vec(node.v_reset, n)
    return out


def _edges(g) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(source unit, target neuron, W (n_tgt, n_src), bias (n_tgt,)) for every weight node between units."""
    units = set(g.inputs) | {k for k, v in g.nodes.items() if isinstance(v, _NEURONS)}
    out = []
    for name, node in g.nodes.items():
        if name in units or kind_of(node) is Kind.IO:
            continue
        if not is_dense(node):
            raise UnsupportedNodeError(f"the SANA-FE export maps Affine/Linear weights only, not {type(node).__name__}",
                                       node=name, hint="compare with SANA-FE on fully connected LIF networks")
        pre = [s for s, t in g.edges if t == name]
        post = [t for s, t in g.edges if s == name]
        if len(pre) != 1 or pre[0] not in units or not post or any(t not in units for t in post):
            raise UnsupportedNodeError("the SANA-FE export needs each weight node between one source layer and "
                                       "neuron layers", node=name, hint="fold consecutive weight nodes first")
        w = np.asarray(node.weight, dtype=np.float64)
        b = np.asarray(getattr(node, "bias", np.zeros(w.shape[0])), dtype=np.float64).reshape(-1)
        for t in post:
            out.append((pre[0], t, w, b))
    for name, node in g.nodes.items():
        if not (kind_of(node) is Kind.IO or name in units or is_dense(node)):
            raise UnsupportedNodeError(f"SANA-FE has no model nmc maps {type(node).__name__} to", node=name)
    return out


def export(bundle, inputs: np.ndarray, path: str | Path, cores_per_tile: int = 4, neurons_per_core: int = 1024) -> dict:
    """Write ``bundle``'s network, driven by ``inputs`` (T, n_in) 0/1 spikes of one sample, as a SANA-FE
    YAML SNN file. Returns {"path", "groups", "cores", "steps"}."""
    g = bundle.graph
    if len(g.inputs) != 1:
        raise UnsupportedNodeError("the SANA-FE export takes one input node", node=",".join(g.inputs))
    x = np.asarray(inputs, dtype=np.float64)
    if not np.all(np.isin(x, (0.0, 1.0))):
        raise OptionError("SANA-FE input somas take 0/1 spike trains; this input carries graded values",
                          node=g.inputs[0], hint="rate-code the input first")
    meta = GraphMeta.of(g)
    dt, exact = meta.dt, meta.integrator == "exact"
    edges = _edges(g)
    somas = {k: _soma(v, int(np.prod(g.shape_out(k))), dt, exact) for k, v in g.nodes.items() if isinstance(v, _NEURONS)}
    # one scale per target layer: its threshold (or its largest input) lands at 2^10
    scale, bias = {}, {}
    for k, s in somas.items():
        finite = s["thr"][np.isfinite(s["thr"])]
        ref = float(np.max(np.abs(finite))) if finite.size else 0.0
        if ref == 0.0:
            ref = max([float(np.abs(w).max() * somas[k]["gain"].max()) for _, t, w, _ in edges if t == k] + [1.0])
        scale[k] = _SCALE_TO / ref
        bias[k] = s["v_leak_bias"].copy()
    for src, tgt, w, b in edges:
        bias[tgt] = bias[tgt] + somas[tgt]["gain"] * b
    # cores: nmc's placement, then inputs on their own cores
    core_of, used = {}, []
    for k, s in somas.items():
        p = g.ann(k, Placement)
        c = np.asarray(p.core).reshape(-1) if p is not None and p.core is not None else np.zeros(s["n"], dtype=int)
        core_of[k] = c
        used += list(np.unique(c))
    for k, c in core_of.items():
        counts = np.bincount(c)
        if counts.max() > neurons_per_core:
            raise OptionError(f"nmc placed {int(counts.max())} neurons of '{k}' on one core; SANA-FE's Loihi "
                              f"architecture holds {neurons_per_core} per core", node=k,
                              hint=f"compile with --passes 'normalize,quantize{{bits=8}},partition{{max_neurons_per_core={neurons_per_core}}},place,route'")
    nxt = (max(used) + 1) if used else 0
    inp = g.inputs[0]
    n_in = x.shape[1] if x.ndim == 2 else int(np.prod(x.shape[1:]))
    x = x.reshape(x.shape[0], n_in)
    core_of[inp] = nxt + np.arange(n_in) // neurons_per_core
    lines = ["network:", "  name: nmc_export", "  groups:"]
    gi = _name(inp)
    lines += [f"    - name: {gi}", "      attributes: [log_spikes: false]", "      neurons:"]
    for i in range(n_in):
        spikes = ", ".join("1" if v else "0" for v in x[:, i])
        lines.append(f"        - {i}: {{soma_hw_name: \"loihi_inputs[{i % neurons_per_core}]\", spikes: [{spikes}]}}")
    for k, s in somas.items():
        sc = scale[k]
        lines += [f"    - name: {_name(k)}", "      attributes: [soma_hw_name: loihi_lif, synapse_hw_name: "
                  f"loihi_dense_synapse, reset_mode: {'soft' if g.reset_mode(k) == 'subtract' else 'hard'}]",
                  "      neurons:"]
        for i in range(s["n"]):
            thr = s["thr"][i] * sc if np.isfinite(s["thr"][i]) else 1e30
            lines.append(f"        - {i}: {{threshold: {thr:.9g}, reset: {s['reset'][i] * sc:.9g}, "
                         f"leak_decay: {s['decay'][i]:.9g}, input_decay: {s['input_decay'][i]:.9g}, "
                         f"bias: {bias[k][i] * sc:.9g}}}")
    lines.append("  edges:")
    for src, tgt, w, _ in edges:
        weff = w * (somas[tgt]["gain"] * scale[tgt])[:, None]
        flat = ", ".join(f"{v:.7g}" for v in weff.T.reshape(-1))
        lines += [f"    - {_name(src)} -> {_name(tgt)}:", "        type: dense", f"        weight: [{flat}]"]
    lines.append("mappings:")
    for k in [inp, *somas]:
        for i, c in enumerate(core_of[k]):
            lines.append(f"  - {_name(k)}.{i}: [core: {int(c) // cores_per_tile}.{int(c) % cores_per_tile}]")
    Path(path).write_text("\n".join(lines) + "\n")
    cores = sorted({int(c) for v in core_of.values() for c in np.unique(v)})
    return {"path": str(path), "groups": [gi, *map(_name, somas)], "cores": len(cores), "steps": int(x.shape[0])}


def run(bundle, inputs: np.ndarray, workdir: str | Path, arch: str | Path | None = None, samples: int | None = None) -> dict:
    """Export and simulate each sample of ``inputs`` ((T, n) or (T, B, n)) in SANA-FE.
    Returns energy per inference (total and by unit), simulated time per inference, spikes."""
    try:
        import sanafe
    except ImportError:
        raise OptionError("the SANA-FE peer needs the sanafe package", hint="pip install sanafe") from None
    arch_path = Path(arch) if arch is not None else _arch_default()
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None]
    B = x.shape[1] if samples is None else min(samples, x.shape[1])
    a = sanafe.load_arch(str(arch_path))
    tot, parts, t_sim, spikes, packets = [], {}, [], [], []
    for b in range(B):
        info = export(bundle, x[:, b], Path(workdir) / f"sanafe_net_{b}.yaml")
        net = sanafe.load_net(info["path"], a)
        chip = sanafe.SpikingChip(a)
        chip.load(net)
        r = chip.sim(info["steps"])
        tot.append(float(r["energy"]["total"]))
        for k, v in r["energy"].items():
            if k != "total":
                parts.setdefault(k, []).append(float(v))
        t_sim.append(float(r["sim_time"]))
        spikes.append(int(r["spikes"]))
        packets.append(int(r["packets_sent"]))
    return {"arch": str(arch_path), "samples": B, "per_inference_j": float(np.mean(tot)),
            "by_unit_j": {k: float(np.mean(v)) for k, v in parts.items()}, "sim_time_per_inference_s": float(np.mean(t_sim)),
            "spikes_per_inference": float(np.mean(spikes)), "packets_per_inference": float(np.mean(packets)),
            "version": _version()}


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("sanafe")
    except metadata.PackageNotFoundError:
        return None
