"""Passes over nmc graphs (installed as ``nmc.passes``).

The registry is explicit: importing this package imports every pass module
listed below, each of which registers its passes with
:func:`nmc.passes.manager.register`. Add new pass modules to ``_MODULES``.
"""
from importlib import import_module

from .manager import (REGISTRY, Pass, PassContext, PassManager, complete_pipeline, parse_pipeline, pipeline_text,
                      register)

_MODULES = ("normalize", "quantize", "sparsify", "rewire", "partition", "place", "route")

for _m in _MODULES:
    import_module(f"{__name__}.{_m}")

__all__ = ["REGISTRY", "Pass", "PassContext", "PassManager", "complete_pipeline", "parse_pipeline", "pipeline_text",
           "register"]
