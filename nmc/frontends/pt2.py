"""Reading ``torch.export`` archives (``.pt2``) without unpickling anything.

``torch.export.load`` unpickles parts of an archive with
``weights_only=False``: weights and constants saved with ``use_pickle``,
torchbind/opaque constant objects (``custom_obj_*``, ``opaque_obj_*``), legacy
``data/weights/<model>.pt`` state dicts and the pre-2.8 zip layout, and its
sample inputs whenever the weights-only unpickler refuses them (a fallback);
it also loads AOTInductor shared libraries (``data/aotinductor/``). Any of
these runs code from the file. So, unless the user passes ``--trust-pickle``,
nmc never calls ``torch.export.load``: :func:`read` inspects the zip archive,
refuses every member that would need one of those paths
(:class:`UntrustedPickleError` naming the member), and reads what nmc needs
itself from the JSON members and the raw little-endian tensor bytes:

* ``models/model.json``: each node's ``nn_module_stack`` (which layer it
  belongs to) and the user input's shape;
* ``data/weights/model_weights_config.json`` and
  ``data/constants/model_constants_config.json``: each tensor's member, dtype
  (an allow-list), sizes, strides and storage offset (bounds-checked against
  the member's bytes).

Every plain ``torch.export.save`` of torch 2.13 also writes
``data/sample_inputs/model.pt``, a pickle (``torch.save`` of the example
inputs). nmc does not need it and never unpickles it; it scans its opcodes
statically (:mod:`pickletools`, nothing executed) and refuses the archive when
the pickle references any global outside the weights-only allow-list, i.e.
when ``torch.export.load`` would fall back to unrestricted unpickling.
Layer classes are matched by their qualified-name *strings*; no string from
the archive is resolved to code.
"""
from __future__ import annotations

import io
import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from nmc.errors import InputFileError, UntrustedPickleError

_FIX = "re-export it with torch.export.save from plain tensors, save it with nmc.save, " \
       "or pass --trust-pickle if you trust the file (loading then runs code from it)"

#: schema ScalarType codes (torch/_export/serde/schema.py) → dtypes nmc reads
_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
           7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}
#: a member's declared size may exceed its compressed size by at most this factor (zip bombs)
MAX_INFLATE_RATIO = 100
#: ... and the JSON members at most this size
MAX_JSON_BYTES = 256 * 2 ** 20


@dataclass(frozen=True)
class Exported:
    """What nmc needs from an exported program."""

    layers: list          # [(module path, qualified class name)] in first-use order
    state: dict           # parameter/buffer/constant name → tensor
    input_shape: tuple | None   # user input shape without the batch dimension


def read(path: Path, *, trust_pickle: bool = False) -> Exported:
    if trust_pickle:
        return _read_trusted(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputFileError(f"not a torch.export archive ({type(e).__name__})", path=path,
                             hint="write it with torch.export.save(ep, 'model.pt2')") from None
    with zf:
        try:
            return _read_archive(zf, path)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError,
                zipfile.BadZipFile, EOFError, RuntimeError) as e:
            raise InputFileError(f"malformed torch.export archive ({type(e).__name__}: {str(e)[:120]})",
                                 path=path, hint="re-export it with torch.export.save") from None


