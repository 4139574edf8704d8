"""``nmc.connect``: a client for ``nmc serve`` with the local Session's interface.

``Client(host, port, token=None, device=None, window=None, model=None,
model_version=None)`` connects, says HELLO (with the token and, for a model
repository server, the model's name and version: null picks the only model /
the newest version) and OPENs a session; then, like
:class:`~nmc.runtime.session.Session`:

* ``step(events)`` sends one window and waits for its output events;
* ``stream(windows)`` pipelines: a sender thread writes windows (``batch``
  windows per EVENTS frame) as fast as the server's back-pressure lets it,
  while output windows are yielded in order as they arrive;
* ``run_dense(inputs)`` streams dense ``(T, *shape)`` arrays and returns dense
  float64 outputs, like ``Session.run_dense``;
* ``reset()``, ``stats()`` return the server's counters; ``close()`` ends the
  session and returns the final counters;
* ``modulate(value)`` sets the third factor of the remote device's learning
  rules (a MODULATE frame, in order with the windows; ``takes_modulator`` says
  whether the device has one), so a
  :class:`~nmc.runtime.closed_loop.ClosedLoop` runs over a client as over a
  local session: ``connect(host, port, env="CartPole-v1")`` returns one.

``counters`` holds the client's own ``sent`` (input events written) and
``received`` (output events read); at close they equal the server's
``received`` and ``sent``. ``tls`` (an ``ssl.SSLContext``) speaks TLS to a server started with
``--tls-cert``/``--tls-key``. Server-side errors raise
:class:`~nmc.errors.DeviceError` with the server's one-line message; a busy
server (at its connection limit, or no free device and a full wait queue)
raises :class:`~nmc.errors.ServerBusyError`, whose ``retry_after`` says how
many seconds to wait before retrying (None: unknown); a server speaking
another protocol version raises :class:`~nmc.runtime.protocol.VersionMismatch`.
"""
from __future__ import annotations

import socket
import threading
from typing import Iterable, Iterator

import numpy as np

from nmc.errors import DeviceError, EventFormatError, NmcError, OptionError, ServerBusyError

from . import events as ev
from . import protocol as P
from nmc.iomap import IOMap, validate_inputs

from .session import dense_windows
from .tlsstream import TLSStream

_EMPTY = ev.empty()


