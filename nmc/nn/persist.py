"""nmc.nn persistence: the model file :func:`nmc.save` writes and :func:`nmc.nn.load` reads.

A ``torch.save`` archive of plain data that ``torch.load(weights_only=True)``
reads without unpickling code::

    {"format": "nmc-torch", "version": 1,
     "graph": the compiled graph as plain data (nmc.serialize.to_data, tensors for arrays),
     "module": the constructor spec of a rebuildable module (module_spec) or None,
     "state_dict": its weights, or None}

:func:`nmc.save` (``nmc.frontends.torch.files.save``) converts the module to its
graph and calls :func:`write`; :func:`load_module` rebuilds the trainable
module. Class strings from the file resolve through the explicit allow-list of
:func:`build`, never ``getattr``; a file that needs unpickling is refused with
:class:`~nmc.errors.UntrustedPickleError`.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from nmc.errors import InputFileError, UntrustedPickleError

from .egru import EGRU, EGRULanguageModel
from .neurons import IF, LI, LIF, RLIF, CubaLIF
from .ssm import DiagSSM, DiagSSMStack, SSMBlock
from .stochastic_ssm import StochasticSpikingSSM

FORMAT = "nmc-torch"
VERSION = 1


def write(path, module: nn.Module, graph: dict) -> Path:
    """Write ``graph`` (plain data, :func:`nmc.serialize.to_data` with tensors) with ``module``'s
    constructor spec and weights (when it is rebuildable) to ``path``."""
    spec = module_spec(module)
    data = {"format": FORMAT, "version": VERSION, "graph": graph,
            "module": spec, "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}
            if spec is not None else None}
    p = Path(path)
    torch.save(data, p)
    return p


def module_spec(module: nn.Module):
    """Constructor description of a rebuildable module (nmc.nn layers in nn.Sequential), else None."""
    def one(m):
        if isinstance(m, nn.Linear):
            return {"class": "Linear", "args": [m.in_features, m.out_features], "kw": {"bias": m.bias is not None}}
        if isinstance(m, nn.Conv2d):
            return {"class": "Conv2d", "args": [m.in_channels, m.out_channels, list(m.kernel_size)],
                    "kw": {"stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                           "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}}
        if isinstance(m, nn.AvgPool2d):
            return {"class": "AvgPool2d", "args": [m.kernel_size], "kw": {"stride": m.stride, "padding": m.padding}}
        if isinstance(m, nn.Flatten):
            return {"class": "Flatten", "args": [], "kw": {"start_dim": m.start_dim, "end_dim": m.end_dim}}
        if isinstance(m, EGRULanguageModel):
            return {"class": "EGRULanguageModel", "args": [], "kw": m.config()}
        if isinstance(m, (LIF, CubaLIF, IF, LI, EGRU, *SSM_CLASSES.values())):
            return {"class": type(m).__name__, "args": [], "kw": m.config()}
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            return {"class": "LayerNorm", "args": [m.normalized_shape[0]],
                    "kw": {"eps": m.eps, "elementwise_affine": m.weight is not None}}
        return None

    if isinstance(module, nn.Sequential):
        parts = [one(c) for c in module.children()]
        return None if any(p is None for p in parts) else {"class": "Sequential", "layers": parts}
    return one(module)


def load_module(path) -> nn.Module:
    """Rebuild the trainable module written by :func:`nmc.save` (weights-only load)."""
    d = load_weights_only(Path(path))
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputFileError("not a file written by nmc.save", path=path)
    spec = d.get("module")
    if spec is None:
        raise InputFileError("this file holds the compiled graph but no rebuildable module (it was not an "
                             "nn.Sequential of nmc.nn/torch layers)", path=path)
    try:
        m = build(spec)
        m.load_state_dict(d["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise InputFileError(f"malformed module spec or weights ({type(e).__name__}: {str(e)[:120]})", path=path,
                             hint="re-save the model with nmc.save") from None
    return m


#: State-space layers by the class string a file may name (an allow-list).
SSM_CLASSES = {"DiagSSM": DiagSSM, "SSMBlock": SSMBlock, "DiagSSMStack": DiagSSMStack,
               "StochasticSpikingSSM": StochasticSpikingSSM}


def build(spec):
    # allow-list: the class string from the file never reaches getattr(module, ...)
    neurons = {"LIF": LIF, "RLIF": RLIF, "CubaLIF": CubaLIF, "IF": IF, "LI": LI}
    layers = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "AvgPool2d": nn.AvgPool2d, "Flatten": nn.Flatten,
              "LayerNorm": nn.LayerNorm}
    name = spec["class"]
    if name == "Sequential":
        return nn.Sequential(*[build(s) for s in spec["layers"]])
    kw = dict(spec.get("kw", {}))
    if name in neurons:
        return neurons[name](kw.pop("size"), **kw)
    if name == "EGRU":
        return EGRU(kw.pop("input_size"), kw.pop("hidden_size"), **kw)
    if name == "EGRULanguageModel":
        return EGRULanguageModel(kw.pop("vocab"), kw.pop("embed"), kw.pop("hidden"), **kw)
    if name in SSM_CLASSES:
        first = {"DiagSSM": ("d_model",), "SSMBlock": ("d_model",), "DiagSSMStack": ("d_in", "d_model", "d_out"),
                 "StochasticSpikingSSM": ("size",)}[name]
        return SSM_CLASSES[name](*[kw.pop(k) for k in first], **kw)
    if not isinstance(name, str) or name not in layers:
        raise InputFileError(f"unknown module class {str(name)[:60]!r} in the file's module spec",
                             hint=f"classes nmc.save writes: Sequential, {', '.join(sorted(neurons) + sorted(layers))}, "
                                  "EGRU, EGRULanguageModel, " + ", ".join(SSM_CLASSES) + "; re-save the model with nmc.save")
    cls = layers[name]
    args = [tuple(a) if isinstance(a, list) else a for a in spec.get("args", [])]
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return cls(*args, **kw)


def load_weights_only(p: Path):
    if not zipfile.is_zipfile(p):
        raise InputFileError("not a PyTorch file (torch.save writes a zip archive)", path=p,
                             hint="the file is corrupt or not a torch.save file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UntrustedPickleError(
            "the file needs unpickling arbitrary Python objects (e.g. a whole pickled module), which can run code "
            "from the file", path=p,
            hint="save the model with nmc.save(model, path), or pass --trust-pickle if you trust the file") from e
    except MemoryError:
        raise
    except Exception as e:  # torch's unpickler raises IndexError/KeyError/struct.error/... on a corrupt stream
        first = (str(e).splitlines() or [""])[0][:120]
        raise InputFileError(f"not a readable PyTorch file ({type(e).__name__}: {first})",
                             path=p, hint="the file is corrupt or not a torch.save file") from None
