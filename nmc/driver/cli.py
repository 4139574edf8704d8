"""The ``nmc`` command line (click + rich).

User mistakes print one line ``error: ...`` (node, limit or file, and a fix)
and exit with status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.markup import escape  # messages may hold brackets (nmc[distributed], file names)
from rich.table import Table

from nmc.errors import InputFileError, NmcError, OptionError
from nmc.filebytes import dumps_json
from nmc.frontends import load_model
from nmc.hw import HardwareSpec
from nmc.nodes import type_name
from nmc.runtime.client import connect
from nmc.runtime.events import load_inputs_npz, save_npz
from nmc.runtime.server import SessionServer
from nmc.target_options import check_number, options_text, parse_value as _auto

from . import api
from .api import open_session
from .bundle import MANIFEST, Bundle
from .distributed.evaluate import evaluate
from .output_paths import check_output

err = Console(stderr=True)
out = Console()


class NmcGroup(click.Group):
    """Turns NmcError into a one-line message and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NmcError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise

            err.print(f"[bold red]error:[/] {escape(e.one_line())}", highlight=False, soft_wrap=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:  # pragma: no cover
            err.print("[bold red]interrupted[/]")
            ctx.exit(130)


@click.group(cls=NmcGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="nmc")
@click.pass_context
def main(ctx, debug):
    """nmc: compile trained spiking / event-based networks for neuromorphic chips.

    \b
    A typical session:
      nmc compile model.pt --target spinnaker2 -o model.nmc     # or .nir/.onnx; loihi2, brainscales2, reference
      nmc run model.nmc --input in.npz -o out.npz                # bit-accurate emulator by default
      nmc profile model.nmc --input in.npz -o energy.html       # energy per layer and per core
      nmc inspect model.nmc                                      # PEs/cores, SRAM, time per tick, reports
    Run `nmc COMMAND --help` for each command's options and an example.
    """
    ctx.ensure_object(dict)["debug"] = debug


def _parse_shape(text):
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 1,28,28") from None


@main.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="reference", show_default=True, help="Target name (see `nmc targets`).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle directory to write [default: MODEL stem + .nmc]; written atomically, and an existing directory is replaced only if it is an nmc bundle holding nothing else.")
@click.option("--dt", type=float, help="Timestep in seconds (NIR stores none; default 1e-4, snnTorch's convention).")
@click.option("--reset", type=click.Choice(["zero", "subtract"]), help="Reset of spiking neurons after a spike.")
@click.option("--integrator", type=click.Choice(["euler", "exact"]), help="Discretisation of the neuron ODEs.")
@click.option("--passes", "passes", help="Pass pipeline replacing the target's default, e.g. 'normalize,quantize{bits=8}'.")
@click.option("--hw", multiple=True, help="TOML file overriding hardware-spec values, or a packaged spec of the target such as spinnaker2-48chip (repeatable).")
@click.option("--dump-ir", type=click.Path(path_type=Path), help="Write the graph after every pass into this directory.")
@click.option("--calibrate", type=click.Path(path_type=Path), help=".npz of inputs for data-driven passes (quantization, pruning, placement rates); a .txt text for a language model.")
@click.option("--input-shape", help="Input shape for a PyTorch model whose first layer does not fix it, e.g. 2,34,34.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a fully pickled PyTorch module or a .pt2 with pickled parts via torch.export.load (runs code from the file: only for files you trust; see SECURITY.md).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every randomised pass (same seed, same bundle).")
@click.option("--timesteps", type=int, help="ONNX models: timesteps the rate-coded SNN runs (accuracy is reported up to it) [32].")
@click.option("--encoding", type=click.Choice(["current", "poisson", "regular"]), help="ONNX models: input encoding [current].")
@click.option("--percentile", type=float, help="ONNX models: activation percentile used as each IF threshold [99.9].")
@click.option("--calibration", type=click.Path(path_type=Path), help="brainscales2: measured per-circuit calibration table (JSON).")
@click.option("--tau-scale", type=float, help="Multiply every time constant (an exporter that wrote τ in other units; 1000 for Norse <= 1.1.0's to_nir, see docs/exporters.md).")
@click.option("--exporter", type=click.Choice(["snntorch", "norse", "sinabs", "rockpool"]), help="The framework whose to_nir wrote MODEL: fills in --dt/--reset/--integrator/--tau-scale from its convention where not given (rockpool: dt read from the file, its neuron update rewritten; see docs/exporters.md).")
@click.option("--strict", is_flag=True, help="Make the fidelity check's findings (dead/saturated layers, low agreement with the float reference) an error.")
@click.option("--no-fidelity-check", "no_fidelity", is_flag=True, help="Skip the fidelity check (emulator vs float reference on --calibrate data or a synthetic probe; reports/fidelity.json).")
@click.option("--worst-case", is_flag=True, help="Design rules assume every source fires every step, instead of the activity measured on --calibrate data or the synthetic probe.")
@click.option("--option", "extra", multiple=True, metavar="KEY=VALUE", help="Target-specific option (see `nmc targets`).")
def compile_cmd(model, target, output, dt, reset, integrator, passes, hw, dump_ir, calibrate, input_shape,
                trust_pickle, seed, timesteps, encoding, percentile, calibration, tau_scale, exporter, strict,
                no_fidelity, worst_case, extra):
    """Compile MODEL (.nir/.h5, .pt/.pt2, .onnx) into a bundle for a target.

    \b
    Examples:
      nmc compile examples/quickstart/digits_lif.nir --target reference --dt 1e-3 -o digits.nmc
      nmc compile mlp.onnx --target reference --calibrate calib.npz --timesteps 64 -o mlp.nmc
      nmc compile lm.pt --target spinnaker2 --calibrate val.txt --option eval_text=test.txt
    An EGRU language model (nmc.nn.EGRULanguageModel saved with nmc.save) gets
    the LM pipeline on spinnaker2: options density [0.05], prune_units [0],
    egru_weights [int8|float32|ternary], eval_text/eval_chars/eval_streams for
    reports/lm.json (perplexity float -> pruned -> quantized -> emulator).
    An ONNX ANN is converted to a rate-coded SNN (ReLU -> IF neurons, thresholds
    balanced on --calibrate data); with 'labels' in the .npz the bundle's
    reports/conversion.json states ANN vs SNN accuracy per timestep count.
    Every compile ends with a fidelity check: the target's emulator and the
    float reference run the --calibrate data (or a seeded synthetic probe of
    Bernoulli(0.2) spikes, 100 steps x 4 samples); dead or saturated layers
    (with the likely cause and fix, e.g. --dt 1 for a network exported in
    discrete time), late layers (no spike within the probe, membrane still
    rising) and low agreement are warnings, errors with --strict
    (summary printed, details in reports/fidelity.json).
    MaxPool is refused unless --option maxpool=spiking (an approximate IF max
    tree); an output Softmax/LogSoftmax is dropped with a warning.
    """
    extra_opts = {k: v for k, v in (("timesteps", timesteps), ("encoding", encoding), ("percentile", percentile),
                                    ("calibration", str(calibration) if calibration else None)) if v is not None}
    for item in extra:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        k, v = item.split("=", 1)
        extra_opts[k.strip().replace("-", "_")] = _auto(v.strip())
    output = output or Path(Path(model).stem + ".nmc")
    with err.status("compiling...") as status:
        def progress(stage):
            status.update(f"compiling: {stage}")

        b = api.compile(model, target=target, output=output, dt=dt, reset=reset, integrator=integrator,
                        passes=passes, hw=hw, dump_ir=dump_ir, calibrate=calibrate,
                        input_shape=_parse_shape(input_shape), trust_pickle=trust_pickle, seed=seed,
                        tau_scale=tau_scale, exporter=exporter, strict=strict, fidelity_check=not no_fidelity, worst_case=worst_case,
                        progress=progress, **extra_opts)
    fid = b.report("fidelity")
    if fid is not None:
        _print_fidelity(fid)
    for w in b.report("compile")["warnings"]:
        err.print(f"[yellow]warning:[/] {w['message']}" + (f" (node '{w['node']}')" if w.get("node") else ""),
                  highlight=False, soft_wrap=True)
    out.print(f"[green]wrote[/] {output}  target={b.target}  pipeline={b.manifest['pipeline']}", highlight=False)


