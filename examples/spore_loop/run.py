"""CartPole learned in closed loop with reward-based synaptic sampling (SPORE), in nmc's float
reference simulator, against a random policy; the effect of temperature / learning-rate schedules.

    python examples/spore_loop/run.py [--episodes 150] [--seeds 3]

The agent is one plastic projection 32 → 2·K IF neurons (K per action, default 1; v += W·s per 1 ms
step, spike and reset at v ≥ 1) with fixed lateral inhibition between the two action groups.
``nmc.open(bundle, env="CartPole-v1", env_options={"reward": "episode"})``
(:mod:`nmc.runtime.closed_loop`) codes each of the 4 observations in 8 bins (one-hot, one spike per
step), runs 5 steps per action, takes the action whose neurons spiked most (ties: a seeded coin), and
after each episode feeds its return's advantage over the last 10 episodes' mean to the rule's third
factor. The rule is :class:`nmc.plasticity.Plasticity` with ``rule="spore"`` (Kappel et al. 2018;
equations in :mod:`nmc.plasticity`): θ follows dθ = β(∂ log p_S/∂θ + c·M·e)dt + sqrt(2βT)dW,
w = exp(θ − θ0) while θ > 0, with M the advantage and e the STDP eligibility (A+ = A−: the post
spikes' deviation from their running rate). The network's state and weights carry over from episode
to episode.

Schedules compared (each over ``--seeds`` seeds, episode returns averaged):

* ``constant``: β and T fixed;
* ``annealed``: T and β decay as 1/(1 + episode/τ_anneal) (exploration first, then consolidation);
* ``regulated``: β and T constant until the mean return of the last 10 episodes reaches ``--gate``,
  then β = T = 0 (learning stops and the sampled network is kept: the SPORE experiments' point that
  learning rate and temperature must be regulated for performance to be retained);
* ``no noise``: T = 0 (the reward gradient alone);
* ``random policy``: uniformly random actions (no network).

Prints the mean return of the first and last 20 episodes per schedule; writes
``out/spore_loop/result.json`` and ``out/spore_loop/reward.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nir
import numpy as np
import torch

import nmc
from nmc.ir import Graph
from nmc.plasticity import Plasticity

ROOT = Path(__file__).resolve().parents[2]
DT, N_IN = 1e-3, 32


def agent(k: int, rule: Plasticity, w0: float, inhibition: float = 2.0):
    """obs (32) → plastic W → act (2·K IF neurons) → out, with fixed lateral inhibition between the two
    action groups (act → lat → act, one step late: a spike of one group subtracts ``inhibition`` from
    every neuron of the other), so the group that fires first takes the step and its synapses the credit."""
    n_out = 2 * k
    g = Graph(meta={"dt": DT})
    g.add_node("obs", nir.Input(input_type={"input": np.array([N_IN])}))
    g.add_node("w", nir.Affine(weight=np.full((n_out, N_IN), w0), bias=np.zeros(n_out)))
    g.add_node("act", nir.IF(r=np.full(n_out, 1.0 / DT), v_threshold=np.ones(n_out)))
    group = np.repeat([0, 1], k)
    g.add_node("lat", nir.Linear(weight=-inhibition * (group[:, None] != group[None, :]).astype(float)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("obs", "w"), ("w", "act"), ("act", "lat"), ("lat", "act"), ("act", "out")):
        g.add_edge(*e)
    g.annotate("w", rule)
    return nmc.compile(g, target="reference", fidelity_check=False)


def random_policy(episodes: int, seed: int) -> list[float]:
    import gymnasium

    env = gymnasium.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    out = []
    for ep in range(episodes):
        env.reset(seed=seed * 100_000 + ep)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(int(rng.integers(2)))
            total += r
            done = term or trunc
        out.append(total)
    env.close()
    return out


def run_schedule(name: str, a, seed: int) -> tuple[list[float], list[float]]:
    rule = Plasticity(rule="spore", third_factor="reward", beta=a.beta, temperature=a.temperature,
                      prior_mean=a.prior_mean, prior_std=a.prior_std, theta0=a.theta0, c_reward=a.c_reward, tau_e=a.tau_e,
                      tau_plus=20e-3, a_plus=a.a_plus, a_minus=a.a_minus, tau_baseline=a.tau_baseline, theta_min=-3.0, theta_max=a.theta_max,
                      seed=seed)
    w0 = float(np.exp(a.prior_mean - a.theta0))
    if name == "no noise":
        schedule = lambda ep, returns: {"temperature": 0.0} if ep == 0 else None  # noqa: E731
    elif name == "annealed":
        schedule = lambda ep, returns: {"temperature": a.temperature / (1 + ep / a.anneal),  # noqa: E731
                                        "beta": a.beta / (1 + ep / a.anneal)}
    elif name == "regulated":
        def schedule(ep, returns):   # consolidate (β = T = 0) once the last 10 episodes average ≥ gate
            if len(returns) >= 10 and np.mean(returns[-10:]) >= a.gate:
                return {"beta": 0.0, "temperature": 0.0}
            return None
    else:
        schedule = None
    with nmc.open(agent(a.k, rule, w0, a.inhibition), env="CartPole-v1",
                  env_options={"seed": seed * 100_000, "max_steps": a.max_steps, "reward_offset": a.reward_offset,
                               "terminal_reward": a.terminal_reward, "reward": "episode"}) as loop:
        rep = loop.run(a.episodes, schedule=schedule)
    return rep.returns, rep.latency_s


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=1, help="neurons per action")
    ap.add_argument("--inhibition", type=float, default=1.0, help="lateral inhibition between the action groups (0: none)")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--prior-mean", type=float, default=1.0)
    ap.add_argument("--prior-std", type=float, default=3.0)
    ap.add_argument("--theta0", type=float, default=2.5)
    ap.add_argument("--c-reward", type=float, default=1.0)
    ap.add_argument("--tau-e", type=float, default=0.5)
    ap.add_argument("--a-plus", type=float, default=0.05)
    ap.add_argument("--a-minus", type=float, default=0.05)
    ap.add_argument("--theta-max", type=float, default=4.0)
    ap.add_argument("--tau-baseline", type=float, default=0.0)
    ap.add_argument("--anneal", type=float, default=20.0, help="episodes over which the annealed schedule halves")
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--reward-offset", type=float, default=0.0, help="added to CartPole's +1 per step")
    ap.add_argument("--terminal-reward", type=float, default=0.0, help="added when the pole falls")
    ap.add_argument("--gate", type=float, default=40.0, help="regulated: the 10-episode mean return that stops learning")
    ap.add_argument("--schedules", default="constant,annealed,regulated,no noise")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "spore_loop")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    curves: dict[str, np.ndarray] = {}
    latency: list[float] = []
    t0 = time.perf_counter()
    for name in a.schedules.split(","):
        runs = []
        for s in range(a.seeds):
            ret, lat = run_schedule(name, a, s)
            runs.append(ret)
            latency += lat
        curves[name] = np.mean(runs, axis=0)
    curves["random policy"] = np.mean([random_policy(a.episodes, s) for s in range(a.seeds)], axis=0)
    n = min(20, a.episodes)
    res = {"episodes": a.episodes, "seeds": a.seeds, "run_s": round(time.perf_counter() - t0, 1),
           "latency_per_step_ms": {"mean": 1e3 * float(np.mean(latency)), "p50": 1e3 * float(np.median(latency)),
                                   "p99": 1e3 * float(np.percentile(latency, 99))},
           "schedules": {k: {"first": float(v[:n].mean()), "last": float(v[-n:].mean()), "curve": v.tolist()}
                         for k, v in curves.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    if not a.no_plot:
        plot(curves, a.out / "reward.png")
    print(f"SPORE closed loop on CartPole-v1: {a.episodes} episodes × {a.seeds} seeds, "
          f"loop latency {res['latency_per_step_ms']['mean']:.2f} ms/step (p99 {res['latency_per_step_ms']['p99']:.2f})")
    print(f"{'schedule':16s} {f'first {n}':>9s} {f'last {n}':>9s}")
    for k, v in res["schedules"].items():
        print(f"{k:16s} {v['first']:9.1f} {v['last']:9.1f}")
    return res


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, v in curves.items():
        w = min(10, len(v))
        smooth = np.convolve(v, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w, smooth, label=k, ls="--" if k == "random policy" else "-")
    ax.set_xlabel("episode")
    ax.set_ylabel("return (mean over seeds, 10-episode moving average)")
    ax.set_title("CartPole-v1: SPORE synaptic sampling in closed loop (nmc reference)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    r = main()
    s = r["schedules"]
    best = max(v["last"] for k, v in s.items() if k != "random policy")
    sys.exit(0 if best > s["random policy"]["last"] else 1)
