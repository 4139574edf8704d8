"""Lowering for the ``reference`` target: nothing to lower, the Program is the graph."""
from __future__ import annotations

from nmc.ir import Graph

from .program import ReferenceProgram, program


def lower(graph: Graph, ctx) -> ReferenceProgram:
    return program(graph)
