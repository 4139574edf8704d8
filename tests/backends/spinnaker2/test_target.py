"""SpiNNaker 2's target model (backends/spinnaker2/target.py): its EGRU kernel
bytes are what the emitted C arrays hold, the partition packs EGRU units with
the same byte model so every PE's kernels fit, and lowering only reads the
Placement the passes wrote (no re-split)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from nets import egru_net, ff_lif
from nmc.annotations import Placement
from nmc.backends import get_backend
from nmc.backends.spinnaker2.egru import kernel_tags
from nmc.backends.spinnaker2.program import pe_slices
from nmc.backends.spinnaker2.target import SpiNNaker2Target
from nmc.hw import HardwareSpec
from nmc.ir import Graph
from nmc.passes import PassContext, PassManager, parse_pipeline

C_SIZE = {"uint32_t": 4, "uint16_t": 2, "int8_t": 1, "float": 4}
DECL = re.compile(r"^static (?:const )?(\w+) (.+);$", re.M)


def c_array_bytes(src: str) -> int:
    """Bytes of every static array a generated kernel file declares (``static [const] T A[n], B[m];``)."""
    total = 0
    for ctype, decls in DECL.findall(src):
        for name_n in re.findall(r"\w+\[(\d+)\]", decls.split("=")[0]):
            total += C_SIZE[ctype] * int(name_n)
    return total


def small_spec(tmp_path, data_bytes: int = 3000) -> HardwareSpec:
    """The packaged spec with a small PE SRAM, so one EGRU layer spreads over several PEs."""
    p = tmp_path / "small.toml"
    p.write_text(f"[core]\nsynapse_memory_bytes = {data_bytes}\ndata_bytes = {data_bytes}\n")
    return HardwareSpec.load("spinnaker2", overrides=[p])


def compile_steps(model, spec, options=None):
    """Run spinnaker2's default pipeline, snapshot every Placement, then lower: (graph, program, snapshot, ctx)."""
    be = get_backend("spinnaker2")
    opts = {"dt": 1e-3, "integrator": "euler", "reset": "subtract", **(options or {})}
    ctx = PassContext(spec=spec, options=opts, target=be.target_model(spec, opts))
    g = PassManager(parse_pipeline(be.default_pipeline(opts))).run(Graph.from_nir(model), ctx)
    snap = {k: g.ann(k, Placement) for k in g.nodes if g.ann(k, Placement) is not None}
    snap = {k: {f: np.array(getattr(a, f)) for f in ("core", "chip", "x", "y", "slot") if getattr(a, f) is not None}
            for k, a in snap.items()}
    prog = be.lower(g, ctx)
    return g, prog, snap, ctx


def test_kernel_bytes_are_the_emitted_arrays(tmp_path):
    """The byte model's count for every (PE, unit range) kernel equals the bytes of the static
    arrays in its generated .c file, and the cost report's SRAM per PE is their sum."""
    spec = small_spec(tmp_path)
    g, prog, _, ctx = compile_steps(egru_net(n_in=40, hidden=24), spec)
    p = prog.pop("egru")
    files = prog.files()
    slices = pe_slices(p)
    assert len({pe for pe, _ in slices}) > 2          # the layer really spreads over PEs
    per_pe: dict[int, int] = {}
    for (pe, units), tag in zip(slices, kernel_tags("egru", slices)):
        emitted = c_array_bytes(files[f"kernels/{tag}.c"].decode())
        assert SpiNNaker2Target.kernel_bytes(p.kernel, units) == emitted
        per_pe[pe] = per_pe.get(pe, 0) + emitted
    rep = prog.report["per_pe"]
    for pe, b in per_pe.items():
        if rep[str(pe)]["populations"] == ["egru"]:
            assert rep[str(pe)]["sram_bytes"] == b
        assert b <= spec.get("core.data_bytes")


def test_partition_places_egru_kernels_that_fit_and_lowering_keeps_the_placement(tmp_path):
    """With 3000 bytes per PE the generic per-synapse estimate would put ~14 units (≈ 9 kB of
    kernel) on a PE; the target model's kernel bytes make the partition pack ≤ 4, so lowering
    has nothing to re-split: every Placement after lowering is the one the passes wrote."""
    spec = small_spec(tmp_path)
    g, prog, snap, ctx = compile_steps(egru_net(n_in=40, hidden=24), spec)
    for k, fields in snap.items():
        a = g.ann(k, Placement)
        for f, v in fields.items():
            assert np.array_equal(np.asarray(getattr(a, f)), v), (k, f)
    p = prog.pop("egru")
    assert np.array_equal(p.pe, snap["egru"]["core"])
    # the partition's per-core bytes bound what the PEs really hold
    est = ctx.reports["placement"]["per_core"]["synapse_bytes"]
    exact: dict[int, int] = {}
    for pe, units in pe_slices(p):
        exact[pe] = exact.get(pe, 0) + SpiNNaker2Target.kernel_bytes(p.kernel, units)
    for pe, b in exact.items():
        assert b <= est[pe] <= spec.get("core.synapse_memory_bytes")
    assert not [w for w in ctx.warnings.items if "re-split" in str(w)]