def _print_fidelity(rep: dict) -> None:
    """The fidelity check as a small table on stdout (reports/fidelity.json has it all; its
    findings are the warnings printed on stderr)."""
    src = rep["input"]
    what = (f"{src['source']}, {src['steps']} steps × {src['samples']} samples"
            + (f" (Bernoulli({src['p']}) spikes, seed {src['seed']})" if src["source"] == "synthetic probe" else ""))
    t = Table(title=f"fidelity check: {rep.get('device', 'reference')} vs float reference on {what}",
              title_justify="left", box=None, pad_edge=False)
    for c in ("layer", "type", "rate ref", "rate device", "count agr.", "membrane err", "status"):
        t.add_column(c)
    for n, e in rep["layers"].items():
        st = e.get("status", "graded")
        t.add_row(n, e["type"], f"{e['rate_reference']:.3g}" if "rate_reference" in e else "-",
                  f"{e['rate_device']:.3g}" if "rate_device" in e else "-",
                  f"{e['spike_count_agreement']:.1%}" if "spike_count_agreement" in e else "-",
                  f"{e['membrane_error']:.3g}" if "membrane_error" in e else "-",
                  st if st in ("ok", "graded") else f"[bold red]{st.upper()}[/]")
    out.print(t)
    for o, e in rep["outputs"].items():
        out.print(f"  output '{o}': spike-count agreement {e['spike_count_agreement']:.1%}"
                  + (f", class agreement {e['class_agreement']:.1%}" if "class_agreement" in e else ""),
                  highlight=False)
    if rep.get("findings"):
        out.print(f"[bold red]fidelity check: {len(rep['findings'])} finding(s), see the warnings "
                  "(--strict makes them errors)[/]", highlight=False)




@main.command("run")
@click.argument("bundle", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--input", "-i", "input_path", type=click.Path(path_type=Path),
              help=".npz with one array per input node, shape (T, *node shape).")
@click.option("--text", help="Language models: prompt text streamed token by token; prints the continuation, and on "
                            "stderr the engine's tokens per second and latency per token (p50/p99).")
@click.option("--tokens", "tokens_path", type=click.Path(path_type=Path),
              help="Language models: file of token ids (whitespace-separated integers) to stream.")
