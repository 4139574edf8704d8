"""The time scale of a BrainScaleS-2 mapping: the speed-up (model time / hardware time).

The circuits reach time constants only inside ``dac.range.tau_mem`` /
``dac.range.tau_syn`` (hardware seconds), through a linear 10-bit DAC, so a
time constant τ of the model becomes ``τ/speedup`` on the chip and is set to
one code in ``code_max`` across the range. The speed-up is not a constant of
the chip but a choice of the mapping, inside ``timing.speedup_range``; the
DAC's step is the same everywhere in the range, so the *relative* error of a
time constant is smallest when it sits high in the range. :func:`choose`
therefore takes the **smallest** speed-up that fits (the longest τ of the
network at the top of its range), then checks the shortest τ still reaches the
bottom: every τ fits without clipping. When the spread of the network's time
constants exceeds what any speed-up can cover (max τ/min τ > the range's
hi/lo), or the range of speed-ups excludes every fitting one, the mapping is
refused with the node and the ranges.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.errors import UnsupportedNodeError


@dataclass(frozen=True)
class Timescale:
    speedup: float
    bound_by: str      # what fixed it
    span: dict         # per parameter: (shortest, longest) model τ and the node holding each

    def report(self) -> dict:
        return {"speedup": self.speedup, "bound_by": self.bound_by,
                "tau_model_s": {p: {"min": lo, "min_node": ln, "max": hi, "max_node": hn}
                                for p, (lo, ln, hi, hn) in self.span.items()}}


def choose(taus: dict[str, dict[str, np.ndarray]], ranges: dict[str, tuple[float, float]],
           speed_range: tuple[float, float], nominal: float, user: float | None = None) -> Timescale:
    """``taus[node][param]``: model-time constants (s) that must land in ``ranges[param]``
    (hardware s) at the chosen speed-up. ``user`` (``--option speedup=X``) overrides the choice
    but is still checked."""
    span = {}
    for node, d in taus.items():
        for p, v in d.items():
            v = np.asarray(v, float).reshape(-1)
            if not v.size:
                continue
            lo, hi = float(v.min()), float(v.max())
            cur = span.get(p)
            if cur is None:
                span[p] = (lo, node, hi, node)
            else:
                span[p] = (min(cur[0], lo), cur[1] if cur[0] <= lo else node,
                           max(cur[2], hi), cur[3] if cur[2] >= hi else node)
    s_lo, s_hi = float(speed_range[0]), float(speed_range[1])
    # speed-ups that put every τ inside its range: τ/speed ≤ hi → speed ≥ τ_max/hi; τ/speed ≥ lo → speed ≤ τ_min/lo
    need_min = max([span[p][2] / ranges[p][1] for p in span] + [s_lo])
    need_max = min([span[p][0] / ranges[p][0] for p in span if ranges[p][0] > 0] + [s_hi])
    if user is not None:
        speed, why = float(user), "--option speedup"
    elif not span:
        speed, why = float(nominal), "nominal (no time constant to fit)"
    else:
        speed, why = need_min, "longest time constant at the top of the DAC range (finest relative DAC step)"
    if speed > need_max * (1 + 1e-9) or speed < need_min * (1 - 1e-9):
        p = max(span, key=lambda k: (span[k][2] / ranges[k][1]) / (span[k][0] / ranges[k][0])
                if ranges[k][0] > 0 else span[k][2] / ranges[k][1] / s_hi)
        lo, ln, hi, hn = span[p]
        r_lo, r_hi = ranges[p]
        raise UnsupportedNodeError(
            f"no time scale fits every {p}: the network's {p} spans {lo:g}..{hi:g} s of model time "
            f"(shortest in '{ln}', longest in '{hn}'), which needs a speed-up between {hi / r_hi:g} and "
            f"{(lo / r_lo if r_lo > 0 else float('inf')):g} for the DAC range [{r_lo:g}, {r_hi:g}] s of hardware time; the chip's speed-up range is "
            f"[{s_lo:g}, {s_hi:g}]" + (f" and --option speedup={user:g} was given" if user is not None else ""),
            node=ln if r_lo > 0 and lo / r_lo < need_min else hn, limit=f"[{r_lo:g}, {r_hi:g}] s", actual=f"{lo:g}..{hi:g} s",
            hint="bring the layer's time constants within a factor "
                 f"{r_hi / r_lo:g} of each other (retrain, or run the layer on a digital target)")
    return Timescale(float(speed), why, span)