def test_lowering_keeps_the_placement_of_neuron_layers():
    spec = HardwareSpec.load("spinnaker2")
    g, prog, snap, _ = compile_steps(ff_lif(), spec, {"reset": "zero"})
    assert snap
    for k, fields in snap.items():
        assert np.array_equal(prog.pop(k).pe, fields["core"])
        for f, v in fields.items():
            assert np.array_equal(np.asarray(getattr(g.ann(k, Placement), f)), v)


def test_egru_unit_bytes_follow_the_egru_weights_option(tmp_path):
    """float32 kernels store 4-byte weights: the partition's estimate grows with them, and the
    kernels it places still fit."""
    spec = small_spec(tmp_path, 6000)
    _, p8, _, c8 = compile_steps(egru_net(n_in=40, hidden=24), spec)
    _, p32, _, c32 = compile_steps(egru_net(n_in=40, hidden=24), spec, {"egru_weights": "float32"})
    cap8 = c8.reports["placement"]["per_node_capacity"]["egru"]
    cap32 = c32.reports["placement"]["per_node_capacity"]["egru"]
    assert cap32 < cap8
    for pe, units in pe_slices(p32.pop("egru")):
        assert SpiNNaker2Target.kernel_bytes(p32.pop("egru").kernel, units) <= 6000


@pytest.mark.parametrize("target", ["spinnaker2", "loihi2", "brainscales2", "reference"])
def test_each_backend_builds_its_target_model_from_the_spec(target):
    be = get_backend(target)
    spec = HardwareSpec.load(be.spec_name) if be.spec_name else None
    tm = be.target_model(spec)
    if spec is None:
        assert tm.limits.neurons_max is None and tm.limits.cores_total is None
        return
    assert tm.limits.target == target
    assert tm.limits.neurons_max == spec.get("core.neurons_max")
    assert tm.limits.cores_per_chip == spec.get("chip.cores_usable")
    assert tm.numerics == spec.section("numerics")


# ------------------------------------------------------------ neuron layers: stored rows
#: one stored synapse of a neuron layer: an int8 weight and a uint16 target index (target.py's docstring)
ROW_SYNAPSE = 1 + 2


def dense_net(n_in=40, n_hid=30, n_out=10, seed=0):
    """Two LIF layers with every weight far from zero: every structural synapse is emitted."""
    g = ff_lif(n_in, n_hid, n_out, seed=seed)
    rng = np.random.default_rng(seed)
    for k in ("fc1", "fc2"):
        w = g.nodes[k].weight
        g.nodes[k].weight = np.sign(rng.normal(size=w.shape)) * rng.uniform(0.5, 1.0, w.shape) / np.sqrt(w.shape[1])
    return g


def emitted_pe_bytes(prog, spec) -> tuple[dict[int, int], dict[int, int]]:
    """Per PE, what the emitted files put there (read back from s2_program.json / s2_arrays.npz):
    a stored synapse per non-zero of ``proj<i>/weights`` onto the PE, a row pointer per source
    with a non-zero onto it, and the state of every neuron on it; and the row pointers' bytes alone."""
    import json

    from nmc.filebytes import npz_load

    files = prog.files()
    meta, arrays = json.loads(files["s2_program.json"]), npz_load(files["s2_arrays.npz"])
    row_ptr, state = int(spec.get("core.row_pointer_bytes", 4)), int(spec.get("core.neuron_state_bytes"))
    out: dict[int, int] = {}
    rows: dict[int, int] = {}
    for p in meta["populations"]:
        pe = arrays.get(f"{p['name']}/pe")
        if pe is not None and p["model"] != "spike_list":
            for k in np.unique(pe):
                out[int(k)] = out.get(int(k), 0) + state * int((pe == k).sum())
    for i, q in enumerate(meta["projections"]):
        w, pe = arrays[f"proj{i}/weights"], arrays[f"{q['post']}/pe"]
        assert np.abs(w).max() <= 127          # int8 weights
        for k in np.unique(pe):
            nz = w[pe == k] != 0
            out[int(k)] += ROW_SYNAPSE * int(nz.sum()) + row_ptr * int(nz.any(0).sum())
            rows[int(k)] = rows.get(int(k), 0) + row_ptr * int(nz.any(0).sum())
    return out, rows


