"""Chip emulators stream window by window with their state carried
(``Device.reset`` + ``Device.advance``): any split of the input into windows
gives, bit for bit, what one ``run`` over the whole input gives — including the
latency alignment (look-ahead) and, for BrainScaleS-2, the seeded noise."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import conv_pool, currents, egru_net, ff_lif, recurrent_cubalif, spikes
from nmc.errors import ShapeError

pytestmark = pytest.mark.timeout(300)

CASES = [
    ("spinnaker2", ff_lif, {}, {}),
    ("spinnaker2", recurrent_cubalif, {}, {}),  # graded (voltage) readout, recurrence
    ("spinnaker2", conv_pool, {}, {}),
    ("spinnaker2", egru_net, {"reset": "subtract"}, {}),  # graded input events into an EGRU kernel
    ("loihi2", ff_lif, {"reset": "subtract"}, {}),
    ("loihi2", recurrent_cubalif, {}, {}),
    ("brainscales2", ff_lif, {}, {}),
    ("brainscales2", recurrent_cubalif, {}, {"mismatch": "calibrated", "noise": True, "seed": 3}),
]


def _split(T, rng):
    """Window lengths 1..7 covering T steps (uneven, as a live stream delivers them)."""
    cuts, t = [], 0
    while t < T:
        n = int(rng.integers(1, 8))
        cuts.append(min(n, T - t))
        t += n
    return cuts


def _input(make, T, B, seed):
    if make is egru_net:
        return currents((5,), T=T, seed=seed, batch=B)
    if make is conv_pool:
        return spikes((2, 8, 8), T=T, seed=seed, batch=B)
    n_in = {ff_lif: 8, recurrent_cubalif: 6}[make]
    return spikes((n_in,), T=T, seed=seed, batch=B, p=0.4)


@pytest.mark.parametrize("target,make,opts,dev_opts", CASES,
                         ids=[f"{t}-{m.__name__}{'-noise' if d else ''}" for t, m, _, d in CASES])
def test_windows_equal_one_run_bit_exactly(target, make, opts, dev_opts):
    kw = dict(dt=1e-3, integrator="euler", reset="zero")
    kw.update(opts)
    b = nmc.compile(make(), target=target, **kw)
    T, B = 41, 2
    x = _input(make, T, B, seed=7)
    want = b.device(**dev_opts).run({"input": x})["output"]
    assert want.shape[:2] == (T, B) and np.count_nonzero(want) > 0
    dev = b.device(**dev_opts)
    assert dev.streams
    rng = np.random.default_rng(1)
    for _ in range(2):  # reset really restarts: the second pass gives the same rows
        dev.reset(B)
        got, t = [], 0
        for n in _split(T, rng):
            got.append(dev.advance({"input": x[t:t + n]})["output"])
            t += n
        assert np.array_equal(np.concatenate(got), want)


@pytest.mark.parametrize("target", ["spinnaker2", "loihi2", "brainscales2"])
def test_session_streams_without_replay_and_equals_run(target):
    b = nmc.compile(ff_lif(), target=target, dt=1e-3, integrator="euler", reset="zero")
    x = spikes((8,), T=30, seed=5, p=0.4)
    with nmc.open(b, window=4) as s:
        assert s.streaming and not s.replaying
        got = s.run_dense(x)["output"][:30]
    assert np.array_equal(got, b.run({"input": x})["output"])


def test_window_cost_does_not_grow_with_the_stream():
    """Each window runs n + L device steps (L = the largest output latency), not the history."""
    b = nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero")
    dev = b.device()
    L = max(dev._lags().values())
    assert L > 0
    steps = []
    inner = dev._step

    def counting(ext):
        steps.append(1)
        return inner(ext)

    dev._step = counting
    dev.reset(1)
    x = spikes((8,), T=40, seed=2, batch=1)
    per_window = []
    for t in range(0, 40, 4):
        before = len(steps)
        dev.advance({"input": x[t:t + 4]})
        per_window.append(len(steps) - before)
    assert per_window == [4 + L] * 10


def test_streaming_refuses_what_run_refuses():
    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, integrator="euler", reset="zero")
    dev = b.device()
    dev.reset(1)
    with pytest.raises(ShapeError):
        dev.advance({"input": np.full((2, 1, 8), 0.5)})  # not spikes: refused, not rounded
    s2 = nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero").device()
    s2.reset(1)
    with pytest.raises(ShapeError):   # counts are repeated events (issue #15); a fraction of an event is not
        s2.advance({"input": np.full((2, 1, 8), 0.5)})
    s2.reset(1)
    s2.advance({"input": np.full((2, 1, 8), 2.0)})


# ------------------------------------------------------------------ Lava
def _lava_skip():
    from nmc.backends.loihi2.devices.lava_device import lava_available

    why = lava_available()
    return pytest.mark.skipif(why is not None, reason=f"import lava failed: {why}")


@pytest.mark.lava
@_lava_skip()
@pytest.mark.parametrize("make,reset", [(ff_lif, "subtract"), (recurrent_cubalif, "zero")])
def test_lava_stream_through_injector_extractor_equals_emulator(make, reset):
    """The lava device's windows go through Lava's Injector/Extractor processes of one
    running network (no replay); uneven windows, look-ahead by saving/restoring Lava's Vars."""
    b = nmc.compile(make(), target="loihi2", dt=1e-3, integrator="euler", reset=reset)
    x = _input(make, 23, 1, seed=4)
    want = b.device("emulator").run({"input": x})["output"]
    assert np.count_nonzero(want) > 0
    dev = b.device("lava", timeout=120)
    try:
        dev.reset(1)
        worker = dev._stream.proc
        got, t = [], 0
        for n in _split(23, np.random.default_rng(2)):
            got.append(dev.advance({"input": x[t:t + n]})["output"])
            t += n
        assert np.array_equal(np.concatenate(got), want)
    finally:
        dev.close()
    assert worker.poll() is not None  # the Lava child is gone with the session


@pytest.mark.lava
@_lava_skip()
def test_lava_session_equals_emulator_session_and_refuses_batches():
    from nmc.errors import OptionError

    b = nmc.compile(ff_lif(), target="loihi2", dt=1e-3, integrator="euler", reset="subtract")
    x = spikes((8,), T=18, seed=6, p=0.4)
    with nmc.open(b, device="emulator", window=5) as s:
        emu = s.run_dense(x)["output"]
    with nmc.open(b, device="lava", window=5, timeout=120) as s:
        assert s.streaming and not s.replaying
        lava = s.run_dense(x)["output"]
        s.reset()  # a fresh network: the same answer again
        again = s.run_dense(x)["output"]
    assert np.array_equal(lava, emu) and np.array_equal(again, emu) and emu.sum() > 0
    with pytest.raises(OptionError, match="one sample"):
        b.device("lava").reset(2)
    from nmc.runtime.server import SessionServer

    srv = SessionServer(b, window=5, idle_timeout=60)
    srv.start()
    try:
        with nmc.connect(*srv.address, device="lava", timeout=120) as c:  # served: the same stream over TCP
            remote = c.run_dense(x)["output"]
    finally:
        srv.stop()
    assert np.array_equal(remote, emu)
