"""The SpiNNaker 2 Program: py-spinnaker2 populations and projections.

One :class:`Population` per graph Input (``spike_list``) and neuron node
(``lif_no_delay``, ``lif_conv2d``, ``lif_curr_exp_no_delay``, or ``lif`` /
``lif_curr_exp`` when it needs synaptic delays), one
:class:`Projection` per (source, target) pair with integer weights
(``w[post, pre]``, or a conv kernel) in the target model's range. Neuron parameters are per neuron, already in integer-weight
units (see :mod:`.lower`). ``latency`` is how many steps a population trails
the float reference (each projection adds one). ``pe`` is the PE index of
every neuron (from the placement passes) and ``max_atoms_per_core`` the split
py-spinnaker2 is told to use.

``files()`` is deterministic: ``s2_program.json`` (structure and scalars) and
``s2_arrays.npz`` (per-neuron parameters, weights, PE assignment; fixed zip
timestamps).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nmc.filebytes import npz_bytes, npz_load
from nmc.iomap import IOMap, Port

from ..base import Program

PARAMS = ("threshold", "alpha_decay", "i_offset", "v_reset", "exc_decay", "inh_decay")
#: populations run by generated PE kernels (graded values in and out): EGRU (:mod:`.egru`), SSM (:mod:`.ssm`)
KERNEL_MODELS = ("egru_kernel", "ssm_kernel")


def _events_numpy(x: np.ndarray, quantum: float) -> tuple[np.ndarray, int]:
    ev = x / quantum
    k = np.rint(ev)
    bad = ((np.abs(ev - k) > 1e-9 * np.maximum(1.0, np.abs(ev))) | (k < 0)).reshape(-1)
    return k, int(np.argmax(bad)) if bad.any() else -1


try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy form stays usable without it
    njit = None

if njit is not None:

    @njit(cache=True)
    def _events_compiled(x, quantum):
        k = np.empty_like(x)
        first_bad = -1
        for i in range(x.size):
            ev = x[i] / quantum
            r = np.rint(ev)
            k[i] = r
            if first_bad < 0 and (abs(ev - r) > 1e-9 * max(1.0, abs(ev)) or r < 0):
                first_bad = i
        return k, first_bad


def events_of(x: np.ndarray, quantum: float) -> tuple[np.ndarray, int]:
    """(k, first bad flat index or −1): k = rint(x / quantum) (float64, ties to even), and a value
    is bad when |x/quantum − k| > 10⁻⁹·max(1, |x/quantum|) or k < 0. One compiled pass over x
    (numba; the numpy expressions otherwise: the same float64 operations, the same k)."""
    x = np.asarray(x, dtype=np.float64)
    if njit is None:
        return _events_numpy(x, quantum)
    k, bad = _events_compiled(np.ascontiguousarray(x).reshape(-1), np.float64(quantum))
    return k.reshape(x.shape), int(bad)


@dataclass
class Population:
    name: str
    model: str                      # spike_list | lif(_no_delay) | lif_conv2d | lif_curr_exp(_no_delay) | egru_kernel | ssm_kernel
    size: int
    reset: str = "reset_by_subtraction"
    params: dict = field(default_factory=dict)     # name -> float32 array (size,)
    latency: int = 0
    spiking: bool = True
    pe: np.ndarray | None = None                   # PE per neuron
    max_atoms_per_core: int = 256
    scale: float = 1.0                             # float voltage = scale · integer-unit voltage (readouts)
    kernel: dict = field(default_factory=dict)     # egru_kernel: wx, sx, wh, sh, bx, bh, thr; ssm_kernel: .ssm_lower
    source: str | None = None                      # egru/ssm_kernel: the population whose events feed it
    chip: np.ndarray | None = None                 # chip per neuron (multi-chip placements); None: chip 0
    quantum: float = 1.0                           # spike_list: input value one event stands for (graded inputs)
    constant_events: int = 0                       # spike_list fed by no input: k events every step from its latency
    sources: tuple = ()                            # a kernel fed by several populations (LayerNorm, .ssm_lower), in order

    @property
    def kernel_inputs(self) -> tuple:
        """The populations whose values a kernel population takes: ``sources``, else ``source``."""
        return tuple(self.sources) or ((self.source,) if self.source else ())


@dataclass
class Projection:
    """Integer synapses ``pre → post``. Dense projections hold ``w`` (int32,
    (post, pre)); conv projections (``Conv2DProjection``, see :mod:`.conv`)
    hold the int kernel (C_out, C_in, kh, kw) and its geometry ``conv``, and
    ``weights`` is the dense matrix they stand for (built on first use)."""
    pre: str
    post: str
    w: np.ndarray | None = None
    recurrent: bool = False
    kernel: np.ndarray | None = None
    conv: dict | None = None
    delay: np.ndarray | None = None  # int32 (post, pre): py-spinnaker2 delay d (delivered after d + 1 steps)
    #: a learning rule run by the post population's PEs (:mod:`.plasticity`, :func:`.plasticity.learn_spec`)
    plastic: dict | None = None

    @property
    def weights(self) -> np.ndarray:
        if self.w is None:
            from .conv import dense

            self.w = dense(self.kernel, self.conv)
        return self.w

    @property
    def nnz(self) -> int:
        if self.conv is not None:
            from .conv import synapses

            return int(synapses(self.kernel, self.conv)[0].size)
        return int(np.count_nonzero(self.weights))


@dataclass(frozen=True, eq=False)
class S2Program(Program):
    populations: list[Population]
    projections: list[Projection]
    inputs: dict[str, str]          # graph input node -> population
    outputs: dict[str, str]         # graph output node -> population
    output_kind: dict[str, str]     # output -> "spikes" | "v"
    sys_tick_s: float = 1e-3
    curr_exp_order: str = "chip"
    report: dict = field(default_factory=dict)
    #: output -> {"w": (n_src, n_out), "b": (n_out,)} float64: a linear readout of the output's
    #: population run on the host (y_out = series · w + b, float64), e.g. an LM's decoder
    readout: dict = field(default_factory=dict)
    #: the compiled graph (the shapes of recorded populations); not in the program files
    graph: Any = field(default=None, repr=False)

    def read_out(self, o: str, series: np.ndarray) -> np.ndarray:
        """Apply output ``o``'s host readout (if any) to a (..., n_src) series."""
        r = self.readout.get(o)
        if r is None:
            return series
        return np.asarray(series, float) @ r["w"] + r["b"]

    @property
    def chips_used(self) -> int:
        """Chips the placement spreads the program over (1 without chip annotations)."""
        ids = {int(c) for p in self.populations if p.chip is not None for c in np.unique(p.chip)}
        return max(1, len(ids))

    def input_events(self, name: str, x: np.ndarray) -> np.ndarray:
        """Events per step per unit that graph input ``name``'s values ``x`` become (see
        :func:`.lower.graded_inputs`): x / quantum, which must be non-negative integers. None for an
        input that feeds only EGRU or SSM kernels (they take graded values as such)."""
        from nmc.errors import ShapeError

        pop = self.pop(self.inputs[name])
        consumers = {q.post for q in self.projections if q.pre == pop.name} | {
            p.name for p in self.populations if pop.name in p.kernel_inputs}
        if consumers and all(self.pop(c).model in KERNEL_MODELS for c in consumers):
            return None
        x = np.asarray(x, dtype=np.float64)
        k, first_bad = events_of(x, float(pop.quantum))
        if first_bad >= 0:
            bad = float(x.reshape(-1)[first_bad])
            raise ShapeError(f"SpiNNaker 2 inputs are events: each value must be a non-negative multiple of the "
                             f"input quantum {pop.quantum:g} (one event per quantum, repeated within a step)",
                             node=name, actual=bad,
                             hint="recompile with --option input_quantum=Q so every input value is k·Q (k ≥ 0), "
                                  "or encode the input as spikes")
        return k

    def pop(self, name: str) -> Population:
        return next(p for p in self.populations if p.name == name)

    # ------------------------------------------------------------ files
    def files(self) -> dict[str, bytes]:
        meta = {"populations": [{"name": p.name, "model": p.model, "size": p.size, "reset": p.reset,
                                 "latency": p.latency, "spiking": p.spiking, "scale": p.scale,
                                 "max_atoms_per_core": p.max_atoms_per_core, "params": sorted(p.params),
                                 "kernel": sorted(p.kernel), "source": p.source,
                                 **({"quantum": p.quantum} if p.quantum != 1.0 else {}),
                                 **({"constant_events": p.constant_events} if p.constant_events else {}),
                                 **({"sources": list(p.sources)} if p.sources else {})}
                                for p in self.populations],
                "projections": [{"pre": q.pre, "post": q.post, "recurrent": q.recurrent, "nnz": q.nnz,
                                 "conv": q.conv, **({"plasticity": {k: q.plastic[k] for k in ("node", "rule", "qmax", "dt")}}
                                                    if q.plastic else {})} for q in self.projections],
                "inputs": self.inputs, "outputs": self.outputs, "output_kind": self.output_kind,
                "sys_tick_s": self.sys_tick_s, "curr_exp_order": self.curr_exp_order, "chips": self.chips_used,
                "readout": sorted(self.readout)}
        arrays = {}
        for p in self.populations:
            for k, v in p.params.items():
                arrays[f"{p.name}/{k}"] = np.asarray(v, dtype=np.float32)
            for k, v in p.kernel.items():
                arrays[f"{p.name}/k_{k}"] = np.asarray(v)
            if p.pe is not None:
                arrays[f"{p.name}/pe"] = np.asarray(p.pe, dtype=np.int32)
            if p.chip is not None:
                arrays[f"{p.name}/chip"] = np.asarray(p.chip, dtype=np.int32)
        for i, q in enumerate(self.projections):
            if q.conv is not None:
                arrays[f"proj{i}/kernel"] = np.asarray(q.kernel, dtype=np.int32)
            else:
                arrays[f"proj{i}/weights"] = np.asarray(q.weights, dtype=np.int32)
            if q.delay is not None:
                arrays[f"proj{i}/delay"] = np.asarray(q.delay, dtype=np.int32)
            if q.plastic:
                arrays[f"proj{i}/learn_k"] = q.plastic["k"]
                arrays[f"proj{i}/learn_w0"] = q.plastic["w0"]
        for o, r in self.readout.items():
            arrays[f"readout/{o}/w"] = np.asarray(r["w"], float)
            arrays[f"readout/{o}/b"] = np.asarray(r["b"], float)
        from .emit import script

        out = {"s2_program.json": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
               "s2_arrays.npz": npz_bytes(arrays), "run_spinnaker2.py": script().encode()}
        for p in self.populations:
            if p.model == "egru_kernel":
                from .egru import kernel_files

                out.update(kernel_files(p.name, p.kernel, pe_slices(p)))
            elif p.model == "ssm_kernel":
                from .ssm import param_files
                from .ssm_lower import kernel_params

                out.update(param_files(p.name, kernel_params(p.kernel), pe_slices(p)))
        for q in self.projections:
            if q.plastic:
                from .plasticity_kernel import kernel_files as learn_files

                out.update(learn_files(q, pe_slices(self.pop(q.post))))
        return out

    def summary(self) -> dict:
        r = dict(self.report)
        r.update({"populations": len(self.populations), "projections": len(self.projections), "chips_used": self.chips_used,
                  "synapses": int(sum(q.nnz for q in self.projections))})
        return r