def rows_spec(tmp_path, data_bytes: int = 2000, rows_max: int = 50) -> HardwareSpec:
    """A small PE whose row table (rows_max pointers of 4 bytes) is a tenth of its memory."""
    p = tmp_path / "rows.toml"
    p.write_text(f"[core]\nsynapse_memory_bytes = {data_bytes}\ndata_bytes = {data_bytes}\n"
                 f"input_axons_max = {rows_max}\n")
    return HardwareSpec.load("spinnaker2", overrides=[p])


def test_neuron_layer_bytes_are_the_emitted_rows(tmp_path):
    """One byte model for neuron layers: the cost report's SRAM per PE is exactly what the emitted
    arrays put there, and the partition packed the layers with the same numbers — with every
    weight non-zero, its per-core charge is the emitted bytes without the row pointers × M/(M − R)
    (R: the row table, 4 bytes × core.input_axons_max), and every PE holds at most M (the old
    partition model, 1 byte per dense synapse and no rows, fails this)."""
    spec = rows_spec(tmp_path)
    M, R = spec.get("core.synapse_memory_bytes"), 4 * spec.get("core.input_axons_max")
    g, prog, _, ctx = compile_steps(dense_net(), spec, {"reset": "zero"})
    assert all(np.count_nonzero(q.weights) == q.weights.size for q in prog.projections)
    emitted, rows = emitted_pe_bytes(prog, spec)
    assert len(emitted) > 2                   # the hidden layer spreads over PEs
    rep = prog.report["per_pe"]
    assert {int(k): v["sram_bytes"] for k, v in rep.items()} == emitted
    est = ctx.reports["placement"]["per_core"]["synapse_bytes"]
    for pe, b in emitted.items():
        assert b <= M and est[pe] <= M
        assert abs(est[pe] - (b - rows[pe]) * M / (M - R)) < 1, pe      # est is truncated to whole bytes
        assert rows[pe] <= R


def pruned_net(seed=1):
    """dense_net with half of fc1's weights zero and its first 5 sources without any synapse."""
    model = dense_net()
    w = model.nodes["fc1"].weight
    w[np.random.default_rng(seed).random(w.shape) < 0.5] = 0.0
    w[:, :5] = 0.0                            # sources with no synapse at all: no row
    return model


def test_partition_counts_the_stored_rows_of_pruned_layers(tmp_path):
    """A PE stores a neuron layer's non-zero weights only (stores_zero_weights = False): on a
    quantised net with zero weights the partition's per-core charge is exactly the emitted
    synapses without the row pointers × M/(M − R), and the cost report counts the emitted
    bytes exactly, rows included."""
    spec = rows_spec(tmp_path)
    M, R = spec.get("core.synapse_memory_bytes"), 4 * spec.get("core.input_axons_max")
    g, prog, _, ctx = compile_steps(pruned_net(), spec, {"reset": "zero"})
    w1 = next(q.weights for q in prog.projections if q.post == "lif1")
    assert 0 < np.count_nonzero(w1) < 0.6 * w1.size          # the zeros are not emitted
    emitted, rows = emitted_pe_bytes(prog, spec)
    assert len(emitted) > 2
    assert {int(k): v["sram_bytes"] for k, v in prog.report["per_pe"].items()} == emitted
    est = ctx.reports["placement"]["per_core"]["synapse_bytes"]
    for pe, b in emitted.items():
        assert b <= M and est[pe] <= M and rows[pe] <= R
        assert abs(est[pe] - (b - rows[pe]) * M / (M - R)) < 1, pe      # est is truncated to whole bytes


def test_partition_bounds_weights_that_round_to_zero(tmp_path):
    """Lowering rounds the float weights with a scale of its own per population, so a tiny
    non-zero weight is stored by the partition's count but not emitted: the partition's
    charge bounds the emitted rows (it never counts fewer)."""
    spec = rows_spec(tmp_path)
    M, R = spec.get("core.synapse_memory_bytes"), 4 * spec.get("core.input_axons_max")
    model = pruned_net()
    w = model.nodes["fc1"].weight
    w[w == 0] = 1e-6                          # non-zero floats that round to 0 at int8
    g, prog, _, ctx = compile_steps(model, spec, {"reset": "zero"})
    emitted, rows = emitted_pe_bytes(prog, spec)
    assert {int(k): v["sram_bytes"] for k, v in prog.report["per_pe"].items()} == emitted
    est = ctx.reports["placement"]["per_core"]["synapse_bytes"]
    slack = [est[pe] + 1 - (b - rows[pe]) * M / (M - R) for pe, b in emitted.items()]
    assert min(slack) >= 0 and max(slack) > 100
    assert all(est[pe] <= M for pe in emitted)