# ----------------------------------------------------------------- archive
def _read_archive(zf: zipfile.ZipFile, path) -> Exported:
    infos = {i.filename: i for i in zf.infolist()}
    for i in infos.values():
        if i.file_size > MAX_INFLATE_RATIO * i.compress_size + 2 ** 20:
            raise InputFileError(f"archive member {i.filename} declares {i.file_size} bytes from "
                                 f"{i.compress_size} compressed (a zip bomb?)", path=path,
                                 limit=f"{MAX_INFLATE_RATIO}x", actual=f"{i.file_size // max(i.compress_size, 1)}x")
    roots = {n.split("/", 1)[0] for n in infos}
    root = next(iter(roots)) if len(roots) == 1 else None
    rel = {n.split("/", 1)[1]: n for n in infos if "/" in n and root is not None}
    if root is None or "archive_format" not in rel:
        legacy = sorted(n for n in infos if n.rsplit("/", 1)[-1].startswith("serialized_") and n.endswith(".pt"))
        if legacy:
            raise UntrustedPickleError("this pre-2.8 torch.export archive stores its state as pickles", path=path,
                                       node=legacy[0], hint=_FIX)
        raise InputFileError("not a torch.export archive (no archive_format member under one root folder)",
                             path=path, hint="write it with torch.export.save(ep, 'model.pt2')")
    if zf.read(rel["archive_format"]).strip() != b"pt2":
        raise InputFileError("not a torch.export archive (archive_format is not 'pt2')", path=path)
    if "byteorder" in rel and zf.read(rel["byteorder"]).strip() not in (b"little", b""):
        raise InputFileError("big-endian torch.export archives are not supported", path=path,
                             hint="export on a little-endian machine")
    for r in sorted(rel):
        if r.startswith("data/aotinductor/"):
            raise UntrustedPickleError("the archive holds AOTInductor native code (a shared library that loading "
                                       "runs)", node=rel[r], path=path, hint=_FIX)
        if r in ("data/weights/model.pt", "data/constants/model.pt"):
            raise UntrustedPickleError("the archive stores its weights as a legacy pickle", node=rel[r], path=path,
                                       hint=_FIX)
    if "models/model.json" not in rel:
        raise InputFileError("the archive holds no exported program named 'model' (models/model.json)", path=path)

    def member(r):
        if r not in rel:
            raise InputFileError(f"archive member {root}/{r} is missing", path=path, hint="re-export the program")
        return zf.read(rel[r])

    def load_json(r):
        if infos[rel[r]].file_size > MAX_JSON_BYTES:
            raise InputFileError(f"archive member {rel[r]} is too large", path=path, limit=MAX_JSON_BYTES,
                                 actual=infos[rel[r]].file_size)
        return json.loads(member(r))

    sample = "data/sample_inputs/model.pt"
    if sample in rel:
        _refuse_unsafe_pickle(member(sample), rel[sample], path)
    state = {}
    for kind, cfg in (("weights", "data/weights/model_weights_config.json"),
                      ("constants", "data/constants/model_constants_config.json")):
        if cfg not in rel:
            continue
        for fqn, meta in load_json(cfg)["config"].items():
            name = str(meta["path_name"])
            where = f"{root}/data/{kind}/{name}"
            if meta.get("use_pickle") or name.startswith(("custom_obj_", "opaque_obj_")):
                raise UntrustedPickleError(f"{kind[:-1]} '{fqn}' is stored as a pickle, which loading runs",
                                           node=where, path=path, hint=_FIX)
            state[str(fqn)] = _tensor(member(f"data/{kind}/{name}"), meta["tensor_meta"], where, path)
    model = load_json("models/model.json")
    gm = model["graph_module"]
    return Exported(layers=_layers(gm["graph"]["nodes"]), state=state, input_shape=_input_shape(gm))


