"""The compiled EGRU / DiagSSM / graded-projection steps of the SpiNNaker 2 emulator
(backends/spinnaker2/kernel_fused.py) equal the numpy emulation bit for bit: whole runs with the
compiled loops on and off, batched, with zeros in the inputs (skipped events), every DiagSSM output
stage, int8 and ternary EGRU weights, and rows of a batch that have not reached the kernel's
latency tick (their state untouched)."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import currents, egru_net
from nmc.backends.spinnaker2 import kernel_fused
from test_ssm_nodes import _graph, diag_node

pytestmark = pytest.mark.skipif(not kernel_fused.ENABLED, reason="numba not importable")
OPTS = dict(dt=1e-3, integrator="euler", reset="subtract")


def _both(monkeypatch, b, x, record, hook):
    """(compiled run, numpy run) of bundle ``b``; ``hook``: the kernel_fused function that must run."""
    calls = []
    f = getattr(kernel_fused, hook)
    monkeypatch.setattr(kernel_fused, hook, lambda *a: calls.append(1) or f(*a))
    fused = b.run({"input": x}, record=record)
    assert calls, f"{hook} did not run"
    monkeypatch.setattr(kernel_fused, "ENABLED", False)
    plain = b.run({"input": x}, record=record)
    assert fused.keys() == plain.keys()
    for k in fused:
        assert fused[k].dtype == plain[k].dtype
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)
    return fused


@pytest.mark.parametrize("complex_,output", [(True, "none"), (False, "relu"), (True, "gelu"), (True, "delta")])
def test_diag_ssm_compiled_equals_numpy(monkeypatch, complex_, output):
    H = 5
    b = nmc.compile(_graph(diag_node(P=7, H=H, complex=complex_, output=output, theta=0.2, seed=3), H),
                    target="spinnaker2", **OPTS)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(30, 4, H)) * (rng.random((30, 4, H)) < 0.5)).astype(np.float32).astype(np.float64)
    x[:, 1] = 0                                            # a sample without any input event
    out = _both(monkeypatch, b, x, ["ssm"], "diag_step")
    assert np.abs(out["ssm.out"]).max() > 0


@pytest.mark.parametrize("passes", [None, "normalize,quantize{scheme=ternary,per_channel=true}"])
def test_egru_and_its_graded_readout_compiled_equal_numpy(monkeypatch, passes):
    b = nmc.compile(egru_net(hidden=9), target="spinnaker2", **OPTS, **({"passes": passes} if passes else {}))
    w = b.program.pop("egru").kernel["wx"]
    assert (set(np.unique(w)) <= {-1, 0, 1}) == (passes is not None)
    x = currents((5,), T=30, seed=2, batch=3)
    x[x < -0.5] = 0
    calls = []
    acc = kernel_fused.accumulate
    monkeypatch.setattr(kernel_fused, "accumulate", lambda *a: calls.append(1) or acc(*a))
    out = _both(monkeypatch, b, x, ["egru", "li"], "egru_step")
    assert calls and out["egru.spikes"].mean() > 0.05


def test_rows_before_the_latency_tick_keep_their_state():
    """diag_step on a batch with rows off: those rows' state is untouched, the others step as
    ssm_lower.step steps them alone."""
    from nmc.backends.spinnaker2.ssm_lower import init_state, step

    H = 4
    b = nmc.compile(_graph(diag_node(P=5, H=H, output="delta", theta=0.1, seed=1), H), target="spinnaker2", **OPTS)
    kernel = b.program.pop("ssm").kernel
    prm = kernel_fused.diag_params(kernel)
    rng = np.random.default_rng(0)
    st = init_state(kernel, 3)
    for _ in range(5):                                     # some state first
        kernel_fused.diag_step(prm, st, rng.normal(size=(3, H)).astype(np.float32), np.ones(3, bool))
    before = {k: v.copy() for k, v in st.items()}
    x = rng.normal(size=(3, H)).astype(np.float32)
    on = np.array([True, False, True])
    out = kernel_fused.diag_step(prm, st, x, on)
    assert all(np.array_equal(st[k][1], before[k][1]) for k in st)
    for r in (0, 2):
        ref, _, ref_st = step(kernel, {k: v[r:r + 1] for k, v in before.items()}, x[r:r + 1], np.zeros(1))
        assert np.array_equal(out[r].view(np.uint32), ref[0].view(np.uint32))
        assert all(np.array_equal(st[k][r], ref_st[k][0]) for k in st)


@pytest.mark.parametrize("output", ["none", "gelu", "delta"])
def test_diag_lanes_equal_per_sample_loop(monkeypatch, output):
    """The DiagSSM step with the samples as lanes equals the per-sample loop bit for bit: zero
    events, a sample without input, rows off (state untouched), several steps."""
    from nmc.backends.spinnaker2.ssm_lower import init_state

    H = 6
    b = nmc.compile(_graph(diag_node(P=9, H=H, output=output, theta=0.1, seed=4), H), target="spinnaker2", **OPTS)
    kernel = b.program.pop("ssm").kernel
    prm = kernel_fused.diag_params(kernel)
    rng = np.random.default_rng(5)
    st = {m: init_state(kernel, 5) for m in ("lanes", "sample")}
    for t in range(12):
        x = (rng.normal(size=(5, H)) * (rng.random((5, H)) < 0.5)).astype(np.float32)
        x[1] = 0
        on = np.array([True, True, t % 3 > 0, True, t > 4])
        outs = {}
        for m, lanes_min in (("lanes", 2), ("sample", 10 ** 9)):
            monkeypatch.setattr(kernel_fused, "LANES_MIN", lanes_min)
            outs[m] = kernel_fused.diag_step(prm, st[m], x, on)
        assert np.array_equal(outs["lanes"].view(np.uint32), outs["sample"].view(np.uint32))
        assert all(np.array_equal(st["lanes"][k].view(np.uint32), st["sample"][k].view(np.uint32)) for k in st["lanes"])
    assert np.abs(outs["lanes"]).max() > 0
