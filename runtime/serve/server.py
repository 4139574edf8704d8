"""The repository server: :class:`~nmc.runtime.server.SessionServer` (protocol,
limits, back-pressure, graceful stop) serving every model of a
:class:`~.repository.ModelRepository`, each session on a device of its model's
:class:`~.pool.DevicePool`.

A client picks the model in HELLO (``model``, ``model_version``; see
:mod:`nmc.runtime.protocol`); OPEN waits in the pool's queue for a device and
is answered ERROR E_BUSY with a retry-after time when the queue is full.
``rescan()`` (and a background rescan every ``poll`` seconds, and SIGHUP in
``nmc serve``) loads and unloads models without touching other sessions.
"""
from __future__ import annotations

import threading

from ..server import ServedModel, SessionServer, _Violation
from ..session import Session
from .pool import LeasedBundle
from .repository import ModelRepository


class _PooledSession(Session):
    """A session on a leased device; closing it gives the device back to the pool."""

    def __init__(self, repo: ModelRepository, lease, *a, **kw):
        self._repo, self._lease = repo, lease
        super().__init__(*a, **kw)

    def close(self) -> None:
        try:
            super().close()  # the lease's close: back to the pool
        finally:
            self._repo.session_closed()


class RepositoryServer(SessionServer):
    """``RepositoryServer(repo, poll=0, **SessionServer options)``; ``repo`` a
    :class:`~.repository.ModelRepository` (scanned here once) ."""

    def __init__(self, repo: ModelRepository, poll: float = 0.0, **kw):
        super().__init__(None, **kw)
        self.repo = repo
        self.poll = float(poll)
        self._poll_stop = threading.Event()
        self._poller: threading.Thread | None = None
        repo.scan()

    @property
    def ready(self) -> bool:
        """Serving, not draining, and at least one model loaded."""
        return super().ready and bool(self.repo.models)

    def rescan(self) -> dict:
        """Load new or changed versions, unload removed ones (module docstring)."""
        return self.repo.scan()

    def model_for(self, hello: dict) -> ServedModel:
        from .. import protocol as P

        try:
            return self.repo.get(P.opt_str(hello, "model"), P.opt_int(hello, "model_version"))
        except LookupError as e:
            raise _Violation(str(e)) from None

    def open_session(self, model: ServedModel, device: str, window: int):
        lease = self.repo.pool(model, device).lease(window)  # may wait in the queue, or raise ServerBusyError
        try:
            return _PooledSession(self.repo, lease, LeasedBundle(model.bundle, lease), device=device, window=window)
        except BaseException:
            lease.close()
            raise

    def _poll_loop(self) -> None:
        while not self._poll_stop.wait(self.poll):
            try:
                self.rescan()
            except Exception as e:  # a scan that fails (repository gone) is logged, the server serves on
                self._log(f"repository: rescan failed ({type(e).__name__}: {e})")

    def start(self):
        self._start_poller()
        return super().start()

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self._start_poller()
        super().serve_forever(poll_interval)

    def _start_poller(self) -> None:
        if self.poll > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, daemon=True, name="nmc-rescan")
            self._poller.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._poll_stop.set()
        self.repo.refuse_new()
        super().stop(timeout)
        self.repo.close()


def build_server(path, *, device=None, window: int = 1, poll: float = 0.0, pool: dict | None = None,
                 log=None, **server_options) -> SessionServer:
    """The server ``nmc serve PATH`` runs: a :class:`SessionServer` for one bundle with
    the default pool settings (one device per connection, as always), else a
    :class:`RepositoryServer` over the repository PATH (or over PATH as a one-model
    repository, for ``--devices``/``--max-batch`` on a single bundle)."""
    from pathlib import Path

    from nmc.driver import api

    from ..server import bundle_name
    from .pool import DEFAULTS

    pool = dict(DEFAULTS, **(pool or {}))
    p = Path(path)
    is_repo = p.is_dir() and not (p / "manifest.json").exists()
    if not is_repo and pool == DEFAULTS:
        return SessionServer(api.load(p), device=device, window=window, log=log, **server_options)
    repo = ModelRepository(p if is_repo else None, device=device, window=window, log=log, **pool)
    if not is_repo:
        b = api.load(p)
        repo.add(b, bundle_name(b))
    return RepositoryServer(repo, poll=poll, window=window, log=log, **server_options)


def json_log(stream):
    """A log function writing one JSON object per line (``--log-format json``):
    ``{"time": ISO 8601 UTC, "level": "info", "logger": "nmc.serve", "msg": ...}``."""
    import datetime
    import json

    lock = threading.Lock()

    def log(msg: str) -> None:
        rec = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
               "level": "info", "logger": "nmc.serve", "msg": str(msg)}
        with lock:
            stream.write(json.dumps(rec) + "\n")
            stream.flush()

    return log
