"""The Ray engine behind ``nmc sweep``, ``nmc fit`` and ``nmc eval --workers``.

* :func:`require_ray` imports Ray or raises one :class:`~nmc.errors.DistributedError`
  naming the ``distributed`` extra.
* :func:`session` starts Ray **embedded** (in this process, on this machine: no
  dashboard, no usage stats, ``workers`` CPUs) or joins a cluster given by
  ``address`` / ``RAY_ADDRESS``, and always shuts down what it started. A Ray
  already initialised by the caller (a notebook, a test's multi-node cluster) is
  used as it is and left running.
* :func:`run_tasks` runs one function over many items as Ray tasks and yields
  ``(index, outcome)`` as each finishes. A worker that dies (killed, ``os._exit``,
  out of memory) has its task retried by Ray up to ``retries`` times; an exception
  raised by the function itself is not retried (it would fail the same way). Either
  final failure comes back as a :class:`TaskFailure`, never as a missing item.
  Ctrl-C cancels what is still running and re-raises.

What a task is shipped: its item (small) plus references to the objects put once
with :func:`put` (model bytes, data arrays, bundle files): Ray copies each to a
node's object store once and every task on that node reads it from there.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from nmc.errors import DistributedError

EXTRA_HINT = "install the 'distributed' extra: pip install 'nmc[distributed]' (.ci/setup installs it)"
#: retries of a task whose worker process died (Ray's max_retries)
DEFAULT_RETRIES = 2


def require_ray():
    """Import Ray, or raise one line naming the extra that provides it."""
    try:
        import ray
    except ImportError:
        raise DistributedError("this command needs Ray, which is not installed", hint=EXTRA_HINT) from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None, workers: int | None = None):
    """Ray for the duration of a ``with`` block: embedded by default, a cluster with ``address``.

    ``workers``: CPUs the embedded Ray may use (default: this machine's). Ignored
    when joining a cluster (the cluster's nodes say what they have).
    """
    ray = require_ray()
    if ray.is_initialized():  # the caller's Ray (a test's Cluster, a notebook): use it, leave it running
        yield ray
        return
    if workers is not None and workers < 1:
        raise DistributedError(f"--workers must be >= 1, got {workers}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                     object_store_memory=_object_store_bytes(), **kw)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError...: all mean "no Ray here"
        where = f"join the Ray cluster at {address}" if address else "start Ray on this machine"
        raise DistributedError(f"could not {where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                               hint="check --address / RAY_ADDRESS (ray start --head prints it)" if address
                               else "see `ray status`; free memory or /tmp space") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _object_store_bytes() -> int:
    """A small object store for the embedded Ray (models and data sets here are MBs): fast to start."""
    return 256 * 1024 * 1024


def put(obj: Any):
    """Put an object in the object store once; pass the reference to many tasks."""
    return require_ray().put(obj)


@dataclass
class TaskFailure:
    """A task that failed for good: ``kind`` is ``"crash"`` (its worker died on every
    try) or ``"exception"`` (the function raised)."""

    kind: str
    message: str
    attempts: int

    def line(self) -> str:
        return (f"worker died on all {self.attempts} attempts: {self.message}" if self.kind == "crash"
                else self.message)


def run_tasks(fn: Callable, items: Sequence, *shared, retries: int = DEFAULT_RETRIES, num_cpus: float = 1,
              ) -> Iterator[tuple[int, Any]]:
    """Run ``fn(item, *shared)`` for every item as a Ray task; yield ``(index, result)`` in
    completion order, ``result`` a :class:`TaskFailure` when the task failed for good.

    ``shared``: object references (:func:`put`) or small values given to every task.
    Must run inside :func:`session`.
    """
    ray = require_ray()
    from ray.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError

    remote = ray.remote(num_cpus=num_cpus, max_retries=retries, retry_exceptions=False)(fn)
    pending = {remote.remote(item, *shared): i for i, item in enumerate(items)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    yield i, ray.get(ref)
                except RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    yield i, TaskFailure("exception", _one_line(cause), 1)
                except (WorkerCrashedError, TaskCancelledError) as e:
                    yield i, TaskFailure("crash", _one_line(e), retries + 1)
                except ray.exceptions.RayError as e:  # node died, object lost, ...: Ray retried what it could
                    yield i, TaskFailure("crash", _one_line(e), retries + 1)
    finally:  # Ctrl-C, or the consumer stopped early: nothing keeps running behind the caller's back
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:500]


def format_exception(e: BaseException) -> str:
    """One line for a results record: the exception and where it was raised."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return _one_line(e) + where
