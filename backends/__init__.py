"""Backends (installed as ``nmc.backends``): one package per target.

Every backend package has the same layout, so a reader who knows one knows
all: ``__init__.py`` (the :class:`~.base.Backend` object, ``BACKEND``),
``lower.py`` (Graph → Program), ``program.py`` (the frozen Program dataclass,
its files and IO map), ``emit.py`` (the native script the bundle ships),
``emulator.py`` (nmc's own device) and ``devices/`` (third-party simulators and
hardware, vendor packages imported lazily). The contracts are in
:mod:`nmc.backends.base`; ``docs/new_target.md`` shows how to add a target.

The registry is explicit (name -> "module:attribute"), imported lazily so a
target's heavy or vendor dependencies load only when it is used. A target
outside nmc is added with :func:`register` or, for an installed package,
through the ``nmc.targets`` entry-point group (``name = "module:attribute"``);
built-in names cannot be replaced. A backend's ``target_model(spec, options)``
builds the target's :class:`~nmc.target_model.TargetModel` (cores, bytes, work and
numerics from the spec), which the pass context carries as ``ctx.target``.
A backend may also declare ``language_model``: what the target does for language
models (a :class:`nmc.lm.target.LanguageModelTarget`: pipeline, host engines, report).
"""
from __future__ import annotations

from importlib import import_module

from nmc.errors import OptionError

BUILTIN: dict[str, str] = {
    "reference": "nmc.backends.reference:BACKEND",
    "spinnaker2": "nmc.backends.spinnaker2:BACKEND",
    "brainscales2": "nmc.backends.brainscales2:BACKEND",
    "loihi2": "nmc.backends.loihi2:BACKEND",
}
#: every target known in this process: the built-in ones, then registered ones
REGISTRY: dict[str, str] = dict(BUILTIN)

ENTRY_POINT_GROUP = "nmc.targets"


def _check_ref(name: str, ref: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise OptionError(f"target name {name!r} must be an identifier (letters, digits, _)")
    mod, sep, attr = ref.partition(":") if isinstance(ref, str) else ("", "", "")
    if not sep or not mod or not attr:
        raise OptionError(f"target '{name}': {ref!r} must be 'module:attribute' naming a Backend instance")


def register(name: str, ref: str, *, replace: bool = False) -> None:
    """Make target ``name`` available to ``nmc.compile``, ``Bundle.load``, sessions and the
    CLI: ``ref`` is ``"module:attribute"`` naming a :class:`~.base.Backend` instance,
    imported when the target is first used. A built-in target cannot be replaced; another
    registered one only with ``replace=True``."""
    _check_ref(name, ref)
    if name in BUILTIN:
        raise OptionError(f"target '{name}' is built in and cannot be replaced", hint="register it under another name")
    if name in REGISTRY and REGISTRY[name] != ref and not replace:
        raise OptionError(f"target '{name}' is already registered as {REGISTRY[name]}",
                          hint="pass replace=True, or pick another name")
    REGISTRY[name] = ref


def unregister(name: str) -> None:
    """Remove a target added with :func:`register` (built-in ones stay)."""
    if name in BUILTIN:
        raise OptionError(f"target '{name}' is built in and cannot be removed")
    REGISTRY.pop(name, None)


def _entry_points() -> dict[str, str]:
    """``nmc.targets`` entry points of the installed distributions (built-in names skipped)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def targets() -> list[str]:
    """Names of every available target: built in, registered, and from entry points."""
    return list(REGISTRY) + [n for n in _entry_points() if n not in REGISTRY]


def get_backend(name: str):
    ref = REGISTRY.get(name)
    if ref is None:
        ref = _entry_points().get(name)
        if ref is not None:
            _check_ref(name, ref)
    if ref is None:
        import difflib

        names = targets()
        near = difflib.get_close_matches(name, names, n=1)
        raise OptionError(f"unknown target '{name}'",
                          hint=(f"did you mean '{near[0]}'? " if near else "") + f"targets: {', '.join(names)}")
    mod, attr = ref.split(":")
    try:
        be = getattr(import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        if name in BUILTIN:
            raise
        raise OptionError(f"target '{name}' ({ref}) cannot be loaded: {type(e).__name__}: {e}",
                          hint="install the package that provides it, or fix its registration") from None
    from .base import Backend

    if not isinstance(be, Backend):
        raise OptionError(f"target '{name}': {ref} is a {type(be).__name__}, not an nmc.backends.base.Backend",
                          hint="subclass nmc.backends.base.Backend (see docs/new_target.md)")
    return be
