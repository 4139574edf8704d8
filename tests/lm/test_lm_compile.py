"""EGRU language models end to end at small scale, on a generated corpus: a
training step, pruned + fine-tuned model saved with nmc.save, compiled for
spinnaker2 with the LM pipeline, its report's fidelity numbers (checked
against an independent computation), token streaming through the emulator,
the host-built C kernels (bit-exact) and the CLI, and the targets that refuse."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import nmc
from nmc import nn as nnn
from nmc.cli import main
from nmc.errors import OptionError, UnsupportedNodeError
from nmc.lm import evaluate as E
from nmc.lm.corpus import CharVocab
from nmc.lm.host import TokenStream
from nmc.passes.sparsify import keep_top

from lm_text import corpus


def train_steps(lm, ids, steps, masks=None, penalty=0.05, seed=0):
    """Truncated BPTT on random windows; returns the cross-entropy per step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, ids.size - 25, (8,), generator=g)
        w = torch.stack([torch.as_tensor(ids[s:s + 25]) for s in starts.tolist()], 1)
        lm.reset_state()
        ce = torch.nn.functional.cross_entropy(lm(w[:-1]).reshape(-1, lm.vocab), w[1:].reshape(-1))
        act = torch.stack([layer.activity for layer in lm.layers]).mean()
        opt.zero_grad()
        (ce + penalty * act).backward()
        opt.step()
        if masks is not None:
            with torch.no_grad():
                for p, m in masks:
                    p.mul_(m)
        losses.append(ce.item())
    lm.reset_state()
    return losses


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models step fastest on one thread (several spin-wait on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory, one_torch_thread):
    d = tmp_path_factory.mktemp("lm")
    train, held = corpus(1500, 0), corpus(200, 1)
    vocab = CharVocab.from_text(train + held)
    torch.manual_seed(0)
    lm = nnn.EGRULanguageModel(len(vocab), 8, [24, 16], chars=vocab.chars, thr_init=0.1)
    ids = vocab.encode(train)
    losses = train_steps(lm, ids, 100)
    dense_losses = list(losses)
    masks = []
    with torch.no_grad():  # the compile pipeline's rule: keep ⌈0.05·n⌉ largest of each EGRU weight array
        for layer in lm.layers:
            for p in (layer.w_x, layer.w_h):
                m = torch.as_tensor(keep_top(p.abs().numpy(), 0.05), dtype=p.dtype)
                p.mul_(m)
                masks.append((p, m))
    losses += train_steps(lm, ids, 40, masks=masks, seed=1)
    nmc.save(lm, d / "lm.pt")
    (d / "val.txt").write_text(corpus(150, 2))
    (d / "test.txt").write_text(held)
    b = nmc.compile(d / "lm.pt", target="spinnaker2", output=d / "lm.nmc", calibrate=d / "val.txt",
                    eval_text=d / "test.txt")
    return {"dir": d, "lm": lm, "vocab": vocab, "losses": dense_losses, "bundle": b, "held": held}


def test_training_lowers_the_loss_and_keeps_pruned_weights_at_zero(lm_files):
    losses = lm_files["losses"]
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:5])
    for layer in lm_files["lm"].layers:
        for p in (layer.w_x, layer.w_h):
            assert int((p != 0).sum()) <= math.ceil(0.05 * p.numel())
        assert float(layer.threshold().min()) >= 0.05


def test_lm_pipeline_prunes_only_egru_weights_and_emits_csc_kernels(lm_files):
    b = lm_files["bundle"]
    pipe = b.manifest["pipeline"]
    assert pipe.startswith("normalize,sparsify{density=0.05,scope=layer,format=csr,nodes=EGRU},quantize")
    g = b.graph
    for k in ("egru0", "egru1"):
        for w in (g.nodes[k].w_x, g.nodes[k].w_h):
            assert np.count_nonzero(w) <= math.ceil(0.05 * w.size)
    assert np.count_nonzero(g.nodes["embed"].weight) == g.nodes["embed"].weight.size  # stays dense
    files = b.program.files()
    src = files["kernels/egru0_pe" + str(int(b.program.pop("egru0").pe[0])) + ".c"].decode()
    assert "WX_PTR" in src and "WH_VAL" in src
    s2 = b.report("spinnaker2")
    assert s2["host_readout"]["output"]["source"] == "egru1"


def test_report_fidelity_numbers_and_an_independent_perplexity(lm_files):
    b, lm, vocab = lm_files["bundle"], lm_files["lm"], lm_files["vocab"]
    rep = b.report("lm")
    pp = rep["perplexity"]
    assert set(pp) == {"float", "pruned", "quantized", "device"}
    # the saved model was pruned by the pipeline's rule: pruning at compile time changes nothing
    assert pp["pruned"] == pytest.approx(pp["float"], rel=1e-9)
    assert abs(rep["device_vs_float"]) < 0.03 and abs(pp["quantized"] / pp["float"] - 1) < 0.03
    assert pp["float"] < 0.7 * len(vocab)  # it learned something
    # float perplexity recomputed with the torch module itself on the same pieces
    tok = E.pieces(vocab.encode(lm_files["held"][:4000]), 4)
    lm.reset_state()
    with torch.no_grad():
        logits = lm(torch.as_tensor(tok)).double().numpy()
    assert E.ppl(logits, tok) == pytest.approx(pp["float"], rel=1e-5)
    for layer, a in rep["activity"]["device"].items():
        assert 0 < a < 1
    m = rep["macs_per_token"]
    assert m["dense_total"] == 3 * 24 * (8 + 24) + 3 * 16 * (24 + 16)
    assert 0 < m["effective_total"] < m["dense_total"] and m["reduction_vs_dense"] > 1
    pl = rep["placement"]
    assert pl["pes_used"] >= 1 and pl["latency_ticks"] == 2
    assert 0 < pl["time_per_token_per_tick_s"]["worst_step_max_pe"] <= pl["time_per_token_per_tick_s"]["sys_tick"]
    assert "host" in pl["decoder"] and "folded" in pl["embedding"]


