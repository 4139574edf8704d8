"""Crafted hostile files for the security tests and the fuzz harness.

Each payload, if nmc ever unpickled or resolved it, would write a *canary* file;
the tests assert that the canary stays absent. Nothing here runs the payloads.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch


class CanaryWriter:
    """Unpickling this object writes ``path`` (what an attacker's payload would do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran')",))


def canary_torch_save(canary, wrap=lambda o: o) -> bytes:
    """``torch.save`` bytes (a zip archive with data.pkl) that run code when unpickled."""
    buf = io.BytesIO()
    torch.save(wrap(CanaryWriter(canary)), buf)
    return buf.getvalue()


def small_export(path: Path) -> Path:
    """A plain torch.export of a two-layer nmc.nn network."""
    from nmc import nn as nnn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), nnn.LIF(3, beta=0.8))
    ep = torch.export.export(net, (torch.zeros(1, 4),))
    torch.export.save(ep, path)
    return path


def rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a zip archive member by member; ``edit(rel_name, data) -> data | None`` (None drops it)."""
    with zipfile.ZipFile(src) as zin:
        items = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    root = items[0][0].split("/", 1)[0]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in items:
            new = edit(name.split("/", 1)[1], data)
            if new is not None:
                zout.writestr(name, new)
        for rel, data in getattr(edit, "extra", {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def pt2_pickled_weight(src: Path, dst: Path, canary) -> Path:
    """Weight '0.weight' stored with use_pickle: torch.export.load unpickles it with weights_only=False."""
    def edit(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            cfg["config"]["0.weight"]["use_pickle"] = True
            return json.dumps(cfg).encode()
        if rel == "data/weights/" + json.loads(cfg_of(src))["config"]["0.weight"]["path_name"]:
            return canary_torch_save(canary)
        return data
    return rewrite_zip(src, dst, edit)


def pt2_sample_inputs_fallback(src: Path, dst: Path, canary) -> Path:
    """Sample inputs the weights-only unpickler refuses: torch.export.load retries with weights_only=False."""
    def edit(rel, data):
        return canary_torch_save(canary, wrap=lambda o: (o,)) if rel == "data/sample_inputs/model.pt" else data
    return rewrite_zip(src, dst, edit)


def pt2_opaque_constant(src: Path, dst: Path, canary) -> Path:
    """An opaque-object constant: torch.export.load calls pickle.loads on it."""
    import pickle

    def edit(rel, data):
        if rel == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": True, "tensor_meta": None}}}).encode()
        return data
    edit.extra = {"data/constants/opaque_obj_0": pickle.dumps(CanaryWriter(canary))}
    return rewrite_zip(src, dst, edit)


def cfg_of(src: Path) -> bytes:
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith("data/weights/model_weights_config.json"))
        return z.read(name)