def test_only_a_target_without_stored_zeros_counts_non_zero_weights():
    """The partition's bytes of a dense layer count its zero weights on a target that stores
    them (the generic model: Loihi 2) and leave them out on SpiNNaker 2; the connections
    (fan-in) stay structural on both."""
    from nmc.backends import get_backend
    from nmc.passes.netmodel import build_structure

    dense, pruned = Graph.from_nir(dense_net()), Graph.from_nir(pruned_net())
    for target in ("loihi2", "spinnaker2"):
        be = get_backend(target)
        tm = be.target_model(HardwareSpec.load(be.spec_name))
        assert tm.stores_zero_weights == (target != "spinnaker2")
        a, b = build_structure(dense, tm), build_structure(pruned, tm)
        assert np.array_equal(a.fan_in, b.fan_in)
        i = a.unit_names.index("lif1")
        lif1 = slice(int(a.unit_offset[i]), int(a.unit_offset[i + 1]))
        if tm.stores_zero_weights:
            assert np.array_equal(a.bytes_, b.bytes_)
        else:
            nz = np.count_nonzero(pruned.nodes["fc1"].weight, axis=1)
            assert np.allclose(a.bytes_[lif1] - b.bytes_[lif1],
                               tm.row_share * ROW_SYNAPSE * (pruned.nodes["fc1"].weight.shape[1] - nz))
            rest = np.ones(a.bytes_.size, bool)
            rest[lif1] = False
            assert np.array_equal(a.bytes_[rest], b.bytes_[rest])


def test_emitted_whole_is_the_run_scripts_split():
    """program.emitted_whole (which the cost report asks whether a conv projection is a
    Conv2DProjection) decides as the run script's pe_split does."""
    from nmc.backends.spinnaker2.emit import script
    from nmc.backends.spinnaker2.program import Population, emitted_whole

    ns = {"__name__": "run_spinnaker2", "__file__": "run_spinnaker2.py"}
    exec(compile(script(), "run_spinnaker2.py", "exec"), ns)
    cases = [(np.repeat([0, 1, 2], 4), 4), (np.repeat([3, 7], [4, 2]), 4), (np.repeat([0, 1], [3, 3]), 4),
             (np.array([0, 1, 0, 1, 0, 1]), 3), (np.zeros(6, int), 6), (np.repeat([0, 1], [4, 2]), 3)]
    seen = set()
    for pe, m in cases:
        p = Population("pop", "lif_no_delay", pe.size, pe=pe.astype(np.int32), max_atoms_per_core=m)
        whole = len(ns["pe_split"]({"name": "pop", "size": p.size, "max_atoms_per_core": m, "model": p.model},
                                   {"pop/pe": p.pe})) == 1
        assert emitted_whole(p) == whole, (pe, m)
        seen.add(whole)
    assert seen == {True, False}


def test_conv_split_over_explicit_pes_is_counted_as_rows(tmp_path):
    """A conv projection whose population the run script splits over explicit PEs is expanded
    to rows (emit.build): the cost report counts its rows and synaptic events, not the kernel."""
    from nets import conv_pool

    from nmc.backends.spinnaker2.cost import cost_report
    from nmc.backends.spinnaker2.program import emitted_whole

    spec = HardwareSpec.load("spinnaker2")
    g, prog, _, ctx = compile_steps(conv_pool(), spec, {"reset": "zero"})
    q = next(q for q in prog.projections if q.conv is not None)
    post = prog.pop(q.post)
    tm = ctx.target
    fresh = 1 + max(int(p.pe.max()) for p in prog.populations if p.pe is not None)
    post.pe, post.max_atoms_per_core = np.full(post.size, fresh, np.int32), post.size   # whole, a PE of its own
    assert emitted_whole(post) and emitted_whole(prog.pop(q.pre))
    d = cost_report(prog, g, spec, ctx, tm)["per_pe"][str(fresh)]
    assert d["populations"] == [post.name]
    assert d["synapse_bytes"] == tm.conv_kernel_bytes(q.kernel) == q.kernel.size and d["macs"] > 0
    post.pe = np.where(np.arange(post.size) % 2 == 0, fresh, fresh + 1).astype(np.int32)   # split: rows
    assert not emitted_whole(post)
    for pe in (fresh, fresh + 1):
        d = cost_report(prog, g, spec, ctx, tm)["per_pe"][str(pe)]
        assert d["populations"] == [post.name] and "macs" not in d and d["synaptic_events"] > 0
        nz = q.weights[post.pe == pe] != 0
        assert d["synapse_bytes"] == ROW_SYNAPSE * int(nz.sum()) + 4 * int(nz.any(0).sum())
