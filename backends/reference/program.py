"""The reference Program: the compiled graph itself (already in the bundle as
``graph.nir``, so it adds no program files), with its IO map."""
from __future__ import annotations

from dataclasses import dataclass

from nmc.iomap import IOMap
from nmc.ir import Graph
from nmc.nodes import is_spiking

from ..base import Program


def io_map(graph: Graph) -> IOMap:
    """Inputs take any values (graded); an output fed by one spiking node carries spikes."""
    kinds = {o: "spikes" for o in graph.outputs
             if len(graph.preds(o)) == 1 and is_spiking(graph.nodes[graph.preds(o)[0]])}
    return IOMap.of_graph(graph, kinds=kinds)


@dataclass(frozen=True, eq=False)
class ReferenceProgram(Program):
    graph: Graph

    def summary(self) -> dict:
        return {"nodes": len(self.graph.nodes), "edges": len(self.graph.edges),
                "parameters": sum(self.graph.param_count(n) for n in self.graph.nodes)}


def program(graph: Graph) -> ReferenceProgram:
    return ReferenceProgram(graph, io=io_map(graph))
