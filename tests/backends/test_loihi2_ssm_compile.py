"""``nmc compile --target loihi2`` of DiagSSM graphs and of a saved nmc.nn DiagSSM model (the node registry's loihi2 ``lower`` hook,
backends/loihi2/ssm_lower.py) and ``nmc run`` on the emulator and on ``--device lava``: bit-exact with
each other, within the compile's own derived error bound (reports/loihi2.json) of the float reference;
what does not map is refused with a one-line error naming the node."""
from __future__ import annotations

import json
import subprocess
import sys

import nir
import numpy as np
import pytest

from nmc import serialize, ssm_math as M
from nmc.backends.loihi2.devices.lava_device import lava_available
from nmc.driver import api
from nmc.errors import UnsupportedNodeError
from nmc.ir import Graph
from nmc.nodes_ssm import DiagSSM, StochasticSSMNeuron
from nmc.reference import ReferenceSimulator

# No quantize pass: loihi2's SSM lowering derives its fixed point from the float Λ̄, B, C, D itself
# (backends/loihi2/ssm.py); the default's quantize{bits=8} would only add an SSMQuant annotation that
# lowering does not read (the same program.json)
PASSES = "normalize,partition,place,route"
_why = lava_available()


def ssm_graph(P=4, H=3, complex_=True, seed=0, **kw):
    rng = np.random.default_rng(seed)
    lam = M.s4d_lin(P) if complex_ else M.s4d_real(P)
    j = 1j if complex_ else 0
    node = DiagSSM(lam=lam, step=np.exp(rng.uniform(np.log(0.05), np.log(0.5), P)),
                   b=rng.normal(size=(P, H)) + j * rng.normal(size=(P, H)),
                   c=rng.normal(size=(H, P)) + j * rng.normal(size=(H, P)), d=rng.normal(size=H), **kw)
    return nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([H])}), "ssm": node,
                               "output": nir.Output({"output": np.array([H])})},
                        edges=[("input", "ssm"), ("ssm", "output")], type_check=False)


def compile_(tmp_path, g, name="m"):
    serialize.write(tmp_path / f"{name}.nir", Graph.from_nir(g))
    api.compile(str(tmp_path / f"{name}.nir"), target="loihi2", output=str(tmp_path / f"{name}.nmc"),
                passes=PASSES, input_bits=8)
    return tmp_path / f"{name}.nmc"


def u_int(T=60, H=3, seed=5):
    return np.random.default_rng(seed).integers(-128, 128, size=(T, H)).astype(np.float64)


@pytest.mark.parametrize("complex_,output", [(True, "none"), (False, "relu"), (True, "delta")])
def test_emulator_within_compile_bound_of_reference(tmp_path, complex_, output):
    g = ssm_graph(complex_=complex_, output=output, theta=0.5)
    path = compile_(tmp_path, g)
    b = api.load(path)
    u = u_int()
    y = b.run({"input": u})["output"]
    ref = ReferenceSimulator(b.graph).run({"input": u})["output"]
    rep = json.loads((path / "reports" / "loihi2.json").read_text())["fidelity"]["ssm"]["ssm"]
    assert rep["u_max"] == 128.0
    if output != "delta":           # thresholds flip near θ: the bound is for the linear/ReLU stages
        assert np.abs(y - ref).max() <= rep["y_error_bound"]
        assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
    else:
        assert np.mean(np.abs(y - ref)) < 0.1 * np.abs(ref).max()
    assert json.loads((path / "program" / "program.json").read_text())["units"]
    assert json.loads((path / "reports" / "loihi2.json").read_text())["cores_used"] >= 1   # the SSM is placed


def cli(*args):
    return subprocess.run([sys.executable, "-m", "nmc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def save_nn(path, **kw):
    """A saved nmc.nn model: Linear (no bias) → DiagSSM (its Δ range kept where 8-bit decays resolve it)."""
    import torch

    import nmc
    from nmc import nn as nnn

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), nnn.DiagSSM(4, 6, **kw)).eval()
    nmc.save(m, path)
    return path


@pytest.mark.lava
@pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")
def test_cli_saved_nn_model_emulator_and_lava_bit_exact(tmp_path):
    """nmc compile --target loihi2 of a saved nmc.nn DiagSSM model, nmc run on the emulator and on
    --device lava: the same outputs bit for bit."""
    pt = save_nn(tmp_path / "m.pt", output="delta", theta=0.3, dt_min=0.02, dt_max=0.3)
    r = cli("compile", pt, "--target", "loihi2", "-o", tmp_path / "m.nmc", "--passes", PASSES,
            "--option", "input_bits=8")
    assert r.returncode == 0, r.stderr[-2000:]
    np.savez(tmp_path / "in.npz", input=u_int(T=30))
    outs = {}
    for dev in ("emulator", "lava"):
        r = cli("run", tmp_path / "m.nmc", "--input", tmp_path / "in.npz", "--device", dev, "-o", tmp_path / f"{dev}.npz")
        assert r.returncode == 0, r.stderr[-2000:]
        with np.load(tmp_path / f"{dev}.npz") as f:
            outs[dev] = f["output"]
    assert outs["emulator"].shape == (30, 4) and np.abs(outs["emulator"]).max() > 0
    assert np.array_equal(outs["emulator"], outs["lava"])