#: output_kind → IO map kind
_KIND = {"spikes": "spikes", "v": "voltage", "events": "graded"}


def io_map(prog: S2Program, graph) -> IOMap:
    """Inputs: spikes, or graded when one event stands for a quantum ≠ 1 or an EGRU kernel takes
    the values; outputs: the population's kind and latency. Recorded: every population named by a
    graph node, with the node's shape, its latency, and kind spikes, voltage (a non-spiking
    population's membrane) or graded (a kernel population's events)."""
    def kind_in(k):
        pop = prog.pop(prog.inputs[k])
        egru = any(pop.name in p.kernel_inputs for p in prog.populations)
        return "graded" if pop.quantum != 1.0 or egru else "spikes"

    return IOMap(tuple(Port(k, tuple(graph.shape_out(k)), kind_in(k)) for k in graph.inputs),
                 tuple(Port(o, tuple(graph.shape_in(o)), _KIND[prog.output_kind[o]], prog.pop(prog.outputs[o]).latency)
                       for o in graph.outputs),
                 tuple(Port(p.name, tuple(graph.shape_out(p.name)), _recorded_kind(p), p.latency)
                       for p in prog.populations
                       if p.name in graph.nodes and graph.shape_out(p.name) is not None))


def _recorded_kind(p: Population) -> str:
    return "graded" if p.model in KERNEL_MODELS else "spikes" if p.spiking else "voltage"