@click.option("--generate", "n_gen", type=int, default=200, show_default=True,
              help="Language models: tokens to generate after the prompt.")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="Language models: sampling temperature (0: most likely token).")
@click.option("--engine", metavar="ENGINE",
              help="Language models: one of the target's host engines, its first by default (spinnaker2: emulator, "
                   "c = the generated PE kernels built with the host compiler, reference; other targets: reference).")
@click.option("--steps", type=int, help="Timesteps to run (default: the input's length).")
@click.option("--device", "-d", help="Device (default: the target's emulator; see `nmc targets`).")
@click.option("--record", help="Comma-separated nodes whose state/spikes to save as <node>.v / <node>.spikes.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write outputs to this .npz.")
@click.option("--env", "env_name", metavar="NAME",
              help="Closed loop: step this environment (CartPole-v1, MountainCar-v0, Acrobot-v1) with the network, "
                   "its reward fed to the learning rules (nmc.runtime.closed_loop); -o writes returns and latencies.")
@click.option("--episodes", type=int, default=10, show_default=True, help="Closed loop: episodes to run.")
@click.option("--token", help="Closed loop over a server (BUNDLE given as HOST:PORT): its token (default: $NMC_TOKEN).")
@click.option("--tls-ca", type=click.Path(path_type=Path),
              help="Closed loop over a server: speak TLS, verifying its certificate with this CA file.")
@click.option("--model", help="Closed loop over a repository server: the model (default: its only model).")
@click.option("--model-version", type=int, help="Version of --model (default: the newest).")
def run_cmd(bundle, input_path, text, tokens_path, n_gen, temperature, engine, steps, device, record, output,
            env_name, episodes, token, tls_ca, model, model_version):
    """Run a compiled BUNDLE on an input and save/print the outputs.

    \b
    Examples:
      nmc run net.nmc --input in.npz --record lif1 -o out.npz
      nmc run lm.nmc --text "ROMEO." --generate 300           # a language model, token by token
      nmc run lm.nmc --tokens ids.txt --engine c              # through the generated C kernels
      nmc run agent.nmc --env CartPole-v1 --episodes 20      # closed loop with a Gymnasium task
      nmc run 127.0.0.1:7878 --env CartPole-v1               # the same loop with a device of `nmc serve`
    """
    if env_name is not None:
        return _run_env(bundle, env_name, episodes, device, output,
                        dict(token=token, tls_ca=tls_ca, model=model, model_version=model_version))
    if token is not None or tls_ca is not None or model is not None or model_version is not None:
        raise click.UsageError("--token, --tls-ca, --model and --model-version are for a closed loop over a server "
                               "(HOST:PORT --env NAME); `nmc stream HOST:PORT` streams a recording through one")
    check_number("--generate", n_gen, lo=0)
    check_number("--temperature", temperature, lo=0)
    if text is not None or tokens_path is not None:
        check_output(output, [bundle, tokens_path])
        return _run_lm(api.load(bundle), text, tokens_path, n_gen, temperature, engine, output)
    if input_path is None:
        raise click.UsageError("give --input (an .npz), or --text / --tokens for a language model")

    check_output(output, [bundle, input_path])
    b = api.load(bundle)
    inputs = load_inputs_npz(input_path)
    rec = [r.strip() for r in record.split(",")] if record else []
    res = b.run(inputs, steps=steps, device=device, record=rec)
    if output:
        save_npz(output, res)
    t = Table(title=f"{bundle} on {device or b.backend.default_device}")
    for c in ("array", "shape", "events/nonzero", "mean"):
        t.add_column(c)
    for k, v in res.items():
        t.add_row(k, str(tuple(v.shape)), str(int(np.count_nonzero(v))), f"{float(np.mean(v)):.4g}")
    out.print(t)
    if output:
        out.print(f"[green]wrote[/] {output}")


def _run_env(bundle, env_name, episodes, device, output, server: dict):
    check_number("--episodes", episodes, lo=1)
    address = _server_address(str(bundle))
    check_output(output, [] if address else [bundle])
    if address is not None:
        loop = _connect(*address, device=device, env=env_name, **server)
    else:
        loop = api.open_session(api.load(bundle), device=device, env=env_name)
    with loop:
        rep = loop.run(episodes)
    s = rep.summary()
    if output:
        save_npz(output, {"returns": np.asarray(rep.returns, float), "lengths": np.asarray(rep.lengths, np.int64),
                          "latency_s": np.asarray(rep.latency_s, float)})
    t = Table(title=f"{bundle} in {env_name} ({'learning' if loop.learns else 'frozen'})")
    for c in ("episodes", "steps", "mean return", "last return", "latency/step mean", "p50", "p99"):
        t.add_column(c)
    t.add_row(str(s["episodes"]), str(s["steps"]), f"{s['mean_return']:.4g}", f"{rep.returns[-1]:.4g}",
              *(f"{s[k] * 1e3:.3g} ms" for k in ("latency_mean_s", "latency_p50_s", "latency_p99_s")))
    out.print(t)
    if output:
        out.print(f"[green]wrote[/] {output}")


def _one_torch_thread() -> None:
    """LM streaming and scoring step small tensors one token at a time: one torch thread is
    fastest (several spin-wait for each other, badly so on a shared machine)."""
    import torch

    torch.set_num_threads(1)


