"""nmc benchmarks against peers (issue #11): ``python -m bench [SECTION ...] [--quick]``.

Sections (one module each, each with ``run(quick: bool) -> dict``):

* :mod:`bench.throughput` — emulator timesteps/s of every registered target vs
  Lava (fixed_pt, floating_pt), snnTorch, Norse and Brian2 on the same networks;
* :mod:`bench.compile_time` — compile time and peak memory vs size, growth exponent;
* :mod:`bench.placement` — partition traffic/cores vs lower bound, sequential, greedy;
* :mod:`bench.fidelity` — accuracy and agreement with the float reference;
* :mod:`bench.transport` — runtime sessions: events/s and latency, local vs TCP;
* :mod:`bench.energy` — energy estimates next to published figures.

Results go to ``bench/results/<section>.json`` (sorted keys); :mod:`bench.report`
renders ``BENCHMARKS.md`` from them.
"""

import os as _os

# One BLAS thread for every numpy/scipy user (the emulators' matmuls, Brian2's numpy target) and for the
# child processes: at these sizes a second OpenBLAS thread only adds synchronisation, and on a shared
# 2-core machine its spinning threads distort timings by up to 100× (measured: the spinnaker2 emulator at
# batch 64 ran 26 steps/s with 2 threads under load, 4,600 with 1). Set before numpy is imported;
# torch's intra-op threads are set to 1 in bench.__main__ for the same reason.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    _os.environ.setdefault(_v, "1")
