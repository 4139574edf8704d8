"""Python API: ``nmc.compile``, ``nmc.load``; ``Bundle.run`` runs a bundle.

>>> b = nmc.compile("net.nir", target="reference", dt=1e-3)     # doctest: +SKIP
>>> out = b.run({"input": spikes})                               # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nmc.backends import get_backend
from nmc.errors import OptionError
from nmc.frontends import load_model
from nmc.hw import HardwareSpec, list_specs
from nmc.limits import check_dims
from nmc.runtime.events import load_inputs_npz
from nmc.runtime.session import Session
from nmc.target_options import check_dt, check_seed, check_target_options

from .bundle import Bundle
from .output_paths import check_output


def compile(model: Any, target: str = "reference", output: str | Path | None = None, *,
            dt: float | None = None, reset: str | None = None, integrator: str | None = None,
            passes: str | None = None, hw: Sequence[str | Path] = (), dump_ir: str | Path | None = None,
            trust_pickle: bool = False, input_shape: Sequence[int] | None = None,
            calibrate: str | Path | dict | None = None, seed: int = 0, tau_scale: float | None = None,
            exporter: str | None = None,
            fidelity_check: bool = True, strict: bool = False, worst_case: bool = False,
            progress: Callable[[str], None] | None = None, **target_options) -> Bundle:
    """Compile a model (path, nmc Graph, nir.NIRGraph or torch module) for ``target``.

    ``dt`` (s), ``reset`` (zero|subtract) and ``integrator`` (euler|exact) say
    what NIR does not store; ``passes`` replaces the target's default pipeline
    (``normalize`` is put first, and a pass writing what the target's lowering reads, e.g.
    ``partition``, is appended when missing, with a warning: :func:`nmc.passes.complete_pipeline`);
    ``hw`` lists TOML files overriding the target's hardware spec, or the name of
    another packaged spec of the same target (e.g. ``spinnaker2-48chip``); ``calibrate``
    is an .npz (or dict) of inputs used by data-driven passes. ``tau_scale``
    multiplies every time constant (an exporter that wrote them in other units,
    e.g. 1000 for Norse ≤ 1.1.0's ``to_nir``; see docs/exporters.md).
    ``exporter`` (snntorch|norse|sinabs|rockpool) fills in the options that
    exporter's NIR convention implies where they are not given (for Rockpool
    also its dt, read from the file, and its neuron update; docs/exporters.md).
    ``worst_case`` makes the design rules assume every source fires every step
    instead of the activity measured on the calibration data or the synthetic probe.

    What differs per kind of model (a language model's text calibration,
    pipeline and report) is asked of :mod:`.model_kinds`. After lowering a
    network, a fidelity check (:mod:`nmc.driver.fidelity_check`) runs the
    target's emulator and the float reference on the calibration data (or a
    seeded synthetic probe) and writes ``reports/fidelity.json``; its findings
    (dead/saturated layers with cause and fix, low agreement) are warnings, or
    a :class:`~nmc.errors.FidelityError` with ``strict=True``.
    ``fidelity_check=False`` skips it. Writes the bundle to ``output`` when
    given. Extra keyword options go to the target's passes and lowering (see
    ``nmc targets``).
    """
    from nmc.passes import PassContext, PassManager, complete_pipeline, parse_pipeline, pipeline_text  # lazy: numba

    from .model_kinds import model_kind  # lazy: torch

    backend = get_backend(target)
    typed_options = check_target_options(target, backend, target_options)
    dt, seed = check_dt(dt), check_seed(seed)
    if input_shape is not None:
        input_shape = check_dims(input_shape, f"--input-shape {tuple(input_shape)}", error=OptionError)
    # files this compile reads (a packaged spec name in hw is not a file, and a missing file cannot be clobbered)
    read = [p for p in (model, calibrate, *hw, target_options.get("calibration"), target_options.get("eval_text"))
            if isinstance(p, (str, Path)) and Path(p).exists()]
    check_output(output, read, option="-o", kind="dir")
    check_output(dump_ir, read, option="--dump-ir", kind="dir")
    options = {"target": target, "dt": dt, "reset": reset, "integrator": integrator, "seed": seed,
               "tau_scale": tau_scale, "exporter": exporter, "worst_case": worst_case or None, **target_options}
    if progress:
        progress("load")
    data = None
    text_calib = isinstance(calibrate, (str, Path)) and Path(calibrate).suffix.lower() == ".txt"
    if text_calib:  # a language model's calibration text (one-hot tokens once the graph is loaded)
        options["calibrate"] = Path(calibrate).name
    elif calibrate is not None:
        data = dict(calibrate) if isinstance(calibrate, dict) else load_inputs_npz(calibrate)
        options["calibrate"] = Path(calibrate).name if not isinstance(calibrate, dict) else "<dict>"
    graph, source = load_model(model, trust_pickle=trust_pickle, input_shape=input_shape, data=data,
                               options=options)
    conversion = source.pop("conversion", None)
    from nmc.plasticity import refuse   # learning rules: only what the target runs

    refuse(graph, target, backend.plasticity_refusal_for)
    kind = model_kind(graph)  # a network, or a language model
    if text_calib:
        data = kind.text_calibration(graph, calibrate)
    kept = kind.keep(graph)
    if data is not None:
        if conversion is not None:  # ONNX calibration samples (N, *shape) → encoded input sequences for the passes
            from nmc.frontends.onnx import encode

            x = np.asarray(data.get("input", data.get(graph.inputs[0])))[:32]
            data = {graph.inputs[0]: encode(x, int(graph.meta["timesteps"]), graph.meta["encoding"], seed)}
        data = {k: v for k, v in data.items() if k in graph.inputs}  # e.g. drop 'labels'
    spec = None
    if backend.spec_name:
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
    pipeline = parse_pipeline(passes or kind.default_pipeline(backend, options))
    if not pipeline or pipeline[0].name != "normalize":
        pipeline = parse_pipeline("normalize") + pipeline
    pipeline, added = complete_pipeline(pipeline, backend.lowering_requires)   # what lowering reads, a pass writes
    ctx = PassContext(spec=spec, options=options, target_options=typed_options, data=data,
                      dump_dir=Path(dump_ir) if dump_ir else None, progress=progress, seed=seed,
                      target=backend.target_model(spec, options))
    for p in added:
        ctx.warnings.add(f"'{p.name}' added at the end of the pipeline: {target}'s lowering reads the "
                         f"{'/'.join(sorted(set(p.provides) & set(backend.lowering_requires)))} it writes",
                         source="passes")
    for note in (conversion or {}).get("notes", []):  # e.g. an output Softmax the ONNX frontend dropped
        ctx.warnings.add(note["message"], node=note["node"], source="onnx")
    graph = PassManager(pipeline).run(graph, ctx)
    if progress:
        progress(f"lower:{target}")
    program = backend.lower(graph, ctx)
    reports = dict(ctx.reports)
    if conversion is not None:
        reports["conversion"] = conversion
    reports.update(kind.reports(kept, graph, program, backend, spec=spec, target=target, data=data, seed=seed,
                                options=options, fidelity_check=fidelity_check, strict=strict,
                                warnings=ctx.warnings, progress=progress))
    reports["compile"] = {"warnings": ctx.warnings.items, "program": program.summary()}
    bundle = Bundle.create(graph=graph, target=target, options=options, pipeline=pipeline_text(pipeline),
                           source=source, program_files=program.files(), reports=reports,
                           hw=spec.to_dict() if spec is not None else None)
    bundle._program = program
    if output is not None:
        bundle.write(output)
    return bundle


def load(path: str | Path) -> Bundle:
    """Load a bundle directory written by :func:`compile` (hashes verified)."""
    return Bundle.load(path)


def open_session(bundle, device: str | None = None, window: int = 1, pace: bool = False, *, env=None,
                 env_options: dict | None = None, **device_opts):
    """``nmc.open``: a streaming session on a bundle (object or path). With ``env`` (an allow-listed
    environment name or a :class:`nmc.runtime.closed_loop.EnvConfig`; ``env_options`` override its
    defaults), a :class:`nmc.runtime.closed_loop.ClosedLoop` driving that environment, its session's
    window one action (``steps_per_action``)."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    if env is None:
        if env_options:
            raise OptionError("env_options given without env", hint="pass env= (an environment name)")
        return Session(bundle, device=device, window=window, pace=pace, **device_opts)
    from nmc.runtime.closed_loop import ClosedLoop, env_config

    cfg = env_config(env, **(env_options or {}))
    session = Session(bundle, device=device, window=cfg.steps_per_action, pace=pace, **device_opts)
    try:
        return ClosedLoop(session, cfg)
    except BaseException:
        session.close()
        raise
