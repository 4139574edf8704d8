"""Closed-loop test agents (import as ``from loop_agents import agent, SPORE`` inside tests/):
a one-layer IF network for CartPole (4 observations × 8 bins in, 2 actions out), frozen or with a
plasticity rule on its projection, compiled for the reference target."""
import nir
import numpy as np

import nmc
from nmc.ir import Graph
from nmc.plasticity import Plasticity

#: reward-modulated synaptic sampling on the agent's projection
SPORE = Plasticity(rule="spore", third_factor="reward", beta=1.0, temperature=0.1, theta0=3.0, prior_mean=2.5,
                   tau_baseline=0.05, seed=1)


def agent(rule=None, n_in=32, n_out=2, w=0.1):
    g = Graph(meta={"dt": 1e-3})
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    g.add_node("w", nir.Affine(weight=np.full((n_out, n_in), w), bias=np.zeros(n_out)))
    g.add_node("n", nir.IF(r=np.full(n_out, 1000.0), v_threshold=np.full(n_out, 1.0)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n_out])}))
    for e in (("in", "w"), ("w", "n"), ("n", "out")):
        g.add_edge(*e)
    if rule is not None:
        g.annotate("w", rule)
    return nmc.compile(g, target="reference", fidelity_check=False)