def _read_tokens(path: Path):
    if not path.is_file():
        raise InputFileError("token file not found", path=path)
    try:
        ids = np.array([int(t) for t in path.read_text().split()], dtype=np.int64)
    except ValueError:
        raise InputFileError("a token file holds whitespace-separated integer token ids", path=path) from None
    if ids.size == 0:
        raise InputFileError("the token file is empty", path=path)
    return ids


def _run_lm(b, text, tokens_path, n_gen, temperature, engine, output):
    from nmc.lm import evaluate as E
    from nmc.lm.host import TokenStream

    if text is not None and tokens_path is not None:
        raise click.UsageError("give --text or --tokens, not both")
    _one_torch_thread()
    meta = E.lm_meta(b.graph)
    vocab = E.vocab_of(b.graph) if (text is not None or meta.get("chars")) else None
    ids = vocab.encode(text) if text is not None else _read_tokens(tokens_path)
    stream = TokenStream(b, engine)
    t0 = time.perf_counter()
    logits = stream.feed_all(ids)
    s, n = E.nll(logits[:, None, :], ids[:, None])
    gen = stream.sample(logits[-1], n_gen, temperature) if n_gen > 0 else []
    dt = time.perf_counter() - t0
    err.print(f"{len(ids)} prompt tokens, {len(gen)} generated, engine {stream.engine}; prompt perplexity "
              f"{np.exp(s / max(n, 1)):.3f} over {n} predictions; {dt:.2f} s", highlight=False)
    tm = stream.timing()
    err.print(f"streaming ({tm['engine']}): {tm['tokens']} tokens, {tm['tokens_per_s']:.1f} tokens/s; latency per "
              f"token p50 {tm['latency_p50_s'] * 1e3:.3f} ms, p99 {tm['latency_p99_s'] * 1e3:.3f} ms", highlight=False,
              soft_wrap=True)
    if vocab is not None:
        click.echo((text if text is not None else vocab.decode(ids)) + vocab.decode(gen))
    else:
        click.echo(" ".join(map(str, gen)))
    if output:
        save_npz(output, {"prompt": ids, "generated": np.asarray(gen, np.int64), "logits": logits,
                          "latency_s": np.asarray(stream.latencies, np.float64)})
        out.print(f"[green]wrote[/] {output}")


@main.command("eval")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--text-file", type=click.Path(path_type=Path), help="Language models: held-out UTF-8 text.")
@click.option("--data", type=click.Path(path_type=Path),
              help="Any bundle: .npz with one (T, B, *shape) array per input node (and optionally 'labels').")
@click.option("--labels", type=click.Path(path_type=Path), help="With --data: .npy of integer labels, one per sample.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="With --data: shard the samples across this many Ray workers (1: in this process, no Ray).")
@click.option("--address", envvar="RAY_ADDRESS", help="With --data: join this Ray cluster (also RAY_ADDRESS).")
@click.option("--samples", type=int, help="With --data: use the first N samples.")
@click.option("--device", "-d", help="With --data: device (default: the target's emulator).")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="The float model (.pt) the bundle was compiled from, for the float perplexity.")
@click.option("--streams", type=int, default=4, show_default=True, help="Pieces of the text run side by side.")
@click.option("--max-chars", type=int, default=4000, show_default=True, help="Characters of the text used.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Language models: the report as JSON. With --data: the outputs (.npz) or a summary (.json).")
def eval_cmd(bundle, text_file, data, labels, workers, address, samples, device, model_path, streams, max_chars,
             output):
    """Evaluate BUNDLE on a data set (sharded across Ray workers), or a language model's perplexity.

    \b
    Examples:
      nmc eval digits.nmc --data digits_test.npz --labels digits_labels.npy --workers 2 -o out.npz
      nmc eval lm.nmc --text-file test.txt --model lm.pt
    With --data: the samples (axis 1 of each array) are split into one shard per
    worker, run on the bundle's device and put back in order: the outputs equal a
    single-process run bit for bit; prints accuracy (spike-count argmax of the
    first output) when labels are given; -o writes the outputs (.npz) or a JSON
    summary (.json).
    With --text-file (language models): stages float (with --model), pruned
    (compiled graph, float64), quantized (kernel weights, exact nonlinearities),
    device (the emulator); plus activity per layer, MACs per token vs dense, PEs
    used and time per token per tick.
    """
    if data is not None:
        if text_file is not None:
            raise click.UsageError("give --data or --text-file, not both")
        return _eval_data(bundle, data, labels, workers, address, samples, device, output)
    if text_file is None:
        raise click.UsageError("give --data D.npz (any bundle) or --text-file TEXT (a language model)")

    from nmc.lm import evaluate as E
    from nmc.lm.report import lm_report, read_text
    from nmc.lm.target import language_model

    check_output(output, [bundle, text_file, model_path])
    check_number("--streams", streams, lo=1)
    check_number("--max-chars", max_chars, lo=1)
    _one_torch_thread()
    b = api.load(bundle)
    E.lm_meta(b.graph)
    fg = load_model(model_path)[0] if model_path else None
    spec = None
    if b.hw is not None:
        spec = HardwareSpec.from_dict(b.hw)

    def run(tok, record):
        V = int(E.lm_meta(b.graph)["vocab"])
        return b.run({b.graph.inputs[0]: E.one_hot(tok, V).astype(np.float32)}, record=record)

    rep = lm_report(fg, b.graph, b.program, run, read_text(text_file), streams=streams, max_chars=max_chars,
                    spec=spec, source=text_file.name, target=language_model(b.backend), reports=b.reports)
    t = Table(title=f"{bundle}: perplexity on {text_file.name} ({rep['text']['scored_tokens']} predictions)")
    t.add_column("stage")
    t.add_column("perplexity")
    for k, v in rep["perplexity"].items():
        t.add_row(k, f"{v:.4f}")
    out.print(t)
    if "device_vs_float" in rep:
        out.print(f"device vs float: {100 * rep['device_vs_float']:+.2f} %", highlight=False)
    out.print("activity (fraction of units emitting per step): " + json.dumps(
        {k: {n: round(a, 4) for n, a in v.items()} for k, v in rep["activity"].items()}), highlight=False)
    m = rep["macs_per_token"]
    if "effective_total" in m:
        out.print(f"MACs per token: {m['effective_total']:.0f} effective on chip vs {m['dense_total']} dense "
                  f"({m['reduction_vs_dense']:.1f}x fewer); decoder on host {m['decoder_host']}", highlight=False)
    pl = rep["placement"]
    out.print(f"embedding: {pl['embedding']}; decoder: {pl['decoder']}", highlight=False)
    if "pes_used" in pl:
        tt = pl.get("time_per_token_per_tick_s", {})
        out.print(f"PEs used: {pl['pes_used']}; latency {pl['latency_ticks']} ticks; predicted time per token per "
                  f"tick: mean {tt.get('mean_step_max_pe', float('nan')) * 1e6:.1f} us, worst "
                  f"{tt.get('worst_step_max_pe', float('nan')) * 1e6:.1f} us (tick {tt.get('sys_tick', 0) * 1e3:g} ms)",
                  highlight=False)
    if output:
        Path(output).write_bytes(dumps_json(rep))
        out.print(f"[green]wrote[/] {output}")


