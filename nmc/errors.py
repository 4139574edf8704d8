"""Typed errors of nmc, all under one root, :class:`NmcError`.

Every error a user can cause names what went wrong (the node, file, option or
limit), the actual value where there is one, and a concrete fix. The CLI
prints :meth:`NmcError.one_line` as ``error: ...`` and exits with
:attr:`NmcError.exit_code`; tracebacks only appear with ``--debug``.
Programming errors inside nmc are *not* NmcErrors and keep their traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NmcError(Exception):
    """Root of every error nmc raises for bad input or an impossible request.

    Parameters
    ----------
    message: what went wrong, in one sentence.
    node: the graph node concerned (its name is its identity everywhere).
    path: the file concerned.
    limit, actual: the limit that was exceeded and the value found.
    hint: a concrete fix the user can apply.
    """

    exit_code = 2

    def __init__(self, message: str, *, node: str | None = None, path: str | None = None,
                 limit: Any = None, actual: Any = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.node = node
        self.path = str(path) if path is not None else None
        self.limit = limit
        self.actual = actual
        self.hint = hint

    def one_line(self) -> str:
        parts = []
        if self.node is not None:
            parts.append(f"node '{self.node}': ")
        if self.path is not None:
            parts.append(f"{self.path}: ")
        parts.append(self.message)
        known = [f"{k} {v}" for k, v in (("limit", self.limit), ("actual", self.actual)) if v is not None]
        if known:
            parts.append(f" ({', '.join(known)})")
        if self.hint:
            parts.append(f"; fix: {self.hint}")
        return "".join(parts).replace("\n", " ")

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.one_line()


class InputFileError(NmcError):
    """A model, data or bundle file is missing, unreadable, truncated or corrupt."""


class UntrustedPickleError(NmcError):
    """A file needs arbitrary-code unpickling and the user did not opt in."""


class UnsupportedNodeError(NmcError):
    """A node type (NIR, extension, ONNX operator, torch module) nmc cannot handle here."""


class UnknownNodeTypeError(InputFileError, UnsupportedNodeError):
    """A file names a node type outside nmc's allow-list of node classes (both a bad
    input file and an unsupported node, so either ``except`` catches it)."""


class ShapeError(NmcError):
    """Array or tensor shapes do not agree (graph edges, inputs, parameters)."""


class GraphError(NmcError):
    """A graph fails verification: dangling edge, missing input/output, bad parameter."""


class PlasticityError(GraphError):
    """A plasticity annotation (:mod:`nmc.plasticity`) is malformed, or sits where no rule can run."""


class OptionError(NmcError):
    """A compile/run option, pass option or pipeline text is invalid."""


class ConfigError(NmcError):
    """A hardware spec (hw_configs/*.toml or --hw override) is invalid."""


class PassError(NmcError):
    """A pass failed or left the graph invalid; names the pass and node."""

    def __init__(self, message: str, *, pass_name: str | None = None, reproducer: str | None = None, **kw):
        super().__init__(message, **kw)
        self.pass_name = pass_name
        self.reproducer = reproducer

    def one_line(self) -> str:
        s = super().one_line()
        if self.pass_name:
            s = f"pass '{self.pass_name}': {s}"
        if self.reproducer:
            s += f" (reproducer written to {self.reproducer})"
        elif self.pass_name:
            s += " (compile with --dump-ir DIR to write a reproducer there)"
        return s


@dataclass(frozen=True)
class Violation:
    """One violated design rule: which node, which limit, how far over, how to fix."""

    rule: str
    node: str
    limit: Any
    actual: Any
    hint: str
    detail: str = ""

    def line(self) -> str:
        d = f" {self.detail}" if self.detail else ""
        return f"{self.rule}: node '{self.node}'{d}: limit {self.limit}, actual {self.actual}; fix: {self.hint}"


class DesignRuleError(NmcError):
    """The network does not fit the target; carries every violation at once."""

    def __init__(self, violations: list[Violation], *, target: str = "", report: str | None = None):
        self.violations = list(violations)
        self.target = target
        self.report = report
        first = self.violations[0] if self.violations else None
        msg = (f"network does not fit {target or 'the target'}: {len(self.violations)} design-rule violation(s); "
               + ("first: " + first.line() if first else ""))
        super().__init__(msg)

    def one_line(self) -> str:
        s = self.message
        if self.report:
            s += f" (full report: {self.report})"
        return s


class FidelityError(NmcError):
    """The compiled program does not reproduce the float reference (dead or saturated
    layers, low agreement) and the compile was asked to be ``strict``."""


class DeviceError(NmcError):
    """A device could not run the program (missing vendor package, no board, failed run)."""


class ServerBusyError(DeviceError):
    """A server (``nmc serve``) has no free device and its wait queue is full, or is at its
    connection limit: ``retry_after`` says after how many seconds to try again (None: unknown)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class DistributedError(NmcError):
    """The distributed engine (Ray, the ``distributed`` extra) is missing, cannot start or join a
    cluster, or a sweep/fit/sharded evaluation cannot go on."""


class EventFormatError(NmcError):
    """A malformed event array or event packet (runtime input/transport)."""


@dataclass
class Warnings:
    """Collects user-facing warnings during a compile (go into the reports)."""

    items: list[dict] = field(default_factory=list)

    def add(self, message: str, *, node: str | None = None, source: str = "") -> None:
        self.items.append({"message": message, "node": node, "source": source})
