"""A ternary EGRU language model end to end at small scale: QAT with distillation from the dense
model (nmc.nn.ternary + nmc.nn.distill), saved exactly ternary×scale, compiled with
``egru_weights=ternary`` into packed 2-bit kernels that hold exactly those weights, streamed through
the emulator and the host-built C kernels (bit-exact), and ``nmc run --text``'s streaming figures."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import nmc
from nmc import nn as nnn
from nmc.cli import main
from nmc.backends.spinnaker2.egru_packed import is_packed
from nmc.lm import evaluate as E
from nmc.lm.corpus import CharVocab
from nmc.lm.host import TokenStream
from nmc.nn import ternary as T
from nmc.nn.distill import distillation_loss

from lm_text import corpus

CC = shutil.which("cc") or shutil.which("gcc")


def windows(ids, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, ids.size - 25, (8,), generator=g)
        yield torch.stack([torch.as_tensor(ids[s:s + 25]) for s in starts.tolist()], 1)


@pytest.fixture(scope="module")
def ternary_lm(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tlm")
    train, held = corpus(1200, 0), corpus(150, 1)
    vocab = CharVocab.from_text(train + held)
    ids = vocab.encode(train)
    torch.manual_seed(0)
    dense = nnn.EGRULanguageModel(len(vocab), 8, [20], chars=vocab.chars, thr_init=0.1)
    opt = torch.optim.Adam(dense.parameters(), lr=1e-2)
    for w in windows(ids, 60, 0):
        dense.reset_state()
        loss = torch.nn.functional.cross_entropy(dense(w[:-1]).reshape(-1, dense.vocab), w[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    dense.reset_state()
    student = T.ternarize(T.fold_embedding(dense))
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    kd = []
    for w in windows(ids, 30, 1):
        student.reset_state()
        dense.reset_state()
        with torch.no_grad():
            t_logits = dense(w[:-1])
        loss = distillation_loss(student(w[:-1]), t_logits, w[1:], temperature=2.0, alpha=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        kd.append(loss.item())
    T.bake(student)
    student.reset_state()
    nmc.save(student, d / "lm_ternary.pt")
    (d / "val.txt").write_text(corpus(100, 2))
    (d / "test.txt").write_text(held)
    b = nmc.compile(d / "lm_ternary.pt", target="spinnaker2", output=d / "lm.nmc", calibrate=d / "val.txt",
                    eval_text=d / "test.txt", egru_weights="ternary")
    yield {"dir": d, "bundle": b, "vocab": vocab, "student": student, "held": held, "kd": kd}
    torch.set_num_threads(n)


def test_the_kernels_hold_exactly_the_saved_ternary_weights(ternary_lm):
    b, student = ternary_lm["bundle"], ternary_lm["student"]
    assert "quantize{scheme=ternary,per_channel=true}" in b.manifest["pipeline"].lower()
    assert "sparsify" not in b.manifest["pipeline"]             # a ternary model is not pruned by default
    p = b.program.pop("egru0")
    k = p.kernel
    assert is_packed(k)
    for key, s, w in (("wx", "sx", student.layers[0].w_x), ("wh", "sh", student.layers[0].w_h)):
        # the identity embedding folds away exactly: the chip's columns are the saved rows s·t
        assert np.array_equal(k[key].astype(np.float64) * k[s].astype(np.float64)[:, None],
                              w.detach().double().numpy())
    rep = b.report("lm")
    # the float model already is ternary: the quantized stage equals it to float64 rounding
    assert rep["perplexity"]["quantized"] == pytest.approx(rep["perplexity"]["float"], rel=1e-9)
    # the emulator (float32, tanh table) stays within its arithmetic's error of the float model
    assert abs(rep["device_vs_float"]) < 0.02


@pytest.mark.skipif(CC is None, reason="no host C compiler")
def test_streaming_emulator_and_packed_c_kernels_bit_exact(ternary_lm):
    b, vocab = ternary_lm["bundle"], ternary_lm["vocab"]
    tok = vocab.encode(ternary_lm["held"][:100])
    run = b.run({"input": E.one_hot(tok, len(vocab)).astype(np.float32)}, record=["egru0"])
    emu = TokenStream(b, "emulator")
    assert np.array_equal(emu.feed_all(tok), run["output"])
    ck = TokenStream(b, "c")
    assert np.array_equal(ck.feed_all(tok), run["output"])
    assert (run["egru0.out"] != 0).mean() > 0.01
    for s in (emu, ck):
        tm = s.timing()
        assert tm["tokens"] == tok.size and tm["seconds"] > 0 and tm["tokens_per_s"] == tok.size / tm["seconds"]
        assert 0 < tm["latency_p50_s"] <= tm["latency_p99_s"] <= max(s.latencies)
    ck.reset()
    assert ck.timing()["tokens"] == 0


@pytest.mark.parametrize("engine", ["emulator", "c"])
def test_cli_run_text_reports_tokens_per_second_and_latency(ternary_lm, tmp_path, engine):
    if engine == "c" and CC is None:
        pytest.skip("no host C compiler")
    d = ternary_lm["dir"]
    r = CliRunner().invoke(main, ["run", str(d / "lm.nmc"), "--text", "to be or", "--generate", "12",
                                  "--engine", engine, "-o", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("streaming"))
    assert line.startswith(f"streaming ({engine}): 20 tokens, ") and "tokens/s; latency per token p50" in line
    assert "p99" in line
    lat = np.load(tmp_path / "s.npz")["latency_s"]
    assert lat.shape == (20,) and np.all(lat > 0)        # 8 prompt tokens + 12 generated, each timed