def with_graph(prog: S2Program, graph) -> S2Program:
    """The program with its graph and IO map (after lowering, after loading)."""
    return replace(prog, graph=graph, io=io_map(prog, graph))


def pe_slices(p: Population) -> list[tuple[int, slice]]:
    """Contiguous unit ranges per PE (units are assigned to PEs in blocks)."""
    if p.pe is None:
        return [(0, slice(0, p.size))]
    out, start = [], 0
    pe = np.asarray(p.pe)
    for i in range(1, p.size + 1):
        if i == p.size or pe[i] != pe[start]:
            out.append((int(pe[start]), slice(start, i)))
            start = i
    return out


def emitted_whole(p: Population) -> bool:
    """Whether the run script (:mod:`.emit`, its ``pe_split``) builds ``p`` as one py-spinnaker2
    population (``set_max_atoms_per_core``: the placement is py-spinnaker2's own uniform
    contiguous split) rather than one population per PE; a conv projection between two whole
    populations is emitted as a ``Conv2DProjection``, else expanded to rows."""
    if p.pe is None or p.model == "spike_list":
        return True
    pe = np.asarray(p.pe)
    blocks = np.arange(p.size) // int(p.max_atoms_per_core)
    return (all(np.unique(pe[blocks == b]).size == 1 for b in np.unique(blocks))
            and np.unique(pe).size == np.unique(blocks).size)