def test_cli_too_slow_modes_refused_in_one_line(tmp_path):
    """nmc.nn's default Δ range (1e-3 .. 0.1) gives modes with 1 − |Λ̄| ≈ 5e-4, below what 8-bit weights
    with exponent ≥ −8 resolve: refused, naming the node, the mode and the fix."""
    pt = save_nn(tmp_path / "m.pt", output="none")
    r = cli("compile", pt, "--target", "loihi2", "-o", tmp_path / "m.nmc", "--passes", PASSES,
            "--option", "input_bits=8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "node '1'" in last and "would not decay" in last and "fix:" in last


def test_stochastic_ssm_neuron_refused_with_reason(tmp_path):
    H = 3
    node = StochasticSSMNeuron(lam=np.tile(M.s4d_real(2), (H, 1)), step=np.full(H, 0.3), b=np.ones((H, 2)),
                               c=np.ones((H, 2)), d=np.ones(H), seed=1)
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([H])}), "sto": node,
                            "output": nir.Output({"output": np.array([H])})},
                     edges=[("input", "sto"), ("sto", "output")], type_check=False)
    serialize.write(tmp_path / "s.nir", Graph.from_nir(g))
    with pytest.raises(UnsupportedNodeError, match="random numbers") as e:
        api.compile(str(tmp_path / "s.nir"), target="loihi2", output=str(tmp_path / "s.nmc"), passes=PASSES)
    assert e.value.node == "sto"
    r = cli("compile", tmp_path / "s.nir", "--target", "loihi2", "-o", tmp_path / "s.nmc", "--passes", PASSES)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error:") and "sto" in r.stderr
    assert "Traceback" not in r.stderr


def test_gelu_output_refused(tmp_path):
    with pytest.raises(UnsupportedNodeError, match="gelu") as e:
        compile_(tmp_path, ssm_graph(output="gelu"))
    assert e.value.node == "ssm"


def test_profile_counts_the_ssm_links(tmp_path):
    """nmc profile's MACs (runtime/energy.py via the registry's loihi2 ``internal_macs`` hook): per graded
    input event n_x + 1 (B fan-out and D), per step 4P (the 2×2 rotation blocks) + H·n_x (C)."""
    from nmc.runtime.energy import count_activity

    P, H, T = 4, 3, 40
    b = api.load(compile_(tmp_path, ssm_graph(P=P, H=H)))
    u = u_int(T=T, H=H)
    act = count_activity(b, {"input": u})
    n_x = 2 * P
    events = np.count_nonzero(u)
    assert act.neurobench["effective_mac_per_sample"] == pytest.approx(events * (n_x + 1) + T * (4 * P + H * n_x))


def test_streaming_session_equals_run(tmp_path):
    """nmc.open on the emulator, window by window (Lava state and link buffers carried, the latency
    look-ahead of LaggedStreaming): the same rows as one run."""
    from nmc.driver.api import open_session

    b = api.load(compile_(tmp_path, ssm_graph(output="delta", theta=0.5)))
    u = u_int(T=24)
    want = b.run({"input": u})["output"]
    with open_session(b, window=5) as s:
        got = s.run_dense({"input": u})["output"]
    assert np.array_equal(got[:24], want)


def test_default_numerics_linear_then_ssm(tmp_path):
    """A saved nmc.nn Linear → DiagSSM compiles for loihi2 with the default options (no input_bits): its inputs
    are binary spikes, whose small range used to ask for a state scale whose input weights (B̄·S_x, 2.4e5) no
    8-bit weight with exponent ≤ 7 holds; the scales now also keep B̄, C, D within one slice's range. With
    calibration data of graded integers (event counts up to 5) the input width comes from their range
    (4 bits), and counts run as graded payloads. Both within the compile's own bound of the reference."""
    pt = save_nn(tmp_path / "m.pt", output="none", dt_min=0.02, dt_max=0.3)
    rng = np.random.default_rng(3)
    for name, calib, x in [("spk", None, (rng.random((40, 3)) < 0.3).astype(float)),
                           ("cnt", {"input": rng.integers(0, 6, size=(40, 4, 3)).astype(float)},
                            rng.integers(0, 6, size=(40, 3)).astype(float))]:
        b = api.compile(pt, target="loihi2", output=str(tmp_path / f"{name}.nmc"), passes=PASSES, calibrate=calib)
        rep = json.loads((tmp_path / f"{name}.nmc" / "reports" / "loihi2.json").read_text())["fidelity"]["1"]["ssm"]
        assert rep["u_max"] == (1.0 if calib is None else 8.0)
        y = b.run({"input": x})["output"]
        ref = ReferenceSimulator(b.graph).run({"input": x})["output"]
        assert np.abs(y - ref).max() <= rep["y_error_bound"] and np.abs(ref).max() > 0.1
        assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
    with pytest.raises(Exception, match="0/1"):   # counts into the spike-input program: a typed error, as before
        api.load(tmp_path / "spk.nmc").run({"input": np.full((5, 3), 2.0)})


