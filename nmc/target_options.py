"""Compile options checked before anything is loaded: ``dt``, ``seed`` and the
target options (``--option KEY=VALUE`` on the command line, extra keyword
arguments of :func:`nmc.compile`).

Target options are typed, like pass options: each backend declares a frozen
dataclass (``backends/<target>/options.py``, the backend's ``options``
attribute) deriving from :class:`CommonOptions` (the options read for every
target: the ONNX conversion, a language model's report). Each field is
declared with :func:`option`: its help, type, bounds or choices, and default.
:meth:`TargetOptions.parse` turns the raw ``{key: value}`` into that typed
object: an unknown key is refused with the list of valid ones (a typo must not
be ignored), a value of the wrong type or outside its range is refused naming
the option. ``nmc.compile`` hands the object to the passes and lowering as
``PassContext.target_options``; the bundle records the options as given.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import OptionError
from . import graph_meta


@dataclass(frozen=True)
class TargetOption:
    """One compile option: what it does, its type and range (``lo``/``hi`` inclusive unless ``*_open``)."""

    help: str
    type: type = str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.type is bool:
            return "true | false"
        if self.lo is None and self.hi is None:
            return self.type.__name__
        lo = "-inf" if self.lo is None else f"{self.type(self.lo)}"
        hi = "inf" if self.hi is None else f"{self.type(self.hi)}"
        return f"{self.type.__name__} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def check(self, name: str, value: Any) -> Any:
        bad = OptionError(f"option '{name}' must be {self.range_text()}, got {value!r}", hint=self.help)
        if self.choices:
            if str(value) not in map(str, self.choices):
                raise bad
            return value
        if self.type is str:
            return str(value)   # e.g. a pathlib.Path from nmc.compile(calibration=...)
        if self.type is bool:
            b = {"true": True, "false": False, "1": True, "0": False}.get(str(value).lower())
            if b is None or isinstance(value, float):
                raise bad
            return b
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = self.type(value)
            except (TypeError, ValueError):
                raise bad from None
        if self.type is int and float(value) != int(value):
            raise bad
        v = float(value)
        if not math.isfinite(v):
            raise bad
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise bad
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise bad
        return self.type(value)


def parse_value(v: str):
    """A ``KEY=VALUE`` value from the command line: int, else float, else true/false, else the text."""
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def check_dt(dt) -> float | None:
    """``dt`` (seconds) in :data:`nmc.graph_meta.DT_RANGE`, or None (the model's or the default)."""
    if dt is None:
        return None
    return graph_meta.check_dt(dt)


def check_seed(seed) -> int:
    """A seed numpy accepts: a whole number in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise OptionError(f"--seed must be a whole number in [0, 2**63), got {seed!r}", hint="e.g. --seed 0")
    return seed


def check_number(option: str, value, lo: float | None = None, hi: float | None = None) -> None:
    """A command-line number finite and within ``[lo, hi]`` (None: unbounded), else an
    OptionError naming the option; None (not given) passes."""
    if value is None:
        return
    v = float(value)
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f">= {lo}" if hi is None else f"in [{lo}, {hi}]") if lo is not None else \
            (f"<= {hi}" if hi is not None else "finite")
        raise OptionError(f"{option} must be {rng}, got {value}", limit=rng, actual=value)


def option(help: str, type: type = str, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False, choices: tuple = (), default: Any = None):
    """A target option field: ``name: int | None = option("what it does", int, 1, 8)``."""
    return field(default=default, metadata={"option": TargetOption(help, type, lo, hi, lo_open, hi_open, choices)})


#: compile options that travel in ``PassContext.options`` beside the target options
COMPILE_KEYS = frozenset({"target", "dt", "reset", "integrator", "seed", "tau_scale", "worst_case", "calibrate"})


@dataclass(frozen=True)
class TargetOptions:
    """Base of the typed option sets: a frozen dataclass whose fields are declared with :func:`option`."""

    target: ClassVar[str] = ""

    @classmethod
    def declared(cls) -> dict[str, TargetOption]:
        return {f.name: f.metadata["option"] for f in dataclasses.fields(cls)}

    @classmethod
    def parse(cls, values: dict, target: str | None = None) -> "TargetOptions":
        """The typed options from ``{key: value}`` (None: not given, the field's default)."""
        known = cls.declared()
        kw = {}
        for k, v in values.items():
            if k not in known:
                import difflib

                near = difflib.get_close_matches(k, known, n=1)
                raise OptionError(f"target '{target or cls.target}' has no option '{k}'",
                                  hint=(f"did you mean '{near[0]}'? " if near else "")
                                  + "valid options: " + ", ".join(sorted(known)))
            if v is not None:
                kw[k] = known[k].check(k, v)
        return cls(**kw)

    @classmethod
    def of(cls, ctx) -> "TargetOptions":
        """The typed options of a compile: ``ctx.target_options`` (set by :func:`nmc.compile`), else
        parsed from ``ctx.options`` for a context built by hand (its compile keys left aside)."""
        got = getattr(ctx, "target_options", None)
        if isinstance(got, cls):
            return got
        return cls.parse({k: v for k, v in (getattr(ctx, "options", None) or {}).items() if k not in COMPILE_KEYS})


@dataclass(frozen=True)
class CommonOptions(TargetOptions):
    """Options read for every target."""

    timesteps: int | None = option("ONNX models: timesteps the rate-coded SNN runs", int, 1, 1 << 20)
    encoding: str | None = option("ONNX models: input encoding", str, choices=("current", "poisson", "regular"))
    percentile: float | None = option("ONNX models: activation percentile used as each IF threshold", float, 0,
                                      100, lo_open=True)
    maxpool: str | None = option("ONNX models: MaxPool refused, or an approximate IF max tree", str,
                                 choices=("refuse", "spiking"))
    eval_text: str | None = option("language models: held-out text for reports/lm.json")
    eval_chars: int | None = option("language models: characters of eval_text used", int, 1)
    eval_streams: int | None = option("language models: pieces of eval_text run side by side", int, 1)


#: the options every target reads, by name
COMMON: dict[str, TargetOption] = CommonOptions.declared()


def options_class(backend) -> type[TargetOptions]:
    """The backend's option dataclass (:class:`CommonOptions` for a backend without its own)."""
    return getattr(backend, "options", None) or CommonOptions


def check_target_options(target: str, backend, options: dict) -> TargetOptions:
    """The typed target options, or an OptionError for an unknown key (listing the valid ones),
    a wrong type or an out-of-range value."""
    return options_class(backend).parse(options, target)


def options_text(backend) -> str:
    """The names of the options a target reads, for ``nmc targets`` (its own first; an
    out-of-range value's error states the range)."""
    own = [k for k in options_class(backend).declared() if k not in COMMON]
    return ", ".join([*own, *COMMON])
