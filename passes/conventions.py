"""What other frameworks' NIR exporters write, and how nmc reads it (used by
``normalize`` and by the backends' time-constant checks; the table for users
is ``docs/exporters.md``).

* :func:`reconcile_io_types` — an Input/Output node whose declared shape has
  the same number of elements as its neighbour's and differs from it only in
  dimensions of size 1 takes the neighbour's shape (Rockpool declares the
  output of a (1,) LIF as (1, 1, 1)); a warning names the node.
* :func:`tau_findings` — implausible time constants against the compile's
  ``dt``: τ < dt (Euler overshoots: dt/τ ≥ 1; exact: the neuron forgets
  everything within one step), and the pattern of Norse ≤ 1.1.0's ``to_nir``,
  which writes ``tau = dt_export / tau_inv`` = dt_export·τ (a 10 ms neuron
  exported at the default dt_export = 1 ms reads 1e-5 s). Each finding names
  the node, the likely exporter bug and the fix (``--tau-scale``, ``--dt``).
* :func:`tau_hint` — the same diagnosis as one sentence, for errors raised
  where a target cannot represent a time constant.
"""
from __future__ import annotations

import nir
import numpy as np

from nmc import semantics
from nmc.ir import Graph

TAU_FIELDS = ("tau", "tau_mem", "tau_syn")
#: Norse's to_nir default dt (s): its τ come out multiplied by it.
NORSE_EXPORT_DT = 1e-3
#: The shortest membrane/synaptic time constant read as physiological (s):
#: below it, a τ that becomes ≥ 1 ms once divided by NORSE_EXPORT_DT is read as Norse's bug.
PLAUSIBLE_TAU_MIN = 1e-4


def reconcile_io_types(g: Graph) -> list[tuple[str, tuple, tuple]]:
    """Give Input/Output nodes their neighbour's shape where the two differ only
    in singleton dimensions (same element count). Returns [(node, declared, used)]."""
    changed = []
    for name in list(g.inputs):
        s = g.shape_out(name)
        nxt = {tuple(x) for x in (g.shape_in(n) for n in g.succs(name)) if x is not None}
        if s is not None and len(nxt) == 1:
            t = nxt.pop()
            if t != tuple(s) and _singleton_only(tuple(s), t):
                g.nodes[name] = nir.Input(input_type={"input": np.array(t)})
                changed.append((name, tuple(s), t))
    for name in list(g.outputs):
        s = g.shape_in(name)
        prv = {tuple(x) for x in (g.shape_out(n) for n in g.preds(name)) if x is not None}
        if s is not None and len(prv) == 1:
            t = prv.pop()
            if t != tuple(s) and _singleton_only(tuple(s), t):
                g.nodes[name] = nir.Output(output_type={"output": np.array(t)})
                changed.append((name, tuple(s), t))
    return changed


def _singleton_only(a: tuple, b: tuple) -> bool:
    return int(np.prod(a)) == int(np.prod(b)) and [x for x in a if x != 1] == [x for x in b if x != 1]


def tau_hint(tau: float, dt: float) -> str:
    """Why a τ this short is there and what to do (one sentence, for errors and warnings)."""
    scaled = tau / NORSE_EXPORT_DT
    if tau < PLAUSIBLE_TAU_MIN and scaled >= dt:
        return (f"τ = {tau:g} s looks like Norse ≤ 1.1.0's to_nir bug, which writes dt_export·τ "
                f"(dt/tau_inv): exported at its default dt = {NORSE_EXPORT_DT:g} s the intended τ is {scaled:g} s; "
                f"compile with --tau-scale {1 / NORSE_EXPORT_DT:g} (1/dt_export), or with --dt below {tau:g} s "
                f"to run the time constants as written")
    return (f"τ = {tau:g} s is shorter than the step dt = {dt:g} s; compile with --dt at most {tau / 10:g} s "
            f"(a tenth of τ), or --integrator exact (no overshoot), or --tau-scale if the exporter wrote τ "
            f"in other units")


def tau_findings(g: Graph, dt: float, integrator: str) -> list[dict]:
    """Implausible time constants: ``[{node, field, tau, message, fatal}]``. ``fatal``:
    the Euler update overshoots (dt/τ > 1), so no simulation of it means anything."""
    out = []
    for name, node in g.nodes.items():
        for f in TAU_FIELDS:
            v = getattr(node, f, None)
            if v is None:
                continue
            t = np.asarray(v, dtype=np.float64)
            if t.size == 0:
                continue
            tmin = float(t.min())
            if tmin <= 0 or not np.isfinite(tmin) or tmin >= dt:
                continue
            n_short = int((t < dt).sum())
            over = integrator == "euler" and dt / tmin > 1
            what = ("one Euler step overshoots the equilibrium (dt/τ = "
                    f"{dt / tmin:.3g} > 1) and the simulation is meaningless" if over
                    else "the neuron forgets its input within one step")
            out.append({"node": name, "field": f, "tau": tmin, "fatal": over,
                        "message": f"{f} of {n_short} neuron(s) below dt = {dt:g} s (min {tmin:g} s): {what}",
                        "hint": tau_hint(tmin, dt)})
    return out