def _eval_data(bundle, data, labels, workers, address, samples, device, output):
    if output is not None and output.suffix not in (".npz", ".json"):
        raise click.BadParameter(f"{output}: use a .npz (outputs) or .json (summary) file name", param_hint="-o")
    ev = evaluate(bundle, data, labels, workers=workers, address=address, device=device, samples=samples)
    acc = f"; accuracy {ev.accuracy:.4f}" if ev.accuracy is not None else ""
    out.print(f"{bundle}: {ev.samples} samples in {ev.shards} shard(s) on {workers} worker(s){acc}", highlight=False)
    if output is not None:
        if output.suffix == ".npz":
            save_npz(output, {**ev.outputs, "predictions": ev.predictions})
        else:
            output.write_text(json.dumps(ev.summary(), indent=2) + "\n")
        out.print(f"[green]wrote[/] {output}")


@main.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_cmd(path, as_json):
    """Show a model's or bundle's nodes, shapes, parameters, annotations and resource use
    (node types with facts of their own, e.g. the SSM nodes: state size and multiply-adds per tick).

    \b
    Example:
      nmc inspect net.nmc
    """
    if path.is_dir() and (path / MANIFEST).exists():
        b = Bundle.load(path)
        g, info = b.graph, {"target": b.target, "pipeline": b.manifest["pipeline"],
                            "program": (b.report("compile") or {}).get("program", {}),
                            "reports": sorted(b.reports)}
    else:
        g, src = load_model(path)
        info = {"source": src}
    from nmc import semantics

    rows = []
    for name, node in g.nodes.items():
        rows.append({"node": name, "type": type_name(node), "in": list(g.shape_in(name) or ()),
                     "out": list(g.shape_out(name) or ()), "params": g.param_count(name),
                     "annotations": sorted(g.annotations.get(name, {}))})
        entry = semantics.lookup(node)   # a node type's own facts (its registry "describe" hook: the SSM nodes)
        if entry is not None and entry.hook("describe") is not None:
            rows[-1]["details"] = entry.hook("describe")(node)
    if as_json:
        click.echo(json.dumps({"info": info, "nodes": rows, "edges": g.edges, "meta": g.meta}, indent=2, default=str))
        return
    t = Table(title=str(path))
    for c in ("node", "type", "in", "out", "params", "annotations"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["node"], r["type"], str(tuple(r["in"])), str(tuple(r["out"])), f"{r['params']:,}",
                  ", ".join(r["annotations"]))
    out.print(t)
    detailed = [r for r in rows if "details" in r]
    if detailed:   # node types with facts of their own (the SSM nodes: state, multiply-adds per tick)
        keys = list(dict.fromkeys(k for r in detailed for k in r["details"]))
        dt_ = Table(title="node details")
        for c in ("node", *keys):
            dt_.add_column(c)
        for r in detailed:
            dt_.add_row(r["node"], *(str(r["details"].get(k, "")) for k in keys))
        out.print(dt_)
    out.print(f"edges: {len(g.edges)}  meta: {g.meta}", highlight=False)
    for k, v in info.items():
        if isinstance(v, dict) and v:
            st = Table(title=k, show_header=False)
            for kk, vv in v.items():
                st.add_row(str(kk), json.dumps(vv, default=str) if isinstance(vv, (dict, list)) else str(vv))
            out.print(st)
        else:
            out.print(f"{k}: {v}", highlight=False)


