"""Hardware specs: every limit and constant of a target, as data.

A spec is a TOML file in ``hw_configs/`` (installed as ``nmc.hw_configs``);
code reads it only through :class:`HardwareSpec`. Every number is an inline
table with its unit, provenance grade and source::

    [core]
    neurons_max = { value = 256, unit = "neuron", grade = "code", source = "py-spinnaker2 scripts ..." }
    mac_array = { value = [16, 4], unit = "count", grade = "unverified", source = "..." }

* ``value``: a finite number or a non-empty list of finite numbers.
* ``unit``: free text (``"J"``, ``"W"``, ``"s"``, ``"byte"``, ``"LSB"``, ...).
  Units in :data:`COUNT_UNITS` mark counts: their values must be positive
  integers.
* ``grade``: ``code`` (read in source), ``paper`` (from a paper), ``est``
  (derived here from sourced numbers, derivation in ``source``),
  ``unverified`` (plausible, not checked against a primary source), ``user``
  (set by an override).
* ``source``: where the number comes from (non-empty).
* ``same_as`` (optional): the dotted key of another entry holding the same
  fact (e.g. ``numerics.weight_bits`` mirrors ``core.weight_bits``). The two
  must agree; an override of the named key is copied to the mirror, and an
  override of the mirror alone is an error.

Text that is not a measurement may be plain: strings, booleans and lists of
strings (``[spec] name``, ``target``, ``description``, ``graded_events =
true``). Plain numbers are rejected. ``base = "other-spec"`` (a packaged name,
or a path relative to the file) at the top inherits another spec: its tables
are deep-merged under this file's, and the file may add keys.

``HardwareSpec.load(name_or_path, overrides=[file.toml | dict, ...])`` applies
user overrides (``--hw``) on top, in order. An override gives a full inline
table, a table with only some fields (unit kept; grade ``user`` and the file as
source unless it says otherwise), or a bare number/list (keeps the unit, grade
``user``, source ``user override (<file>)``). A key the spec does not have is
an error naming the nearest existing key, except under ``[extra]``.

Errors: malformed TOML and missing/unreadable files raise
:class:`~nmc.errors.InputFileError` (file, tomllib's line/column); everything
else about a spec raises :class:`~nmc.errors.ConfigError` naming the file and
the dotted key.
"""
from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .errors import ConfigError, InputFileError

#: provenance grades; ``user`` is reserved for overrides
GRADES = ("code", "paper", "est", "unverified", "user")
#: units whose values are counts of things: positive integers
COUNT_UNITS = frozenset({"count", "neuron", "core", "PE", "chip", "entry", "axon", "synapse", "byte", "bit"})
_LEAF_FIELDS = ("value", "unit", "grade", "source")
_OPTIONAL_FIELDS = ("same_as",)
_PACKAGE = "nmc.hw_configs"
_MISSING = object()


@dataclass(frozen=True)
class SpecEntry:
    """One number of a spec with its unit, grade and source."""

    value: Any
    unit: str
    grade: str
    source: str


def list_specs() -> list[str]:
    """Names of the packaged specs (``HardwareSpec.load(name)`` accepts them)."""
    return sorted(p.name[:-5] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".toml"))


# ------------------------------------------------------------------ reading
def _looks_like_path(x: str | Path) -> bool:
    s = str(x)
    return isinstance(x, Path) or s.endswith(".toml") or "/" in s or "\\" in s


