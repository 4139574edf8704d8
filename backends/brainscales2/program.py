"""The BrainScaleS-2 Program: synapse-array configuration and neuron DAC codes.

Per neuron layer (a *population* of logical neurons, each one or more merged
circuits): per projection the signed 6-bit matrix ``w6`` (post, pre) and the
synapse-array configuration realising it — row and column per synapse, label
and group per source, sign, served group and driver address per row, and the
array itself (``arr_w`` magnitudes, ``arr_label`` stored labels, rows ×
columns of the post layer; see :mod:`.synapses`) — the weight LSB, and per
neuron the target parameters in hardware time (τ × 1e-3) and their 10-bit DAC
codes (through ``calibration.json``). ``files()`` is deterministic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nmc.filebytes import npz_bytes, npz_load
from nmc.iomap import IOMap, Port

from ..base import Program

NEURON_PARAMS = ("tau_mem", "tau_syn", "v_threshold", "v_leak", "v_reset")
PROJ_ARRAYS = {"row_sign": np.int8, "row_driver": np.int32, "group": np.int32, "col": np.int32,
               "row_group": np.int32, "arr_w": np.uint8, "arr_label": np.int8}


@dataclass
class Layer:
    name: str
    size: int
    kind: str                         # lif | cuba | li | cubali
    spiking: bool
    params: dict                      # model-unit targets per neuron (float arrays), times in hardware seconds
    codes: dict = field(default_factory=dict)     # DAC code per neuron per parameter (int)
    circuits: np.ndarray | None = None            # circuits merged per logical neuron
    scale: float = 1.0                # one weight LSB = scale (model units of v per spike)
    hemisphere: np.ndarray | None = None


@dataclass
class Projection:
    pre: str
    post: str
    w6: np.ndarray                    # int (post, pre), |w| ≤ 63, sign = row sign
    rows: np.ndarray                  # synapse row per (post, pre), −1 where absent
    label: np.ndarray                 # 6-bit label per source
    n_rows: int = 0
    recurrent: bool = False
    row_sign: np.ndarray | None = None            # +1 excitatory / −1 inhibitory per row
    row_driver: np.ndarray | None = None          # synapse driver address per row
    group: np.ndarray | None = None               # label group per source (the rows it is sent on)
    col: np.ndarray | None = None                 # local column (circuit of the post layer) per (post, pre), −1
    row_group: np.ndarray | None = None           # source group served by each row
    arr_w: np.ndarray | None = None               # (rows, columns) 6-bit magnitudes: the synapse array
    arr_label: np.ndarray | None = None           # (rows, columns) stored 6-bit label, −1 = empty synapse
    rows_lb: int = 0                              # rows any labelling needs (report)


#: the host source that carries the layers' biases: one event every step through its own synapse
#: rows (weight b in the layer's LSB), as an input with weight b does in the reference
BIAS_SOURCE = "__bias__"


@dataclass(frozen=True, eq=False)
class BSS2Program(Program):
    layers: list[Layer]
    projections: list[Projection]
    inputs: dict[str, int]            # input node -> size
    outputs: dict[str, str]           # output node -> layer
    dt: float                         # model time step (s), the graph's GraphMeta.dt (no default here)
    speedup: float                    # hardware time = model time / speedup (chosen by .timescale)
    calibration: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    #: sources the host drives with one event every step (biases: see :data:`BIAS_SOURCE`)
    constant_inputs: list = field(default_factory=list)
    #: the plasticity processor's rules, one per plastic projection (:class:`.ppu.PPURule` as JSON)
    plasticity: list = field(default_factory=list)
    #: the compiled graph (the shapes of recorded layers); not in the program files
    graph: Any = field(default=None, repr=False)

    def layer(self, name: str) -> Layer:
        return next(l for l in self.layers if l.name == name)

    def files(self) -> dict[str, bytes]:
        meta = {"layers": [{"name": l.name, "size": l.size, "kind": l.kind, "spiking": l.spiking, "scale": l.scale,
                            "params": sorted(l.params), "codes": sorted(l.codes)} for l in self.layers],
                "projections": [{"pre": q.pre, "post": q.post, "n_rows": q.n_rows, "recurrent": q.recurrent,
                                 "rows_lower_bound": q.rows_lb}
                                for q in self.projections],
                "inputs": self.inputs, "outputs": self.outputs, "dt": self.dt, "speedup": self.speedup,
                "constant_inputs": list(self.constant_inputs)}
        if self.plasticity:   # only plastic programs carry the key: frozen programs' files stay as they were
            meta["plasticity"] = list(self.plasticity)
        arrays = {}
        for l in self.layers:
            for k, v in l.params.items():
                arrays[f"{l.name}/p_{k}"] = np.asarray(v, float)
            for k, v in l.codes.items():
                arrays[f"{l.name}/c_{k}"] = np.asarray(v, np.int32)
            if l.circuits is not None:
                arrays[f"{l.name}/circuits"] = np.asarray(l.circuits, np.int32)
        for i, q in enumerate(self.projections):
            arrays[f"proj{i}/w6"] = np.asarray(q.w6, np.int8)
            arrays[f"proj{i}/rows"] = np.asarray(q.rows, np.int32)
            arrays[f"proj{i}/label"] = np.asarray(q.label, np.int32)
            for k, dt_ in PROJ_ARRAYS.items():
                if getattr(q, k) is not None:
                    arrays[f"proj{i}/{k}"] = np.asarray(getattr(q, k), dt_)
        from .emit import script

        dump = lambda o: (json.dumps(o, indent=2, sort_keys=True) + "\n").encode()  # noqa: E731
        from .ppu_kernel import kernel_files

        return {"bss2_program.json": dump(meta), "bss2_arrays.npz": npz_bytes(arrays),
                "calibration.json": dump(self.calibration), "run_brainscales2.py": script(self.ppu_format()).encode(),
                **kernel_files(self.plasticity)}

    def ppu_format(self):
        """The plasticity processor's format of the program's rules (one spec compiled them all; None
        without rules: the packaged one)."""
        from nmc.errors import InputFileError

        from .ppu import PPURule

        fmts = {PPURule.from_json(d).fmt for d in self.plasticity}
        if len(fmts) > 1:
            raise InputFileError("the plasticity rules of one program hold different PPU formats",
                                 path="bss2_program.json", hint="recompile the bundle")
        return fmts.pop() if fmts else None

    def summary(self) -> dict:
        return dict(self.report)


def io_map(prog: BSS2Program, graph) -> IOMap:
    """Inputs are spike events; outputs spikes or (non-spiking layers) the membrane; host events
    reach every layer in the same model step, so no latency. Recorded: every neuron layer, with its
    graph node's shape (spikes, or the membrane of a non-spiking layer)."""
    kind = lambda l: "spikes" if l.spiking else "voltage"  # noqa: E731
    return IOMap(tuple(Port(k, tuple(graph.shape_out(k)), "spikes") for k in graph.inputs),
                 tuple(Port(o, tuple(graph.shape_in(o)), kind(prog.layer(prog.outputs[o]))) for o in graph.outputs),
                 tuple(Port(l.name, tuple(graph.shape_out(l.name)), kind(l)) for l in prog.layers
                       if l.name in graph.nodes and graph.shape_out(l.name) is not None))


