"""nmc: one compiler from trained spiking/event-based networks to neuromorphic chips.

``nmc.compile(model, target=...)`` → :class:`~nmc.driver.bundle.Bundle`;
``nmc.load(path)``; ``bundle.run(inputs)``; ``nmc.save(module, path)`` writes a
PyTorch model that ``nmc compile`` reads without unpickling code;
``nmc.sweep(...)``, ``nmc.fit(...)`` and ``bundle.evaluate(data, workers=N)``
run design-space sweeps, fit searches and sharded evaluation on Ray.

These are the driver layer's (:mod:`nmc.driver`), loaded on first use; the
package's own modules (``nmc.ir``, ``nmc.errors``, ...) are the foundation
every other layer builds on (README "How it works").
"""
__version__ = "0.1.0"


def __getattr__(name):
    # lazy: keep `import nmc` light (no torch import until needed)
    if name in ("compile", "load"):
        from .driver import api

        return getattr(api, name)
    if name == "open":
        from .driver.api import open_session

        return open_session
    if name == "connect":
        from .runtime.client import connect

        return connect
    if name == "save":
        from .frontends.torch import save

        return save
    if name in ("sweep", "fit"):  # nmc.driver.distributed (Ray, the `distributed` extra)
        from .driver.distributed import fit, sweep

        return {"sweep": sweep.sweep, "fit": fit.fit}[name]
    if name == "Graph":
        from .ir import Graph

        return Graph
    raise AttributeError(f"module 'nmc' has no attribute {name!r}")
