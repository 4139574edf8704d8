"""Backends (installed as ``nmc.backends``): one package per target.

The registry is explicit (name -> "module:attribute"), imported lazily so a
target's heavy or vendor dependencies load only when it is used. Each backend
object provides::

    name, summary, spec_name (hw_configs name or None), devices (names),
    default_device, default_pipeline(options) -> str,
    lower(graph, ctx) -> Program,
    load_program(files: dict[str, bytes], graph) -> Program,
    device(name, program, **opts) -> Device
    language_model (optional): what the target does for language models,
        a :class:`nmc.lm.target.LanguageModelTarget` (pipeline, host engines, report)

A Program has ``files() -> {relative path: bytes}`` (written under the
bundle's ``program/``) and ``summary() -> dict`` (for ``nmc inspect``).
A Device has ``reset(batch=1)``, ``step(inputs_t) -> outputs_t`` and
``run(inputs, steps=None, record=()) -> dict`` (see :mod:`nmc.backends.base`).
"""
from __future__ import annotations

from importlib import import_module

from nmc.errors import OptionError

REGISTRY: dict[str, str] = {
    "reference": "nmc.backends.reference:BACKEND",
    "spinnaker2": "nmc.backends.spinnaker2:BACKEND",
    "brainscales2": "nmc.backends.brainscales2:BACKEND",
    "loihi2": "nmc.backends.loihi2:BACKEND",
}


def get_backend(name: str):
    if name not in REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, REGISTRY, n=1)
        raise OptionError(f"unknown target '{name}'",
                          hint=(f"did you mean '{near[0]}'? " if near else "") + f"targets: {', '.join(REGISTRY)}")
    mod, attr = REGISTRY[name].split(":")
    return getattr(import_module(mod), attr)