def save_stack(path, output="relu"):
    """A saved nmc.nn DiagSSMStack in the form loihi2 maps: no LayerNorm, no residual sums or biases into an
    SSM; its decoder (and the last block's mix) after the last SSM."""
    import torch

    import nmc
    from nmc import nn as nnn

    torch.manual_seed(1)
    m = nnn.DiagSSMStack(3, 5, 4, n_layers=2, state_size=4, norm="none", residual=False, bias=False, output=output,
                         dt_min=0.05, dt_max=0.3).eval()
    nmc.save(m, path, input_shape=(3,))
    return path


def test_stack_without_norm_runs_with_a_host_readout(tmp_path):
    """Two chained DiagSSMs (one source each) and the decoder as a host readout on the output port
    (readout_w/readout_b, float64): the emulator within 5 % of the float reference on spike inputs; the
    port's readout survives the bundle's save/load; the default LayerNorm stack is still refused, naming it."""
    pt = save_stack(tmp_path / "m.pt")
    b = api.compile(str(pt), target="loihi2", output=str(tmp_path / "m.nmc"), passes=PASSES)
    port, = b.program.outputs
    assert port.read == "graded" and port.readout_w.shape == (5, 4) and port.readout_b.shape == (4,)
    x = (np.random.default_rng(2).random((40, 3)) < 0.3).astype(float)
    y = b.run({"input": x})["output"]
    ref = ReferenceSimulator(b.graph).run({"input": x})["output"]
    assert y.shape == ref.shape == (40, 4)
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
    again = api.load(tmp_path / "m.nmc")
    assert np.array_equal(again.run({"input": x})["output"], y)

    import nmc
    from nmc import nn as nnn

    nmc.save(nnn.DiagSSMStack(3, 5, 4, n_layers=1, state_size=4, output="relu"), tmp_path / "ln.pt", input_shape=(3,))
    with pytest.raises(UnsupportedNodeError) as e:
        api.compile(str(tmp_path / "ln.pt"), target="loihi2", output=str(tmp_path / "ln.nmc"), passes=PASSES)
    assert "norm" in e.value.node or "LayerNorm" in str(e.value)


@pytest.mark.lava
@pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")
def test_stack_with_host_readout_lava_bit_exact(tmp_path):
    """The same stack on Lava's fixed_pt simulator: the outputs (SSM payloads through the same host readout)
    equal the emulator's bit for bit."""
    b = api.compile(str(save_stack(tmp_path / "m.pt")), target="loihi2", output=str(tmp_path / "m.nmc"),
                    passes=PASSES)
    x = (np.random.default_rng(4).random((20, 2, 3)) < 0.3).astype(float)
    emu = b.run({"input": x})["output"]
    lava = b.run({"input": x}, device="lava")["output"]
    assert np.abs(emu).max() > 0 and np.array_equal(emu, lava)


def test_ssm_ranges_from_calibration_data(tmp_path):
    """With calibration data an SSM's output range (what the next SSM's scales and weights are sized for)
    is the float reference's largest |y| × MARGIN where that is below the worst case: the next SSM's
    u_max drops to it, and the chained stack's error against the reference shrinks."""
    from nmc.backends.loihi2.numerics import MARGIN

    pt = save_stack(tmp_path / "m.pt")
    rng = np.random.default_rng(5)
    calib = {"input": (rng.random((40, 8, 3)) < 0.3).astype(float)}
    x = (rng.random((40, 3)) < 0.3).astype(float)
    err, rep = {}, {}
    for name, c in (("worst", None), ("calib", calib)):
        b = api.compile(str(pt), target="loihi2", output=str(tmp_path / f"{name}.nmc"), passes=PASSES, calibrate=c)
        rep[name] = json.loads((tmp_path / f"{name}.nmc" / "reports" / "loihi2.json").read_text())["fidelity"]
        ref = ReferenceSimulator(b.graph).run({"input": x}, record=["blocks.0.ssm"])
        err[name] = np.abs(b.run({"input": x})["output"] - ref["output"]).max()
    r0 = rep["calib"]["blocks.0.ssm"]["ssm"]
    assert "y_range_from" not in rep["worst"]["blocks.0.ssm"]["ssm"] and "calibration" in r0["y_range_from"]
    ref = ReferenceSimulator(b.graph).run({"input": calib["input"][:, :16]}, record=["blocks.0.ssm"], batched=True)
    assert r0["y_payload_bound"] == pytest.approx(MARGIN * np.abs(ref["blocks.0.ssm.out"]).max() * r0["s_y"])
    assert r0["y_payload_bound"] < r0["y_payload_max"]
    u1 = rep["calib"]["blocks.1.ssm"]["ssm"]["u_max"]
    assert u1 == pytest.approx(r0["y_payload_bound"] / r0["s_y"]) and u1 < rep["worst"]["blocks.1.ssm"]["ssm"]["u_max"]
    assert err["calib"] < err["worst"]
