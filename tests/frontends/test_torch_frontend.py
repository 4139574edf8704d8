"""PyTorch frontend: nmc.nn ≡ reference bit-for-bit; snnTorch and Norse networks
converted by nmc's own converters agree with the libraries; safe loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import nmc
from nmc import nn as nnn
from nmc.cli import main
from nmc.errors import InputFileError, ShapeError, UnsupportedNodeError, UntrustedPickleError
from nmc.frontends.torch import from_module, load_file
from nmc.passes import PassContext, PassManager, parse_pipeline
from nmc.reference import ReferenceSimulator
from snntorch_premise import no_double_reset


def _ref(g, x, dtype=torch.float64, record=()):
    g = PassManager(parse_pipeline("normalize")).run(g, PassContext())
    return ReferenceSimulator(g, dtype=dtype).run({"input": np.asarray(x)}, record=record)


def _spikes(shape, p=0.3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).double() * scale


# ------------------------------------------------------------------ nmc.nn
def _nmc_ff():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 12), nnn.LIF(12, beta=0.8), nn.Linear(12, 8),
                         nnn.CubaLIF(8, alpha=0.6, beta=0.85, reset="zero"), nn.Linear(8, 3),
                         nnn.LI(3, beta=0.9)).double()


def test_nmc_nn_equals_reference_bit_for_bit():
    net = _nmc_ff()
    with torch.no_grad():
        net[0].weight.mul_(3)
    x = _spikes((30, 4, 6))
    y = nnn.run(net, x).detach().numpy()
    out = _ref(from_module(net), x)["output"]
    assert np.array_equal(out, y)
    assert np.abs(y).sum() > 0


def test_recurrent_if_and_exact_integrator_bit_for_bit():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 10), nnn.RLIF(10, tau=4e-3, integrator="exact", v_threshold=0.5, r=4.0),
                        nn.Linear(10, 4), nnn.IF(4, v_threshold=1.0)).double()
    with torch.no_grad():
        net[1].recurrent.weight.normal_(0, 0.5)
        net[0].weight.mul_(2)
        net[2].weight.mul_(4)
    x = _spikes((40, 2, 5), p=0.5)
    y = nnn.run(net, x).detach().numpy()
    g = from_module(net)
    assert ("1", "1.w_rec") in g.edges and ("1.w_rec", "1") in g.edges
    assert np.array_equal(_ref(g, x)["output"], y) and y.sum() > 0


def test_conv_pool_flatten_model_via_fx_with_residual():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.lif1 = nnn.LIF((4, 6, 6), beta=0.7, v_threshold=0.5)
            self.pool = nn.AvgPool2d(2)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(36, 36)
            self.skip = nn.Linear(36, 36)
            self.lif2 = nnn.LIF(36, beta=0.8, v_threshold=0.5)

        def forward(self, x):
            h = self.flat(self.pool(self.lif1(self.conv(x))))
            return self.lif2(self.fc(h) + self.skip(h))

    torch.manual_seed(3)
    net = Net().double()
    x = _spikes((20, 2, 1, 6, 6), p=0.5, scale=2.0)
    y = nnn.run(net, x).detach().numpy()
    g = from_module(net, input_shape=(1, 6, 6))
    assert sorted(g.preds("lif2")) == ["fc", "skip"]
    assert np.array_equal(_ref(g, x)["output"], y) and y.sum() > 0


def test_save_compile_cli_and_rebuild(tmp_path):
    net = _nmc_ff()
    nmc.save(net, tmp_path / "m.pt")
    d = torch.load(tmp_path / "m.pt", weights_only=True)  # readable without unpickling code
    assert d["format"] == "nmc-torch"
    x = _spikes((25, 6))
    np.savez(tmp_path / "in.npz", input=x.numpy())
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.pt"), "--target", "reference", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["run", str(tmp_path / "b"), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o.npz") as z:
        out = z["output"]
    y = nnn.run(net, x[:, None])[:, 0].detach().numpy()
    assert np.array_equal(out, y)
    again = nnn.load(tmp_path / "m.pt").double()
    assert torch.equal(nnn.run(again, x[:, None]), nnn.run(net, x[:, None]))


def test_untrusted_pickle_refused_then_accepted(tmp_path):
    net = _nmc_ff()
    torch.save(net, tmp_path / "full.pt")
    with pytest.raises(UntrustedPickleError) as e:
        load_file(tmp_path / "full.pt")
    assert "--trust-pickle" in e.value.one_line()
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "full.pt"), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "trust-pickle" in r.output
    g = load_file(tmp_path / "full.pt", trust_pickle=True)
    x = _spikes((10, 6))
    assert np.array_equal(_ref(g, x)["output"], nnn.run(net, x[:, None])[:, 0].detach().numpy())


def test_bare_state_dict_and_corrupt_file(tmp_path):
    torch.save(_nmc_ff().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(InputFileError) as e:
        load_file(tmp_path / "sd.pt")
    assert "nmc.save" in e.value.one_line()
    (tmp_path / "bad.pt").write_bytes(b"not a torch file" * 20)
    with pytest.raises(InputFileError):
        load_file(tmp_path / "bad.pt")


def test_shape_and_unsupported_errors():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nnn.LIF((2, 4, 4)))
    with pytest.raises(ShapeError) as e:
        from_module(conv)
    assert "--input-shape" in e.value.one_line()
    with pytest.raises(ShapeError) as e:
        from_module(conv, input_shape=(3, 6, 6))
    assert "'0'" in e.value.one_line()
    with pytest.raises(UnsupportedNodeError) as e:
        from_module(nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)))
    assert "'1'" in e.value.one_line() and "LSTM" in e.value.one_line()
    with pytest.raises(UnsupportedNodeError) as e:
        from_module(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), input_shape=(1, 6, 6))
    assert "max pooling" in e.value.one_line()


def test_pt2_export_accepted(tmp_path):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 7), nnn.LIF(7, beta=0.75, reset="zero", dt=2e-3), nn.Linear(7, 3),
                        nnn.LIF(3, beta=0.9, dt=2e-3))
    ep = torch.export.export(net, (torch.zeros(1, 5),))
    torch.export.save(ep, tmp_path / "m.pt2")
    nnn.reset(net)
    g = load_file(tmp_path / "m.pt2")
    x = _spikes((15, 5), p=0.6, scale=2.0).float()
    y = nnn.run(net, x[:, None])[:, 0].detach().numpy()
    out = _ref(g, x.numpy(), dtype=torch.float32)["output"]
    assert np.array_equal(out, y)
    assert g.meta["dt"] == 2e-3


# --------------------------------------------------------------- snnTorch
snn = pytest.importorskip("snntorch")


def _snn_run(net, x):
    from snntorch import utils

    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x[t]) for t in range(x.shape[0])]).numpy()


@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rleaky"])
def test_snntorch_networks_match_snntorch(kind):
    torch.manual_seed(5)
    lay = {"leaky": lambda n: snn.Leaky(beta=0.85, init_hidden=True, reset_delay=False),
           "synaptic": lambda n: snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True, reset_delay=False),
           "rleaky": lambda n: snn.RLeaky(beta=0.85, linear_features=n, init_hidden=True, reset_delay=False)}[kind]
    net = nn.Sequential(nn.Linear(8, 16), lay(16), nn.Linear(16, 5), snn.Leaky(beta=0.9, init_hidden=True,
                                                                                reset_delay=False))
    wscale, bscale, xscale = {"leaky": (2.5, 1.0, 0.5), "synaptic": (1.5, 0.2, 0.3), "rleaky": (2.5, 1.0, 0.25)}[kind]
    with torch.no_grad():
        net[0].weight.mul_(wscale)
        net[0].bias.mul_(bscale)  # a strong constant drive would make snnTorch's double-reset case occur
        net[2].weight.mul_(2.5)
    x = (torch.rand(40, 4, 8) < 0.3).float() * xscale
    assert no_double_reset(net, x)
    ys = _snn_run(net, x)
    g = from_module(net)
    assert g.meta["dt"] == 1e-4  # snnTorch's export convention
    out = _ref(g, x.numpy(), dtype=torch.float32)["output"]
    assert ys.sum() > 0
    assert np.array_equal(out, ys)


def test_snntorch_reset_delay_true_exact_or_warned():
    # Leaky with the default delayed reset converts exactly: no warning
    net = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True))
    b = nmc.compile(net, target="reference")
    assert not any("reset_delay" in w["message"] for w in b.report("compile")["warnings"])
    # Synaptic with a delayed reset *to zero* drops the next step's input: warned, names the layer
    net = nn.Sequential(nn.Linear(4, 4), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True, reset_mechanism="zero"))
    b = nmc.compile(net, target="reference")
    ws = [w for w in b.report("compile")["warnings"] if "reset_delay" in w["message"]]
    assert ws and ws[0]["node"] == "1"


# ------------------------------------------------------------------ Norse
norse = pytest.importorskip("norse.torch")


def test_norse_lifbox_and_lif_cells_match_norse():
    torch.manual_seed(6)
    net = norse.SequentialState(nn.Linear(8, 16), norse.LIFBoxCell(), nn.Linear(16, 5), norse.LIFCell())
    with torch.no_grad():
        net[0].weight.mul_(15)
        net[2].weight.mul_(30)
    x = (torch.rand(50, 3, 8) < 0.4).float() * 2
    out, st = [], None
    with torch.no_grad():
        for t in range(50):
            o, st = net(x[t], st)
            out.append(o)
    ys = torch.stack(out).numpy()
    g = from_module(net)
    assert any(type(n).__name__ == "CubaLIF" for n in g.nodes.values())
    res = _ref(g, x.numpy(), dtype=torch.float32, record=["1"])
    # Norse adds the same terms in another order: spikes equal, membranes within float32 rounding
    assert ys.sum() > 0 and res["1.spikes"].sum() > 0
    assert np.array_equal(res["output"], ys)


def test_snntorch_conv_net_matches_snntorch():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True, reset_delay=False),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 5),
                        snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[4].weight.mul_(8.0)
        net[0].bias.zero_()
        net[4].bias.zero_()  # no constant drive: keeps snnTorch's double-reset case away
    x = (torch.rand(30, 2, 1, 6, 6) < 0.3).float() * 0.5
    assert no_double_reset(net, x)
    ys = _snn_run(net, x)
    g = from_module(net, input_shape=(1, 6, 6))
    res = _ref(g, x.numpy(), dtype=torch.float32, record=["1"])
    assert ys.sum() > 0 and res["1.spikes"].sum() > 0
    assert np.array_equal(res["output"], ys)
