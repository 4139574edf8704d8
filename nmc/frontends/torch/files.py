"""PyTorch frontend, files: :func:`save` (``nmc.save``) and :func:`load_file`.

:func:`save` writes the module's graph and rebuildable form (the file layout is
:mod:`nmc.nn.persist`'s; the graph as :func:`nmc.serialize.to_data` plain data).
:func:`load_file` reads it without unpickling code (``torch.load(weights_only=True)``);
a file that needs unpickling is refused (:class:`UntrustedPickleError`) unless
``trust_pickle``. An EvNN-layout state_dict becomes EGRU nodes; a ``.pt2``
(``torch.export``) program is read by :mod:`nmc.frontends.pt2`.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from nmc import nn as nnn
from nmc import serialize
from nmc.errors import GraphError, InputFileError, ShapeError, UnsupportedNodeError, UntrustedPickleError
from nmc.frontends import pt2
from nmc.ir import Graph
from nmc.nn import persist
from nmc.nn.neurons import INTEGRATORS, RESETS
from nmc.nodes import EGRU as EGRUNode

from .convert import DEFAULT_DT, _np
from .trace import from_module


def _tensor_to_array(v):
    return v.numpy() if isinstance(v, torch.Tensor) else v


def save(module: nn.Module, path, *, input_shape=None, dt: float | None = None) -> Path:
    """Write ``module`` so ``nmc compile`` (and ``torch.load(weights_only=True)``) can read it:
    its graph (:func:`from_module`) and, through :mod:`nmc.nn.persist`, its rebuildable form."""
    g = from_module(module, input_shape=input_shape, dt=dt)
    return persist.write(path, module, serialize.to_data(g, torch.from_numpy))


_EVNN_KEYS = ("kernel", "recurrent_kernel", "bias", "recurrent_bias", "thr")


def _evnn_graph(sd: dict, path) -> Graph | None:
    """EGRU nodes from an EvNN-layout state_dict (single layer, or 'prefix.kernel' per layer)."""
    prefixes = sorted({k[: -len("kernel")] for k in sd if k.endswith("kernel") and not k.endswith("recurrent_kernel")},
                      key=lambda p: [int(t) if t.isdigit() else t for t in p.replace(".", " ").split()])
    if not prefixes or not all(all(p + k in sd for k in _EVNN_KEYS) for p in prefixes):
        return None
    g = Graph(meta={"dt": DEFAULT_DT})
    prev = None
    for i, p in enumerate(prefixes):
        layer = nnn.EGRU.from_evnn_state_dict({k: sd[p + k] for k in _EVNN_KEYS})
        if torch.any(torch.as_tensor(sd[p + "thr"]) <= 0):
            raise GraphError("EvNN threshold ≤ 0: with a non-positive ϑ the subtractive reset adds to the state",
                             node=f"egru{i}", path=str(path), hint="clamp thr to a positive minimum")
        name = f"egru{i}"
        if prev is None:
            g.add_node("input", nir.Input(input_type={"input": np.array([layer.input_size])}))
            prev = "input"
        elif g.shape_out(prev)[0] != layer.input_size:
            raise ShapeError(f"layer expects {layer.input_size} inputs but the previous layer has {g.shape_out(prev)[0]}",
                             node=name, path=str(path))
        g.add_node(name, EGRUNode(w_x=_np(layer.w_x), w_h=_np(layer.w_h), b_x=_np(layer.b_x), b_h=_np(layer.b_h),
                                  thr=_np(layer.thr)))
        g.add_edge(prev, name)
        prev = name
    g.add_node("output", nir.Output(output_type={"output": np.array(g.shape_out(prev))}))
    g.add_edge(prev, "output")
    return g


def load_file(path, *, trust_pickle: bool = False, input_shape=None) -> Graph:
    p = Path(path)
    if p.suffix.lower() == ".pt2":
        return _load_pt2(p, input_shape, trust_pickle)
    try:
        d = persist.load_weights_only(p)
    except UntrustedPickleError:
        if not trust_pickle:
            raise
        obj = torch.load(p, map_location="cpu", weights_only=False)
        if not isinstance(obj, nn.Module):
            raise InputFileError(f"the pickled object is a {type(obj).__name__}, not a torch.nn.Module", path=p) from None
        return from_module(obj, input_shape=input_shape)
    if isinstance(d, dict) and d.get("format") == persist.FORMAT:
        if int(d.get("version", 0)) > persist.VERSION:
            raise InputFileError(f"file format version {d['version']} is newer than this nmc ({persist.VERSION})",
                                 path=p)
        return serialize.from_data(d["graph"], p, _tensor_to_array)
    if isinstance(d, dict):
        g = _evnn_graph(d, p)
        if g is not None:
            return g
        raise InputFileError("the file holds a bare state_dict (weights without an architecture)", path=p,
                             hint="save the model with nmc.save(model, path) so nmc knows its layers")
    raise InputFileError(f"the file holds a {type(d).__name__}, not a model", path=p,
                         hint="save the model with nmc.save(model, path)")


def _load_pt2(p: Path, input_shape, trust_pickle: bool = False) -> Graph:
    """A torch.export program: rebuild the layer chain from the exported graph's
    module stack (nmc.nn and torch layers) and the program's state_dict. The
    archive is read without unpickling unless ``trust_pickle`` (see :mod:`nmc.frontends.pt2`)."""
    ex = pt2.read(p, trust_pickle=trust_pickle)
    seq = nn.Sequential()
    for path, qual in ex.layers:
        seq.add_module(path.replace(".", "_") or "layer",
                       _rebuild_from_state(path, qual.rsplit(".", 1)[-1], qual, ex.state, p))
    return from_module(seq, input_shape=input_shape or ex.input_shape)


def _rebuild_from_state(path: str, cls: str, qual: str, sd: dict, p) -> nn.Module:
    def t(name):
        return sd[f"{path}.{name}" if path else name]

    try:
        if cls == "Linear" and qual.startswith("torch"):
            w = t("weight")
            m = nn.Linear(w.shape[1], w.shape[0], bias=f"{path}.bias" in sd)
        elif cls in ("LIF", "CubaLIF", "IF", "LI") and qual.startswith("nmc"):
            size = tuple(t("v_threshold" if cls != "LI" else "tau").shape)
            kw = {"dt": float(t("cfg_dt"))}
            if cls != "LI":
                kw["reset"] = RESETS[int(t("cfg_reset"))]
            if cls != "IF":
                kw["integrator"] = INTEGRATORS[int(t("cfg_integrator"))]
            m = {"LIF": nnn.LIF, "CubaLIF": nnn.CubaLIF, "IF": nnn.IF, "LI": nnn.LI}[cls](size, **kw)
        else:
            raise UnsupportedNodeError(f"layer {qual} in an exported program is not supported", node=path or cls,
                                       path=str(p), hint="export a chain of nn.Linear and nmc.nn layers, or use nmc.save")
        m.load_state_dict({k.split(".")[-1]: v for k, v in sd.items() if k.rsplit(".", 1)[0] == path}, strict=False)
    except KeyError as e:
        raise InputFileError(f"exported program lacks parameter {e}", path=p) from None
    except (IndexError, TypeError, ValueError, RuntimeError) as e:
        raise InputFileError(f"exported layer '{path}' has malformed parameters ({type(e).__name__}: {str(e)[:120]})",
                             path=p, hint="re-export the program") from None
    return m
