"""Shared machinery of the file fuzz harness (tests/fuzz/test_fuzz_*.py).

* :data:`EXAMPLES` examples per target: ``NMC_FUZZ_EXAMPLES`` (default 12,
  derandomized so CI is reproducible; setting the variable explores randomly).
* :func:`guarded` runs one action on one hostile input and asserts the four
  properties of SECURITY.md: only :class:`NmcError` subclasses escape (any
  other exception propagates and fails the example), the canary file that a
  crafted payload would write stays absent, nothing in the workspace outside
  ``out/`` changes (snapshot of names, sizes and contents before/after), and
  the peak resident memory grows by at most :data:`MEM_BOUND` (VmHWM from
  ``/proc/self/status``, reset per example through ``/proc/self/clear_refs``;
  ``tracemalloc`` where there is no /proc). While an example runs, the address
  space is capped at its size before plus 8 × MEM_BOUND, so a runaway
  allocation raises MemoryError (failing the example) instead of invoking the
  OOM killer on a shared machine.
* Mutators: structured edits of JSON-like data (replace, delete or add at a
  drawn path with hostile values), byte flips and truncation.
"""
from __future__ import annotations

import copy
import hashlib
import os
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from nmc.errors import NmcError

EXAMPLES = int(os.environ.get("NMC_FUZZ_EXAMPLES", "12"))
#: the peak RSS of one example may exceed the RSS before it by at most this: the seeds are a
#: few kB and a legitimate load of them needs a few MB, so any decompression or shape bomb
#: (declared sizes of GBs) fails it while interpreter/library caches fit easily
MEM_BOUND = 256 * 2 ** 20

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize="NMC_FUZZ_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------- guard
def _snapshot(root: Path, skip: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p == skip or skip in p.parents:
            continue
        if p.is_symlink():
            out[p.relative_to(root).as_posix()] = ("link", os.readlink(p))
        elif p.is_file():
            out[p.relative_to(root).as_posix()] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[p.relative_to(root).as_posix()] = ("dir",)
    return out


def _rss() -> tuple[int, int] | None:
    """(current RSS, peak RSS since the last reset) in bytes from /proc, or None."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")   # Linux: VmHWM := VmRSS
        return True
    except OSError:
        return False


def _cap_address_space():
    """Make an allocation far beyond MEM_BOUND fail (MemoryError, which fails the example) instead
    of driving the shared machine into the OOM killer. Returns the limits to restore, or None."""
    try:
        import resource

        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        vm = int(fields["VmSize"].split()[0]) * 1024
        old = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + 8 * MEM_BOUND
        if old[1] != resource.RLIM_INFINITY:
            cap = min(cap, old[1])
        resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
        return old
    except (ImportError, OSError, KeyError, ValueError):
        return None


def _restore_address_space(old):
    if old is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, old)


@contextmanager
def guarded(ws: Path):
    """Run the body on hostile input in workspace ``ws`` (output dir ``ws/out``)."""
    out = ws / "out"
    out.mkdir(exist_ok=True)
    before = _snapshot(ws, out)
    use_proc = _reset_peak() and _rss() is not None
    if use_proc:
        rss0 = _rss()[0]
    else:   # no /proc: Python-level allocations only (numpy registers its buffers with tracemalloc)
        tracemalloc.start()
    ok = True
    limits = _cap_address_space()
    try:
        yield
    except NmcError:
        pass
    except BaseException:
        ok = False
        raise
    finally:
        _restore_address_space(limits)
        if use_proc:
            grew = _rss()[1] - rss0
        else:
            grew = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if ok:
            assert not (ws / "canary").exists(), "a crafted payload ran code (the canary file was written)"
            assert _snapshot(ws, out) == before, "a file outside the output directory was written or deleted"
            assert grew <= MEM_BOUND, f"one example grew the peak memory by {grew / 2**20:.0f} MiB"


# ----------------------------------------------------------------- values
def hostile_values(ws: Path):
    """Values a hostile file may hold where nmc expects something else."""
    victim = str(ws / "victim.txt")
    return st.one_of(
        st.sampled_from([None, True, False, 0, -1, 1, 3, 2 ** 31, 2 ** 40, 2 ** 63 - 1, -2 ** 63, 10 ** 30,
                         float("nan"), float("inf"), -float("inf"), 0.5, -1e308, 1e-320]),
        st.sampled_from(["write", "read", "exec", "eval", "__class__", "__init__", "Module", "Linear", "LIF",
                         "Sequential", "NIRGraph", "nmc.EGRU", "Input", "Output", "", "\x00", "é" * 3, "a" * 300,
                         "../../../../etc/hostname", "/etc/hostname", victim, str(ws / "canary"),
                         "torch.nn.modules.linear.Linear", "nmc.nn.neurons.LIF", "L__self__,0,os.system"]),
        st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.lists(st.integers(-3, 2 ** 33), max_size=4),
        st.dictionaries(st.sampled_from(["type", "as_int", "config", "files", "a"]), st.integers(-2, 5), max_size=2),
    )


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value, op):
    if not path:
        return value if op != "delete" else None
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    k = path[-1]
    if isinstance(parent, tuple):
        return obj   # tuples are rebuilt by the caller's format; leave them
    if op == "delete":
        del parent[k]
    elif op == "add" and isinstance(parent, dict):
        parent[f"{k}_extra"] = value
    else:
        parent[k] = value
    return obj


def mutate_tree(data, obj, values, max_edits=3, leaves=None):
    """A deep copy of ``obj`` with 1..max_edits structured edits drawn by ``data``."""
    obj = copy.deepcopy(obj)
    for _ in range(data.draw(st.integers(1, max_edits), label="edits")):
        paths = list(_paths(obj))[1:] or [()]     # the root itself only for a scalar
        if leaves is not None:
            paths = [p for p in paths if leaves(p)] or paths
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="op")
        value = data.draw(values, label="value")
        obj = _set(obj, path, value, op)
    return obj


def mutate_bytes(data, raw: bytes) -> bytes:
    """Flip, overwrite, insert or truncate a few bytes."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6), label="byte edits")):
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1), label="at")
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "truncate"]), label="byte op")
        if kind == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            b[i] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
        elif kind == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i:]
    return bytes(b)


def workspace(tmp: Path) -> Path:
    """A fresh workspace with a victim file that hostile paths point at."""
    import tempfile

    ws = Path(tempfile.mkdtemp(dir=tmp))
    (ws / "victim.txt").write_text("precious")
    return ws

