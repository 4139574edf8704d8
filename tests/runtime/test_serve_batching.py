"""Dynamic batching (nmc.runtime.serve.batching): sessions stepped together in an
emulator's batch slots get, bit for bit, what each gets running alone, with
sessions joining and leaving at different times (a freed slot is reset for the
next session) and sessions held while others step."""
from __future__ import annotations

import threading

import nir
import numpy as np
import pytest

import nmc
from nets import conv_pool, egru_net, ff_lif, recurrent_cubalif, spikes
from nmc.runtime.serve.batching import BatchedDevice, slot_axes
from nmc.runtime.serve.pool import DevicePool, LeasedBundle
from nmc.runtime.session import Session

pytestmark = pytest.mark.timeout(300)

def biased_cubalif():
    """recurrent_cubalif with a bias on its input layer: spinnaker2 feeds it from a bias source
    (``constant_events``, from its latency tick on: it reads the chip tick)."""
    g = recurrent_cubalif()
    g.nodes["fc_in"] = nir.Affine(weight=g.nodes["fc_in"].weight, bias=np.linspace(-0.05, 0.2, 12))
    return g


CASES = [
    ("spinnaker2", ff_lif, {}, {}),
    ("spinnaker2", biased_cubalif, {}, {}),
    ("spinnaker2", egru_net, {}, {}),
    ("spinnaker2", recurrent_cubalif, {}, {}),
    ("spinnaker2", conv_pool, {}, {}),
    ("loihi2", ff_lif, {"reset": "subtract"}, {}),
    ("loihi2", recurrent_cubalif, {}, {}),
    ("brainscales2", ff_lif, {}, {}),
    ("brainscales2", recurrent_cubalif, {}, {"mismatch": "calibrated"}),
]


def _input(make, T, seed):
    if make is conv_pool:
        return spikes((2, 8, 8), T=T, seed=seed)
    if make is egru_net:  # graded values: the EGRU kernel takes them as graded events
        return np.random.default_rng(seed).normal(0, 1, (T, 5)) * (np.random.default_rng(seed + 9).random((T, 5)) < 0.5)
    return spikes(({ff_lif: 8, recurrent_cubalif: 6, biased_cubalif: 6}[make],), T=T, seed=seed, p=0.4)


def _alone(b, x, window, dev_opts):
    with Session(b, window=window, **dev_opts) as s:
        return s.run_dense({"input": x})["output"]


@pytest.mark.parametrize("target,make,opts,dev_opts", CASES,
                         ids=[f"{t}-{m.__name__}" for t, m, _, _ in CASES])
def test_batched_sessions_equal_sessions_alone(target, make, opts, dev_opts):
    kw = dict(dt=1e-3, integrator="euler", reset="zero")
    kw.update(opts)
    b = nmc.compile(make(), target=target, **kw)
    window, T = 3, 30
    xs = [_input(make, T, seed=s) for s in range(4)]
    want = [_alone(b, x, window, dev_opts) for x in xs]
    assert any(np.count_nonzero(w) for w in want)
    inputs = {k: tuple(b.graph.shape_out(k)) for k in b.graph.inputs}
    # 2 slots, 4 sessions: the last two take slots freed by the first two (reset on take);
    # session 1 pauses mid-stream so that session 0 steps while it is held
    pool = DevicePool(lambda: b.device(**dev_opts), inputs, devices=1, max_batch=2, queue=4, max_wait=0.05)
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    paused, resume = threading.Event(), threading.Event()

    def one(i):
        try:
            lease = pool.lease(window)
            assert lease.__class__.__name__ == "SlotDevice"
            with Session(LeasedBundle(b, lease), window=window) as s:
                outs = []
                from nmc.runtime.session import dense_windows
                for k, w in enumerate(dense_windows({"input": xs[i]}, window)):
                    if i == 1 and k == 4:
                        paused.set()
                        resume.wait(20)
                    if i == 0 and k == 6:
                        paused.wait(20)  # from here on session 0 steps alone, session 1 held
                    if i == 0 and k == 9:
                        resume.set()
                    outs.append(s.step(w)["output"])
                from nmc.runtime import events as ev
                got[i] = ev.to_dense(ev.concat(outs, window), len(outs) * window, b.graph.shape_in("output"))
        except BaseException as e:  # reported below
            errors.append(e)
            paused.set()
            resume.set()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    pool.close()
    assert not errors, errors
    dev = pool._devices[0]["dev"]
    assert isinstance(dev, BatchedDevice) and dev.batched_windows > dev.steps  # windows really were batched
    for i in range(4):
        np.testing.assert_array_equal(got[i][:T], want[i][:T])


def test_devices_whose_rows_are_not_independent_are_not_batched():
    b = nmc.compile(recurrent_cubalif(), target="brainscales2", dt=1e-3, integrator="euler", reset="zero")
    d = b.device(noise=True, seed=3)
    d.reset(1)
    assert slot_axes(d) is None  # one noise generator for the whole batch
    pool = DevicePool(lambda: b.device(noise=True, seed=3), {"input": (6,)}, devices=1, max_batch=4)
    lease = pool.lease(2)
    assert lease.__class__.__name__ == "_Exclusive"
    pool.close()


def test_a_bad_window_fails_only_its_own_session():
    """A window the device refuses (graded values into a binary-spike program) fails its
    session's step only; the other sessions of the same batch step get their own rows."""
    from nmc.errors import ShapeError
    from nmc.runtime import events as ev

    b = nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero")
    xs = [_input(ff_lif, 12, seed=s) for s in range(2)]
    want = [_alone(b, x, 3, {}) for x in xs]
    pool = DevicePool(lambda: b.device(), {"input": (8,)}, devices=1, max_batch=3, max_wait=5.0)
    sessions = [Session(LeasedBundle(b, pool.lease(3)), window=3) for _ in range(3)]
    from nmc.runtime.session import dense_windows

    wins = [list(dense_windows({"input": x}, 3)) for x in xs]
    bad = ev.events([0], [1], [2.5])
    outs = [[], []]
    errors = []

    def go(i, k):
        try:
            if i == 2:
                sessions[2].step(bad)
            else:
                outs[i].append(sessions[i].step(wins[i][k])["output"])
        except ShapeError as e:
            errors.append((i, e))

    for k in range(4):  # every step holds all three windows (max_wait is long): one batch each
        ts = [threading.Thread(target=go, args=(i, k)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert [i for i, _ in errors] == [2] * 4
    for i in range(2):
        got = ev.to_dense(ev.concat(outs[i], 3), 12, b.graph.shape_in("output"))
        np.testing.assert_array_equal(got, want[i][:12])
    assert sessions[2].counters.rejected == 4 and sessions[2].counters.reconciled()
    for s in sessions:
        s.close()
    pool.close()
