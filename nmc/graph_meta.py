"""The graph's compile facts NIR does not store: :class:`GraphMeta` (``dt``,
``integrator``, ``reset``).

The ``normalize`` pass resolves them once (compile option, else the model's
stored value, else :data:`DEFAULTS`, warned about) and stores them in
``graph.meta`` under the keys ``dt``, ``integrator`` and ``reset`` (the keys a
bundle's ``graph.nir`` has always held). Everything after normalize reads them
through :meth:`GraphMeta.of`, which has no defaults: a graph that normalize has
not seen is refused with a :class:`~nmc.errors.GraphError` naming the missing
key, never simulated or lowered at a time step someone guessed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GraphError, OptionError

INTEGRATORS = ("euler", "exact")
RESETS = ("zero", "subtract")
#: what normalize uses when neither the compile options nor the model say (dt: snnTorch's export convention)
DEFAULTS = {"dt": 1e-4, "integrator": "euler", "reset": "zero"}
KEYS = tuple(DEFAULTS)
#: the time steps nmc takes, seconds: 1 ns (below it every decay of a physical time constant
#: rounds to 1 in float64 and nothing moves) to 1000 s (discrete-time exports use dt = 1)
DT_RANGE = (1e-9, 1e3)


def check_dt(dt) -> float:
    """``dt`` as a float in :data:`DT_RANGE`, else an OptionError saying the range."""
    try:
        v = float(dt) if not isinstance(dt, (bool, complex, str)) else float("nan")
    except (TypeError, ValueError):
        v = float("nan")
    lo, hi = DT_RANGE
    if not (math.isfinite(v) and lo <= v <= hi):
        raise OptionError(f"--dt must be a number of seconds in [{lo:g}, {hi:g}], got {dt!r}",
                          hint="e.g. --dt 1e-3 (1 ms); snnTorch exports assume 1e-4, discrete-time exports 1",
                          limit=f"[{lo:g}, {hi:g}]", actual=dt)
    return v


@dataclass(frozen=True)
class GraphMeta:
    """``dt`` (seconds per step, finite > 0), ``integrator`` (euler|exact), ``reset``
    (zero|subtract: the mode of a spiking node without its own Reset annotation)."""

    dt: float
    integrator: str
    reset: str

    def __post_init__(self):
        dt = check_dt(self.dt)
        if self.integrator not in INTEGRATORS:
            raise OptionError(f"--integrator must be one of {', '.join(INTEGRATORS)}, not {self.integrator!r}")
        if self.reset not in RESETS:
            raise OptionError(f"--reset must be one of {', '.join(RESETS)}, not {self.reset!r}")
        object.__setattr__(self, "dt", dt)

    @classmethod
    def of(cls, graph) -> "GraphMeta":
        """The graph's meta as normalize set it; a :class:`GraphError` when a key is missing."""
        missing = [k for k in KEYS if k not in graph.meta]
        if missing:
            raise GraphError(f"the graph has no {', '.join(missing)} in its meta: the normalize pass has not run on it",
                             hint="run the normalize pass first (nmc.compile and the target pipelines do; in "
                                  "Python: PassManager(parse_pipeline('normalize')).run(graph, "
                                  "PassContext(options={'dt': ...})))")
        return cls(graph.meta["dt"], graph.meta["integrator"], graph.meta["reset"])

    def store(self, graph) -> None:
        """Write the three keys into ``graph.meta`` (normalize's one write)."""
        graph.meta["dt"], graph.meta["integrator"], graph.meta["reset"] = self.dt, self.integrator, self.reset
