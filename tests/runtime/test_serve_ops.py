"""Operations of `nmc serve`: Prometheus metrics scraped over HTTP, health and
readiness, JSON logs, and the graceful drain on SIGTERM under load (no session
cut mid-window, nothing lost). Loopback only, bounded in time."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nmc
from nets import recurrent_cubalif, spikes
from nmc.errors import DeviceError
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.serve.http import OpsEndpoint
from nmc.runtime.serve.repository import ModelRepository
from nmc.runtime.serve.server import RepositoryServer
from nmc.runtime.session import dense_windows
from serve_proc import ServeProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    r = tmp_path_factory.mktemp("repo")
    nmc.compile(recurrent_cubalif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero",
                output=r / "rec" / "1")
    return r


def _get(addr, path):
    try:
        with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_health_and_readiness(repo_dir):
    srv = RepositoryServer(ModelRepository(repo_dir, devices=1, queue=2, queue_timeout=20), port=0)
    srv.start()
    ops = OpsEndpoint(srv).start()
    try:
        assert _get(ops.address, "/healthz") == (200, "ok\n") and _get(ops.address, "/readyz") == (200, "ready\n")
        assert _get(ops.address, "/nope")[0] == 404
        x = spikes((6,), T=40, seed=1, p=0.4)
        c = nmc.connect(*srv.address, model="rec", window=4)
        out = c.run_dense({"input": x})["output"]
        waiting = threading.Thread(target=lambda: nmc.connect(*srv.address, model="rec").close())
        waiting.start()
        lab = (("model", "rec/1"),)
        for _ in range(100):  # the second session waits in the queue: bounded wait until it is counted
            m = _samples(_get(ops.address, "/metrics")[1])
            if m[("nmc_queue_length", lab)] == 1:
                break
            time.sleep(0.05)
        assert m[("nmc_queue_length", lab)] == 1 and m[("nmc_sessions", lab)] == 1
        assert m[("nmc_device_utilisation", lab)] == 1.0
        assert m[("nmc_events_in_total", lab)] == int(x.sum())
        assert m[("nmc_events_out_total", lab)] == int(np.count_nonzero(out))
        assert m[("nmc_windows_total", lab)] == 10 == m[("nmc_window_seconds_count", lab)]
        assert m[("nmc_estimated_energy_joules_total", lab)] > 0 and m[("nmc_ready", ())] == 1
        c.close()
        waiting.join(20)
        srv.stop()
        assert _get(ops.address, "/readyz") == (503, "not ready\n")  # draining / stopped: no new clients
        assert _get(ops.address, "/healthz")[0] == 503
    finally:
        ops.stop()
        srv.stop()


def test_json_logs(repo_dir, tmp_path):
    log = tmp_path / "serve.log"
    with ServeProcess(repo_dir, "--log-format", "json", log_path=log) as srv:
        with nmc.connect(*srv.address, model="rec") as c:
            c.step({})
        with pytest.raises(DeviceError):
            nmc.connect(*srv.address, model="nope")
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    assert lines and all({"time", "level", "logger", "msg"} <= set(r) for r in lines)
    assert any("loaded rec version 1" in r["msg"] for r in lines)
    assert any("no model 'nope'" in r["msg"] for r in lines)


def _pipelined(addr, x, window, got, stats, errors, started):
    """Stream windows as fast as back-pressure allows (a sender thread) and keep every
    OUTPUT window and the final STATS the server sends when it drains."""
    try:
        c = nmc.connect(*addr, model="rec", window=window)
        wins = list(dense_windows({"input": x}, window))

        def send():
            try:
                for k, w in enumerate(wins):
                    body, _ = c._table(w)
                    c._send(P.EVENTS, body, k)
            except (DeviceError, OSError):
                pass  # the server stopped reading: the drain

        threading.Thread(target=send, daemon=True).start()
        while True:
            ft, flags, payload, seq = P.read_frame(c.sock)
            if ft == P.OUTPUT:
                assert seq == len(got)
                got += [r["output"] for r in c._outputs(flags, payload)]
                started.set()
            elif ft == P.STATS:
                stats.update(P.parse_json(payload))
            elif ft == P.ERROR:
                stats["error"] = P.parse_error(payload)
                break
        c.sock.close()
    except BaseException as e:
        errors.append(e)


def test_sigterm_drains_without_cutting_a_window(repo_dir):
    xs = [spikes((6,), T=6000, seed=s, p=0.3) for s in range(4)]
    window = 2
    with ServeProcess(repo_dir, "--max-batch", "4", "--drain-timeout", "20") as srv:
        runs = [([], {}, []) for _ in xs]
        started = [threading.Event() for _ in xs]
        ts = [threading.Thread(target=_pipelined, args=(srv.address, x, window, *r, s))
              for x, r, s in zip(xs, runs, started)]
        for t in ts:
            t.start()
        for s in started:
            assert s.wait(60)
        srv.p.send_signal(signal.SIGTERM)  # mid-load: every client has windows in flight
        for t in ts:
            t.join(60)
        assert srv.p.wait(30) == 0
    for x, (got, stats, errors) in zip(xs, runs):
        assert not errors, errors
        assert stats["error"][0] == P.E_SHUTDOWN
        n = len(got)
        assert 0 < n < len(xs[0]) // window  # cut short by the drain, not finished
        assert stats["windows"] == n and stats["received"] == stats["processed"] and stats["rejected"] == 0
        with nmc.open(repo_dir / "rec" / "1", window=window) as s:
            want = s.run_dense({"input": x[: n * window]})["output"]
        np.testing.assert_array_equal(ev.to_dense(ev.concat(got, window), n * window, (want.shape[1],)), want)


def test_ready_as_soon_as_it_listens(repo_dir):
    """nmc serve prints its address before its accept loop starts; connections made then wait
    in the backlog, so the server is up and ready from the moment it listens (a probe in
    that gap got 503), and neither once stopped."""
    srv = RepositoryServer(ModelRepository(repo_dir, devices=1), port=0)
    try:
        assert srv.healthy and srv.ready  # listening, accept loop not started yet
        c = socket.create_connection(srv.address, timeout=5)  # queued in the backlog
        srv.start()
        with nmc.connect(*srv.address, model="rec"):
            pass
        c.close()
        srv.stop()
        assert not srv.ready and not srv.healthy
    finally:
        srv.stop()