def _parse(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputFileError(f"malformed TOML: {e}", path=where, hint="fix the syntax at that line and column") from None


def _read_file(p: Path) -> tuple[dict, str]:
    where = str(p)
    if not p.is_file():
        what = "is not a file" if p.exists() else "not found"
        raise InputFileError(f"hardware spec file {what}", path=where,
                             hint="check the path (a packaged spec is named without .toml: " + ", ".join(list_specs()) + ")")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read hardware spec file: {e}", path=where, hint="check the file's permissions and encoding") from None
    return _parse(text, where), where


def _read(name_or_path: str | Path, relative_to: Path | None = None) -> tuple[dict, str, Path | None]:
    """(data, where, directory for relative ``base``) of a packaged name or a file."""
    if not _looks_like_path(name_or_path):
        res = resources.files(_PACKAGE) / f"{name_or_path}.toml"
        if res.is_file():
            return _parse(res.read_text(encoding="utf-8"), f"hw_configs/{name_or_path}.toml"), f"hw_configs/{name_or_path}.toml", None
        if not Path(name_or_path).is_file():
            near = difflib.get_close_matches(str(name_or_path), list_specs(), n=1)
            raise ConfigError(f"unknown hardware spec '{name_or_path}'",
                              hint=(f"did you mean '{near[0]}'? " if near else "")
                              + "packaged specs: " + ", ".join(list_specs()) + "; a file path must end in .toml")
    p = Path(name_or_path)
    if relative_to is not None and not p.is_absolute():
        p = relative_to / p
    data, where = _read_file(p)
    return data, where, p.parent


# ------------------------------------------------------------------ structure
def _is_leaf(v: Any) -> bool:
    return isinstance(v, dict) and "value" in v


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _node(d: Mapping, key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _leaves(d: Mapping, prefix: str = "") -> Iterator[tuple[str, dict]]:
    for k, v in d.items():
        if _is_leaf(v):
            yield prefix + k, v
        elif isinstance(v, dict):
            yield from _leaves(v, prefix + k + ".")


def _all_keys(d: Mapping, prefix: str = "") -> Iterator[str]:
    for k, v in d.items():
        yield prefix + k
        if isinstance(v, dict) and not _is_leaf(v):
            yield from _all_keys(v, prefix + k + ".")


def _near(key: str, d: Mapping) -> str:
    """'did you mean ...? ' for a missing dotted ``key`` of ``d``: the closest
    key (difflib), else the keys of the same table."""
    keys = list(_all_keys(d))
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if near:
        return f"did you mean '{near[0]}'? "
    table, _, last = key.rpartition(".")
    sib = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == table]
    near = difflib.get_close_matches(last, sib, n=1, cutoff=0.5)
    if near:
        return f"did you mean '{table + '.' if table else ''}{near[0]}'? "
    if sib:
        return f"[{table or 'top level'}] has: " + ", ".join(sib[:12]) + (", ..." if len(sib) > 12 else "") + "; "
    return ""


def _merge(base: dict, over: Mapping, where: str, *, strict: bool, prefix: str = "", root: Mapping | None = None) -> dict:
    """``over`` deep-merged onto a copy of ``base``.

    strict (a user override): keys must exist (except under ``extra``), leaf
    fields not given are kept, a bare number becomes a ``user`` value. Not
    strict (``base =`` inheritance): the child's tables and leaves replace the
    base's wholesale and may add keys."""
    root = base if root is None else root
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{prefix}{k}"
        if prefix == "" and k == "base":
            continue
        if k not in out:
            if strict and not (key == "extra" or key.startswith("extra.")):
                raise ConfigError(f"override key '{key}' is not in the spec", path=where,
                                  hint=_near(key, root) + "put new keys under [extra]")
            out[k] = copy.deepcopy(v)
            continue
        cur = out[k]
        if _is_leaf(cur):
            if not strict:
                out[k] = copy.deepcopy(v)
            elif isinstance(v, dict):
                bad = sorted(set(v) - set(_LEAF_FIELDS) - set(_OPTIONAL_FIELDS))
                if bad:
                    raise ConfigError(f"override of '{key}' has unknown field(s) {', '.join(bad)}", path=where,
                                      hint="an entry has value, unit, grade, source")
                new = {**cur, **copy.deepcopy(v)}
                if "value" in v and "grade" not in v:
                    new["grade"] = "user"
                if "value" in v and "source" not in v:
                    new["source"] = f"user override ({where})"
                out[k] = new
            elif _is_number(v) or isinstance(v, list):
                out[k] = {**cur, "value": copy.deepcopy(v), "grade": "user", "source": f"user override ({where})"}
            else:
                raise ConfigError(f"override of '{key}' must be a number, a list of numbers or an inline table",
                                  path=where, actual=repr(v))
            if strict and isinstance(out[k]["value"], list) != isinstance(cur["value"], list):
                shape = "a list" if isinstance(cur["value"], list) else "a single number"
                raise ConfigError(f"override of '{key}' must be {shape}, like the spec's value", path=where,
                                  limit=cur["value"], actual=out[k]["value"])
        elif isinstance(cur, dict):
            if not isinstance(v, dict):
                raise ConfigError(f"'{key}' is a table; override its keys instead", path=where, actual=repr(v))
            out[k] = _merge(cur, v, where, strict=strict, prefix=key + ".", root=root)
        else:
            if isinstance(v, dict):
                raise ConfigError(f"'{key}' is a plain value, not a table", path=where)
            out[k] = copy.deepcopy(v)
    return out


def _sync_mirrors(data: dict, over: Mapping, where: str) -> None:
    """After an override: copy an overridden key to its ``same_as`` mirrors;
    an override of a mirror alone is an error (the named key is the one to set)."""
    for key, leaf in _leaves(data):
        target = leaf.get("same_as")
        if not isinstance(target, str) or not _is_leaf(_node(data, target)):
            continue  # _validate reports it
        tgt = _node(data, target)
        if leaf["value"] == tgt["value"]:
            continue
        if _node(over, key) is not _MISSING:
            raise ConfigError(f"'{key}' is the same fact as '{target}' and follows it", path=where,
                              hint=f"override '{target}' instead")
        leaf["value"] = copy.deepcopy(tgt["value"])
        leaf["grade"] = tgt["grade"]
        leaf["source"] = f"same as {target}: {tgt['source']}"


def _validate(d: Mapping, where: str, root: Mapping | None = None, prefix: str = "", *, refs: bool = True) -> None:
    """ConfigError (naming ``where`` and the key) unless ``d`` is a well-formed
    spec; ``refs``: also check ``same_as`` references (off for one file of a
    ``base`` chain, whose references may point into the base)."""
    root = d if root is None else root
    for k, v in d.items():
        key = prefix + k
        if _is_leaf(v):
            _validate_leaf(key, v, where, root if refs else None)
        elif isinstance(v, dict):
            if any(f in v for f in ("unit", "grade", "source")):
                raise ConfigError(f"'{key}' lacks a 'value'", path=where,
                                  hint="write it as { value = ..., unit = \"...\", grade = \"...\", source = \"...\" }")
            _validate(v, where, root, key + ".", refs=refs)
        elif _is_number(v) or (isinstance(v, list) and any(_is_number(x) for x in v)):
            raise ConfigError(f"'{key}' = {v!r} has no unit, grade or source", path=where,
                              hint=f"write {k} = {{ value = {v!r}, unit = \"...\", grade = \"...\", source = \"...\" }}")
        elif prefix == "" and k == "base":
            if not isinstance(v, str):
                raise ConfigError("'base' must be a spec name or a path", path=where, actual=repr(v))
        elif not (isinstance(v, (str, bool)) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
            raise ConfigError(f"'{key}' has a value of type {type(v).__name__}", path=where,
                              hint="numbers go in { value = ... } tables; plain values may be text or true/false")
    if refs:
        _check_ordered_pairs(d, where, prefix)


def _check_ordered_pairs(d: Mapping, where: str, prefix: str) -> None:
    """``<x>_min`` ≤ ``<x>_max`` for every pair of entries of one table (e.g. an override
    with weight_min > weight_max would make every clip empty)."""
    for k, v in d.items():
        if not (k.endswith("_min") and _is_leaf(v)):
            continue
        hi = d.get(k[:-4] + "_max")
        if not _is_leaf(hi) or isinstance(v["value"], list) or isinstance(hi["value"], list):
            continue
        if v["value"] > hi["value"]:
            raise ConfigError(f"'{prefix}{k}' = {v['value']} is above '{prefix}{k[:-4]}_max' = {hi['value']}",
                              path=where, limit=hi["value"], actual=v["value"],
                              hint=f"the range must be ordered: {k} <= {k[:-4]}_max")


#: units of quantities that must be > 0 when given as one number (a duration, a rate, a
#: frequency: a zero tick or clock would divide by zero); as a list (a range or a set of
#: operating points) they must be >= 0 and ascending
POSITIVE_UNITS = frozenset({"s", "Hz", "bit/s", "V", "TOPS/W"})
#: units of quantities that cannot be negative (energies, powers, cycle counts, fractions)
NONNEGATIVE_UNITS = frozenset({"J", "W", "cycle", "ratio"})


def _validate_leaf(key: str, v: dict, where: str, root: Mapping | None) -> None:
    bad = sorted(set(v) - set(_LEAF_FIELDS) - set(_OPTIONAL_FIELDS))
    if bad:
        raise ConfigError(f"'{key}' has unknown field(s) {', '.join(bad)}", path=where,
                          hint="an entry has value, unit, grade, source (and optionally same_as)")
    for f in ("unit", "grade", "source"):
        if not isinstance(v.get(f), str) or (f != "unit" and not v[f].strip()):
            raise ConfigError(f"'{key}' lacks a '{f}'", path=where, hint="every number needs value, unit, grade and source")
    if v["grade"] not in GRADES:
        raise ConfigError(f"'{key}' has grade {v['grade']!r}", path=where, hint=f"use one of {', '.join(GRADES)}")
    vals = v["value"] if isinstance(v["value"], list) else [v["value"]]
    if not vals:
        raise ConfigError(f"'{key}' has an empty list as value", path=where)
    for x in vals:
        if not _is_number(x):
            raise ConfigError(f"'{key}' value {x!r} is not a number", path=where)
        if not math.isfinite(x):
            raise ConfigError(f"'{key}' value {x!r} is not finite", path=where)
        if v["unit"] in COUNT_UNITS and (x <= 0 or x != int(x)):
            raise ConfigError(f"'{key}' is a count ({v['unit']}) and must be a positive integer", path=where,
                              actual=x)
        if v["unit"] in POSITIVE_UNITS and not isinstance(v["value"], list) and x <= 0:
            raise ConfigError(f"'{key}' ({v['unit']}) must be > 0", path=where, limit="> 0", actual=x,
                              hint=f"give '{key}' a positive value")
        if (v["unit"] in NONNEGATIVE_UNITS or v["unit"] in POSITIVE_UNITS) and x < 0:
            raise ConfigError(f"'{key}' ({v['unit']}) cannot be negative", path=where, limit=">= 0", actual=x)
    if (isinstance(v["value"], list) and len(vals) == 2 and v["unit"] not in COUNT_UNITS
            and vals[0] > vals[1]):
        raise ConfigError(f"'{key}' is a range [low, high] and must be ordered", path=where,
                          actual=vals, hint=f"write [{vals[1]}, {vals[0]}]")
    if "same_as" in v and root is not None:
        tgt = _node(root, v["same_as"]) if isinstance(v["same_as"], str) else _MISSING
        if not _is_leaf(tgt):
            raise ConfigError(f"'{key}' is same_as {v['same_as']!r}, which is not an entry of the spec", path=where)
        if tgt["value"] != v["value"]:
            raise ConfigError(f"'{key}' must equal '{v['same_as']}' (same_as)", path=where,
                              limit=tgt["value"], actual=v["value"], hint=f"set '{v['same_as']}' only; '{key}' follows it")


def _values(d: Mapping) -> dict[str, Any]:
    return {k: (copy.deepcopy(v["value"]) if _is_leaf(v) else _values(v) if isinstance(v, dict) else v)
            for k, v in d.items()}


# ------------------------------------------------------------------ the spec
class HardwareSpec:
    """A validated hardware spec. Build it with :meth:`load` or :meth:`from_dict`."""

    def __init__(self, data: dict, where: str = "<dict>"):
        self._d = data
        self.where = where
        spec = data.get("spec", {}) if isinstance(data.get("spec"), dict) else {}
        self.name: str = str(spec.get("name", Path(where).stem))
        self.target: str = str(spec.get("target", self.name))

    @classmethod
    def load(cls, name_or_path: str | Path, overrides: Sequence[str | Path | Mapping] = ()) -> "HardwareSpec":
        """A packaged spec by name (see :func:`list_specs`) or a TOML file, with
        its ``base`` chain resolved and ``overrides`` applied in order."""
        data, where, here = _read(name_or_path)
        _validate(data, where, refs=False)
        chain = [where]
        while "base" in data:
            base, bwhere, here = _read(data["base"], here)
            if bwhere in chain:
                raise ConfigError("circular 'base' inheritance: " + " -> ".join(chain + [bwhere]), path=where)
            _validate(base, bwhere, refs=False)
            data = _merge(base, data, chain[-1], strict=False)
            chain.append(bwhere)
        _validate(data, where)
        spec = cls(data, where)
        return spec.with_overrides(overrides) if overrides else spec

    def with_overrides(self, overrides: Sequence[str | Path | Mapping]) -> "HardwareSpec":
        """A new spec with ``overrides`` (TOML files or dicts) applied in order."""
        if isinstance(overrides, (str, Path, Mapping)):
            overrides = [overrides]
        data = self._d
        for o in overrides:
            if isinstance(o, Mapping):
                odata, where = dict(o), "<dict>"
            else:
                odata, where = _read_file(Path(o))
            data = _merge(data, odata, where, strict=True)
            _sync_mirrors(data, odata, where)
            _validate(data, where)
        return HardwareSpec(data, self.where)

    # ----------------------------------------------------------- access
    def has(self, key: str) -> bool:
        """Whether the dotted ``key`` (an entry, table or plain value) exists."""
        return _node(self._d, key) is not _MISSING

    def _missing(self, key: str, what: str = "") -> ConfigError:
        return ConfigError(f"hardware spec '{self.name}' has no {what}'{key}'", path=self.where,
                           hint=_near(key, self._d) + "add it with --hw FILE.toml")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at dotted ``key`` (``"core.neurons_max"``); a table comes
        back as its raw dict. Missing: ``default`` if given, else ConfigError."""
        n = _node(self._d, key)
        if n is _MISSING:
            if default is not _MISSING:
                return default
            raise self._missing(key)
        return copy.deepcopy(n["value"] if _is_leaf(n) else n)

    def entry(self, key: str) -> SpecEntry:
        """The entry at ``key`` with its unit, grade and source."""
        n = _node(self._d, key)
        if not _is_leaf(n):
            raise self._missing(key, "number ")
        return SpecEntry(copy.deepcopy(n["value"]), n["unit"], n["grade"], n["source"])

    def section(self, key: str) -> dict[str, Any]:
        """Table ``key`` as ``{name: value}`` (sub-tables as nested dicts of values)."""
        n = _node(self._d, key)
        if not isinstance(n, dict) or _is_leaf(n):
            raise self._missing(key, "table ")
        return _values(n)

    def entries(self) -> Iterator[tuple[str, SpecEntry]]:
        """Every numeric entry as ``(dotted key, SpecEntry)``, in file order."""
        for key, n in _leaves(self._d):
            yield key, SpecEntry(copy.deepcopy(n["value"]), n["unit"], n["grade"], n["source"])

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """Plain, JSON-serialisable nested dict (entries keep unit/grade/source);
        :meth:`from_dict` is its inverse."""
        return copy.deepcopy(self._d)

    @classmethod
    def from_dict(cls, d: Mapping) -> "HardwareSpec":
        """A spec from :meth:`to_dict` output (e.g. a bundle's hw.json)."""
        if not isinstance(d, Mapping):
            raise ConfigError("a hardware spec must be a table (dict)", actual=type(d).__name__)
        if "base" in d:
            raise ConfigError("a spec given as a dict must be resolved (no 'base')", hint="use HardwareSpec.load")
        data = copy.deepcopy(dict(d))
        _validate(data, "<dict>")
        return cls(data)

    def canonical_json(self) -> str:
        """The canonical JSON text (sorted keys, no whitespace) that :meth:`sha256` hashes."""
        return json.dumps(self._d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"HardwareSpec({self.name!r}, target={self.target!r}, from {self.where!r})"


# ------------------------------------------------------------------ readers of one table
@functools.lru_cache(maxsize=None)
def packaged(name: str) -> HardwareSpec:
    """The packaged spec ``name`` without overrides, read once (readers never modify a HardwareSpec)."""
    return HardwareSpec.load(name)


def key_error(key: str, msg: str, *, where: str | None, limit: Any = None, actual: Any = None,
              hint: str | None = None) -> ConfigError:
    """The ConfigError of a spec value a reader cannot use: ``"<key> = <actual>: <msg>"`` naming the
    spec's file, the limit it broke and the fix."""
    return ConfigError(f"{key} = {actual}: {msg}", path=where, limit=limit, actual=actual, hint=hint)


def read_numbers(spec: HardwareSpec, keys: Mapping[str, str], *, real: Sequence[str] = ()) -> dict[str, Any]:
    """``{name: value}`` of the spec's dotted ``keys`` (``{name: "table.key"}``), each checked.

    A name in ``real`` must be a finite number and comes back as a float; every other name must
    be a whole number and comes back as an int (``8.0`` reads as ``8``: an override may write
    either). Anything else is a :func:`key_error` naming the dotted key; a missing key is the spec's
    own ConfigError (:meth:`HardwareSpec.get`)."""
    out: dict[str, Any] = {}
    where = getattr(spec, "where", None)
    for name, key in keys.items():
        v = spec.get(key)
        if name in real:
            if not _is_number(v) or not math.isfinite(v):
                raise key_error(key, "must be a finite number", where=where, limit="a finite number", actual=v,
                                hint=f"give {key} one number")
            out[name] = float(v)
        else:
            if not _is_number(v) or not float(v).is_integer():
                raise key_error(key, "must be a whole number", where=where, limit="a whole number", actual=v,
                                hint=f"give {key} a whole number")
            out[name] = int(v)
    return out