@main.command("profile")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "-i", "input_path", required=True, type=click.Path(path_type=Path),
              help=".npz with one array per input node, (T, *shape) or (T, batch, *shape).")
@click.option("--device", "-d", help="Device to count activity on (default: the target's emulator).")
@click.option("--spec", help="Hardware spec to estimate with (default: the bundle's; needed for the reference target).")
@click.option("--hw", multiple=True, type=click.Path(path_type=Path), help="TOML overriding energy constants (repeatable).")
@click.option("--measured", type=click.Path(path_type=Path), help="Measured power trace (CSV time_s,power_w or .parquet).")
@click.option("--offset", type=float, help="Time in the trace (s) where the run starts [first sample].")
@click.option("--fit", "fit_out", type=click.Path(path_type=Path), help="Fit the model to --measured and write the constants as a --hw override TOML.")
@click.option("--raster", help="Comma-separated nodes for the HTML spike raster.")
@click.option("--time", "time_mode", type=click.Choice(["tick", "work"]),
              help="How long a step lasts for static power: the tick, or the slowest core's work "
                   "[work on Loihi, tick on tick-bound chips]; both are in the report.")
@click.option("-o", "--output", "outputs", multiple=True, type=click.Path(path_type=Path), help="report.json and/or report.html (repeatable).")
def profile_cmd(bundle, input_path, device, spec, hw, measured, offset, fit_out, raster, time_mode, outputs):
    """Estimate energy per layer and per core for a run (and compare with measured power).

    \b
    Examples:
      nmc profile digits.nmc --input in.npz -o report.json -o report.html
      nmc profile digits.nmc --input in.npz --measured power.csv --fit fitted.toml
    Energy = activity counts of the run x the target's sourced constants
    (hw_configs/<target>.toml, overridable with --hw) + static power x time,
    where time is the tick or the slowest core's work per step (--time).
    The report lists every term, which part dominates and why, and the same
    network on a GPU and a CPU at batch 1 and as ideal MACs.
    """
    from nmc.runtime import energy, energy_report, power  # lazy: scipy

    read = [bundle, input_path, measured, *hw]
    for o in outputs:
        check_output(o, read)
    check_output(fit_out, read, option="--fit")
    check_number("--offset", offset)
    for o in outputs:
        if o.suffix not in (".json", ".html", ".htm"):
            raise click.BadParameter(f"{o}: use a .json or .html file name", param_hint="-o")
    b = api.load(bundle)
    nodes = [r.strip() for r in raster.split(",")] if raster else None
    for n in nodes or ():
        if n not in b.graph.nodes:
            raise OptionError(f"--raster names node '{n}', which the bundle does not have", node=n,
                              hint="nodes: " + ", ".join(b.graph.nodes))
    inputs = load_inputs_npz(input_path)
    rep, act = energy.profile(b, inputs, device=device, spec=spec, overrides=hw, mode=time_mode)
    meas = None
    if measured:
        t, w = power.load_trace(measured)
        meas = power.align(t, w, act.steps, act.tick_s, act.batch, offset)
        rep["measured"] = {"per_inference_j": float(meas.sum() / act.batch), "file": str(measured),
                           "ratio": rep["per_inference_j"] / max(float(meas.sum() / act.batch), 1e-30)}
        if fit_out:
            f = power.fit(act, meas.sum(0))
            rep["measured"]["fit"] = f
            Path(fit_out).write_text(power.override_toml(f, rep["cores_used"], rep["chips_used"], str(measured)))
    elif fit_out:
        raise click.UsageError("--fit needs --measured")
    for t in energy_report.tables(rep):
        out.print(t)
    for o in outputs:
        if o.suffix == ".json":
            o.write_bytes(energy_report.to_json(rep))
        elif o.suffix in (".html", ".htm"):
            figs = energy_report.plots(rep, act, b.graph, meas, nodes)
            o.write_bytes(energy_report.to_html(rep, figs))
        else:
            raise click.BadParameter(f"{o}: use a .json or .html file name", param_hint="-o")
        out.print(f"[green]wrote[/] {o}")
    if fit_out:
        out.print(f"[green]wrote[/] {fit_out} (use it with --hw)")