class Client:
    def __init__(self, host: str, port: int, token: str | None = None, device: str | None = None,
                 window: int | None = None, timeout: float = 60.0, model: str | None = None,
                 model_version: int | None = None, tls=None):
        if isinstance(port, bool) or not isinstance(port, (int, np.integer, str)) or not str(port).isdigit() \
                or not 1 <= int(port) <= 65535:
            raise OptionError(f"port must be an integer from 1 to 65535, got {port!r}", limit="1..65535", actual=port,
                              hint="give the port `nmc serve` printed, e.g. 127.0.0.1:7878")
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, ValueError) as e:
            raise DeviceError(f"cannot connect to {host}:{port} ({e})", hint="is `nmc serve` running there?") from None
        if tls is not None:  # an ssl.SSLContext (client side): the server's certificate is verified by it
            try:
                self.sock = TLSStream(tls.wrap_socket(self.sock, server_hostname=host))
            except (OSError, ValueError) as e:
                self.sock.close()
                raise DeviceError(f"TLS handshake with {host}:{port} failed ({e})",
                                  hint="does the server use TLS (--tls-cert), and does your CA file sign its certificate?") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        self.frames = P.FrameReader(self.sock)   # every frame from the server is read through it
        self.counters = {"sent": 0, "received": 0, "windows": 0}
        try:
            req = {"version": P.VERSION, "token": token}
            if model is not None or model_version is not None:  # absent for a single-bundle server (as before)
                req.update(model=model, model_version=model_version)
            self._send(P.HELLO, P.json_payload(req))
            hello = P.parse_json(self._expect(P.HELLO)[1])
            P.check_version(hello, side="client")
            self.target, self.devices = hello.get("target"), hello.get("devices")
            self.model, self.model_version = hello.get("model"), hello.get("model_version")
            self._send(P.OPEN, P.json_payload({"device": device, "window": window}))
            info = P.parse_json(self._expect(P.OPEN)[1])
            self.io = IOMap.of_shapes({k: tuple(v) for k, v in info["input_shapes"].items()},
                                      {k: tuple(v) for k, v in info["output_shapes"].items()})
            self.window, self.device_name = int(info["window"]), info["device"]
            self.takes_modulator = info.get("modulator") is True
        except BaseException:
            self.sock.close()
            self.closed = True
            raise
        self.inputs, self.outputs = self.io.input_names, self.io.output_names
        self._out_sizes = [self.io.size(k, "out") for k in self.outputs]
        self._in_sizes = [self.io.size(k) for k in self.inputs]
        self._input_index = {k: i for i, k in enumerate(self.inputs)}
        self.seq = 0

    # ------------------------------------------------------------------ frames
    def _send(self, ftype, payload=b"", seq=0, flags=0):
        try:
            P.send_frame(self.sock, ftype, payload, seq, flags)
        except OSError as e:
            raise DeviceError(f"connection to the server lost while sending ({e})") from None

    def _read(self):
        try:
            ft, flags, payload, seq = self.frames.frame()
        except (OSError, ConnectionError) as e:
            raise DeviceError(f"connection to the server lost ({e})") from None
        if ft == P.ERROR:  # the server closes the connection after it: the session is over
            self.closed = True
            self.sock.close()
            code, msg = P.parse_error(payload)
            if code == P.E_BUSY:
                raise ServerBusyError(f"server error {code} ({P.ERROR_NAMES[code]}): {msg}",
                                      retry_after=seq / 1000 if seq else None,
                                      hint="retry after the time the server names, or ask for another device")
            raise DeviceError(f"server error {code} ({P.ERROR_NAMES.get(code, '?')}): {msg}")
        return ft, flags, payload, seq

    def _expect(self, ftype, seq=None):
        ft, flags, payload, s = self._read()
        if ft != ftype or (seq is not None and s != seq):
            raise DeviceError(f"server sent {P.NAMES[ft]} (seq {s}) where {P.NAMES[ftype]}"
                              + (f" (seq {seq})" if seq is not None else "") + " was due")
        return flags, payload, s

    def _table(self, events) -> tuple[bytes, int]:
        if not isinstance(events, dict):
            if len(self.inputs) != 1:
                raise EventFormatError(f"the served bundle has inputs {self.inputs}: pass {{node: events}}")
            events = {self.inputs[0]: events}
        entries = []
        for name, e in events.items():
            if name not in self.inputs:
                raise EventFormatError("not an input of the served bundle", node=name, hint=f"inputs: {self.inputs}")
            entries.append((self.inputs.index(name), *ev.window_events(e, self.window, self.io.size(name), node=name)))
        return P.pack_table(entries), sum(len(e) for _, e, _ in entries)

    def _outputs(self, flags, payload) -> list[dict[str, np.ndarray]]:
        tables = P.unpack_tables(payload, flags, len(self.outputs), self._out_sizes, self.window)
        names = self.outputs
        res = [dict(zip(names, tables.window(w).values())) for w in range(tables.k)]
        self.counters["received"] += tables.total
        self.counters["windows"] += tables.k
        return res

    # --------------------------------------------------------------- session
    def step(self, events=None) -> dict[str, np.ndarray]:
        """Send one window; returns ``{output: events}`` (t relative to the window)."""
        body, n = self._table(events if events is not None else {})
        self._send(P.EVENTS, body, self.seq)
        self.counters["sent"] += n
        flags, payload, _ = self._expect(P.OUTPUT, self.seq)
        self.seq += 1
        (res,) = self._outputs(flags, payload)
        return res

    def stream(self, windows: Iterable, batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Yield one output dict per input window, pipelined (see the module docstring).

        The iterable is consumed by a sender thread; an error in it (or a bad
        window) is raised here after the outputs of the windows already sent.
        """
        if batch < 1:
            raise EventFormatError(f"batch must be >= 1, got {batch}")
        err: list[BaseException] = []
        stop = threading.Event()
        base = self.seq

        def sender():
            seq, pend, size = base, [], 0
            try:
                for w in windows:
                    if stop.is_set():
                        break
                    pend.append(w if w is not None else {})
                    size += self._bound(pend[-1])
                    if len(pend) == batch or size > P.MAX_PAYLOAD // 2:
                        seq = self._flush(pend, seq)
                        pend, size = [], 0
                if pend:
                    seq = self._flush(pend, seq)
            except BaseException as e:  # reported to the consumer after the windows already sent
                err.append(e)
            finally:
                try:
                    self._send(P.STATS)  # end marker: answered after the last OUTPUT
                except NmcError as e:
                    err.append(e)

        t = threading.Thread(target=sender, daemon=True, name="nmc-client-sender")
        t.start()
        done = False
        try:
            while not done:
                ft, flags, payload, s = self._read()
                if ft == P.STATS:
                    done = True
                elif ft != P.OUTPUT or s != self.seq:
                    raise DeviceError(f"server sent {P.NAMES[ft]} (seq {s}) where OUTPUT (seq {self.seq}) was due")
                else:
                    for r in self._outputs(flags, payload):
                        self.seq += 1
                        yield r
        finally:
            stop.set()
            try:  # the consumer stopped early (or an error): read and drop the rest up to the end marker
                while not done:
                    ft, flags, payload, s = self._read()
                    done = ft == P.STATS
                    if ft == P.OUTPUT:
                        self.seq += len(self._outputs(flags, payload))
            except NmcError:
                pass
            t.join(self.sock.gettimeout())
            if t.is_alive():  # the input iterable blocks: give up on this connection rather than wait forever
                self.closed = True
                self.sock.close()
                raise DeviceError("the input windows stopped coming while the stream was being ended; "
                                  "connection closed", hint="end the input iterable when you stop consuming")
        if err:
            raise err[0]

    def _bound(self, w) -> int:
        """Bytes a window takes on the wire at most (12 per event and per-node headers)."""
        if isinstance(w, dict):
            return 6 + sum(8 + 12 * len(e) for e in w.values() if hasattr(e, "__len__"))
        return 14 + 12 * len(w) if hasattr(w, "__len__") else 14

    def _flush(self, wins: list, seq: int) -> int:
        """One EVENTS frame of the windows ``wins``: each input node's events of all of them
        checked and encoded in one pass (:func:`~nmc.runtime.protocol.pack_tables`); windows that
        are not event arrays of known input nodes go one by one through :meth:`_table`, which
        converts or refuses them."""
        k, names, per = len(wins), self.inputs, None
        if k > 1:
            per = [[] for _ in names]
            for w in wins:
                if not isinstance(w, dict):
                    w = {names[0]: w} if len(names) == 1 else None
                if w is None or any(name not in self._input_index or not isinstance(e, np.ndarray)
                                    or e.dtype != ev.EVENT_DTYPE or e.ndim != 1 for name, e in w.items()):
                    per = None
                    break
                for i, name in enumerate(names):
                    per[i].append(w.get(name, _EMPTY))
        if per is None:
            tables, n = [], 0
            for w in wins:
                body, m = self._table(w)
                tables.append(body)
                n += m
            parts, flags = P.pack_window_parts(tables)
        else:
            bounds = [np.cumsum([0] + [len(e) for e in p]) for p in per]
            parts, flags, counts = P.pack_tables([ev.join(p) for p in per], k, self.window,
                                                 self._in_sizes, bounds=bounds, nodes=names)
            n = sum(counts)
        self._send(P.EVENTS, parts, seq, flags)
        self.counters["sent"] += n
        return seq + k

    def run_dense(self, inputs: dict[str, np.ndarray], batch: int = 1) -> dict[str, np.ndarray]:
        """Stream dense ``(T, *shape)`` inputs; dense float64 outputs ``(T', *shape)``,
        T' = T rounded up to whole windows (like ``Session.run_dense``)."""
        inputs = validate_inputs(self.io, inputs, stream=True)
        T = max(v.shape[0] for v in inputs.values())
        outs: dict[str, list] = {k: [] for k in self.outputs}
        for r in self.stream(dense_windows(inputs, self.window, T), batch=batch):
            for k, e in r.items():
                outs[k].append(e)
        return {k: ev.to_dense(ev.concat(v, self.window), len(v) * self.window, self.io.output(k).shape,
                               dtype=np.float64, node=k) for k, v in outs.items()}

    def modulate(self, value, wait: bool = False) -> None:
        """Set the third factor (a reward, or the error per post neuron) of the remote device's
        learning rules from the next window on (a MODULATE frame, not answered: the server's refusal
        arrives in place of the next answer). ``wait``: ask for the counters after it, so that a
        refusal is raised here. A device without a third factor is refused here, before sending."""
        if not self.takes_modulator:
            raise DeviceError(f"device '{self.device_name}' on the server runs no learning rule that takes a "
                              "third factor", hint="serve a network with a Plasticity annotation "
                              "(third_factor='reward' or 'error') compiled for the reference target")
        self._send(P.MODULATE, P.modulate_payload(value))
        if wait:
            self.stats()

    def stats(self) -> dict:
        """The server's counters for this session."""
        self._send(P.STATS)
        return P.parse_json(self._expect(P.STATS)[1])

    def reset(self) -> dict:
        """Drop the session's state on the server; returns its counters."""
        self._send(P.RESET)
        return P.parse_json(self._expect(P.STATS)[1])

    def close(self) -> dict:
        """End the session; returns the server's final counters."""
        if self.closed:
            return {}
        try:
            self._send(P.CLOSE)
            return P.parse_json(self._expect(P.STATS)[1])
        finally:
            self.closed = True
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.close()
        except NmcError:
            if exc[0] is None:
                raise


def connect(host: str, port: int, token: str | None = None, device: str | None = None,
            window: int | None = None, timeout: float = 60.0, model: str | None = None,
            model_version: int | None = None, tls=None, *, env=None, env_options: dict | None = None):
    """``nmc.connect``: a :class:`Client` session on an ``nmc serve`` server (``model``,
    ``model_version``: which model of a repository server; ``tls``: an
    ``ssl.SSLContext`` for a server started with ``--tls-cert``, e.g.
    ``ssl.create_default_context(cafile=...)``). With ``env`` (as ``nmc.open``'s), a
    :class:`~nmc.runtime.closed_loop.ClosedLoop` driving that environment with the remote
    device, its window one action."""
    if env is None:
        if env_options:
            raise OptionError("env_options given without env", hint="pass env= (an environment name)")
        return Client(host, port, token=token, device=device, window=window, timeout=timeout, model=model,
                      model_version=model_version, tls=tls)
    from .closed_loop import ClosedLoop, env_config

    cfg = env_config(env, **(env_options or {}))
    if window is not None and window != cfg.steps_per_action:
        raise OptionError(f"window {window} given with env: the window is one action, {cfg.steps_per_action} "
                          "timesteps (steps_per_action)", hint="leave window out, or set env_options steps_per_action")
    client = Client(host, port, token=token, device=device, window=cfg.steps_per_action, timeout=timeout,
                    model=model, model_version=model_version, tls=tls)
    try:
        return ClosedLoop(client, cfg)
    except BaseException:
        client.close()
        raise
