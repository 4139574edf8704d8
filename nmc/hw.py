"""Hardware specs: every limit and constant of a target, as data.

A spec is a TOML file in ``hw_configs/`` (installed as ``nmc.hw_configs``).
Every number is an inline table carrying its unit, provenance grade and
source::

    [core]
    neurons_max = { value = 256, unit = "neuron", grade = "code", source = "py-spinnaker2 ..." }

Grades (as in the project's hardware notes): ``code`` (read in source),
``paper`` (from a paper), ``est`` (derived here from sourced numbers; the
derivation is in ``source``), ``unverified`` (plausible, not checked against a
primary source), ``user`` (a user override). ``value`` may be a number or a
list of numbers. Non-measurement text (``[spec] name``, ``target``,
``description``) may be plain strings; ``base = "other-spec"`` at the top
inherits from another spec and overrides its tables.

``HardwareSpec.load(name_or_path, overrides=[file.toml | dict, ...])``
deep-merges user overrides (``--hw``): an override may give a full inline
table or a bare number (which keeps the unit, sets grade ``user`` and records
the file as source). Overriding a key the spec does not have is an error that
names the nearest existing key (except under an ``[extra]`` table).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import ConfigError, InputFileError

GRADES = ("code", "paper", "est", "unverified", "user")
_TEXT_KEYS = {"name", "target", "description", "base"}
_MISSING = object()


@dataclass(frozen=True)
class SpecEntry:
    value: Any
    unit: str
    grade: str
    source: str


def list_specs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("nmc.hw_configs").iterdir() if p.name.endswith(".toml"))


def _read_toml(path_or_name: str | Path) -> tuple[dict, str]:
    p = Path(path_or_name)
    if p.suffix != ".toml" and not p.exists():
        res = resources.files("nmc.hw_configs") / f"{path_or_name}.toml"
        if not res.is_file():
            near = difflib.get_close_matches(str(path_or_name), list_specs(), n=1)
            raise ConfigError(f"unknown hardware spec '{path_or_name}'",
                              hint=(f"did you mean '{near[0]}'? " if near else "") + f"specs: {', '.join(list_specs())}")
        text, where = res.read_text(), f"hw_configs/{path_or_name}.toml"
    else:
        if not p.exists():
            raise InputFileError("hardware spec file not found", path=p, hint="check the --hw path")
        text, where = p.read_text(), str(p)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise InputFileError(f"malformed TOML: {e}", path=where, hint="fix the syntax at that line/column") from None


def _is_leaf(v) -> bool:
    return isinstance(v, dict) and "value" in v


def _merge(base: dict, over: dict, where: str, prefix: str = "", *, strict: bool = True) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{prefix}{k}"
        if k == "base":
            continue
        if k not in out:
            if strict and not key.startswith("extra") and not (prefix == "" and k in ("spec",)):
                near = difflib.get_close_matches(key, list(_flat_keys(base)), n=1)
                raise ConfigError(f"override key '{key}' is not in the spec", path=where,
                                  hint=(f"did you mean '{near[0]}'? " if near else "") + "put new keys under [extra]")
            out[k] = copy.deepcopy(v)
            continue
        cur = out[k]
        if _is_leaf(cur):
            if _is_leaf(v):
                out[k] = {**cur, **v}
            elif isinstance(v, (int, float, list)) and not isinstance(v, bool):
                out[k] = {**cur, "value": v, "grade": "user", "source": f"user override ({where})"}
            else:
                raise ConfigError(f"override of '{key}' must be a number or an inline table with 'value'", path=where)
        elif isinstance(cur, dict):
            if not isinstance(v, dict):
                raise ConfigError(f"'{key}' is a table; override its keys instead", path=where)
            out[k] = _merge(cur, v, where, key + ".", strict=strict)
        else:
            out[k] = v
    return out


def _flat_keys(d: dict, prefix: str = "") -> Iterator[str]:
    for k, v in d.items():
        if _is_leaf(v) or not isinstance(v, dict):
            yield prefix + k
        else:
            yield from _flat_keys(v, prefix + k + ".")


def _validate(d: dict, where: str, prefix: str = "") -> None:
    for k, v in d.items():
        key = prefix + k
        if _is_leaf(v):
            for f in ("unit", "grade", "source"):
                if not isinstance(v.get(f), str) or (f != "unit" and not v.get(f)):
                    raise ConfigError(f"'{key}' lacks a '{f}'", path=where,
                                      hint="every number needs value, unit, grade and source")
            if v["grade"] not in GRADES:
                raise ConfigError(f"'{key}' has grade {v['grade']!r}", path=where, hint=f"use one of {', '.join(GRADES)}")
            vals = v["value"] if isinstance(v["value"], list) else [v["value"]]
            for x in vals:
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    if isinstance(x, str):
                        continue
                    raise ConfigError(f"'{key}' value {x!r} is not a number", path=where)
                if not math.isfinite(x):
                    raise ConfigError(f"'{key}' value is not finite", path=where)
                if v["unit"] in ("count", "neuron", "core", "chip", "PE", "entry", "axon", "synapse", "byte", "bit") and x < 0:
                    raise ConfigError(f"'{key}' is a count and must be ≥ 0", path=where, actual=x)
        elif isinstance(v, dict):
            _validate(v, where, key + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ConfigError(f"'{key}' = {v} has no unit/source", path=where,
                              hint=f"write {k} = {{ value = {v}, unit = \"...\", grade = \"...\", source = \"...\" }}")


class HardwareSpec:
    def __init__(self, data: dict, where: str = "<dict>"):
        self._d = data
        self.where = where
        spec = data.get("spec", {})
        self.name = spec.get("name", Path(where).stem)
        self.target = spec.get("target", self.name)

    @classmethod
    def load(cls, name_or_path: str | Path, overrides: Sequence[str | Path | dict] = ()) -> "HardwareSpec":
        data, where = _read_toml(name_or_path)
        seen = {where}
        while "base" in data:
            base, bwhere = _read_toml(data["base"])
            if bwhere in seen:
                raise ConfigError("circular 'base' inheritance", path=where)
            seen.add(bwhere)
            data = _merge(base, data, where, strict=False)
        _validate(data, where)
        spec = cls(data, where)
        return spec.with_overrides(overrides) if overrides else spec

    def with_overrides(self, overrides: Sequence[str | Path | dict]) -> "HardwareSpec":
        data = self._d
        for o in overrides:
            if isinstance(o, dict):
                odata, where = o, "<dict>"
            else:
                odata, where = _read_toml(Path(o))
            data = _merge(data, odata, where)
        _validate(data, self.where)
        return HardwareSpec(data, self.where)

    # ----------------------------------------------------------- access
    def _node(self, key: str):
        cur: Any = self._d
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return _MISSING
            cur = cur[part]
        return cur

    def has(self, key: str) -> bool:
        return self._node(key) is not _MISSING

    def get(self, key: str, default: Any = _MISSING) -> Any:
        n = self._node(key)
        if n is _MISSING:
            if default is not _MISSING:
                return default
            near = difflib.get_close_matches(key, list(_flat_keys(self._d)), n=1)
            raise ConfigError(f"hardware spec '{self.name}' has no '{key}'",
                              hint=(f"did you mean '{near[0]}'? " if near else "") + "add it with --hw FILE.toml")
        return n["value"] if _is_leaf(n) else n

    def entry(self, key: str) -> SpecEntry:
        n = self._node(key)
        if not _is_leaf(n):
            raise ConfigError(f"hardware spec '{self.name}' has no number '{key}'")
        return SpecEntry(n["value"], n["unit"], n["grade"], n["source"])

    def section(self, key: str) -> dict[str, Any]:
        n = self._node(key)
        if not isinstance(n, dict) or _is_leaf(n):
            raise ConfigError(f"hardware spec '{self.name}' has no section '{key}'")
        return {k: (v["value"] if _is_leaf(v) else v) for k, v in n.items()}

    def entries(self) -> Iterator[tuple[str, SpecEntry]]:
        for key in _flat_keys(self._d):
            n = self._node(key)
            if _is_leaf(n):
                yield key, SpecEntry(n["value"], n["unit"], n["grade"], n["source"])

    def to_dict(self) -> dict:
        return copy.deepcopy(self._d)

    @classmethod
    def from_dict(cls, d: dict) -> "HardwareSpec":
        _validate(d, "<dict>")
        return cls(copy.deepcopy(d))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self._d, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"HardwareSpec({self.name!r})"