def _refuse_unsafe_pickle(data: bytes, where: str, path) -> None:
    """Refuse a torch.save pickle that references a global the weights-only unpickler would
    refuse (torch.export.load then retries with full unpickling). Scans opcodes; runs nothing."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = set(_get_allowed_globals())
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pkl = [n for n in inner.namelist() if n.endswith("data.pkl")]
            if len(pkl) != 1:
                raise InputFileError("the sample-inputs member is not a torch.save archive", node=where, path=path)
            stream = inner.read(pkl[0])
    except zipfile.BadZipFile:
        raise UntrustedPickleError("the sample-inputs member is a raw pickle", node=where, path=path,
                                   hint=_FIX) from None
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                           "BINSTRING", "STRING"):
                strings.append(str(arg))
            name = None
            if op.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL":
                name = ".".join(strings[-2:]) if len(strings) >= 2 else "?"
            elif op.name in ("OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
                name = f"<{op.name}>"
            if name is not None and name not in allowed:
                raise UntrustedPickleError(f"the sample-inputs pickle references {name[:80]}, which loading runs",
                                           node=where, path=path, hint=_FIX)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputFileError(f"the sample-inputs pickle is corrupt ({e})", node=where, path=path) from None


def _ints(v, what):
    out = []
    for s in v:
        if set(s) != {"as_int"} or not isinstance(s["as_int"], int) or s["as_int"] < 0:
            raise ValueError(f"{what} must be non-negative integers (symbolic sizes are not supported)")
        out.append(s["as_int"])
    return out


def _tensor(raw: bytes, meta: dict, where: str, path) -> torch.Tensor:
    dtype = _DTYPES.get(meta["dtype"]) if isinstance(meta["dtype"], int) else None
    if dtype is None:
        raise InputFileError(f"tensor dtype code {str(meta['dtype'])[:20]} is not supported", node=where, path=path,
                             hint="export float or integer tensors")
    sizes, strides = _ints(meta["sizes"], "sizes"), _ints(meta["strides"], "strides")
    offset = _ints([meta["storage_offset"]], "storage_offset")[0]
    if len(sizes) != len(strides):
        raise ValueError("sizes and strides differ in length")
    esize = torch.empty((), dtype=dtype).element_size()
    if len(raw) % esize:
        raise InputFileError(f"{len(raw)} bytes is not a whole number of {dtype} elements", node=where, path=path)
    numel = len(raw) // esize
    if all(s > 0 for s in sizes):
        need = offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
        if need > numel:
            raise InputFileError(f"tensor view needs {need} elements but the member holds {numel}", node=where,
                                 path=path, limit=numel, actual=need)
    flat = torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    return torch.as_strided(flat, sizes, strides, offset).clone()


def _split_stack_item(item: str) -> list[str]:
    """'key,path,qualname' split on commas outside brackets (torch's own rule)."""
    out, start, depth = [], 0, 0
    for i, c in enumerate(item):
        if c in "[(":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(item[start:i])
            start = i + 1
    out.append(item[start:])
    if len(out) != 3:
        raise ValueError(f"nn_module_stack entry {item[:60]!r} is not 'key,path,class'")
    return out


def _layers(nodes) -> list[tuple[str, str]]:
    order: list[tuple[str, str]] = []
    for n in nodes:
        stack = (n.get("metadata") or {}).get("nn_module_stack")
        if not stack:
            continue
        _key, p, qual = _split_stack_item(str(stack).split(";")[-1])
        key = (_norm_path(p), qual)
        if key not in order:
            order.append(key)
    return order


def _norm_path(p: str) -> str:
    return p.removeprefix("L['self'].").replace("L['self']", "")


def _input_shape(gm: dict):
    tensors = gm["graph"]["tensor_values"]
    for spec in gm["signature"]["input_specs"]:
        if "user_input" in spec:
            name = spec["user_input"]["arg"]["as_tensor"]["name"]
            return tuple(_ints(tensors[name]["sizes"], "input sizes")[1:])
    return None


# ----------------------------------------------------------------- trusted
def _read_trusted(path: Path) -> Exported:
    """``--trust-pickle``: torch's own loader (it may unpickle and run code from the file)."""
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # torch raises anything from a bad archive; the user opted in to running it
        raise InputFileError(f"not a readable torch.export program ({type(e).__name__})", path=path) from None
    order: list[tuple[str, str]] = []
    for n in ep.graph.nodes:
        stack = n.meta.get("nn_module_stack")
        if not stack:
            continue
        p, qual = list(stack.values())[-1]
        key = (_norm_path(p), qual if isinstance(qual, str) else f"{qual.__module__}.{qual.__qualname__}")
        if key not in order:
            order.append(key)
    state = dict(ep.state_dict)
    state.update({k: v for k, v in getattr(ep, "constants", {}).items() if isinstance(v, torch.Tensor)})
    shape = None
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs:
            shape = tuple(int(s) for s in n.meta["val"].shape[1:])
            break
    return Exported(layers=order, state=state, input_shape=shape)
