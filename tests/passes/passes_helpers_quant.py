"""Small graphs for the quantize/sparsify tests."""
import nir
import numpy as np

from nmc.ir import Graph


def ff_graph(n_in=6, n_h=16, n_out=4, w_scale=1.0, thr=1.0, seed=0) -> Graph:
    rng = np.random.default_rng(seed)

    def lif(n):
        return nir.LIF(tau=np.full(n, 5e-3), r=np.full(n, 5.0), v_leak=np.zeros(n), v_threshold=np.full(n, thr),
                       v_reset=np.zeros(n))

    return Graph.from_nir(nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
               "fc1": nir.Affine(weight=rng.normal(0, w_scale, (n_h, n_in)), bias=rng.normal(0, 0.05, n_h)),
               "lif1": lif(n_h), "fc2": nir.Linear(weight=rng.normal(0, w_scale, (n_out, n_h))), "lif2": lif(n_out),
               "output": nir.Output(output_type={"output": np.array([n_out])})},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")],
        type_check=False))
