"""Memory bounds on what a file may make nmc allocate, checked before allocating.

A model, dataset or input file states sizes (an ONNX input dimension, a NIR
node's shape, an ``.npz`` member's shape in its ``.npy`` header, a zip
member's uncompressed size). nmc compares each declared size with a stated
bound *before* it allocates or decompresses anything, and refuses a larger
one with a typed error naming the file or node:

* :func:`max_input_bytes` — an input or calibration ``.npz`` (all members
  together, uncompressed): 512 MiB, or ``NMC_MAX_INPUT_BYTES`` (bytes);
* :func:`max_array_bytes` — one array nmc allocates from a size a model or an
  option declares (a node's shape, an ONNX input, ``--steps``): 4 GiB, or
  ``NMC_MAX_ARRAY_BYTES`` (bytes).

Both are far above every shipped model and dataset (the largest input, the
EGRU language model's calibration text as one-hot steps, is under 50 MiB).
"""
from __future__ import annotations

import math
import os
from typing import Iterable

from .errors import InputFileError, ShapeError

#: default bounds (bytes); see the module docstring
DEFAULT_MAX_ARRAY_BYTES = 4 * 2 ** 30
DEFAULT_MAX_INPUT_BYTES = 512 * 2 ** 20


def _env_bound(var: str, default: int) -> int:
    raw = os.environ.get(var)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        v = 0
    if v <= 0:
        raise InputFileError(f"{var}={raw!r} is not a positive number of bytes",
                             hint=f"unset it (default {fmt_bytes(default)}) or set e.g. {var}={4 * default}")
    return v


def max_array_bytes() -> int:
    """Bound on one array allocated from a declared size: ``NMC_MAX_ARRAY_BYTES``, else 4 GiB."""
    return _env_bound("NMC_MAX_ARRAY_BYTES", DEFAULT_MAX_ARRAY_BYTES)


def max_input_bytes() -> int:
    """Bound on an input/calibration ``.npz``, uncompressed: ``NMC_MAX_INPUT_BYTES``, else 512 MiB."""
    return _env_bound("NMC_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES)


def fmt_bytes(n: float) -> str:
    for unit, f in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def check_dims(dims: Iterable, what: str, *, node: str | None = None, path=None, error=ShapeError,
               hint: str = "give every dimension as a positive whole number") -> tuple[int, ...]:
    """Each declared dimension a whole number ≥ 1 (not 64.5, 0, -3, NaN); returns them as ints."""
    out = []
    for d in dims:
        try:
            f = float(d)
        except (TypeError, ValueError):
            raise error(f"{what} has a dimension {d!r} that is not a number", node=node, path=path, hint=hint) from None
        if not math.isfinite(f) or f != int(f) or f < 1:
            raise error(f"{what} has dimension {f:g}; dimensions must be whole numbers >= 1", node=node, path=path,
                        hint=hint)
        out.append(int(f))
    return tuple(out)


def check_alloc(n_elements: int, itemsize: int, what: str, *, node: str | None = None, path=None,
                error=ShapeError, hint: str | None = None) -> None:
    """Refuse an allocation of ``n_elements × itemsize`` bytes above :func:`max_array_bytes`."""
    need = int(n_elements) * int(itemsize)
    bound = max_array_bytes()
    if need > bound:
        raise error(f"{what} would need {fmt_bytes(need)} of memory", node=node, path=path,
                    limit=fmt_bytes(bound), actual=fmt_bytes(need),
                    hint=hint or "check the declared sizes; for a genuinely large array raise the bound with "
                                 "NMC_MAX_ARRAY_BYTES=<bytes>")


def check_shape_alloc(shape: Iterable[int], itemsize: int, what: str, **kw) -> None:
    """:func:`check_alloc` for an array of ``shape`` (product in Python ints: no overflow)."""
    check_alloc(math.prod(int(d) for d in shape), itemsize, what, **kw)


def check_npz(path) -> None:
    """Check an ``.npz`` archive's declared sizes before anything is decompressed.

    Reads the zip central directory (each member's declared uncompressed size)
    and each member's ``.npy`` header (dtype and shape: the first few hundred
    bytes of the member, decompressed alone). Refuses, with
    :class:`~nmc.errors.InputFileError` naming the file and member: an archive
    declaring more than :func:`max_input_bytes` uncompressed (a zip bomb), an
    array whose shape × item size exceeds it, an object (pickled) dtype. Members that are not ``.npy`` arrays are left to the loader, which
    refuses them.
    """
    import zipfile

    import numpy as np

    bound = max_input_bytes()
    fix = "check the file; for a genuinely large input raise the bound with NMC_MAX_INPUT_BYTES=<bytes>"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(int(i.file_size) for i in infos)
            if total > bound:
                big = max(infos, key=lambda i: i.file_size)
                raise InputFileError(f"the archive declares {fmt_bytes(total)} uncompressed (member '{big.filename}': "
                                     f"{fmt_bytes(big.file_size)}); refused before decompressing", path=path,
                                     limit=fmt_bytes(bound), actual=fmt_bytes(total), hint=fix)
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with zf.open(info) as f:
                    try:
                        version = np.lib.format.read_magic(f)
                        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                else np.lib.format.read_array_header_2_0)
                        if version not in ((1, 0), (2, 0)):
                            raise ValueError(f"unsupported .npy format version {version}")
                        shape, _, dtype = read(f)
                    except ValueError as e:
                        raise InputFileError(f"member '{key}' has no valid .npy header ({e})", path=path,
                                             hint=fix) from None
                if dtype.hasobject:
                    raise InputFileError(f"member '{key}' holds pickled object arrays, which nmc refuses to load",
                                         path=path, hint="save plain numeric arrays with numpy.savez")
                need = math.prod(int(d) for d in shape) * dtype.itemsize
                if need > bound:
                    raise InputFileError(f"member '{key}' declares shape {tuple(shape)} ({dtype}): {fmt_bytes(need)}; "
                                         "refused before reading it", path=path, limit=fmt_bytes(bound),
                                         actual=fmt_bytes(need), hint=fix)
    except InputFileError:
        raise
    except Exception as e:  # zipfile/zlib raise many types on corrupt archives; all mean "unreadable"
        raise InputFileError(f"not a readable .npz file ({type(e).__name__}: {e})", path=path,
                             hint="write it with numpy.savez(path, input_node=array, ...)") from None
