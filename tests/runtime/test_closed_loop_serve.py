"""The closed loop over ``nmc serve`` (nmc.runtime.closed_loop with a nmc.connect client): the same
episodes and the same learned weights as the local loop, bit for bit; MODULATE frames checked like
every other frame (sizes, finite values, order, token); devices and sessions without a third factor
refuse it with an ERROR frame; `nmc run HOST:PORT --env NAME`."""
import socket

import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from loop_agents import SPORE, agent
from nmc.driver.cli import main
from nmc.errors import DeviceError, EventFormatError, OptionError
from nmc.plasticity import Plasticity
from nmc.runtime import events as ev
from nmc.runtime import protocol as P
from nmc.runtime.server import SessionServer
from nmc.runtime.session import Session

pytest.importorskip("gymnasium")
pytestmark = pytest.mark.timeout(120)

TOKEN = "closed-loop-token-0123"
ERROR_RULE = Plasticity(rule="stdp", third_factor="error", seed=1)


def _serve(bundle, **kw):
    """A server on an ephemeral loopback port whose sessions stay inspectable after they close."""
    made = []

    def factory(b, d, w):
        made.append(Session(b, device=d, window=w))
        return made[-1]

    srv = SessionServer(bundle, port=0, session_factory=factory, idle_timeout=10, **kw)
    srv.start()
    return srv, made


def _learned(device):
    lr = device.sim.learners["w"]
    return {k: getattr(lr, k).numpy().copy() for k in ("w", "baseline", "modulator")}


@pytest.mark.parametrize("reward", ["step", "episode"])
def test_loop_over_tcp_equals_the_local_loop_bit_for_bit(reward):
    b = agent(SPORE)
    opts = {"max_steps": 25, "reward": reward, "seed": 3}
    with nmc.open(b, env="CartPole-v1", env_options=opts) as loop:
        local = loop.run(3)
        want = _learned(loop.session.device)
    srv, made = _serve(b)
    try:
        with nmc.connect(*srv.address, env="CartPole-v1", env_options=opts) as loop:
            assert loop.learns and loop.session.takes_modulator
            remote = loop.run(3)
        got = _learned(made[0].device)
    finally:
        srv.stop()
    assert remote.returns == local.returns and remote.lengths == local.lengths
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    with Session(b) as fresh:
        assert not np.array_equal(want["w"], _learned(fresh.device)["w"])  # it did learn
    assert len(remote.latency_s) == sum(remote.lengths) and min(remote.latency_s) > 0
    s = remote.summary()
    assert s["latency_p99_s"] >= s["latency_p50_s"] > 0
    windows = sum(remote.lengths) + (3 if reward == "episode" else 0)
    assert made[0].counters.windows == windows


def test_error_per_post_neuron_travels_as_a_vector():
    b = agent(ERROR_RULE)
    with Session(b) as local:
        local.modulate(np.array([0.5, -0.25]))
        want = local.step(ev.events([0, 0], [1, 3]))
        w_local = _learned(local.device)
    srv, made = _serve(b)
    try:
        with nmc.connect(*srv.address) as c:
            c.modulate(np.array([0.5, -0.25]), wait=True)
            got = c.step(ev.events([0, 0], [1, 3]))
            with pytest.raises(EventFormatError, match="not finite"):  # checked before sending
                c.modulate([1.0, float("nan")])
            with pytest.raises(EventFormatError, match="1 to"):
                c.modulate(np.zeros((2, 2)))
        assert np.array_equal(got["out"], want["out"])
        w_remote = _learned(made[0].device)
        assert all(np.array_equal(w_remote[k], w_local[k]) for k in w_local)
        assert np.array_equal(w_remote["modulator"], [[0.5, -0.25]])
        with nmc.connect(*srv.address) as c:  # a vector that fits no post population: the device says why
            c.modulate(np.ones(3))
            with pytest.raises(DeviceError, match=r"session error.*shape"):
                c.step()
    finally:
        srv.stop()