def with_graph(prog: BSS2Program, graph) -> BSS2Program:
    """The program with its graph and IO map (after lowering, after loading)."""
    return replace(prog, graph=graph, io=io_map(prog, graph))


def load_program(files: dict[str, bytes]) -> BSS2Program:
    meta = json.loads(files["bss2_program.json"])
    arr = npz_load(files["bss2_arrays.npz"])
    layers = [Layer(m["name"], m["size"], m["kind"], m["spiking"],
                    {k: arr[f"{m['name']}/p_{k}"] for k in m["params"]}, {k: arr[f"{m['name']}/c_{k}"] for k in m["codes"]},
                    arr.get(f"{m['name']}/circuits"), m["scale"]) for m in meta["layers"]]
    projs = [Projection(q["pre"], q["post"], arr[f"proj{i}/w6"].astype(np.int64), arr[f"proj{i}/rows"],
                        arr[f"proj{i}/label"], q["n_rows"], q["recurrent"],
                        rows_lb=q.get("rows_lower_bound", 0),
                        **{k: (arr[f"proj{i}/{k}"].astype(np.int64) if f"proj{i}/{k}" in arr else None)
                           for k in PROJ_ARRAYS}) for i, q in enumerate(meta["projections"])]
    return BSS2Program(layers, projs, meta["inputs"], meta["outputs"], meta["dt"], meta["speedup"],
                       json.loads(files["calibration.json"]), constant_inputs=meta.get("constant_inputs", []),
                       plasticity=meta.get("plasticity", []))
