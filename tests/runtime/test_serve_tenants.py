"""Tenants (per-token session and event-rate quotas, tokens from a file or the
environment) and TLS through the ssl module (a self-signed certificate made
here with openssl). Loopback only, bounded in time."""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import ff_lif, spikes
from nmc.cli import main
from nmc.errors import ConfigError, DeviceError, ServerBusyError
from nmc.runtime import protocol as P
from nmc.runtime.serve.tenants import Tenant, load_tenants, tenants_from
from nmc.runtime.serve.tls import client_context, server_context
from nmc.runtime.tlsstream import TLSStream
from nmc.runtime.server import SessionServer

pytestmark = pytest.mark.timeout(180)  # the module fixture compiles a bundle: slow on a loaded machine
ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero",
                       output=tmp_path_factory.mktemp("t") / "ff.nmc")


def _file(tmp_path, text):
    f = tmp_path / "tokens.toml"
    f.write_text(text)
    return f


def test_token_file_is_parsed_and_checked(tmp_path):
    ts = load_tenants(_file(tmp_path, f'[tenants.alice]\ntoken = "{ALICE}"\nmax_sessions = 2\n'
                                      f'max_events_per_s = 1_000\n[tenants.bob]\ntoken = "{BOB}"\n'))
    assert (ts["alice"].max_sessions, ts["alice"].max_events_per_s, ts["bob"].max_sessions) == (2, 1000, None)
    for text, msg in [(f'[tenants.a]\ntoken = "{ALICE}"\nexec = "rm"\n', "unknown key 'exec'"),
                      ('[tenants.a]\ntoken = "short"\n', "at least 16 characters"),
                      (f'[tenants.a]\ntoken = "{ALICE}"\n[tenants.b]\ntoken = "{ALICE}"\n', "share a token"),
                      (f'[tenants.a]\ntoken = "{ALICE}"\nmax_sessions = 0\n', "must be a number > 0"),
                      ('token = "x"\n', "must hold [tenants.NAME] tables"),
                      ("[tenants.a\n", "not valid TOML")]:
        with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace(".", r"\.")):
            load_tenants(_file(tmp_path, text))
    assert tenants_from(None, None, environ={"NMC_TOKEN": ALICE})["default"].token == ALICE
    assert tenants_from(None, None, environ={}) is None
    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--port", "0", "--token-file",
                                  str(_file(tmp_path, '[tenants.a]\ntoken = "short"\n'))])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "16 characters" in r.output, r.output


def test_token_bucket_waits_for_the_events_over_the_rate():
    now = [0.0]
    t = Tenant("a", ALICE, max_events_per_s=1000, clock=lambda: now[0],
               sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert t.wait_for(1000) == 0.0          # a full bucket: one second's events at once
    assert t.wait_for(500) == pytest.approx(0.5)  # then at the rate
    now[0] += 10.0
    assert t.wait_for(1000) == 0.0          # refilled, but never above one second's events
    assert t.wait_for(1) == pytest.approx(0.001)
    assert t.events == 2501 and t.throttled_s == pytest.approx(0.501)


def test_session_quota_and_wrong_tokens(bundle, tmp_path):
    ts = load_tenants(_file(tmp_path, f'[tenants.alice]\ntoken = "{ALICE}"\nmax_sessions = 1\n'
                                      f'[tenants.bob]\ntoken = "{BOB}"\n'))
    srv = SessionServer(bundle, port=0, tenants=ts)
    srv.start()
    try:
        h, p = srv.address
        a = nmc.connect(h, p, token=ALICE)
        with pytest.raises(ServerBusyError, match=r"tenant 'alice' has 1 sessions open, its quota"):
            nmc.connect(h, p, token=ALICE)
        with nmc.connect(h, p, token=BOB), nmc.connect(h, p, token=BOB):  # bob has no quota
            pass
        with pytest.raises(DeviceError, match="not authorised"):
            nmc.connect(h, p, token="x" * 20)
        a.close()
        for _ in range(100):  # the server ends the session just after its final STATS
            if ts["alice"].sessions == 0:
                break
            threading.Event().wait(0.05)
        with nmc.connect(h, p, token=ALICE):
            pass
    finally:
        srv.stop()


def test_event_rate_quota_slows_the_sender_and_loses_nothing(bundle):
    ts = {"a": Tenant("a", ALICE, max_events_per_s=1000)}
    srv = SessionServer(bundle, port=0, tenants=ts)
    srv.start()
    try:
        x = spikes((8,), T=400, seed=3, p=0.7)  # ~2200 events, sent in one frame of 40 windows
        want = bundle.run({"input": x})["output"]
        with nmc.connect(*srv.address, token=ALICE, window=10) as c:
            got = c.run_dense({"input": x}, batch=40)["output"][:400]
            fin = c.close()
        np.testing.assert_array_equal(got, want)
        n = int(x.sum())
        assert fin["received"] == fin["processed"] == n == ts["a"].events
        assert ts["a"].throttled_s >= (n - 1000) / 1000 - 1e-9  # the events over one second's worth waited
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True,
                   timeout=30)
    return d / "cert.pem", d / "key.pem"


