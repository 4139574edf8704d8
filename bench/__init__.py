"""nmc benchmarks against peers (issue #11): ``python -m bench [--quick] [--only ...]``.

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
