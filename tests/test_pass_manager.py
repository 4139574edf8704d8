"""Pass manager: pipeline text parsing, typed options, verification after each
pass, --dump-ir, reproducers. Test-only passes are registered by fixtures and
removed afterwards (the registry is explicit; nothing leaks into other tests)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nets import ff_lif, normalized
from nmc import serialize
from nmc.errors import GraphError, NmcError, OptionError, PassError
from nmc.ir import Graph
from nmc.passes import REGISTRY, Pass, PassContext, PassManager, parse_pipeline, pipeline_text, register


@dataclass(frozen=True)
class Opts(Pass):
    name = "t-opts"
    summary = "test: typed options, does nothing"
    bits: int = 8
    ratio: float = 0.5
    flag: bool = False
    method: str = "maxabs"
    dims: tuple[int, ...] = ()
    limit: int | None = None

    def apply(self, graph, ctx):
        ctx.reports[self.name] = {"bits": self.bits}
        return graph


@dataclass(frozen=True)
class BreakEdge(Pass):
    """Adds an edge to a node that does not exist: verify() must catch it."""

    name = "t-break"
    summary = "test: leaves a dangling edge"
    target: str = "ghost"

    def apply(self, graph, ctx):
        graph.add_edge("lif1", self.target)
        return graph


@dataclass(frozen=True)
class BreakShape(Pass):
    name = "t-shape"
    summary = "test: makes fc2 the wrong width"

    def apply(self, graph, ctx):
        graph.replace_node("fc2", nir.Affine(weight=np.ones((4, 3)), bias=np.zeros(4)))
        return graph


@dataclass(frozen=True)
class Crash(Pass):
    name = "t-crash"
    summary = "test: a bug inside a pass"

    def apply(self, graph, ctx):
        return {}["missing"]


@dataclass(frozen=True)
class BadOption(Pass):
    name = "t-badopt"
    summary = "test: rejects its input with an OptionError"

    def apply(self, graph, ctx):
        raise OptionError("bits must be <= 16", hint="lower bits")


@dataclass(frozen=True)
class Needs(Pass):
    name = "t-needs"
    summary = "test: requires a quant annotation"
    requires = ("quant",)

    def apply(self, graph, ctx):
        return graph


@dataclass(frozen=True)
class Mark(Pass):
    name = "t-mark"
    summary = "test: sets a meta key (visible in the dump)"
    value: int = 1

    def apply(self, graph, ctx):
        graph.meta["mark"] = self.value
        return graph


TEST_PASSES = (Opts, BreakEdge, BreakShape, Crash, BadOption, Needs, Mark)


@pytest.fixture
def test_passes():
    for cls in TEST_PASSES:
        register(cls)
    yield
    for cls in TEST_PASSES:
        REGISTRY.pop(cls.name, None)


def ctx(**kw) -> PassContext:
    return PassContext(options={"dt": 1e-3, "integrator": "euler", "reset": "zero"}, **kw)


# ------------------------------------------------------------------ parsing
def test_parse_typed_options(test_passes):
    (p,) = parse_pipeline("t-opts{bits=4, ratio=0.25, flag=true, method=percentile, dims=(1;2;3), limit=7}")
    assert p == Opts(bits=4, ratio=0.25, flag=True, method="percentile", dims=(1, 2, 3), limit=7)
    assert type(p.bits) is int and type(p.ratio) is float and type(p.dims[0]) is int
    (q,) = parse_pipeline("t-opts{limit=none,flag=0}")
    assert q.limit is None and q.flag is False


def test_parse_several_and_text_roundtrip(test_passes):
    ps = parse_pipeline(" normalize , t-opts{bits=3,dims=(4;5)},t-mark{value=9} ")
    assert [p.name for p in ps] == ["normalize", "t-opts", "t-mark"]
    text = pipeline_text(ps)
    assert text == "normalize,t-opts{bits=3,dims=(4;5)},t-mark{value=9}"
    assert parse_pipeline(text) == ps


def test_unknown_pass_suggests(test_passes):
    with pytest.raises(OptionError) as e:
        parse_pipeline("normalise")
    assert "unknown pass 'normalise'" in e.value.message and "did you mean 'normalize'" in e.value.hint
    with pytest.raises(OptionError) as e:
        parse_pipeline("normalize,zzzz")
    assert "zzzz" in e.value.message and "nmc passes" in e.value.hint


def test_unknown_option_suggests(test_passes):
    with pytest.raises(OptionError) as e:
        parse_pipeline("t-opts{bts=4}")
    assert "no option 'bts'" in e.value.message and "did you mean 'bits'" in e.value.hint


@pytest.mark.parametrize("text,frag", [
    ("t-opts{bits=four}", "expects int"),
    ("t-opts{ratio=x}", "expects float"),
    ("t-opts{flag=maybe}", "expects bool"),
    ("t-opts{dims=(1;b)}", "expects"),
    ("t-opts{bits}", "has no '='"),
    ("t-opts{bits=4", "cannot parse"),
    ("t-opts}", "cannot parse"),
    ("normalize;t-opts", "cannot parse"),
])
def test_bad_pipeline_text(test_passes, text, frag):
    with pytest.raises(OptionError) as e:
        parse_pipeline(text)
    assert frag in e.value.one_line()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="normalize{}=,;() -_t0123456789abx", max_size=40))
def test_parser_only_raises_option_error(text):
    """Untrusted pipeline text: either parses or raises OptionError, never anything else."""
    try:
        ps = parse_pipeline(text)
    except OptionError:
        return
    assert all(isinstance(p, Pass) for p in ps)


def test_registry_lists_normalize():
    assert "normalize" in REGISTRY and REGISTRY["normalize"].summary


# ------------------------------------------------------------------ manager
def test_verify_after_pass_names_pass_and_node(test_passes):
    g = Graph.from_nir(ff_lif())
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-break")).run(g, ctx())
    err = e.value
    assert err.pass_name == "t-break" and err.node == "ghost"
    assert "pass 't-break'" in err.one_line() and "ghost" in err.one_line()
    assert isinstance(err.__cause__, GraphError)


def test_shape_break_names_node(test_passes):
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-shape")).run(Graph.from_nir(ff_lif()), ctx())
    assert e.value.pass_name == "t-shape" and e.value.node == "fc2"


def test_bug_in_pass_is_named_and_chained(test_passes):
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-crash")).run(Graph.from_nir(ff_lif()), ctx())
    assert e.value.pass_name == "t-crash" and "internal error: KeyError" in e.value.message
    assert isinstance(e.value.__cause__, KeyError)


def test_option_error_from_pass_passes_through(test_passes):
    with pytest.raises(OptionError) as e:
        PassManager(parse_pipeline("normalize,t-badopt")).run(Graph.from_nir(ff_lif()), ctx())
    assert not isinstance(e.value, PassError) and "bits" in e.value.message


def test_requires_checked_before_running(test_passes):
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-needs")).run(Graph.from_nir(ff_lif()), ctx())
    assert e.value.pass_name == "t-needs" and "quant" in e.value.message


def test_input_graph_not_mutated_and_reports(test_passes):
    g = Graph.from_nir(ff_lif())
    before = g.dump()
    c = ctx()
    out = PassManager(parse_pipeline("normalize,t-opts{bits=5},t-mark{value=3}")).run(g, c)
    assert g.dump() == before and out.meta["mark"] == 3
    assert c.reports["t-opts"] == {"bits": 5}
    assert c.reports["passes"]["pipeline"] == "normalize,t-opts{bits=5},t-mark{value=3}"
    assert list(c.timings) == ["01-normalize", "02-t-opts", "03-t-mark"]
    assert "seconds" not in json.dumps(c.reports)  # wall-clock times never reach a bundle


def test_dump_ir_writes_one_file_per_pass(test_passes, tmp_path):
    d = tmp_path / "ir"
    g = Graph.from_nir(ff_lif())
    out = PassManager(parse_pipeline("normalize,t-mark{value=2},t-mark{value=5}")).run(g, ctx(dump_dir=d))
    files = sorted(p.name for p in d.iterdir())
    assert files == ["00-input.txt", "01-normalize.txt", "02-t-mark.txt", "03-t-mark.txt"]
    assert (d / "00-input.txt").read_text() == g.dump()
    assert "mark=2" in (d / "02-t-mark.txt").read_text().splitlines()[0]
    assert (d / "03-t-mark.txt").read_text() == out.dump()


def test_reproducer_written_and_rerunnable(test_passes, tmp_path):
    d = tmp_path / "ir"
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-mark{value=4},t-shape")).run(Graph.from_nir(ff_lif()), ctx(dump_dir=d))
    rep = Path(e.value.reproducer)
    assert rep == d and str(rep) in e.value.one_line()
    info = json.loads((rep / "reproducer.json").read_text())
    assert info["failing_pass"] == "t-shape" and info["pipeline"] == "normalize,t-mark{value=4},t-shape"
    g = serialize.read(rep / "reproducer.nir")
    assert g.meta["mark"] == 4  # the graph just before the failing pass
    g.verify()
    with pytest.raises(PassError) as e2:
        PassManager(parse_pipeline(info["failing_pass"])).run(g, PassContext(options=info["options"]))
    assert e2.value.pass_name == "t-shape" and e2.value.node == "fc2"


def test_reproducer_command_reproduces_via_cli(test_passes, tmp_path):
    from click.testing import CliRunner

    from nmc.cli import main

    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-break{target=nowhere}")).run(Graph.from_nir(ff_lif()),
                                                                              ctx(dump_dir=tmp_path / "rep"))
    rep = Path(e.value.reproducer)
    assert rep.exists() and (rep / "reproducer.nir").exists()
    cmd = json.loads((rep / "reproducer.json").read_text())["command"]
    assert cmd.startswith("nmc compile ")
    import shlex

    args = shlex.split(cmd)[1:] + ["-o", str(tmp_path / "b.nmc")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "pass 't-break'" in r.output and "nowhere" in r.output


def test_no_reproducer_is_written_unless_asked(test_passes, tmp_path, monkeypatch):
    """Without --dump-ir nothing is written anywhere (the system temp folder included);
    the error says how to get a reproducer."""
    import tempfile

    tmp = tmp_path / "systemp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("normalize,t-break{target=nowhere}")).run(Graph.from_nir(ff_lif()), ctx())
    assert e.value.reproducer is None and list(tmp.iterdir()) == []
    assert "--dump-ir DIR" in e.value.one_line()


def test_error_is_nmc_error():
    assert issubclass(PassError, NmcError)


def test_normalize_option_validation():
    g = Graph.from_nir(ff_lif())
    for opts in ({"integrator": "rk4"}, {"reset": "hard"}, {"dt": -1.0}):
        with pytest.raises(OptionError):
            PassManager(parse_pipeline("normalize")).run(g, PassContext(options=opts))


def test_normalize_warns_for_defaulted_options():
    c = PassContext(options={})
    g = PassManager(parse_pipeline("normalize")).run(Graph.from_nir(ff_lif()), c)
    assert g.meta == {"dt": 1e-4, "integrator": "euler", "reset": "zero"}
    assert {w["message"].split()[0] for w in c.warnings.items} == {"dt", "integrator", "reset"}
    assert normalized(ff_lif()).meta["dt"] == 1e-3


def test_normalize_warns_for_delay_off_the_time_grid():
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                            "d": nir.Delay(delay=np.array([2e-3, 2.4e-3])),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "d"), ("d", "output")])
    c = ctx()
    PassManager(parse_pipeline("normalize")).run(Graph.from_nir(g), c)
    (w,) = c.warnings.items
    assert w["node"] == "d" and "0.0024" in w["message"] and "2 step" in w["message"]
    c = PassContext(options={"dt": 1e-4, "integrator": "euler", "reset": "zero"})
    PassManager(parse_pipeline("normalize")).run(Graph.from_nir(g), c)
    assert c.warnings.items == []


# ------------------------------------------------------- shared weight arrays
@dataclass(frozen=True)
class Peek(Pass):
    name = "t-peek"
    summary = "test: records the node arrays it is given"
    seen: ClassVar[list] = []

    def apply(self, graph, ctx):
        Peek.seen.append({k: (n.weight, n.weight.flags.writeable) for k, n in graph.nodes.items()
                          if "weight" in vars(n)})
        return graph


def test_passes_share_weight_arrays_instead_of_copying_them():
    register(Peek)
    try:
        Peek.seen.clear()
        g = normalized(ff_lif())
        before = {k: n.weight.copy() for k, n in g.nodes.items() if hasattr(n, "weight")}
        out = PassManager(parse_pipeline("t-peek,t-peek,t-peek")).run(g, ctx())
        first, second, third = Peek.seen
        for k in first:
            assert first[k][0] is not g.nodes[k].weight         # the input graph's arrays are copied once
            assert second[k][0] is first[k][0] and third[k][0] is first[k][0]   # then shared from pass to pass
            assert not second[k][1] and not third[k][1]          # read-only while passes run
            assert out.nodes[k].weight.flags.writeable            # writable again in the result
            assert g.nodes[k].weight.flags.writeable and np.array_equal(g.nodes[k].weight, before[k])
        out.nodes[k].weight[...] = 0                               # the result is the caller's to change
        assert np.array_equal(g.nodes[k].weight, before[k])
    finally:
        REGISTRY.pop(Peek.name, None)


def test_complete_pipeline_appends_the_default_provider_of_what_lowering_reads():
    """A lowering that reads the placement gets ``partition`` (its default provider, default
    options) appended to a pipeline without one; a pipeline that has a provider is kept as it is;
    a requirement no pass provides by default is a PassError."""
    from nmc.passes import complete_pipeline

    short = parse_pipeline("normalize,quantize{bits=6}")
    out, added = complete_pipeline(short, ("placement",))
    assert [p.text() for p in added] == ["partition"] and out[:-1] == short and out[-1] is added[0]
    assert pipeline_text(out) == "normalize,quantize{bits=6},partition"
    full = parse_pipeline("normalize,partition{max_neurons_per_core=5},place")
    assert complete_pipeline(full, ("placement",)) == (full, [])
    assert complete_pipeline(short, ()) == (short, [])
    with pytest.raises(PassError, match="'no-such-kind'"):
        complete_pipeline(short, ("no-such-kind",))