def test_tls_sessions_and_graceful_stop(bundle, cert):
    srv = SessionServer(bundle, port=0, token=ALICE, ssl_context=server_context(*cert))
    srv.start()
    try:
        h, p = srv.address
        x = spikes((8,), T=30, seed=5, p=0.4)
        with nmc.connect(h, p, token=ALICE, window=3, tls=client_context(cert[0])) as c:
            np.testing.assert_array_equal(c.run_dense({"input": x})["output"][:30], bundle.run({"input": x})["output"])
            assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises(DeviceError):  # a plain client gets no session from a TLS server
            nmc.connect(h, p, token=ALICE, timeout=5)
        with pytest.raises(DeviceError, match="TLS handshake"):  # nor a client that does not trust the certificate
            nmc.connect(h, p, token=ALICE, tls=client_context(None), timeout=5)
        c = nmc.connect(h, p, token=ALICE, tls=client_context(cert[0]))
        srv.stop(timeout=60)  # graceful: final STATS and ERROR E_SHUTDOWN, still over TLS (bounded, generous under load)
        ft, _, payload, _ = c._read()
        assert ft == P.STATS and "received" in P.parse_json(payload)
        with pytest.raises(DeviceError, match="server shutting down"):
            c._read()
        c.sock.close()
    finally:
        srv.stop()


def test_cli_refuses_a_missing_certificate(tmp_path, bundle):
    r = CliRunner().invoke(main, ["serve", str(bundle.path), "--port", "0", "--tls-cert", str(tmp_path / "no.pem"),
                                  "--tls-key", str(tmp_path / "no.key")])
    assert r.exit_code == 2 and "error: " in r.output and "cannot load the TLS certificate" in r.output, r.output


def _tls_pair(cert):
    """Two connected TLSStreams over loopback (server side, client side)."""
    lst = socket.create_server(("127.0.0.1", 0))
    got = []
    t = threading.Thread(target=lambda: got.append(server_context(*cert).wrap_socket(lst.accept()[0], server_side=True)))
    t.start()
    c = client_context(cert[0]).wrap_socket(socket.create_connection(lst.getsockname(), timeout=10),
                                            server_hostname="127.0.0.1")
    t.join(10)
    lst.close()
    return TLSStream(got[0]), TLSStream(c)


def test_tls_stream_is_full_duplex_across_threads(cert):
    """Both ends write and read at once from two threads each, as the server and the client
    do; every byte arrives in order and neither direction waits for the other (the lock is
    never held while waiting)."""
    a, b = _tls_pair(cert)
    n, size = 300, 8192
    data = {k: np.random.default_rng(k).bytes(n * size) for k in (0, 1)}
    got, errs = {0: bytearray(), 1: bytearray()}, []

    def writer(s, k):
        try:
            for i in range(n):
                s.sendall(data[k][i * size:(i + 1) * size])
        except Exception as e:  # reported below
            errs.append(e)

    def reader(s, k):
        buf = bytearray(65536)
        try:
            while len(got[k]) < n * size:
                m = s.recv_into(buf)
                if not m:
                    raise ConnectionError("EOF before the end of the stream")
                got[k] += buf[:m]
        except Exception as e:
            errs.append(e)

    ts = [threading.Thread(target=writer, args=(a, 0)), threading.Thread(target=reader, args=(b, 0)),
          threading.Thread(target=writer, args=(b, 1)), threading.Thread(target=reader, args=(a, 1))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errs, errs
    for k in (0, 1):
        assert hashlib.sha256(got[k]).digest() == hashlib.sha256(data[k]).digest()
    a.close()
    b.close()


def test_tls_stream_timeout_and_wake_by_shutdown(cert):
    a, b = _tls_pair(cert)
    b.settimeout(0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):  # nothing sent: the socket's timeout, as a blocking socket has
        b.recv(10)
    assert time.monotonic() - t0 >= 0.2
    b.settimeout(None)
    out = []
    t = threading.Thread(target=lambda: out.append(b.recv(10)))
    t.start()
    time.sleep(0.1)
    b.shutdown(socket.SHUT_RD)  # the server's graceful stop: wakes a reader waiting for data
    t.join(10)
    assert out == [b""] and not t.is_alive()
    b.sendall(b"final")  # and the write side still works: the final STATS / E_SHUTDOWN of a graceful stop
    a.settimeout(10)
    assert a.recv(5) == b"final"
    a.close()
    b.close()


def test_tls_connection_over_the_limit_gets_the_busy_answer(bundle, cert):
    srv = SessionServer(bundle, port=0, token=ALICE, ssl_context=server_context(*cert), max_connections_per_client=1)
    srv.start()
    try:
        h, p = srv.address
        with nmc.connect(h, p, token=ALICE, tls=client_context(cert[0])):
            with pytest.raises(DeviceError, match=r"server busy.*--max-connections-per-client 1"):
                nmc.connect(h, p, token=ALICE, tls=client_context(cert[0]), timeout=10)
    finally:
        srv.stop()