def load_program(files: dict[str, bytes]) -> S2Program:
    meta = json.loads(files["s2_program.json"])
    arr = npz_load(files["s2_arrays.npz"])
    pops = []
    for m in meta["populations"]:
        pops.append(Population(name=m["name"], model=m["model"], size=m["size"], reset=m["reset"],
                               params={k: arr[f"{m['name']}/{k}"] for k in m["params"]}, latency=m["latency"],
                               spiking=m["spiking"], pe=arr.get(f"{m['name']}/pe"),
                               max_atoms_per_core=m["max_atoms_per_core"], scale=m["scale"],
                               kernel={k: arr[f"{m['name']}/k_{k}"] for k in m.get("kernel", [])},
                               source=m.get("source"), chip=arr.get(f"{m['name']}/chip"),
                               quantum=float(m.get("quantum", 1.0)),
                               constant_events=int(m.get("constant_events", 0)),
                               sources=tuple(m.get("sources", ()))))
    projs = [Projection(pre=q["pre"], post=q["post"], w=arr.get(f"proj{i}/weights"), recurrent=q["recurrent"],
                        kernel=arr.get(f"proj{i}/kernel"), conv=q.get("conv"), delay=arr.get(f"proj{i}/delay"),
                        plastic=({**q["plasticity"], "k": arr[f"proj{i}/learn_k"], "w0": arr[f"proj{i}/learn_w0"]}
                                 if "plasticity" in q else None))
             for i, q in enumerate(meta["projections"])]
    readout = {o: {"w": arr[f"readout/{o}/w"], "b": arr[f"readout/{o}/b"]} for o in meta.get("readout", [])}
    return S2Program(pops, projs, meta["inputs"], meta["outputs"], meta["output_kind"], meta["sys_tick_s"],
                     meta["curr_exp_order"], readout=readout)
