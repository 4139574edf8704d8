"""Closed loop: a compiled network steps a Gymnasium environment, and learns from its reward.

``nmc.open(bundle, env="CartPole-v1")`` (or ``nmc run BUNDLE --env CartPole-v1``) returns a
:class:`ClosedLoop` over a streaming :class:`~nmc.runtime.session.Session`;
``nmc.connect(host, port, env="CartPole-v1")`` (or ``nmc run HOST:PORT --env CartPole-v1``) the same
loop over a session of an ``nmc serve`` server (a :class:`~nmc.runtime.client.Client`: the rewards
travel as MODULATE frames, in order with the windows, so the device computes what it computes
locally, bit for bit). Each environment step:

1. **encode** the observation o (one value per dimension d) into input events: o_d is clipped to
   [low_d, high_d] and falls in one of ``bins`` equal bins b; channel ``d·bins + b`` of the input node
   spikes at every timestep of the window (a one-hot population code; the input node must have
   n_obs·bins channels);
2. the session advances one window of ``steps_per_action`` timesteps;
3. **decode** the output events into an action: the output channels are split into n_actions equal
   consecutive groups, the action is the group with the most spikes in the window (ties, no spikes
   included, broken uniformly by a generator seeded with ``seed``);
4. ``env.step(action)``; when the device runs a rule with a third factor (the session's
   ``takes_modulator``; :meth:`Device.modulate <nmc.backends.base.Device.modulate>`, which holds until
   set again, through the session's ``modulate``) it is fed

   * ``reward="step"``: after every step the reward r + ``reward_offset`` (plus ``terminal_reward``
     when the episode terminates, not when it is truncated), for the next window;
   * ``reward="episode"``: 0 during the episode; after it, the advantage G − Ḡ of its return G (the
     shaped rewards summed) over the mean Ḡ of the previous ``baseline_episodes`` returns (none yet:
     Ḡ = G), applied during one extra window without input (the reward-delivery window), then 0 again
     — episodic reward-modulated learning, the eligibility traces carrying the episode's credit;

   the loop's wall-clock latency of the step (encode + window + decode + environment + sending the
   reward; over a server, the round trip of the window included) is recorded.

The network's state and what it learned carry over from episode to episode (learning is continuous,
as in SPORE's closed-loop runs); :meth:`ClosedLoop.run` returns a :class:`LoopReport` with the return
and length of each episode and the latency per step (mean, median, 99th percentile).

Environments come from an allow-list (:data:`ENVS`): classic-control tasks that run offline without
rendering. No string from a file or the command line selects any other code; a configuration is an
:class:`EnvConfig` (numbers only), its defaults per environment in :data:`ENVS`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from nmc.errors import DeviceError, OptionError, ShapeError

from . import events as ev


@dataclass(frozen=True)
class EnvConfig:
    """How a network and an environment meet (see the module doc). ``low``/``high``: per observation
    dimension, the range the bins cover (values outside fall in the edge bins)."""

    name: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    bins: int = 8
    steps_per_action: int = 5
    terminal_reward: float = 0.0
    reward_offset: float = 0.0
    reward: str = "step"
    baseline_episodes: int = 10
    max_steps: int = 500
    seed: int = 0

    def check(self) -> None:
        if self.name not in ENVS:
            raise OptionError(f"environment {self.name!r} is not on nmc's allow-list",
                              hint=f"use one of: {', '.join(ENVS)}")
        for k in ("terminal_reward", "reward_offset"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v):
                raise OptionError(f"environment option '{k}' must be a finite number, got {v!r}")
        if self.reward not in REWARD_MODES:
            raise OptionError(f"environment option 'reward' is {self.reward!r}, not one of {REWARD_MODES}")
        for k in ("bins", "steps_per_action", "max_steps", "baseline_episodes"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise OptionError(f"environment option '{k}' must be a whole number ≥ 1, got {v!r}")
        lo, hi = np.asarray(self.low, float), np.asarray(self.high, float)
        if lo.shape != hi.shape or lo.ndim != 1 or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)) \
                or not np.all(hi > lo):
            raise OptionError(f"environment '{self.name}': low/high must be finite, one per observation "
                              "dimension, with high > low", hint="give low and high as tuples of numbers")


REWARD_MODES = ("step", "episode")

#: the allow-list: environment name → its default configuration (observation ranges chosen to cover
#: what an episode visits; CartPole's velocities are unbounded, ±3 covers what a balanced pole sees).
ENVS: dict[str, EnvConfig] = {}
for _cfg in (
    EnvConfig("CartPole-v1", low=(-2.4, -3.0, -0.21, -3.5), high=(2.4, 3.0, 0.21, 3.5), terminal_reward=-1.0,
              max_steps=500),
    EnvConfig("MountainCar-v0", low=(-1.2, -0.07), high=(0.6, 0.07), max_steps=200),
    EnvConfig("Acrobot-v1", low=(-1, -1, -1, -1, -12.6, -28.3), high=(1, 1, 1, 1, 12.6, 28.3), max_steps=500),
):
    ENVS[_cfg.name] = _cfg


def env_config(env, **overrides) -> EnvConfig:
    """An :class:`EnvConfig` from an allow-listed name (its defaults, with ``overrides``) or a config."""
    if isinstance(env, EnvConfig):
        cfg = dataclasses.replace(env, **overrides) if overrides else env
    elif isinstance(env, str):
        if env not in ENVS:
            raise OptionError(f"environment {env!r} is not on nmc's allow-list", hint=f"use one of: {', '.join(ENVS)}")
        bad = [k for k in overrides if k not in {f.name for f in dataclasses.fields(EnvConfig)} or k == "name"]
        if bad:
            raise OptionError(f"environment option '{bad[0]}' does not exist",
                              hint="options: bins, steps_per_action, terminal_reward, reward_offset, reward, "
                              "baseline_episodes, max_steps, seed, low, high")
        cfg = dataclasses.replace(ENVS[env], **overrides)
    else:
        raise OptionError(f"env must be an environment name or an EnvConfig, not {type(env).__name__}")
    cfg.check()
    return cfg


def make_env(cfg: EnvConfig):
    """The Gymnasium environment of an allow-listed config (no rendering)."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - the env extra is part of the dev set-up
        raise OptionError("closed-loop runs need gymnasium", hint="pip install 'nmc[env]'") from None
    return gymnasium.make(ENVS[cfg.name].name, render_mode=None)


