"""Python API: ``nmc.compile``, ``nmc.load``; ``Bundle.run`` runs a bundle.

>>> b = nmc.compile("net.nir", target="reference", dt=1e-3)     # doctest: +SKIP
>>> out = b.run({"input": spikes})                               # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .bundle import Bundle
from .errors import OptionError
from .frontends import load_model
from .output_paths import check_output
from .target_options import check_dt, check_seed, check_target_options


def compile(model: Any, target: str = "reference", output: str | Path | None = None, *,
            dt: float | None = None, reset: str | None = None, integrator: str | None = None,
            passes: str | None = None, hw: Sequence[str | Path] = (), dump_ir: str | Path | None = None,
            trust_pickle: bool = False, input_shape: Sequence[int] | None = None,
            calibrate: str | Path | dict | None = None, seed: int = 0, tau_scale: float | None = None,
            fidelity_check: bool = True, strict: bool = False, worst_case: bool = False,
            progress: Callable[[str], None] | None = None, **target_options) -> Bundle:
    """Compile a model (path, nmc Graph, nir.NIRGraph or torch module) for ``target``.

    ``dt`` (s), ``reset`` (zero|subtract) and ``integrator`` (euler|exact) say
    what NIR does not store; ``passes`` replaces the target's default pipeline;
    ``hw`` lists TOML files overriding the target's hardware spec, or the name of
    another packaged spec of the same target (e.g. ``spinnaker2-48chip``); ``calibrate``
    is an .npz (or dict) of inputs used by data-driven passes. ``tau_scale``
    multiplies every time constant (an exporter that wrote them in other units,
    e.g. 1000 for Norse ≤ 1.1.0's ``to_nir``; see docs/exporters.md).
    ``worst_case`` makes the design rules assume every source fires every step
    instead of the activity measured on the calibration data or the synthetic probe.

    After lowering, a fidelity check (:mod:`nmc.fidelity_check`) runs the
    target's emulator and the float reference on the calibration data (or a
    seeded synthetic probe) and writes ``reports/fidelity.json``; its findings
    (dead/saturated layers with cause and fix, low agreement) are warnings, or
    a :class:`~nmc.errors.FidelityError` with ``strict=True``.
    ``fidelity_check=False`` skips it. Writes the bundle to ``output`` when
    given. Extra keyword options go to the target's passes and lowering (see
    ``nmc targets``).
    """
    from nmc.backends import get_backend
    from nmc.passes import PassContext, PassManager, parse_pipeline, pipeline_text

    backend = get_backend(target)
    typed_options = check_target_options(target, backend, target_options)
    dt, seed = check_dt(dt), check_seed(seed)
    if input_shape is not None:
        from .limits import check_dims

        input_shape = check_dims(input_shape, f"--input-shape {tuple(input_shape)}", error=OptionError)
    # files this compile reads (a packaged spec name in hw is not a file, and a missing file cannot be clobbered)
    read = [p for p in (model, calibrate, *hw, target_options.get("calibration"), target_options.get("eval_text"))
            if isinstance(p, (str, Path)) and Path(p).exists()]
    check_output(output, read, option="-o", kind="dir")
    check_output(dump_ir, read, option="--dump-ir", kind="dir")
    options = {"target": target, "dt": dt, "reset": reset, "integrator": integrator, "seed": seed,
               "tau_scale": tau_scale, "worst_case": worst_case or None, **target_options}
    if progress:
        progress("load")
    data = None
    text_calib = isinstance(calibrate, (str, Path)) and Path(calibrate).suffix.lower() == ".txt"
    if text_calib:  # a language model's calibration text (one-hot tokens once the graph is loaded)
        options["calibrate"] = Path(calibrate).name
    elif calibrate is not None:
        from nmc.runtime.events import load_inputs_npz

        data = dict(calibrate) if isinstance(calibrate, dict) else load_inputs_npz(calibrate)
        options["calibrate"] = Path(calibrate).name if not isinstance(calibrate, dict) else "<dict>"
    graph, source = load_model(model, trust_pickle=trust_pickle, input_shape=input_shape, data=data,
                               options=options)
    conversion = source.pop("conversion", None)
    lm = "lm" in graph.meta
    if text_calib:
        if not lm:
            raise OptionError("a .txt calibration file is for language models", path=str(calibrate),
                              hint="pass an .npz of input arrays")
        from .lm.pipeline import calibration
        from .lm.report import read_text

        data = calibration(graph, read_text(calibrate))
    float_graph = graph.copy() if lm else None
    if float_graph is not None:   # simulated as loaded, before normalize: EGRU cells have no reset mode to choose
        float_graph.meta.setdefault("reset", "zero")
    if data is not None:
        if conversion is not None:  # ONNX calibration samples (N, *shape) → encoded input sequences for the passes
            from .frontends.onnx import encode

            x = np.asarray(data.get("input", data.get(graph.inputs[0])))[:32]
            data = {graph.inputs[0]: encode(x, int(graph.meta["timesteps"]), graph.meta["encoding"], seed)}
        data = {k: v for k, v in data.items() if k in graph.inputs}  # e.g. drop 'labels'
    spec = None
    if backend.spec_name:
        from .hw import HardwareSpec

        from .hw import list_specs

        # a packaged spec name in --hw (e.g. spinnaker2-48chip) replaces the target's base spec
        names = [h for h in hw if isinstance(h, str) and h in list_specs()]
        files = [h for h in hw if h not in names]
        base = names[-1] if names else backend.spec_name
        spec = HardwareSpec.load(base, overrides=files)
        if spec.target != target:
            raise OptionError(f"hardware spec '{base}' describes target '{spec.target}', not '{target}'",
                              hint=f"use a {target} spec: " + ", ".join(n for n in list_specs() if n.startswith(target)))
    elif hw:
        raise OptionError(f"target '{target}' has no hardware spec to override", hint="drop --hw")
    if lm and not passes:
        from .lm.pipeline import default_pipeline

        text = default_pipeline(target, backend, options)
    else:
        text = passes or backend.default_pipeline(options)
    pipeline = parse_pipeline(text)
    if not pipeline or pipeline[0].name != "normalize":
        pipeline = parse_pipeline("normalize") + pipeline
    ctx = PassContext(spec=spec, options=options, target_options=typed_options, data=data,
                      dump_dir=Path(dump_ir) if dump_ir else None, progress=progress, seed=seed)
    for note in (conversion or {}).get("notes", []):  # e.g. an output Softmax the ONNX frontend dropped
        ctx.warnings.add(note["message"], node=note["node"], source="onnx")
    graph = PassManager(pipeline).run(graph, ctx)
    if progress:
        progress(f"lower:{target}")
    program = backend.lower(graph, ctx)
    reports = dict(ctx.reports)
    if conversion is not None:
        reports["conversion"] = conversion
    if lm:
        reports["lm"] = _lm_report(float_graph, graph, program, backend, spec, options, progress)
    if fidelity_check and not lm:
        from . import fidelity_check as F

        if progress:
            progress("fidelity check")
        reports["fidelity"], findings = F.check(graph, program, backend, target, data, seed)
        F.enforce(findings, strict, ctx.warnings)
    reports["compile"] = {"warnings": ctx.warnings.items, "program": program.summary()}
    bundle = Bundle.create(graph=graph, target=target, options=options, pipeline=pipeline_text(pipeline),
                           source=source, program_files=program.files(), reports=reports,
                           hw=spec.to_dict() if spec is not None else None)
    bundle._program = program
    if output is not None:
        bundle.write(output)
    return bundle


def _lm_report(float_graph, graph, program, backend, spec, options, progress) -> dict:
    from .lm import evaluate as E
    from .lm.report import lm_report, placement_only, read_text

    if not options.get("eval_text"):
        return placement_only(program)
    if progress:
        progress("lm report")
    path = Path(str(options["eval_text"]))
    options["eval_text"] = path.name

    def run(tok, record):
        V = int(E.lm_meta(graph)["vocab"])
        return backend.device(backend.default_device, program).run(
            {graph.inputs[0]: E.one_hot(tok, V).astype(np.float32)}, record=record)

    return lm_report(float_graph, graph, program, run, read_text(path), spec=spec, source=path.name,
                     max_chars=int(options.get("eval_chars") or 4000), streams=int(options.get("eval_streams") or 4))


def load(path: str | Path) -> Bundle:
    """Load a bundle directory written by :func:`compile` (hashes verified)."""
    return Bundle.load(path)
