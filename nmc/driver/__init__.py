"""The driver layer: what a user calls, on top of every other layer.

:mod:`.api` (``nmc.compile``, ``nmc.load``, ``nmc.open``), :mod:`.cli` (the
``nmc`` command), :mod:`.bundle` (the compiled artefact on disk),
:mod:`.model_kinds` (what a compile does per kind of model: a network or a
language model), :mod:`.fidelity_check` (emulator vs reference after every
compile), :mod:`.output_paths` (``-o`` safety), :mod:`.distributed` (sweeps,
fit searches and sharded evaluation on Ray).

Layers, lowest first (``tests/test_layering.py`` keeps imports pointing down):
foundation (``nmc.ir``, ``nmc.nodes``, ``nmc.errors``, ``nmc.hw``,
``nmc.serialize``, …) ← models (``nmc.nn``, ``nmc.lm``) ← frontends
(``nmc.frontends``) / passes (``nmc.passes``) ← backends (``nmc.backends``) ←
runtime (``nmc.runtime``) ← driver (``nmc.driver``, ``nmc.cli``).
"""
