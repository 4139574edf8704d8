"""Passes and the pass manager.

A pass is a frozen dataclass with typed options and one
``apply(graph, ctx) -> Graph``. It declares ``requires`` (annotation kinds or
meta keys that must exist first) and ``provides``; it writes what it decides
into annotations or graph meta (never hidden state) and may add a section to
``ctx.reports`` (written to the bundle's ``reports/<pass>.json``).

Pipelines are text: ``"normalize,quantize{bits=8,method=maxabs},place"``.
Option values parse by the field's type (int, float, bool, str, tuple).
What a target's lowering reads and only a pass writes (``Backend.lowering_requires``,
e.g. the placement) is completed by :func:`complete_pipeline`: the pass that is its
default provider (``Pass.default_for``) is appended to a pipeline that lacks one.

:class:`PassManager` runs a pipeline, verifies the graph after every pass,
turns any failure into a :class:`~nmc.errors.PassError` naming the pass (and
node, when known), can dump the graph after every pass (``--dump-ir DIR``) and,
with ``--dump-ir DIR``, writes a reproducer (graph before the failing pass +
pipeline text) into DIR on failure. Without it nothing is written (nmc writes
only where the user said): the error says how to get one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from nmc.errors import NmcError, OptionError, PassError, Warnings
from nmc.ir import Graph
from nmc.target_model import TargetModel


@dataclass
class PassContext:
    """What passes may read besides the graph. Passed explicitly, never global.

    spec: the target's HardwareSpec (None for the reference target).
    target: the target's :class:`~nmc.target_model.TargetModel`, built by the
      backend from ``spec`` (``backend.target_model(spec)``); when not given,
      :meth:`target_model` builds the generic model of ``spec``. The design
      rules, partition, place and route read limits, bytes and work from it.
    options: compile options (dt, reset, integrator, target, seed, ...) as given.
    target_options: the target's typed options (a frozen dataclass of
    ``backends/<target>/options.py``, parsed by :mod:`nmc.target_options`),
    or None for a context built by hand (``TargetOptions.of(ctx)`` then parses ``options``).
    data: calibration inputs ``{input node: (T, [B,] *shape)}`` or None.
    reports: report sections by pass name (JSON-serialisable).
    """

    spec: Any = None
    options: dict = field(default_factory=dict)
    target_options: Any = None
    data: dict | None = None
    reports: dict = field(default_factory=dict)
    warnings: Warnings = field(default_factory=Warnings)
    dump_dir: Path | None = None
    progress: Callable[[str], None] | None = None
    seed: int = 0
    #: wall-clock seconds per pass (``"<index>-<name>"``); kept out of ``reports``
    #: because bundles must be byte-identical across compiles.
    timings: dict = field(default_factory=dict)
    #: derived models shared between passes (e.g. the placement passes' network
    #: model), ``{kind: (key, value)}``. The key is a fingerprint of everything
    #: the value was computed from (:func:`nmc.passes.netmodel.structure_key`);
    #: a reader rebuilds when the key of the graph it gets differs, so an entry
    #: can never be used stale. Only the latest entry per kind is kept.
    cache: dict = field(default_factory=dict)
    target: Any = None
    #: digests of read-only arrays, ``{id(array): (array, digest)}`` (the network model's structure
    #: key, :func:`nmc.passes.netmodel.structure_key`): a node's weights are hashed once per compile,
    #: not once per request. Valid while the arrays stay read-only: :meth:`PassManager.run`
    #: empties it when it makes the node arrays writable again.
    digests: dict = field(default_factory=dict, repr=False)

    def target_model(self) -> TargetModel:
        """``target``, else (built once) the generic target model of ``spec``."""
        if self.target is None:
            self.target = TargetModel.from_spec(self.spec)
        return self.target

    def cached(self, kind: str, key, build: Callable[[], Any]) -> Any:
        """The cached value of ``kind`` when its key equals ``key``, else ``build()`` (stored)."""
        hit = self.cache.get(kind)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = build()
        self.cache[kind] = (key, value)
        return value

    def rng(self, salt: str = "") -> np.random.Generator:
        return np.random.default_rng([self.seed, *map(ord, salt)])


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    #: what this pass is the default provider of: :func:`complete_pipeline` appends it (with its
    #: default options) to a pipeline that lacks a provider of one of these when the target's
    #: lowering reads it (``Backend.lowering_requires``)
    default_for: ClassVar[tuple[str, ...]] = ()
    #: inclusive ranges of numeric options, ``{option: (lo, hi)}`` (None: unbounded); checked
    #: on construction with every float option finite, so a bad value is an OptionError naming
    #: the pass and option, never a crash inside the pass
    bounds: ClassVar[dict[str, tuple]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            lo, hi = self.bounds.get(f.name, (None, None))
            if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
                raise OptionError(f"option '{f.name}' of pass '{self.name}' must be {_range_text(lo, hi)}, got {v}",
                                  hint=f"e.g. {self.name}{{{f.name}={f.default if f.default is not None else lo}}}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:  # pragma: no cover - interface
        raise NotImplementedError

    def text(self) -> str:
        opts = ",".join(f"{f.name}={_fmt(getattr(self, f.name))}" for f in dataclasses.fields(self)
                        if getattr(self, f.name) != f.default)
        return f"{self.name}{{{opts}}}" if opts else self.name

    @classmethod
    def options_help(cls) -> list[tuple[str, str, str]]:
        hints = typing.get_type_hints(cls)
        return [(f.name, _type_name(hints.get(f.name, str))
                 + (f" {_range_text(*cls.bounds[f.name])}" if f.name in cls.bounds else ""), _fmt(f.default))
                for f in dataclasses.fields(cls)]


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return "finite"


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ";".join(map(str, v)) + ")"
    return str(v)


def _type_name(t) -> str:
    return getattr(t, "__name__", str(t).replace("typing.", ""))


# -------------------------------------------------------------- registry
REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


_ITEM = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(\{([^{}]*)\})?\s*(,|$)")


def _convert(cls: type[Pass], key: str, raw: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if key not in names:
        import difflib

        near = difflib.get_close_matches(key, names, n=1)
        raise OptionError(f"pass '{cls.name}' has no option '{key}'",
                          hint=(f"did you mean '{near[0]}'? " if near else "") + f"options: {', '.join(sorted(names))}")
    t = hints.get(key, str)
    origin = typing.get_origin(t)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if raw.lower() in ("none", ""):
            return None
        t, origin = args[0], typing.get_origin(args[0])
    try:
        if t is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t in (int, float, str):
            return t(raw)
        if origin is tuple:
            inner = typing.get_args(t)[0] if typing.get_args(t) else str
            raw = raw.strip("()")
            return tuple(inner(x) for x in raw.split(";") if x.strip())
    except ValueError:
        raise OptionError(f"option '{key}' of pass '{cls.name}' expects {_type_name(t)}, got {raw!r}") from None
    return raw


def parse_pipeline(text: str) -> list[Pass]:
    """Parse ``"a,b{k=v,k2=v2},c"`` into pass instances (validated options)."""
    passes: list[Pass] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise OptionError(f"cannot parse pipeline at {text[pos:pos + 20]!r}",
                              hint="write passes as name or name{key=value,key=value}, separated by commas")
        name, body = m.group(1), m.group(3)
        if name not in REGISTRY:
            import difflib

            near = difflib.get_close_matches(name, REGISTRY, n=1)
            raise OptionError(f"unknown pass '{name}'",
                              hint=(f"did you mean '{near[0]}'? " if near else "") + "list passes with `nmc passes`")
        cls = REGISTRY[name]
        kw = {}
        if body:
            for item in filter(None, (s.strip() for s in body.split(","))):
                if "=" not in item:
                    raise OptionError(f"option {item!r} of pass '{name}' has no '='", hint=f"write {name}{{key=value}}")
                k, v = (s.strip() for s in item.split("=", 1))
                kw[k] = _convert(cls, k, v)
        try:
            passes.append(cls(**kw))
        except NmcError:
            raise
        except (TypeError, ValueError) as e:
            raise OptionError(f"invalid options for pass '{name}': {e}") from None
        pos = m.end()
    return passes


def complete_pipeline(passes: list[Pass], requires: tuple[str, ...]) -> tuple[list[Pass], list[Pass]]:
    """``passes`` completed for a lowering that reads ``requires`` (annotation kinds, e.g.
    ``"placement"``; ``Backend.lowering_requires``): for each requirement no pass of ``passes``
    provides, the registered pass that is its default provider (:attr:`Pass.default_for`, default
    options) is appended at the end, after every pass that could change what it decides. Returns
    (the pipeline, the passes added); the pass manager then runs, verifies and reports them as any
    other. A requirement without a default provider is a :class:`~nmc.errors.PassError`."""
    out, added = list(passes), []
    for r in requires:
        if any(r in p.provides for p in out):
            continue
        cls = next((c for c in REGISTRY.values() if r in c.default_for), None)
        if cls is None:
            raise PassError(f"the target's lowering reads '{r}', which no pass of the pipeline provides",
                            hint="add a pass that provides it to --passes (`nmc passes` lists them)")
        added.append(cls())
        out.append(added[-1])
    return out, added


def pipeline_text(passes: list[Pass]) -> str:
    return ",".join(p.text() for p in passes)


# ---------------------------------------------------------------- manager
class PassManager:
    def __init__(self, passes: list[Pass]):
        self.passes = list(passes)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        g = graph
        if ctx.dump_dir:
            ctx.dump_dir = Path(ctx.dump_dir)
            ctx.dump_dir.mkdir(parents=True, exist_ok=True)
            (ctx.dump_dir / "00-input.txt").write_text(g.dump())
        frozen: list = []   # arrays read-only while passes run; writable again in the graph returned
        for i, p in enumerate(self.passes, 1):
            if ctx.progress:
                ctx.progress(p.name)
            earlier = {x for q in self.passes[:i - 1] for x in q.provides}
            missing = [r for r in p.requires if r not in earlier and not _provided(g, r)]
            if missing:
                raise PassError(f"needs {', '.join(missing)}, which no earlier pass provided",
                                pass_name=p.name, hint=f"put the pass providing {missing[0]} before '{p.name}'")
            before = g
            t0 = time.perf_counter()
            try:
                g = p.apply(g.copy(), ctx)
                g.verify()
                frozen += g.freeze_arrays()   # the next pass's copy shares these arrays instead of copying them
            except PassError:
                raise
            except NmcError as e:
                if isinstance(e, OptionError) or type(e).__name__ == "DesignRuleError":
                    raise
                raise PassError(e.message, pass_name=p.name, node=e.node, limit=e.limit, actual=e.actual,
                                hint=e.hint, reproducer=self._safe_reproducer(before, p, ctx)) from e
            except Exception as e:  # a bug in a pass: keep the traceback chained, name the pass
                raise PassError(f"internal error: {type(e).__name__}: {e}", pass_name=p.name,
                                reproducer=self._safe_reproducer(before, p, ctx)) from e
            ctx.timings[f"{i:02d}-{p.name}"] = time.perf_counter() - t0
            if ctx.dump_dir:
                (ctx.dump_dir / f"{i:02d}-{p.name}.txt").write_text(g.dump())
        ctx.reports.setdefault("passes", {})["pipeline"] = pipeline_text(self.passes)
        g.thaw_arrays(frozen)
        ctx.digests.clear()   # the arrays are writable again: no digest of them may be reused
        return g

    def _safe_reproducer(self, graph: Graph, p: Pass, ctx: PassContext) -> str | None:
        """The reproducer's folder (``ctx.dump_dir``), or None when no folder was named or it
        cannot be written: a failure to write it must never replace the error being reported."""
        if not ctx.dump_dir:
            return None
        try:
            return self._reproducer(graph, p, ctx)
        except Exception:  # noqa: BLE001 - any failure here would hide the real error
            return None

    def _reproducer(self, graph: Graph, p: Pass, ctx: PassContext) -> str:
        from nmc import serialize

        d = Path(ctx.dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        serialize.write(d / "reproducer.nir", graph)
        (d / "reproducer.json").write_text(json.dumps(
            {"failing_pass": p.text(), "pipeline": pipeline_text(self.passes), "options": ctx.options,
             "command": f"nmc compile {d / 'reproducer.nir'} --passes '{p.text()}'"},
            indent=2, sort_keys=True, default=str))
        return str(d)


def _provided(g: Graph, what: str) -> bool:
    if what.startswith("meta:"):
        return what[5:] in g.meta
    return any(what in anns for anns in g.annotations.values())
