"""Closed loop (nmc.runtime.closed_loop): encoding, decoding, reward to the third factor, latency,
the allow-list, and `nmc run --env`."""
import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from loop_agents import SPORE, agent
from nmc.driver.cli import main
from nmc.errors import DeviceError, OptionError, ShapeError
from nmc.runtime import events as ev
from nmc.runtime.closed_loop import ENVS, env_config

pytest.importorskip("gymnasium")


def test_encoding_and_decoding():
    with nmc.open(agent(), env="CartPole-v1") as loop:
        cfg = loop.cfg
        e = loop.encode([0.0, -10.0, 0.2, 3.49])   # bins: middle, clipped low, top, top
        assert len(e) == 4 * cfg.steps_per_action
        chans = sorted(set(e["ch"].tolist()))
        assert chans == [0 * 8 + 4, 1 * 8 + 0, 2 * 8 + 7, 3 * 8 + 7]
        assert sorted(set(e["t"].tolist())) == list(range(cfg.steps_per_action))
        assert loop.decode(ev.events([0, 1, 2], [1, 1, 0])) == 1
        assert loop.decode(ev.events([0, 1], [0, 0])) == 0
        ties = {loop.decode(ev.empty()) for _ in range(40)}   # no spikes: a seeded coin decides
        assert ties == {0, 1}


def test_reward_reaches_the_learning_rule_and_latency_is_reported():
    b = agent(SPORE)
    with nmc.open(b, env="CartPole-v1", env_options={"max_steps": 30}) as loop:
        assert loop.learns
        w0 = loop.session.device.sim.learners["w"].w.clone().numpy()
        rep = loop.run(3)
        w1 = loop.session.device.sim.learners["w"].w.numpy()
        base = loop.session.device.sim.learners["w"].baseline.numpy()
    assert len(rep.returns) == 3 and all(1 <= n <= 30 for n in rep.lengths)
    assert len(rep.latency_s) == sum(rep.lengths) and min(rep.latency_s) > 0
    s = rep.summary()
    assert s["latency_p99_s"] >= s["latency_p50_s"] > 0
    assert not np.array_equal(w0, w1)
    assert base[0] > 0      # the running mean of the reward it was fed (CartPole: +1 per step)
    # the same seeds give the same run
    with nmc.open(b, env="CartPole-v1", env_options={"max_steps": 30}) as again:
        assert again.run(3).returns == rep.returns


def test_schedule_changes_the_running_rule():
    with nmc.open(agent(SPORE), env="CartPole-v1", env_options={"max_steps": 5}) as loop:
        seen = []
        loop.run(2, schedule=lambda ep, returns: seen.append(list(returns)) or {"temperature": 0.1 / (1 + ep)})
        assert len(seen[0]) == 0 and len(seen[1]) == 1
        assert loop.session.device.sim.learners["w"].rule.temperature == pytest.approx(0.05)
        with pytest.raises(OptionError, match="cannot change"):
            loop.run(1, schedule=lambda ep, returns: {"rule": "stdp"})


def test_frozen_network_runs_without_learning():
    with nmc.open(agent(), env="CartPole-v1", env_options={"max_steps": 10}) as loop:
        assert not loop.learns
        assert len(loop.run(2).returns) == 2
        with pytest.raises(DeviceError, match="third factor"):
            loop.session.device.modulate(1.0)


def test_allow_list_and_bad_configurations():
    assert set(ENVS) == {"CartPole-v1", "MountainCar-v0", "Acrobot-v1"}
    with pytest.raises(OptionError, match="allow-list"):
        env_config("os.system")
    with pytest.raises(OptionError, match="bins"):
        env_config("CartPole-v1", bins=0)
    with pytest.raises(OptionError, match="does not exist"):
        env_config("CartPole-v1", render_mode="human")
    with pytest.raises(ShapeError, match="needs 4·8 = 32"):
        nmc.open(agent(n_in=30), env="CartPole-v1")
    with pytest.raises(ShapeError, match="multiple"):
        nmc.open(agent(n_out=3), env="CartPole-v1")


def test_cli_run_env(tmp_path):
    agent(SPORE).write(tmp_path / "a.nmc")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "a.nmc"), "--env", "CartPole-v1", "--episodes", "2",
                                  "-o", str(tmp_path / "loop.npz")])
    assert r.exit_code == 0, r.output
    assert "learning" in r.output and "ms" in r.output
    d = np.load(tmp_path / "loop.npz")
    assert d["returns"].shape == (2,) and d["latency_s"].size == d["lengths"].sum()
    r = CliRunner().invoke(main, ["run", str(tmp_path / "a.nmc"), "--env", "Breakout-v5"])
    assert r.exit_code == 2 and "allow-list" in r.output and "Traceback" not in r.output


def test_episode_reward_mode_feeds_the_advantage_once_per_episode():
    with nmc.open(agent(SPORE), env="CartPole-v1",
                  env_options={"max_steps": 20, "reward": "episode", "terminal_reward": -1.0}) as loop:
        rep = loop.run(3)
        lr = loop.session.device.sim.learners["w"]
        assert float(lr.modulator[0]) == 0.0          # back to 0 after the delivery window
        # shaped return = return − 1 when the pole fell (terminated), the return when truncated at 20
        assert loop._shaped == [r - (n < 20) for r, n in zip(rep.returns, rep.lengths)]
        assert loop.session.counters.windows == sum(rep.lengths) + 3
    with pytest.raises(OptionError, match="reward"):
        env_config("CartPole-v1", reward="dopamine")
