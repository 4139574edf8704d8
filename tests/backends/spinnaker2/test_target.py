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
