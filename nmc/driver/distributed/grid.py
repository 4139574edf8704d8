"""Grids of pass options: ``'quantize.bits=8,6,4; sparsify.density=1,0.5,0.2'``.

A key is ``pass.option``; its values are checked by the pipeline parser
(:func:`nmc.passes.parse_pipeline`), so an unknown pass or option is refused
with the valid ones listed, and a value of the wrong type names the option.
A point's pipeline is the base pipeline (``--passes``, or the target's default)
with the point's options set: on the pass when the pipeline has it, else on a
new instance of that pass inserted at its place in the canonical order
(normalize, quantize, sparsify, rewire, partition, place, route).
"""
from __future__ import annotations

import dataclasses
import itertools

from nmc.errors import OptionError

#: where a pass that the base pipeline lacks is inserted
ORDER = ("normalize", "quantize", "sparsify", "rewire", "partition", "place", "route")


def parse(text: str) -> dict[tuple[str, str], list]:
    """``{(pass, option): [typed values...]}`` in the order written."""
    from nmc.passes import REGISTRY

    grid: dict[tuple[str, str], list] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise OptionError(f"grid item {part!r} has no '='", hint="write pass.option=v1,v2,...; separate keys with ';'")
        key, vals = (s.strip() for s in part.split("=", 1))
        name, dot, opt = key.partition(".")
        if name not in REGISTRY:
            raise OptionError(f"grid key '{key}' names no pass",
                              hint=f"keys are pass.option with a pass among: {', '.join(REGISTRY)} (see `nmc passes`)")
        if not dot or not opt:
            raise OptionError(f"grid key '{key}' has no option",
                              hint=f"write {name}.OPTION; options of {name}: {', '.join(_options(name))}")
        if (name, opt) in grid:
            raise OptionError(f"grid key '{key}' given twice", hint="list all its values once: k=v1,v2")
        values = [v.strip() for v in vals.split(",") if v.strip()]
        if not values:
            raise OptionError(f"grid key '{key}' has no values", hint=f"write {key}=v1,v2")
        grid[(name, opt)] = [_typed(name, opt, v) for v in values]
    if not grid:
        raise OptionError("empty grid", hint="e.g. --grid 'quantize.bits=8,6,4; sparsify.density=1,0.5'")
    return grid


def _options(name: str) -> list[str]:
    from nmc.passes import REGISTRY

    return [f.name for f in dataclasses.fields(REGISTRY[name])]


def _typed(name: str, opt: str, raw: str):
    """The value as the pass parser types it (unknown options refused with the valid ones)."""
    from nmc.passes import parse_pipeline

    if opt not in _options(name):
        raise OptionError(f"grid key '{name}.{opt}': pass '{name}' has no option '{opt}'",
                          hint=f"options of {name}: {', '.join(_options(name))}")
    (p,) = parse_pipeline(f"{name}{{{opt}={raw}}}")
    return getattr(p, opt)


def points(grid: dict[tuple[str, str], list]) -> list[dict[str, object]]:
    """Every combination, as ``{"pass.option": value}``, in row-major order of the grid text."""
    keys = list(grid)
    return [{f"{n}.{o}": v for (n, o), v in zip(keys, combo)} for combo in itertools.product(*grid.values())]


def apply(base: str, params: dict[str, object]) -> str:
    """The base pipeline text with ``params`` (``{"pass.option": value}``) set."""
    from nmc.passes import REGISTRY, parse_pipeline, pipeline_text

    pipeline = parse_pipeline(base)
    by_pass: dict[str, dict] = {}
    for key, v in params.items():
        name, _, opt = key.partition(".")
        by_pass.setdefault(name, {})[opt] = v
    for name, opts in by_pass.items():
        idx = [i for i, p in enumerate(pipeline) if p.name == name]
        if idx:
            for i in idx:
                pipeline[i] = dataclasses.replace(pipeline[i], **opts)
            continue
        rank = ORDER.index(name) if name in ORDER else len(ORDER)
        at = next((i for i, p in enumerate(pipeline) if (ORDER.index(p.name) if p.name in ORDER else len(ORDER)) > rank),
                  len(pipeline))
        pipeline.insert(at, REGISTRY[name](**opts))
    return pipeline_text(pipeline)
