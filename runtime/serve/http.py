"""The operations endpoint of ``nmc serve --http-port``: plain HTTP, GET only.

* ``/metrics``: Prometheus exposition (:mod:`.metrics`);
* ``/healthz``: 200 ``ok`` while the process runs and its accept loop is up
  (a liveness probe), else 503;
* ``/readyz``: 200 ``ready`` while new sessions are taken (serving, not
  draining, at least one model loaded), else 503 (a readiness probe: a load
  balancer stops sending clients during a drain).

Anything else is 404. It binds to 127.0.0.1 unless ``--http-host`` says
otherwise; it exposes counts, never tokens, inputs or outputs.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nmc.errors import OptionError


class _Handler(BaseHTTPRequestHandler):
    server_version = "nmc-serve"

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server.nmc_server
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, code, ctype = srv.metrics.text(), 200, "text/plain; version=0.0.4; charset=utf-8"
        elif path == "/healthz":
            ok = srv.healthy
            body, code, ctype = (b"ok\n" if ok else b"unhealthy\n"), 200 if ok else 503, "text/plain"
        elif path == "/readyz":
            ok = srv.ready
            body, code, ctype = (b"ready\n" if ok else b"not ready\n"), 200 if ok else 503, "text/plain"
        else:
            body, code, ctype = b"not found\n", 404, "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # scrapes are not logged
        pass


class OpsEndpoint:
    """``OpsEndpoint(server, host, port).start()``; ``address``; ``stop()``."""

    def __init__(self, server, host: str = "127.0.0.1", port: int = 0):
        from .metrics import Metrics

        if server.metrics is None:
            server.metrics = Metrics(server)
        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), _Handler)
        except (OSError, OverflowError, ValueError) as e:
            raise OptionError(f"cannot listen on {host}:{port} for --http-port ({getattr(e, 'strerror', None) or e})",
                              hint="pick another --http-port (0 = any free port)") from None
        self.httpd.daemon_threads = True
        self.httpd.nmc_server = server
        self._t: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def start(self) -> "OpsEndpoint":
        self._t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                                   name="nmc-http")
        self._t.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
