"""A model repository: every bundle of a directory, by name and version.

Layout (as Triton's)::

    REPO/
      digits/            model name: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
        1/               version: a positive integer; each is a bundle (`nmc compile -o REPO/digits/1`)
        2/
      keyword-spotter/
        1/

Anything else in REPO (files, hidden directories such as a compile's
``.NAME.*.tmp``, names outside the pattern) is skipped with a log line; a
version whose bundle does not load (corrupt, tampered, unknown target) is
skipped with its one-line error and the rest is served. Directory names are
used as keys only: nothing read from the repository selects code.

:meth:`ModelRepository.scan` (at start, on SIGHUP, every ``--poll`` seconds)
loads versions that appeared or whose ``manifest.json`` changed, and unloads
those that disappeared: an unloaded version takes no new sessions, its open
sessions run on (their bundle stays in memory) and its devices are closed when
the last one ends. Sessions of other models are never touched.
"""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from nmc.errors import NmcError, OptionError

from ..server import ServedModel
from .pool import DevicePool, check_pool_options

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")


class ModelRepository:
    """Models by name and version, each with a :class:`~.pool.DevicePool` per device name.

    ``pool_options`` go to every pool (``devices``, ``max_batch``, ``queue``,
    ``queue_timeout``, ``max_wait``, ``on_step``); ``device`` fixes the device of
    every model (None: clients choose); ``window`` is the default window.
    """

    def __init__(self, root=None, device: str | None = None, window: int = 1, log=None, **pool_options):
        check_pool_options(**pool_options)
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise OptionError(f"model repository {self.root} is not a directory",
                              hint="pass a bundle, or a directory of NAME/VERSION/ bundles")
        self.device, self.window, self.log, self.pool_options = device, window, log, pool_options
        self.lock = threading.RLock()
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.retired: list[ServedModel] = []

    def _log(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    # --------------------------------------------------------------- loading
    def add(self, bundle, name: str, version: int = 1, digest: str = "") -> ServedModel:
        """Serve ``bundle`` as ``name`` version ``version`` (replacing what was there)."""
        m = ServedModel.of(bundle, name, version, self.device, self.window)
        m.extra.update(pools={}, digest=digest)
        with self.lock:
            old = self.models.setdefault(name, {}).get(version)
            self.models[name][version] = m
            if old is not None:
                self.retired.append(old)
        self._reap()
        return m

    def scan(self) -> dict:
        """Bring the served models in line with the directory; returns what changed."""
        from nmc.driver.bundle import Bundle

        if self.root is None:
            return {"loaded": [], "unloaded": [], "failed": {}}
        found: dict[tuple[str, int], Path] = {}
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or not NAME.fullmatch(d.name):
                if not d.name.startswith("."):
                    self._log(f"repository: skipped {d.name} (not a NAME/ directory)")
                continue
            for v in sorted(d.iterdir()):
                if v.is_dir() and VERSION.fullmatch(v.name):
                    found[(d.name, int(v.name))] = v
                elif not v.name.startswith("."):
                    self._log(f"repository: skipped {d.name}/{v.name} (not a VERSION/ directory)")
        loaded, unloaded, failed = [], [], {}
        for (name, ver), path in found.items():
            try:
                digest = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
            except OSError:
                digest = ""
            with self.lock:
                cur = self.models.get(name, {}).get(ver)
            if cur is not None and cur.extra["digest"] == digest:
                continue
            try:
                self.add(Bundle.load(path), name, ver, digest)
            except NmcError as e:
                failed[f"{name}/{ver}"] = e.one_line()
                self._log(f"repository: {name}/{ver} not loaded: {e.one_line()}")
                continue
            loaded.append(f"{name}/{ver}")
            self._log(f"repository: loaded {name} version {ver}")
        with self.lock:
            for name in list(self.models):
                for ver in list(self.models[name]):
                    if (name, ver) not in found:
                        self.retired.append(self.models[name].pop(ver))
                        unloaded.append(f"{name}/{ver}")
                        self._log(f"repository: unloaded {name} version {ver} (open sessions run on)")
                if not self.models[name]:
                    del self.models[name]
        self._reap()
        return {"loaded": loaded, "unloaded": unloaded, "failed": failed}

    def _reap(self) -> None:
        """Close the pools of unloaded versions once their last session ended."""
        with self.lock:
            keep = []
            for m in self.retired:
                pools = m.extra["pools"]
                if all(p.idle for p in pools.values()):
                    for p in pools.values():
                        p.close()
                else:
                    keep.append(m)
            self.retired = keep

    # -------------------------------------------------------------- lookups
    def get(self, name: str | None, version: int | None) -> ServedModel:
        """The model a client asks for; ``LookupError`` (with what there is) otherwise."""
        with self.lock:
            if name is None:
                if len(self.models) != 1:
                    raise LookupError(f"name a model: this server serves {self.listing() or 'no models'}")
                name = next(iter(self.models))
            versions = self.models.get(name)
            if not versions:
                raise LookupError(f"no model '{name}' here (models: {self.listing() or 'none'})")
            if version is None:
                return versions[max(versions)]
            if version not in versions:
                raise LookupError(f"model '{name}' has no version {version} (versions: "
                                  f"{', '.join(map(str, sorted(versions)))})")
            return versions[version]

    def listing(self) -> str:
        with self.lock:
            return ", ".join(f"{n} (versions {', '.join(map(str, sorted(v)))})" for n, v in sorted(self.models.items()))

    def pool(self, model: ServedModel, device: str) -> DevicePool:
        """The pool serving ``model`` on ``device`` (made on first use)."""
        with self.lock:
            pools = model.extra["pools"]
            if device not in pools:
                g = model.bundle.graph
                pools[device] = DevicePool(lambda: model.bundle.device(device),
                                           {k: tuple(g.shape_out(k)) for k in g.inputs}, **self.pool_options)
            return pools[device]

    def session_closed(self) -> None:
        self._reap()

    def stats(self) -> dict:
        """Per served model and device: sessions, slots, waiting sessions, busy devices."""
        with self.lock:
            return {f"{n}/{v}": {d: p.stats() for d, p in m.extra["pools"].items()}
                    for n, vs in self.models.items() for v, m in vs.items()}

    def refuse_new(self) -> None:
        """No new sessions anywhere (server stopping); open ones run on."""
        with self.lock:
            for vs in self.models.values():
                for m in vs.values():
                    for p in m.extra["pools"].values():
                        p.refuse_new()

    def close(self) -> None:
        with self.lock:
            ms = [m for vs in self.models.values() for m in vs.values()] + self.retired
            self.models, self.retired = {}, []
        for m in ms:
            for p in m.extra["pools"].values():
                p.close()
