"""Tenants: who may use a server, and how much.

A tenant is a token with quotas: at most ``max_sessions`` sessions at once and
``max_events_per_s`` input events per second (all its sessions together).
Tokens come from a file (``nmc serve --token-file FILE``) or from the
environment (``NMC_TOKEN``: one tenant, ``default``, without quotas); in
production never from the command line, where other local users can read it
in the process list. The file is TOML::

    [tenants.alice]
    token = "a long random secret"      # required, at least 16 characters
    max_sessions = 8                    # optional (default: no limit)
    max_events_per_s = 2_000_000        # optional (default: no limit)

Only these keys are read (anything else is refused with its name); the file
selects no code. A client over its session quota is answered ERROR E_BUSY
("tenant 'alice' has 8 sessions open, its quota"); a client over its event
rate is *slowed*, not cut: the server stops reading its socket until the
tenant's token bucket has room (back-pressure, like a full queue), so nothing
is dropped.
"""
from __future__ import annotations

import hmac
import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nmc.errors import ConfigError, ServerBusyError

ENV_TOKEN = "NMC_TOKEN"
_KEYS = {"token", "max_sessions", "max_events_per_s"}
MIN_TOKEN_CHARS = 16


@dataclass
class Tenant:
    name: str
    token: str
    max_sessions: int | None = None
    max_events_per_s: float | None = None
    clock: object = time.monotonic
    sleep: object = time.sleep
    sessions: int = 0
    events: int = 0
    throttled_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _level: float = 0.0  # events the bucket still allows now
    _t: float | None = None

    def open_session(self) -> None:
        """Count a new session (ServerBusyError over ``max_sessions``)."""
        with self._lock:
            if self.max_sessions is not None and self.sessions >= self.max_sessions:
                raise ServerBusyError(f"tenant '{self.name}' has {self.sessions} sessions open, its quota",
                                      limit=self.max_sessions, actual=self.sessions,
                                      hint="close a session first, or ask the operator for a larger quota")
            self.sessions += 1

    def close_session(self) -> None:
        with self._lock:
            self.sessions -= 1

    def wait_for(self, n: int, stop=None) -> float:
        """Take ``n`` events from the token bucket (capacity: one second's events),
        waiting until it has room; returns the seconds waited. ``stop`` (an Event)
        ends the wait early."""
        self.events += n
        if not self.max_events_per_s:
            return 0.0
        rate = float(self.max_events_per_s)
        waited = 0.0
        with self._lock:
            now = self.clock()
            if self._t is None:
                self._t, self._level = now, rate
            self._level = min(rate, self._level + (now - self._t) * rate)
            self._t = now
            self._level -= n  # may go negative: a frame larger than a second's events waits longer
            deficit = -self._level
        if deficit > 0:
            waited = deficit / rate
            self.throttled_s += waited
            end = self.clock() + waited
            while (left := end - self.clock()) > 0 and not (stop is not None and stop.is_set()):
                self.sleep(min(left, 0.05))
        return waited


def _tenant(name: str, d, path) -> Tenant:
    if not isinstance(d, dict):
        raise ConfigError(f"[tenants.{name}] must be a table", path=path)
    unknown = set(d) - _KEYS
    if unknown:
        raise ConfigError(f"[tenants.{name}] has unknown key '{sorted(unknown)[0]}'", path=path,
                          hint=f"keys: {', '.join(sorted(_KEYS))}")
    tok = d.get("token")
    if not isinstance(tok, str) or len(tok) < MIN_TOKEN_CHARS:
        raise ConfigError(f"[tenants.{name}] needs a token of at least {MIN_TOKEN_CHARS} characters", path=path,
                          hint="generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    q = {}
    for k in ("max_sessions", "max_events_per_s"):
        v = d.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ConfigError(f"[tenants.{name}] {k} must be a number > 0, got {v!r}", path=path)
        q[k] = v
    return Tenant(name, tok, int(q["max_sessions"]) if q["max_sessions"] else None, q["max_events_per_s"])


def load_tenants(path) -> dict[str, Tenant]:
    """Tenants of a ``--token-file`` (module docstring); ConfigError naming the file otherwise."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf8"))
    except OSError as e:
        raise ConfigError(f"cannot read the token file ({e.strerror or e})", path=p) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"the token file is not valid TOML ({e})", path=p) from None
    if set(data) - {"tenants"} or not isinstance(data.get("tenants"), dict) or not data["tenants"]:
        raise ConfigError("the token file must hold [tenants.NAME] tables and nothing else", path=p,
                          hint="see `nmc serve --help`")
    out = {n: _tenant(n, d, p) for n, d in data["tenants"].items()}
    toks = [t.token for t in out.values()]
    if len(set(toks)) != len(toks):
        raise ConfigError("two tenants share a token", path=p, hint="give each tenant its own token")
    return out


def tenants_from(token: str | None = None, token_file=None, environ=None) -> dict[str, Tenant] | None:
    """The tenants of a server: ``token_file``, else ``token``, else ``$NMC_TOKEN``; None: no token."""
    if token_file is not None:
        return load_tenants(token_file)
    tok = token if token is not None else (os.environ if environ is None else environ).get(ENV_TOKEN) or None
    return {"default": Tenant("default", tok)} if tok else None


def authenticate(tenants: dict[str, Tenant], token: str | None) -> Tenant | None:
    """The tenant whose token this is (each compared in constant time), or None."""
    given = (token or "").encode("utf8", "surrogatepass")
    found = None
    for t in tenants.values():  # no early exit: the time does not tell which tenant matched
        if hmac.compare_digest(given, t.token.encode("utf8", "surrogatepass")):
            found = t
    return found