@main.command("serve")
@click.argument("bundle", metavar="BUNDLE|REPO", type=click.Path(path_type=Path))
@click.option("--port", "-p", type=int, default=7878, show_default=True, help="TCP port, 0 to 65535 (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; non-loopback needs a token (--token-file or $NMC_TOKEN) and should use TLS (SECURITY.md).")
@click.option("--token", help="Secret clients must present (visible in the process list: prefer --token-file or $NMC_TOKEN).")
@click.option("--token-file", type=click.Path(path_type=Path), help="TOML file of tenants: [tenants.NAME] token, max_sessions, max_events_per_s.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate (chain): serve over TLS (with --tls-key).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key of --tls-cert.")
@click.option("--device", "-d", help="Serve only this device of the bundle's target (default: clients choose; the emulator).")
@click.option("--window", type=int, default=1, show_default=True, help="Default timesteps per window (clients may ask for another).")
@click.option("--queue", "queue_frames", type=int, default=4, show_default=True, help="Frames read ahead per connection of a paced session, 1 to 64, before the server stops reading it (back-pressure); never unbounded. An unpaced session reads its next frame after answering the last.")
@click.option("--idle-timeout", type=float, default=60.0, show_default=True, help="Close a connection silent (or not reading its outputs) this many seconds; must be > 0.")
@click.option("--max-connections", type=int, default=64, show_default=True, help="Connections at once; more are answered 'server busy' and closed.")
@click.option("--max-connections-per-client", type=int, default=8, show_default=True, help="Connections at once from one client address (<= --max-connections).")
@click.option("--devices", type=int, default=1, show_default=True, help="Devices per model (and device name); sessions wait in a queue when all are taken.")
@click.option("--max-batch", type=int, default=1, show_default=True, help="Sessions of one model stepped together in an emulator's batch dimension (dynamic batching); 1: one session per device.")
@click.option("--batch-wait-ms", type=float, default=2.0, show_default=True, help="With --max-batch > 1: longest wait for the other sessions' windows before a batched step (latency vs throughput).")
@click.option("--queue-sessions", type=int, default=16, show_default=True, help="Sessions waiting for a device, per model; beyond it clients are told 'busy, retry after N s'.")
@click.option("--queue-timeout", type=float, default=30.0, show_default=True, help="Longest wait for a device in the queue (seconds), then 'busy, retry after'.")
@click.option("--poll", type=float, default=0.0, show_default=True, help="Rescan REPO every this many seconds (0: at start and on SIGHUP only).")
@click.option("--http-port", type=int, help="Serve /metrics (Prometheus), /healthz and /readyz on this HTTP port (0: any free port).")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="Address of the --http-port endpoint.")
@click.option("--log-format", default="text", show_default=True, help="text, or json: one JSON object per log line on stderr.")
@click.option("--drain-timeout", type=float, default=5.0, show_default=True, help="On SIGTERM/Ctrl-C: seconds to finish the windows already received before cutting connections.")
def serve_cmd(bundle, port, host, token, token_file, tls_cert, tls_key, device, window, queue_frames, idle_timeout,
              max_connections, max_connections_per_client, devices, max_batch, batch_wait_ms, queue_sessions,
              queue_timeout, poll, http_port, http_host, log_format, drain_timeout):
    """Serve BUNDLE, or every bundle of a model repository REPO: clients stream events in
    and get output events back (one session each).

    \b
    A repository is a directory of REPO/NAME/VERSION/ bundles (VERSION a positive
    integer, e.g. `nmc compile model.pt -o REPO/digits/1`); clients pick a model
    (`nmc stream HOST:PORT --model digits [--model-version 1]`; newest version by
    default). Models are loaded and unloaded on SIGHUP (and every --poll seconds)
    without touching the other sessions.

    \b
    Example:
      nmc serve digits.nmc --port 7878
      nmc stream 127.0.0.1:7878 --input in.npz -o out.npz
    Ctrl-C (or SIGTERM) stops gracefully: queued windows are answered, each client gets its counters.
    Operations: --http-port serves /metrics (Prometheus), /healthz, /readyz; --log-format json;
    tenants and quotas from --token-file (or one token from $NMC_TOKEN); TLS with --tls-cert/--tls-key.

    \b
    Limits (SECURITY.md): HELLO/OPEN frames before the token is checked may be
    at most 4 KiB and must arrive within 10 s; frames after it at most 16 MiB;
    all connections together hold at most 64 MiB of unanswered frames.
    Devices that need the main thread (brian2) cannot be served.
    """

    def log(msg):
        err.print(msg, highlight=False, soft_wrap=True, markup=False)

    from nmc.runtime.serve.server import build_server, json_log
    from nmc.runtime.serve.tenants import tenants_from

    if log_format not in ("text", "json"):
        raise OptionError(f"--log-format must be text or json, got {log_format!r}")
    if log_format == "json":
        log = json_log(err.file)
    tls = None
    if tls_cert or tls_key:
        from nmc.runtime.serve.tls import server_context

        tls = server_context(tls_cert, tls_key)
    common = dict(host=host, port=port, tenants=tenants_from(token, token_file), ssl_context=tls,
                  queue_frames=queue_frames, idle_timeout=idle_timeout, max_connections=max_connections,
                  max_connections_per_client=max_connections_per_client, log=log)
    pool = dict(devices=devices, max_batch=max_batch, queue=queue_sessions, queue_timeout=queue_timeout,
                max_wait=batch_wait_ms / 1000 if isinstance(batch_wait_ms, (int, float)) else batch_wait_ms)
    srv = build_server(bundle, device=device, window=window, poll=poll, pool=pool, **common)
    if _in_main_thread() and hasattr(signal, "SIGHUP") and hasattr(srv, "rescan"):
        import threading

        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=srv.rescan, daemon=True).start())
    ops = None
    if http_port is not None:
        from nmc.runtime.serve.http import OpsEndpoint

        ops = OpsEndpoint(srv, http_host, http_port).start()
    h, p = srv.address
    # one unwrapped line, flushed at once: clients (and tests) read the address from it through a pipe
    extra = f"; metrics, /healthz, /readyz on http://{ops.address[0]}:{ops.address[1]}" if ops else ""
    out.print(f"serving {bundle} on {h}:{p}{extra} (Ctrl-C to stop)", highlight=False, soft_wrap=True, markup=False)
    out.file.flush()

    def _term(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term) if _in_main_thread() else None
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log("stopping: answering queued windows, closing sessions")
    finally:
        srv.stop(drain_timeout)
        if ops is not None:
            ops.stop()
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@main.command("stream")
@click.argument("target_", metavar="BUNDLE|HOST:PORT")
@click.option("--input", "-i", "input_path", required=True, type=click.Path(path_type=Path),
              help=".npz with one (T, *shape) array per input node.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the outputs to this .npz.")