def test_streaming_equals_the_emulator_run_and_c_kernels_are_bit_exact(lm_files):
    b, vocab = lm_files["bundle"], lm_files["vocab"]
    tok = vocab.encode(lm_files["held"][:120])
    run = b.run({"input": E.one_hot(tok, len(vocab)).astype(np.float32)}, record=["egru0", "egru1"])
    emu = TokenStream(b, "emulator")
    assert np.array_equal(emu.feed_all(tok), run["output"])
    ck = TokenStream(b, "c")
    ys = []
    for t in tok:
        ys.append(ck.runner.ck.step({"input": E.one_hot(np.array([t]), len(vocab))[0].astype(np.float32)}))
    for k in ("egru0", "egru1"):
        c_y = np.stack([y[k] for y in ys])
        e_y = run[f"{k}.out"].astype(np.float32)
        assert np.array_equal(c_y.view(np.uint32), e_y.view(np.uint32)), k  # bit for bit
        assert (e_y != 0).mean() > 0.01
    ck.reset()
    assert np.array_equal(ck.feed_all(tok), run["output"])
    assert emu.generate(tok[:10], 15) == TokenStream(b, "c").generate(tok[:10], 15)


def test_cli_run_text_tokens_and_eval(lm_files, tmp_path):
    d, vocab = lm_files["dir"], lm_files["vocab"]
    r = CliRunner().invoke(main, ["compile", str(d / "lm.pt"), "--target", "spinnaker2", "-o", str(tmp_path / "c.nmc"),
                                  "--calibrate", str(d / "val.txt"), "--option", f"eval_text={d / 'test.txt'}"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.nmc" / "reports" / "lm.json").read_bytes() == (d / "lm.nmc" / "reports" / "lm.json").read_bytes()
    r = CliRunner().invoke(main, ["run", str(d / "lm.nmc"), "--text", "to be or", "--generate", "12"])
    assert r.exit_code == 0, r.output
    line = r.stdout.strip().splitlines()[-1] if hasattr(r, "stdout") else r.output
    assert line.startswith("to be or") and len(line) >= len("to be or") + 5
    (tmp_path / "ids.txt").write_text(" ".join(map(str, vocab.encode("that is the"))))
    r1 = CliRunner().invoke(main, ["run", str(d / "lm.nmc"), "--tokens", str(tmp_path / "ids.txt"),
                                   "--generate", "8", "--engine", "c"])
    r2 = CliRunner().invoke(main, ["run", str(d / "lm.nmc"), "--tokens", str(tmp_path / "ids.txt"),
                                   "--generate", "8"])
    assert r1.exit_code == 0 and r2.exit_code == 0 and r1.stdout.splitlines()[-1] == r2.stdout.splitlines()[-1]
    bad = CliRunner().invoke(main, ["run", str(d / "lm.nmc"), "--text", "ZZZ"])
    assert bad.exit_code == 2 and "vocabulary" in bad.output and "Traceback" not in bad.output
    r = CliRunner().invoke(main, ["eval", str(d / "lm.nmc"), "--text-file", str(d / "test.txt"), "--model",
                                  str(d / "lm.pt"), "-o", str(tmp_path / "rep.json")])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["perplexity"] == pytest.approx(lm_files["bundle"].report("lm")["perplexity"], rel=1e-12)
    assert "device" in r.output and "PEs used" in r.output


def test_float32_weights_and_unit_pruning_options(lm_files, tmp_path):
    d = lm_files["dir"]
    b = nmc.compile(d / "lm.pt", target="spinnaker2", calibrate=d / "val.txt", egru_weights="float32",
                    prune_units=0.25)
    assert "quantize" not in b.manifest["pipeline"] and "prune_units=0.25" in b.manifest["pipeline"]
    assert b.graph.nodes["egru0"].hidden_size == 18 and b.program.pop("egru0").kernel["wx"].dtype == np.float32
    tok = lm_files["vocab"].encode(lm_files["held"][:60])
    run = b.run({"input": E.one_hot(tok, len(lm_files["vocab"])).astype(np.float32)})["output"]
    assert np.array_equal(TokenStream(b, "c").feed_all(tok), run)
    with pytest.raises(OptionError, match="density"):
        nmc.compile(d / "lm.pt", target="spinnaker2", density=1.5)


def test_other_targets_refuse_egru_with_the_reason(lm_files):
    d = lm_files["dir"]
    with pytest.raises(UnsupportedNodeError, match="microcode"):
        nmc.compile(d / "lm.pt", target="loihi2")
    with pytest.raises(UnsupportedNodeError, match="graded"):
        nmc.compile(d / "lm.pt", target="brainscales2")
    ref = nmc.compile(d / "lm.pt", target="reference")  # the float model itself
    s = TokenStream(ref)
    assert s.engine == "reference"
    with pytest.raises(OptionError):
        TokenStream(ref, "c")


def test_text_calibration_is_for_language_models(tmp_path):
    from nets import egru_net

    (tmp_path / "c.txt").write_text("abc")
    with pytest.raises(OptionError, match="language models"):
        nmc.compile(egru_net(), target="spinnaker2", calibrate=tmp_path / "c.txt")