# ------------------------------------------------------------ --exporter NAME
#: The compile options each exporter's convention implies (``--exporter NAME``;
#: options given explicitly win). The table for users is docs/exporters.md.
EXPORTERS = {
    "snntorch": {"dt": 1e-4, "integrator": "euler", "reset": "zero"},
    "norse": {"dt": NORSE_EXPORT_DT, "integrator": "euler", "reset": "zero", "tau_scale": 1 / NORSE_EXPORT_DT},
    "sinabs": {"dt": 1.0, "reset": "subtract"},
    "rockpool": {"integrator": "exact", "reset": "subtract"},   # dt: recovered from the file (rockpool_dt)
}


def exporter_options(g: Graph, exporter: str | None, opts: dict) -> dict:
    """``opts`` with the exporter's convention filled in where an option is not given
    (for Rockpool also the dt its ``r`` encodes). Unknown names are refused."""
    if exporter is None:
        return opts
    if exporter not in EXPORTERS:
        from nmc.errors import OptionError

        raise OptionError(f"--exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}",
                          hint="see docs/exporters.md")
    preset = dict(EXPORTERS[exporter])
    if exporter == "rockpool":
        preset["dt"] = rockpool_dt(g)
    return {**opts, **{k: v for k, v in preset.items() if opts.get(k) is None}}


def _rockpool_neurons(g: Graph):
    """(name, node, τ_mem) of every spiking neuron with a membrane time constant (LIF, CubaLIF)."""
    for name, node in g.nodes.items():
        e = semantics.lookup(node)
        if e is not None and e.spiking and e.membrane_tau is not None:
            yield name, node, np.asarray(getattr(node, e.membrane_tau), dtype=np.float64)


def rockpool_dt(g: Graph) -> float:
    """The dt Rockpool ≤ 3.1's ``to_nir`` encodes in ``r = τ_mem·e^(−dt/τ_mem)/dt``:
    with u = dt/τ, u·e^u = 1/r, so dt = τ·W(1/r) (Lambert W). Every neuron must
    give the same dt (to float32 precision), else the file is not Rockpool's."""
    from scipy.special import lambertw

    from nmc.errors import GraphError

    found = []
    for name, node, tau in _rockpool_neurons(g):
        r = np.asarray(node.r, dtype=np.float64)
        if np.any(r <= 0) or np.any(tau <= 0):
            raise GraphError("Rockpool's convention needs r > 0 and τ > 0", node=name,
                             hint="compile without --exporter rockpool")
        found.append((name, tau * np.real(lambertw(1.0 / r))))
    if not found:
        raise GraphError("--exporter rockpool: the graph has no LIF/CubaLIF node whose r encodes Rockpool's dt",
                         hint="give --dt (and --integrator/--reset) instead")
    dts = np.concatenate([d.reshape(-1) for _, d in found])
    dt = float(f"{float(np.median(dts)):.6g}")          # Rockpool computes r in float32: 6 significant digits
    bad = [n for n, d in found if np.any(np.abs(d - dt) > 1e-5 * dt)]
    if bad:
        raise GraphError(f"the r of these neurons encodes dt {float(dts.min()):g}..{float(dts.max()):g} s, not one "
                         "Rockpool dt", node=bad[0], hint="compile without --exporter rockpool, with --dt")
    return dt


def rockpool_rewrite(g: Graph, dt: float) -> list[str]:
    """Rockpool's update (i ← β·(i + x), v ← α·v + i + b, subtract reset; α = e^(−dt/τ_mem),
    β = e^(−dt/τ_syn)) as NIR neurons under nmc's exact integrator
    (i ← β·i + w_in·(1 − β)·x, v ← α·v + r·(1 − α)·i): w_in = β/(1 − β), r = 1/(1 − α).
    Rockpool writes r = τ·α/dt and w_in = 1 instead, which NIR reads as another neuron.
    Returns the rewritten node names."""
    done = []
    for name, node, tau in _rockpool_neurons(g):
        a = np.exp(-dt / tau)
        node.r = np.broadcast_to(1.0 / (1.0 - a), np.shape(node.r)).copy()
        if semantics.of(node).current_based:
            b = np.exp(-dt / np.asarray(node.tau_syn, dtype=np.float64))
            node.w_in = np.broadcast_to(b / (1.0 - b), np.shape(node.r)).copy()
        done.append(name)
    return done