@click.option("--window", type=int, default=1, show_default=True, help="Timesteps per window.")
@click.option("--device", "-d", help="Device (default: the target's emulator / the server's).")
@click.option("--token", help="Token for a server that requires one (default: $NMC_TOKEN).")
@click.option("--tls-ca", type=click.Path(path_type=Path), help="Speak TLS, verifying the server's certificate with this CA file.")
@click.option("--batch", type=int, default=1, show_default=True, help="Windows per network frame (servers only).")
@click.option("--model", help="Model of a repository server (`nmc serve REPO`); default: its only model.")
@click.option("--model-version", type=int, help="Version of --model (default: the newest).")
def stream_cmd(target_, input_path, output, window, device, token, tls_ca, batch, model, model_version):
    """Stream a recorded input through a BUNDLE locally, or through a server at HOST:PORT.

    \b
    Examples:
      nmc stream digits.nmc --input in.npz -o out.npz --window 4
      nmc stream 127.0.0.1:7878 --input in.npz -o out.npz
      nmc stream 127.0.0.1:7878 --model digits --model-version 2 --input in.npz
    The output .npz is identical to `nmc run` on the same input (graded outputs travel as float32).
    """
    if window < 1 or batch < 1:
        raise OptionError(f"--window and --batch must be >= 1, got {window} and {batch}")
    check_output(output, [input_path] + ([target_] if Path(target_).exists() else []))
    inputs = load_inputs_npz(input_path)
    if not inputs:
        raise InputFileError("the input file holds no arrays", path=input_path, hint="one (T, *shape) array per input node")
    T = max(v.shape[0] for v in inputs.values())
    if T < 1:
        raise InputFileError("the input arrays have no timesteps (T = 0)", path=input_path,
                             hint="give at least one timestep: (T >= 1, *node shape)")
    address = _server_address(target_)
    if address is None:
        with open_session(target_, device=device, window=window) as sess:
            outs = sess.run_dense(inputs)
            counters = sess.counters.as_dict()
    else:
        with _connect(*address, token=token, tls_ca=tls_ca, device=device, window=window, model=model,
                      model_version=model_version) as c:
            outs = c.run_dense(inputs, batch=batch)
            counters = c.close()
            counters.pop("transport", None)
    outs = {k: v[:T] for k, v in outs.items()}
    if output:
        save_npz(output, outs)
        out.print(f"[green]wrote[/] {output}")
    nwin = -(-T // window)
    out.print(f"windows {nwin} x {window} steps; counters {counters}", highlight=False)


def _server_address(target_: str) -> tuple[str, int] | None:
    """(host, port) when a BUNDLE|HOST:PORT argument names a server (not an existing path)."""
    host, _, port = target_.rpartition(":")
    if Path(target_).exists() or not (host and port.isdigit()):
        return None
    return host.strip("[]"), int(port)


def _connect(host: str, port: int, *, token, tls_ca, **kw):
    """``nmc.connect`` with the command line's token (default ``$NMC_TOKEN``) and CA file."""
    import os

    tls = None
    if tls_ca:
        from nmc.runtime.serve.tls import client_context

        tls = client_context(tls_ca)
    token = token if token is not None else os.environ.get("NMC_TOKEN") or None
    return connect(host, port, token=token, tls=tls, **kw)


@main.command("targets")
def targets_cmd():
    """List compilation targets, their devices and default pipelines.

    \b
    Example:
      nmc targets
      nmc compile net.nir --target reference -o net.nmc
    """
    from nmc.backends import get_backend, targets

    t = Table(title="targets")
    for c in ("target", "devices", "default pipeline", "--option KEY=VALUE", "description"):
        t.add_column(c)
    for name in targets():
        be = get_backend(name)
        t.add_row(name, ", ".join(be.devices), be.default_pipeline({}), options_text(be), be.summary)
    out.print(t)


@main.command("passes")
def passes_cmd():
    """List the registered passes and their options (for --passes).

    \b
    Example:
      nmc passes
      nmc compile net.nir --target reference --passes 'normalize' -o net.nmc
    """
    from nmc.passes import REGISTRY

    t = Table(title="passes (use as name{key=value,...})")
    for c in ("pass", "options", "what it does"):
        t.add_column(c)
    for name, cls in REGISTRY.items():
        opts = ", ".join(f"{k}: {ty} = {d}" for k, ty, d in cls.options_help())
        t.add_row(name, opts or "-", cls.summary)
    out.print(t)


# nmc sweep / nmc fit (nmc.driver.distributed; Ray is imported only when they run)
from .distributed.commands import fit_cmd, sweep_cmd  # noqa: E402

main.add_command(sweep_cmd)
main.add_command(fit_cmd)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