# ------------------------------------------------------------ raw frames
def _open(addr, token=None):
    s = socket.create_connection(addr, timeout=10)
    s.sendall(P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": token})))
    assert P.read_frame(s)[0] == P.HELLO
    s.sendall(P.frame(P.OPEN, P.json_payload({"device": None, "window": 5})))
    ft, _, payload, _ = P.read_frame(s)
    assert ft == P.OPEN
    return s, P.parse_json(payload)


def _error_of(s) -> tuple[int, str]:
    while True:
        ft, _, payload, _ = P.read_frame(s)
        if ft == P.ERROR:
            return P.parse_error(payload)


def _raw(ftype, payload, flags=0, length=None):
    return P.HEADER.pack(P.MAGIC, P.VERSION, ftype, flags, len(payload) if length is None else length, 0) + payload


MALFORMED = [
    ("empty", _raw(P.MODULATE, b""), P.E_MALFORMED, "not n ≥ 1 float64"),
    ("12 bytes", _raw(P.MODULATE, b"\0" * 12), P.E_MALFORMED, "multiple of 8"),
    ("NaN", _raw(P.MODULATE, np.array([1.0, np.nan]).tobytes()), P.E_MALFORMED, "value 1 .* not finite"),
    ("inf", _raw(P.MODULATE, np.array([np.inf]).tobytes()), P.E_MALFORMED, "not finite"),
    ("BATCH flag", _raw(P.MODULATE, np.zeros(1).tobytes(), flags=P.BATCH), P.E_MALFORMED, "BATCH flag"),
    ("over the value limit", _raw(P.MODULATE, b"", length=P.MAX_MODULATE_BYTES + 8), P.E_TOO_BIG, "exceeds"),
    ("over the frame limit", _raw(P.MODULATE, b"", length=2 ** 32 - 8), P.E_TOO_BIG, "exceeds"),
]


@pytest.mark.parametrize("name,data,code,msg", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_modulate_frames_get_error_frames(name, data, code, msg):
    srv, made = _serve(agent(SPORE), window=5)
    try:
        s, info = _open(srv.address)
        assert info["modulator"] is True
        s.sendall(data)
        got, text = _error_of(s)
        s.close()
        assert got == code and __import__("re").search(msg, text), (got, text)
        assert float(made[0].device.sim.learners["w"].modulator[0]) == 0.0  # nothing reached the device
        with nmc.connect(*srv.address, window=5) as c:  # the server keeps serving
            c.modulate(1.0, wait=True)
    finally:
        srv.stop()


def test_modulate_needs_the_token_and_an_open_session():
    srv, made = _serve(agent(SPORE), token=TOKEN, window=5)
    try:
        for first in ([], [P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": TOKEN}))]):
            s = socket.create_connection(srv.address, timeout=10)
            for f in first:
                s.sendall(f)
            s.sendall(P.frame(P.MODULATE, P.modulate_payload(5.0)))
            code, text = _error_of(s)
            s.close()
            assert code == P.E_PROTOCOL and ("expected HELLO" in text or "expected OPEN" in text), text
        s = socket.create_connection(srv.address, timeout=10)
        s.sendall(P.frame(P.HELLO, P.json_payload({"version": P.VERSION, "token": "wrong-token-0123456"})))
        s.sendall(P.frame(P.MODULATE, P.modulate_payload(5.0)))
        assert _error_of(s)[0] == P.E_AUTH
        s.close()
        assert made == []   # no session was ever opened, no device modulated
        s, _ = _open(srv.address, TOKEN)
        s.sendall(P.frame(P.MODULATE, P.modulate_payload(5.0)) + P.frame(P.STATS))
        assert P.read_frame(s)[0] == P.STATS
        s.close()
        assert float(made[0].device.sim.learners["w"].modulator[0]) == 5.0
    finally:
        srv.stop()


def test_device_without_learning_refuses_modulate():
    srv, made = _serve(agent(), window=5)
    try:
        with nmc.connect(*srv.address, env="CartPole-v1", env_options={"max_steps": 5}) as loop:
            assert not loop.learns
            assert len(loop.run(2).returns) == 2          # a frozen network runs the loop all the same
            with pytest.raises(DeviceError, match="third factor"):  # refused before sending
                loop.session.modulate(1.0)
            with pytest.raises(DeviceError, match="only the third factor travels"):
                loop.run(1, schedule=lambda ep, returns: {"temperature": 0.1})
        s, info = _open(srv.address)
        assert info["modulator"] is False
        s.sendall(P.frame(P.MODULATE, P.modulate_payload(1.0)))   # the server refuses it too, with a reason
        code, text = _error_of(s)
        s.close()
        assert code == P.E_RUNTIME and "runs no learning rule that takes a third factor" in text
        with nmc.connect(*srv.address, window=5) as c:
            assert c.step(ev.events([0], [0]))["out"].dtype == ev.EVENT_DTYPE
    finally:
        srv.stop()


def test_batched_session_refuses_modulate():
    from nets import ff_lif
    from nmc.runtime.serve.batching import BatchedDevice

    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, integrator="euler", reset="subtract")
    batched = BatchedDevice(b.device("emulator"), 2, {"input": (8,)})
    try:
        slot = batched.take()
        with pytest.raises(DeviceError, match="batched session .* share its weights"):
            slot.modulate(1.0)
        slot.close()
    finally:
        batched.close()


def test_protocol_modulate_payloads_round_trip_and_are_checked():
    assert P.parse_modulate(P.modulate_payload(2.5)) == 2.5
    v = np.array([0.5, -1e300, 3.0])
    assert np.array_equal(P.parse_modulate(bytearray(P.modulate_payload(v))), v)
    for bad in ([], np.zeros((1, 1)), "x", [np.inf], np.zeros(P.MAX_MODULATE_VALUES + 1)):
        with pytest.raises(EventFormatError):
            P.modulate_payload(bad)
    for bad in (b"", b"\0" * 7, np.array([np.nan]).tobytes()):
        with pytest.raises(EventFormatError):
            P.parse_modulate(bad)
    assert P.parse_header(_raw(P.MODULATE, b"", length=8)[:16])[0] == P.MODULATE
    with pytest.raises(P.FrameTooBig):
        P.parse_header(_raw(P.MODULATE, b"", length=P.MAX_MODULATE_BYTES + 8)[:16])


def test_connect_env_options_are_checked():
    with pytest.raises(OptionError, match="env_options given without env"):
        nmc.connect("127.0.0.1", 9, env_options={"bins": 4})
    with pytest.raises(OptionError, match="window 3 given with env"):
        nmc.connect("127.0.0.1", 9, window=3, env="CartPole-v1")


def test_cli_run_env_over_a_server_equals_local(tmp_path):
    b = agent(SPORE)
    b.write(tmp_path / "a.nmc")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "a.nmc"), "--env", "CartPole-v1", "--episodes", "2",
                                  "-o", str(tmp_path / "local.npz")])
    assert r.exit_code == 0, r.output
    srv, _ = _serve(b, token=TOKEN)
    try:
        addr = "%s:%d" % srv.address
        r = CliRunner().invoke(main, ["run", addr, "--env", "CartPole-v1", "--episodes", "2", "--token", TOKEN,
                                      "-o", str(tmp_path / "remote.npz")])
        assert r.exit_code == 0, r.output
        assert "learning" in r.output and "ms" in r.output
        r = CliRunner().invoke(main, ["run", addr, "--env", "CartPole-v1"])   # no token
        assert r.exit_code != 0 and "not authorised" in r.output and "Traceback" not in r.output
    finally:
        srv.stop()
    local, remote = np.load(tmp_path / "local.npz"), np.load(tmp_path / "remote.npz")
    assert np.array_equal(local["returns"], remote["returns"]) and np.array_equal(local["lengths"], remote["lengths"])
    r = CliRunner().invoke(main, ["run", str(tmp_path / "a.nmc"), "--token", TOKEN, "--input", "x.npz"])
    assert r.exit_code == 2 and "closed loop over a server" in r.output