@dataclass
class LoopReport:
    """Per episode: ``returns`` (sum of the environment's rewards) and ``lengths`` (steps); per
    environment step: ``latency_s`` (wall-clock seconds of the loop's step)."""

    env: str
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    latency_s: list = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.asarray(self.latency_s, float)
        return {"env": self.env, "episodes": len(self.returns), "steps": int(sum(self.lengths)),
                "mean_return": float(np.mean(self.returns)) if self.returns else 0.0,
                "latency_mean_s": float(lat.mean()) if lat.size else 0.0,
                "latency_p50_s": float(np.median(lat)) if lat.size else 0.0,
                "latency_p99_s": float(np.percentile(lat, 99)) if lat.size else 0.0}


class ClosedLoop:
    """A session driving an environment (the module doc). ``session``: an open
    :class:`~nmc.runtime.session.Session`, or a :class:`~nmc.runtime.client.Client` of an ``nmc
    serve`` server, whose window is ``cfg.steps_per_action``."""

    def __init__(self, session, env, **options):
        self.cfg = env_config(env, **options)
        self.session = session
        if session.window != self.cfg.steps_per_action:
            raise OptionError(f"the session's window is {session.window} timesteps but the environment takes one "
                              f"action per {self.cfg.steps_per_action}", hint="open the session through nmc.open(env=...)")
        io = session.io
        if len(io.input_names) != 1 or len(io.output_names) != 1:
            raise ShapeError(f"a closed loop needs one input and one output node, the bundle has "
                             f"{len(io.input_names)} and {len(io.output_names)}")
        self.env = make_env(self.cfg)
        try:
            self._check_shapes(io)
        except BaseException:
            self.env.close()
            raise
        self.learns = bool(session.takes_modulator)
        self.rng = np.random.Generator(np.random.PCG64(self.cfg.seed))
        self.episodes = 0
        self._shaped: list[float] = []   # shaped returns of past episodes (reward="episode")

    def _check_shapes(self, io) -> None:
        self.n_obs = int(np.prod(self.env.observation_space.shape))
        space = self.env.action_space
        if not hasattr(space, "n"):
            raise OptionError(f"environment '{self.cfg.name}' has a continuous action space; nmc decodes discrete actions")
        self.n_actions = int(space.n)
        if len(self.cfg.low) != self.n_obs:
            raise OptionError(f"environment '{self.cfg.name}' observes {self.n_obs} values but low/high give "
                              f"{len(self.cfg.low)}")
        self.n_in = int(np.prod(io.input(io.input_names[0]).shape))
        self.n_out = int(np.prod(io.output(io.output_names[0]).shape))
        want = self.n_obs * self.cfg.bins
        if self.n_in != want:
            raise ShapeError(f"input node '{io.input_names[0]}' has {self.n_in} channels; {self.cfg.name} with "
                             f"{self.cfg.bins} bins per observation needs {self.n_obs}·{self.cfg.bins} = {want}",
                             node=io.input_names[0], limit=want, actual=self.n_in, hint=f"give the network {want} inputs")
        if self.n_out % self.n_actions:
            raise ShapeError(f"output node '{io.output_names[0]}' has {self.n_out} channels, not a multiple of the "
                             f"{self.n_actions} actions", node=io.output_names[0],
                             hint=f"give it k·{self.n_actions} neurons (k per action)")

    # ------------------------------------------------------------ coding
    def encode(self, obs) -> np.ndarray:
        """Input events of one window for observation ``obs`` (see the module doc)."""
        c = self.cfg
        o = np.asarray(obs, float).reshape(-1)
        lo, hi = np.asarray(c.low, float), np.asarray(c.high, float)
        b = np.clip(np.floor((o - lo) / (hi - lo) * c.bins), 0, c.bins - 1).astype(np.int64)
        ch = np.arange(self.n_obs) * c.bins + b
        t = np.repeat(np.arange(c.steps_per_action), ch.size)
        return ev.events(t, np.tile(ch, c.steps_per_action))

    def decode(self, out_events) -> int:
        """The action of one output window (most spikes per group; ties broken by the seeded generator)."""
        counts = np.bincount(np.asarray(out_events["ch"], np.int64), minlength=self.n_out)[: self.n_out]
        per = counts.reshape(self.n_actions, -1).sum(axis=1)
        best = np.flatnonzero(per == per.max())
        return int(best[0] if best.size == 1 else self.rng.choice(best))

    # ------------------------------------------------------------- loop
    def episode(self, report: LoopReport) -> None:
        obs, _ = self.env.reset(seed=self.cfg.seed + self.episodes)
        total, g, n = 0.0, 0.0, 0
        for n in range(1, self.cfg.max_steps + 1):
            t0 = time.perf_counter()
            outs = self.session.step(self.encode(obs))
            action = self.decode(next(iter(outs.values())))
            obs, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward)
            shaped = float(reward) + self.cfg.reward_offset + (self.cfg.terminal_reward if terminated else 0.0)
            g += shaped
            if self.learns and self.cfg.reward == "step":
                self.session.modulate(shaped)
            report.latency_s.append(time.perf_counter() - t0)
            if terminated or truncated:
                break
        report.returns.append(total)
        report.lengths.append(n)
        self.episodes += 1
        if self.learns and self.cfg.reward == "episode":
            past = self._shaped[-self.cfg.baseline_episodes:]
            self.session.modulate(g - (float(np.mean(past)) if past else g))
            self.session.step(ev.empty())        # the reward-delivery window
            self.session.modulate(0.0)
            self._shaped.append(g)

    def run(self, episodes: int, schedule=None) -> LoopReport:
        """Run ``episodes`` episodes. ``schedule(episode, returns) -> dict | None`` (optional, Python
        only; ``returns``: the returns of this run's episodes so far): rule parameters (e.g. ``beta``,
        ``temperature``, ``lr``) set on the device's plastic projections before each episode — a
        learning-rate or temperature schedule, or one regulated by the performance."""
        if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
            raise OptionError(f"episodes must be a whole number ≥ 1, got {episodes!r}")
        report = LoopReport(self.cfg.name)
        for _ in range(int(episodes)):
            if schedule is not None:
                changes = schedule(self.episodes, list(report.returns))
                if changes:
                    set_rule = getattr(getattr(self.session, "device", None), "set_rule", None)
                    if set_rule is None:
                        raise DeviceError(f"device '{self.session.device_name}' has no learning rules to schedule"
                                          + ("" if hasattr(self.session, "device") else
                                             " from this side of `nmc serve` (only the third factor travels)"),
                                          hint="run the schedule on a local session (nmc.open)")
                    set_rule(**changes)
            self.episode(report)
        return report

    def close(self) -> None:
        self.env.close()
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
