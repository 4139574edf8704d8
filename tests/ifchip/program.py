"""The ifchip Program: per layer its integer weights, bias and threshold.

``w`` int32 (n, n_src) in [−127, 127], ``bias`` and ``thr`` int32 (n,): a
layer's float membrane is its integer membrane / ``scale``. ``latency`` is the
layer's depth (each synapse adds one chip step). Files: ``ifchip.json``
(structure), ``ifchip.npz`` (arrays), ``run_ifchip.py`` (:mod:`.emit`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from nmc.backends.base import Program
from nmc.filebytes import npz_bytes, npz_load
from nmc.errors import InputFileError
from nmc.iomap import IOMap, Port


@dataclass(frozen=True, eq=False)
class Layer:
    name: str
    src: str                # an input or an earlier layer
    w: np.ndarray           # int32 (n, n_src)
    bias: np.ndarray        # int32 (n,)
    thr: np.ndarray         # int32 (n,)
    reset: str = "zero"     # zero | subtract
    latency: int = 1
    scale: float = 1.0      # float v = v_int / scale

    @property
    def size(self) -> int:
        return int(self.w.shape[0])


@dataclass(frozen=True, eq=False)
class IFChipProgram(Program):
    layers: tuple[Layer, ...]
    inputs: dict            # input node -> size
    outputs: dict           # output node -> layer

    def layer(self, name: str) -> Layer:
        return next(l for l in self.layers if l.name == name)

    def files(self) -> dict[str, bytes]:
        from .emit import script

        meta = {"layers": [{"name": l.name, "src": l.src, "reset": l.reset, "latency": l.latency, "scale": l.scale}
                           for l in self.layers],
                "inputs": self.inputs, "outputs": self.outputs}
        arrays = {f"{l.name}/{k}": np.asarray(getattr(l, k), np.int32) for l in self.layers for k in ("w", "bias", "thr")}
        return {"ifchip.json": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
                "ifchip.npz": npz_bytes(arrays), "run_ifchip.py": script().encode()}

    def summary(self) -> dict:
        return {"layers": len(self.layers), "neurons": sum(l.size for l in self.layers),
                "synapses": int(sum(np.count_nonzero(l.w) for l in self.layers)),
                "latency_steps": max((l.latency for l in self.layers), default=0)}


def io_map(layers, inputs: dict, outputs: dict, graph) -> IOMap:
    by = {l.name: l for l in layers}
    return IOMap(tuple(Port(k, tuple(graph.shape_out(k)), "spikes") for k in graph.inputs),
                 tuple(Port(o, tuple(graph.shape_in(o)), "spikes", by[outputs[o]].latency) for o in graph.outputs))


def make(layers, inputs: dict, outputs: dict, graph) -> IFChipProgram:
    layers = tuple(layers)
    return IFChipProgram(layers, dict(inputs), dict(outputs), io=io_map(layers, inputs, outputs, graph))


def load_program(files: dict[str, bytes], graph) -> IFChipProgram:
    """Rebuild from the bundle's (untrusted) files: every name and shape checked against the graph."""
    try:
        meta = json.loads(files["ifchip.json"])
        arr = npz_load(files["ifchip.npz"])
        sizes = {k: int(v) for k, v in meta["inputs"].items()}
        layers = []
        for m in meta["layers"]:
            w, b, t = (np.asarray(arr[f"{m['name']}/{k}"], np.int64) for k in ("w", "bias", "thr"))
            if m["src"] not in sizes or w.shape != (b.size, sizes[m["src"]]) or t.shape != b.shape \
                    or m["reset"] not in ("zero", "subtract"):
                raise ValueError(f"layer {m['name']!r} does not match its source or arrays")
            layers.append(Layer(str(m["name"]), str(m["src"]), w, b, t, m["reset"], int(m["latency"]),
                                float(m["scale"])))
            sizes[m["name"]] = b.size
        outputs = {str(k): str(v) for k, v in meta["outputs"].items()}
        if set(outputs) != set(graph.outputs) or set(sizes) < set(outputs.values()) or set(meta["inputs"]) != set(graph.inputs):
            raise ValueError("inputs/outputs do not match the bundle's graph")
    except (KeyError, TypeError, ValueError) as e:
        raise InputFileError(f"ifchip program files are inconsistent ({e})", path="program/ifchip.json",
                             hint="recompile the bundle") from None
    return make(layers, meta["inputs"], outputs, graph)
