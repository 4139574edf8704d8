"""Render BENCHMARKS.md from ``bench/results/*.json`` (see :mod:`bench.__main__`).

Every figure in a table comes from the result files; the prose notes for
losses (why nmc loses, what would fix it) are in ``NOTES`` and are printed
only where the results show the loss.
"""
from __future__ import annotations

from pathlib import Path

from .common import load

#: why an nmc simulator loses, and the fix (from profiling; shown only when the results show a loss)
NOTES = {
    "nmc brainscales2": "emulating continuous time costs 10 fine sub-steps per model step (fused per neuron in "
                        "numba, `backends/brainscales2/fast.py`), i.e. 10× the neuron updates of a discrete-time "
                        "simulator, and its weights are the dense effective matrices rebuilt from the synapse "
                        "array (a convolution expanded to a dense block). Fix: skip neurons at rest between "
                        "events in the fused loop (closed-form decay over the idle sub-steps) and keep "
                        "expanded conv blocks sparse.",
    "nmc reference": "the float reference steps node by node through torch float64 with per-node dispatch "
                     "(`nmc/reference.py` step → dynamics); at batch 1 the ~20 µs per torch op dominates. It is the "
                     "oracle, not a fast path; a fused float32 step (or the chip emulators) is the fix.",
    "nmc spinnaker2": "per step: an event-driven numba scatter of the active inputs' conv kernel taps, then "
                      "the LIF update as numpy array operations over each population (a few µs of Python and "
                      "numpy dispatch per operation at batch 1). Fix: fuse the whole step per population in numba.",
    "nmc loihi2": "convolutions are expanded to synapse blocks as on the chip; the numba loop walks only the "
                  "active sources' rows of those sparse blocks (`backends/loihi2/fast.py`) and records only the "
                  "groups asked for, but it is a scalar loop over every neuron each step. Fix: skip neurons "
                  "whose state is at rest with no input (event-driven neuron updates).",
    "compile": "what made the 10⁷-synapse compiles slow (cProfile before the placement-scale work: loihi2 31 s, "
               "spinnaker2 on 48 chips 58–102 s) and what was done: `partition` 27–33 s — incremental per-core "
               "source counters in the packer instead of np.union1d/np.unique per move, incidences by one sparse "
               "product instead of sort-and-dedupe, the block graph coarsened to ≤ 10⁶ edges (dense layers: "
               "blocks² edges), greedy limited to 16 exact axon checks per block; `route` 18 s — multicast trees "
               "from their row/column extents instead of walking every path; `place` 5–7 s — the annealing move "
               "loop compiled with numba; the network model built once per compile and shared through the pass "
               "context (keyed on a digest of the graph); `quantize` 4–10 s — the fidelity simulation fitted to "
               "10⁸ synaptic ops (reported under `simulated`) and rounding in place; weight arrays shared "
               "read-only between passes instead of deep-copied. What remains on a 2-core machine shared with "
               "other jobs: bundle write (gzip of the weights, ~2–3 s), the backends' own lowering (~2–3 s) and "
               "the quantize pass's weight statistics (~1–2 s).",
    "compile_1e8": "the 10⁸ figures are extrapolated from the largest dense compiles measured (each stage "
                   "fitted on its own, so a stage whose growth is steeper than linear shows in its k), not "
                   "measured: a dense 10⁸-synapse network (10⁴ LIF neurons, all-to-all) hands the compile one float32 "
                   "matrix (400 MB), and the compile still materialises whole weight matrices per layer (the "
                   "graph's float weights, the quantized integer weights, the per-core arrays the backend lowers "
                   "to). The fix the issue names: build the network model and the per-core arrays streaming from "
                   "sparse weights, with no dense intermediate; until then the peak grows with the matrix (k ≈ 1 "
                   "at best). A measured run (`python -m bench compile` with 10⁸ added to `SIZES['dense']` in "
                   "`bench/compile_time.py`) needs about the RSS and time shown here per target, and the harness "
                   "gives each size `timeout_s` before it stops that family.",
    "transport": "a transport-alone window (≈ 410 events in, as many out) costs ≈ 20 µs of the stepping "
                 "thread's CPU time in a local session (best of 9 passes, 2-core development machine, "
                 "2026-12-07): events → dense ≈ 5 µs, the device's advance ≈ 1.5 µs, dense → events ≈ 6 µs "
                 "(a bit mask of the non-zeros, then one step per event instead of a branch per cell), the "
                 "rest the session's Python calls; i.e. ≈ 2·10⁷ events per CPU second. The slow tail that "
                 "pulls the wall-clock mean down is time the thread was not running: per window, wall time "
                 "and the thread's CPU time (`time.thread_time`) agree at the median while single windows "
                 "take 5–30 ms of wall time and < 0.4 ms of CPU; no garbage collection ran meanwhile "
                 "(`gc.get_count()` unchanged, and disabling it changed nothing). So on a loaded machine the "
                 "mean measures the load; the CPU figure in the goals line does not. Over TCP the server runs "
                 "in a process of its own (as `nmc serve` does); a connection whose session is not paced is "
                 "served by one thread that reads a frame with one buffered receive (`protocol.FrameReader`), "
                 "decodes all of its windows into one array per node (`protocol.unpack_tables`), steps them "
                 "with one session call (`Session.step_windows`), encodes the outputs per node in one pass "
                 "(`protocol.pack_tables`), writes them with one `sendmsg`, then reads the next frame: no "
                 "reader thread, no queue between threads (a paced session keeps both, to decode ahead "
                 "while it waits for the tick). Measured per window in the live processes with frames of 16 "
                 "(`time.thread_time` around each piece, 8,000 windows, 2026-12-07, load 6–7 on 2 cores): "
                 "the server's connection thread 30 µs = decode 8.7 + step 7.8 + encode 7.2 + send 3.4 + "
                 "receive 1.2, i.e. the pieces account for all but ≈ 2 µs of it (budget and counters); the client 29–35 µs = its sender "
                 "thread (pack 6.9, send 3.7, per-window checks ≈ 6) and its consumer (decode 9.2, "
                 "per-window output dicts 3.6, receive 3.6), which share the socket, not a queue. The "
                 "reader/stepping hand-off it replaced cost ≈ 3–8 µs per window (server process 32–37 µs "
                 "before, 28–33 µs after, medians of 5 runs each, alternated in each of two sittings; unbatched "
                 "stream 180 → 150 µs), not the "
                 "20–40 µs inferred before: the pieces run ≈ 1.5× slower in the live processes than in the "
                 "breakdown's hot loop (best of 3, one process), which is where that gap was. So each "
                 "process needs ≈ 30 µs of CPU per window, ≈ 1.3·10⁷ events per CPU second, and a "
                 "window of 410 events may take 82 µs of wall time for 5·10⁶ events/s: the goal holds "
                 "whenever each process gets ≥ 40 % of a core. Wall clock, same sitting: at load ≈ 4.7 on 2 "
                 "cores 5.4–6.7·10⁶ events/s (medians of 5; before: 4.7–5.1·10⁶) and 5.1·10⁶ in one "
                 "`python -m bench transport` run; at load 6–7 2.8–6.5·10⁶ across runs (before: "
                 "3.1–3.7·10⁶), so there the wall figure measures the load. What would cut the CPU itself: the "
                 "compiled decode and encode (≈ 20 ns per event, two passes reading the payload byte by "
                 "byte) and the Python work per window (the client's checks and output dicts). The "
                 "unbatched modes still pay a frame, or a round trip, per window. Every wall-clock "
                 "figure here is a lower bound when other processes share the cores; the CPU figures in "
                 "the goals line are not.",
    "compile_1e8_measured": "`dense_ff` reaches 10⁸ synapses, so the goal is judged on a measured compile, not an "
                            "extrapolation. What the compile runs at that size: `quantize` rounds the weights in "
                            "row blocks and checks them with three reference simulations (float, dequantized, "
                            "integer) shortened to 16 steps × 1 sample (`max_sim_synops`; 16 steps is the floor, "
                            "so 1.6·10⁹ multiply-accumulates each); `partition` builds the network model (the 10⁸ "
                            "synapse counts as one sparse matrix), estimates activity on the synthetic probe "
                            "shortened to 24 steps × 4 samples (`RATE_MAX_SYNOPS` = 10¹⁰, stated in the placement "
                            "report's `rates`), runs METIS on the block graph beside the baselines (Mt-KaHyPar skipped: "
                            "on spinnaker2 above `kahypar_max_pins`, on loihi2 above `kahypar_max_parts`, the placement "
                            "report's `portfolio` says which); the `fidelity check` runs the float "
                            "reference and the emulator on the probe shortened to 16 steps × 1 sample (stated in "
                            "`reports/fidelity.json` under `input`), then assembles the bundle (arrays of 2²² "
                            "elements or more stored without gzip). What still grows with the synapses: the "
                            "network model's sparse matrix and its transpose, the float64 weight copies each "
                            "simulation and the lowering make (800 MB each at 10⁸), and the digests of the "
                            "bundle's files. Measured 2026-12-07 (one compile per fresh process, `nice`, one thread, "
                            "CPU seconds per stage; the wall time on the shared 2-core machine was 1.4–4× the CPU "
                            "time, stage figures move by up to a third between runs): loihi2-halapoint before the "
                            "changes below 108.3 s CPU in all (cProfile on), `partition` 60.3 s, of it 37 s Mt-KaHyPar "
                            "(profiled: the block hypergraph had 245,903 pins, under `kahypar_max_pins`, split into 765 "
                            "parts, which the repair could not fill, then 1,488 parts, for 1,496 blocks), peak RSS 7.5 GB; "
                            "after them 53.8 and 65.3 s CPU in all (two runs: quantize 5.7 / 11.3, partition 16.3 / 23.2, "
                            "place 2.0 / 1.6, route 0.5 / 0.5, lower 11.4 / 12.7, fidelity check 17.8 / 15.8), peak RSS "
                            "7.5 GB (in the fidelity check); after the two changes of the next measurement (the traffic bound's loads "
                            "in one pass, the cores' lower bound once per model) 51.7 and 51.0 s CPU in all (two runs, "
                            "the first with the first change only: quantize 4.4 / 4.7, partition 19.0 / 16.7, place 1.6 / "
                            "1.7, route 0.5 / 0.4, lower 9.8 / 10.9, fidelity check 16.3 / 16.4), peak RSS 7.5 GB, within "
                            "the runs' spread of the ones before; with the pins' matrix built by insertion too 57.1 s "
                            "CPU (quantize 8.0, partition 17.9, place 1.8, route 0.5, lower 13.4, fidelity check 15.4: "
                            "the stages it does not touch moved most), `partition`'s peak RSS 4.5 GB instead of 5.3 GB, "
                            "peak RSS 7.5 GB; spinnaker2-48chip "
                            "after them 52.2 s CPU in all (quantize 7.7, partition 27.7, lower 6.3, fidelity check 5.9), "
                            "peak RSS 5.5 GB (44.4 s CPU and 5.4 GB before: the change is within the runs' spread, "
                            "Mt-KaHyPar was already skipped there). The changes: Mt-KaHyPar runs only on splits into up "
                            "to `kahypar_max_parts` = 1,024 parts (the cores of sequential fill; at a fixed pin count "
                            "its time grows with the parts, and at one or two blocks per core there is little to "
                            "split), the pin budget's mechanism with a second limit; the network model's key hashes "
                            "each read-only node array once per compile (`PassContext.digests`, emptied when the pass "
                            "manager makes the arrays writable again), not on every model request. Then: the per-net traffic "
                            "bound sums a net's loads (neurons, bytes, work, the pins of each node) as one product of "
                            "its pins with a many-column array, bit for bit the one-vector products it made before "
                            "(scipy adds a row's terms in the same order; one pass over the 10⁸ pins instead of 3 + "
                            "nodes), and the cores' lower bound is kept per network model and limits "
                            "(`Network.memo`), shared by the design rules and the partitioner, and the bound's pins' matrix "
                            "is the transpose with the placed sources' diagonal inserted into its indices (no sparse "
                            "sum: one array of float64 ones, not two; the same matrix); the bound is computed "
                            "once per compile (6.4 s of the 10⁸ compile's 21.4 s `partition`, wall, under cProfile, before the "
                            "insertion) and costs 0.10 s CPU on the 10⁷-synapse `dense_ff` model (0.15–0.18 s before, "
                            "timed apart from a compile), so it was "
                            "not most of what `partition` spends. Earlier the same "
                            "day: the cores' lower bound counts each source's input axon on every core its targets "
                            "need; the work vector of a dense projection's rows is one left-to-right sum of its "
                            "sources' rates (bit for bit the product's) instead of A·rate with a float64 copy of A; "
                            "weight patterns come from one flat scan per row block. What is left: loihi2 is at the 60 s "
                            "goal, not below it with margin (51–65 s CPU over the five runs above); in "
                            "`partition` the synapse-level matrix, its transpose and the per-net lower bound's "
                            "pattern (10⁸ entries each; a closed form of the bound per dense projection would have to "
                            "keep the pins' order in the work sum to stay bit for bit; a block-level model of dense projections, one entry per "
                            "block pair, would remove them), the activity probe's simulation; the lowering's and the "
                            "fidelity check's float64 weight copies; and the refused first attempt on the one-board "
                            "spec (Kapoho Point), whose quantize and network model are not reused by the retry on "
                            "Hala Point. Then `lower` and the `fidelity check` (measured 2026-12-07, before and after "
                            "one after the other, the same harness): 64.4 → 51.2 s CPU in all (66.9 → 54.6 s wall), "
                            "`lower` 13.4 → 11.8 s CPU, `fidelity check` 15.8 → 9.9 s CPU (quantize 7.7 / 7.3, "
                            "partition 24.7 / 19.6: the stages not touched moved by their usual spread), peak RSS "
                            "7.1 → 6.7 GB (in the fidelity check). Profiled (cProfile), the fidelity check spent 8.1 "
                            "of its 16.8 s building the emulator's tables: Lava's weights as int64, then float64, "
                            "then transposed twice (the lowering's weights are column-major), the mixed-sign halves "
                            "summed through fresh temporaries. Now Lava's weights are cast once to row-major float64 "
                            "and clipped and evened in place (`lava_weights_f64`, the same values: tested against "
                            "`lava_weights`), that array is the dense block's matmul matrix, the halves are summed "
                            "into one array in place; `lower`'s worst-case ranges (4.4 s) reuse one buffer for both "
                            "signs' parts, the split signs' parts one buffer; the manifest reuses graph.nir's digest. "
                            "Bundles are byte-identical (LIF, conv, dense_ff at 10⁵ on loihi2, every file's sha256). "
                            "Left in `lower`: quantizing (2.8 s), the composed float64 drive matrices and the float64 "
                            "copies of the weights for the linear composition; in the fidelity check the reference "
                            "simulation's float64 weight copies (1.7 s) and the bundle's digests and writing (about 2.3 s).",
    "placement_units": (
        "Unit moves (passes/unit_moves.py, first measured 2026-12-07 with this harness's partition call, "
        "now in the table's run: *chosen* says '+ units' where it was kept, its time is the last stage): from the portfolio's best assignment, single neurons move, or swap pairwise, "
        "between the cores their nets touch when the exact km1 traffic drops and both cores stay within every "
        "limit (neurons, synapse bytes, input axons counted exactly); units in index order, then only those next "
        "to a move; a deterministic work budget of 16 pin visits per synapse and unit (at least 3·10⁸), ending a "
        "tenth of it after the last gain; compiled with numba. It is kept only when strictly better, so it never "
        "returns worse than its start, and runs where blocks hold several neurons (not at 10³, where the "
        "partitioners already place single neurons). nmc / seq and nmc / bound: recurrent 10⁴ 12,359 / 12,453 = "
        "0.992 (from Mt-KaHyPar's 12,402), 64×; 10⁵ 121,760 / 121,972 = 0.998 (from sequential fill, 157 swaps), "
        "78×; 10⁶ 463,091 / 468,823 = 0.988 (4,352 swaps), 30×; feed-forward 10⁴ 125,780 / 129,984 = 0.968 "
        "(from 127,288), 38×; 10⁵ 5,965,504 / 6,022,748 = 0.990, 179×; 10⁶ 15,767,811 / 15,902,171 = 0.992, 47×; "
        "10³ unchanged (feed-forward 0.85, 5.1×; recurrent 0.99, 19×); conv unchanged (no move gains on "
        "Mt-KaHyPar's tiles). Stage time on the shared, loaded 2-core machine: recurrent 0.6 / 2.5 / 6.3 s at "
        "10⁴ / 10⁵ / 10⁶ (10⁶ pass 13.3 s, 5.5 s in the table's run), feed-forward 8.6 (with numba's first "
        "compile, cached after) / 8.9 / 18.9 s (10⁶ pass 104.5 s, METIS 53.6 s of it; 57.8 s in the table's "
        "run), conv ≤ 1.7 s (no gain: it stops early); the same result on every run. So the goal < 1 × sequential holds on every net with locality, and sequential "
        "fill is not optimal on any of them; a larger budget gains more on the random nets (feed-forward 10⁵: "
        "0.987 at 5·10⁸ visits, 0.924 after about 100 s of search) and little on the ring (10⁵: 0.997 at 5·10⁸): "
        "a ring source's ±128 window is as wide as a core, so it pays nothing only where its core holds its "
        "whole window, and bringing one source's targets in pushes another's out. Not proved: no lower bound "
        "couples the ring's or a random layer's nets yet (the bound is per net, so nmc / bound stays 30–180×); "
        "the bound that would (a core's zero-pay sources have the union of their targets within its 256 "
        "neurons, so traffic ≥ host part + sources − Σ_cores the most zero-pay sources a core can hold, checked "
        "against brute force on tiny instances) is not built. Dense layers (the compile harness's dense_ff, "
        "measured 2026-12-08 by timing the partition call of its compile, `nice -n 10`, one thread): at 10⁷ and "
        "10⁸ synapses every net has over 512 pins, so no unit is on a net the sweep visits (0 pin visits), yet "
        "the stage built its tables and loaded its compiled functions: spinnaker2-48chip 10⁷ 0.78 s (0.19–0.35 s "
        "after the first call in the process), loihi2 and loihi2-halapoint 10⁷ 0.81–0.92 s (0.17–0.52 s), "
        "spinnaker2-48chip 10⁸ 3.6 s (8.9 s more where numba's cache is stale and the functions compile); now it "
        "checks the nets first and returns at once (0.00 s at 10⁷, 0.02 s at 10⁸). The result is the same: the "
        "check ends only a run that would visit no unit (this harness's feed-forward and recurrent nets at 10⁴, "
        "10⁵ and 10⁶, partitioned with method=metis: traffic, moves, swaps, visits and every unit's core unchanged). "
        "At 10⁶ synapses (354 targets per net) the dense nets are cut and the stage ends after its stall of 3·10⁷"
        " visits without a move (0.14 s)."),
}


def _f(x, nd=0, unit=""):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100 or nd == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{nd}f}{unit}"


def _si(x, unit):
    if x is None:
        return "—"
    for s, m in (("", 1), ("m", 1e-3), ("µ", 1e-6), ("n", 1e-9)):
        if abs(x) >= m:
            return f"{x / m:.3g} {s}{unit}"
    return f"{x:.3g} {unit}"


def _hdr(d, what):
    m = d["meta"]
    return (f"Command: `.venv/bin/{m['command']}` — "
            f"run {m['date']}, {m['cpus']} CPU cores, {m.get('wall_s', '?')} s.{' ' + what if what else ''}\n")

#: why an nmc simulator loses at the batched size, and the fix (shown only when the results show the loss)
NOTES_BATCHED = {
    "nmc reference": "it is the float64 oracle: every tensor op in float64 (about twice the memory traffic of the "
                     "peers' float32) and one torch call per node and state variable per step (conv at batch 64, "
                     "cProfile: `torch.conv2d` 30 %, avg-pool 13 %, the per-node LIF/IF updates the rest). It is "
                     "the reference, not a fast path: `precision=\"float32\"` (an explicit option of the reference "
                     "device) runs conv at batch 64 about 1.7× faster, measured outside this table, which keeps "
                     "the oracle's default.",
    "nmc spinnaker2": "conv_pool's conv-fed layer sums its conv with the signed kernel into arrays kept across "
                      "steps and its pooled LIF layer takes one signed matmul (`backends/spinnaker2/conv_lif.py`, "
                      "profile and change under the conv_pool table); what is left per step at batch 64 is the "
                      "batch-innermost scatter (about half), numpy's transpose of its (n, B) sums and the fused "
                      "update. Next: the update reading the (n, B) sums in cache-sized tiles without the "
                      "transposed copy (a first compiled tile loop did not vectorise and was slower).",
    "nmc brainscales2": "integer input sums per active source, one drive per layer, the closed form over a "
                        "step's idle fine steps and its vectorised selects are in (conv_pool note); what is "
                        "left at batch 64 is the per-sample scatter of the conv's synapses (scalar adds, "
                        "about 0.35 ms per step) and the float64 state's memory traffic (1 MB per variable).",
    "nmc loihi2": "the numba loop runs with the batch innermost (each weight row read once per step for the "
                  "whole batch); since 2026-12-07 its neuron update is branch-free over the batch (no decay "
                  "products for IF/sum-pool neurons), a mixed-sign projection's two halves run as one block "
                  "(W·2^e summed, exact), blocks whose accumulator outgrows the caches are walked target by target "
                  "when most sources are active, the synapses add straight into the next step's input, the "
                  "device's input check is one compiled pass (`payload.payload_of`) and the tables are kept per "
                  "program without per-run hashing (`backends/program_cache.py`: arrays read-only, compared by "
                  "identity). Measured on the shared 2-core machine, conv_pool at batch 64, best of 5 with Norse "
                  "in the same run: before 524 steps/s (1.15× Norse in that run, 0.86× in the table before), after "
                  "999–1,141 steps/s (1.49–1.97× Norse); batch 1 1.9× → 3.2–3.9× Norse; lif_mlp and "
                  "braille_cubalif gain too. Full runs on the merged code: conv_pool batch 64 "
                  "851 / 1,070 / 864 steps/s, 1.35× / 1.77× / 1.32× Norse (was 488, 0.86×). What is left for loihi2 is ssm_s4d at batch 64: "
                  "its reason and fix are under that table.",
}

#: the peers a chip emulator must reach for issue #19 (the SSM workload has its own, bench/ssm_workload.py)
GOAL19_PEERS = ("snnTorch", "Norse", "PyTorch S4D step loop")

#: what was measured and changed on a workload's emulators, shown under its table (section 1)
NOTES_WORKLOAD = {
    "conv_pool": (
        "*Profile and change, spinnaker2 at batch 64 (2026-12-08, OMP_NUM_THREADS=1, thread time, best of 5, "
        "Norse in the same process).* Before: 638–782 steps/s against Norse's 720–767 (0.85–1.02×). cProfile "
        "of 100 steps: the batch-innermost conv scatter 42 %, `np.ascontiguousarray` 22 % (the two transposed "
        "(B, n) copies of the stacked [W⁺; W⁻] sums, (2n, B)), the step's own time 16 % (mostly the pooled "
        "2048 → 10 projection's two matmuls, W⁺ and W⁻, 70–85 µs each), the fused LIF update 7 %. Allocation "
        "was a cost of its own: about 3 MB of arrays made and freed per step crossed glibc's mmap threshold, "
        "and the page faults of their fresh pages cost about a fifth of the step (the same code ran "
        "638 → 811 steps/s with `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_` raised, measured only). "
        "Change: a conv-fed LIF population sums its conv once with the signed integer kernel (not W⁺ and W⁻ "
        "apart) into an (n, B) array kept across steps, numpy copies it transposed into a second kept array, "
        "and the fused update takes the one sum (`backends/spinnaker2/conv_lif.py`, `lif_step.step1`); a LIF "
        "population fed only by fixed dense projections of 0/1 spikes takes one matmul of W⁺ + W⁻ per delay. "
        "Both are exact integer sums below 2^24 (checked when the emulator is built: integer weights, "
        "p²·Σ|K| per output channel, Σ of the largest column sums), so equal bit for bit to the halves "
        "summed apart (tests against im2col + matmul and the numpy update at batch 1 and 12, and a "
        "hand-computed case). After, same runs: 1,149–1,216 steps/s against Norse's 729–746 (1.56–1.67×); "
        "before/after with the previous commit in alternating processes (thread time, best of 5): conv_pool "
        "batch 64 894 / 917 → 1,116 / 1,229, batch 1 11,499 / 11,536 → 14,980 / 15,006; lif_mlp batch 64 "
        "9,626 / 9,668 → 10,761 / 11,200, batch 1 30,191 / 30,465 → 38,465 / 38,687 (its second layer takes "
        "the one matmul); braille_cubalif unchanged (current-based neurons keep W⁺ and W⁻ apart). A batch-"
        "innermost sum for brainscales2's conv layer was tried too and dropped: in float64 its (n, B) "
        "accumulator is 1 MB, twice the L2, and the layer ran slower (1.59 vs 1.17 ms per step). Its "
        "per-sample neuron update took about 0.5 of the layer's 0.85 ms per step: the closed-form loop did "
        "not vectorise (2.9 ns per neuron even with the state in L1) because `v_reset` and `t_refrac` were "
        "loaded only where a neuron fired; with every operand loaded before the selects it runs at 1.1 ns "
        "(the same operations, bit-identical), and brainscales2 conv_pool at batch 64 went 847 / 860 → "
        "1,055 / 1,114 steps/s (lif_mlp batch 64 7,226 / 7,291 → 8,079 / 8,434), alternating processes, "
        "thread time, best of 5."
    ),
    "ssm_s4d": (
        "*Profile and change (2026-12-07, `nice -n 10`, OMP_NUM_THREADS=1, best of 5, peer in the same run).* "
        "Before: spinnaker2 749 / 341 steps/s at batch 1 / 64 and loihi2 1,864 / 780 against the S4D loop's "
        "14,440 / 6,422 (0.05× / 0.05×, 0.13× / 0.12×). cProfile: spinnaker2 spent 76 % in `ssm.diag_step` "
        "(numpy, one call per mode and input channel with an `astype` each, ~200 array ops per step) and "
        "14 % in the input stage's per-event numpy loop; loihi2 ran a program of graded units through the "
        "numpy step (`link_receive`: a matmul, `np.roll` and copies per link and step, 80 %). Now: "
        "spinnaker2 runs the input stage and the DiagSSM kernel of a population in one compiled call per step "
        "(`backends/spinnaker2/kernel_fused.py`, the C kernel's float32 operations in its order, B̄ and C̄ "
        "transposed so the inner loops run over contiguous modes/channels, the state updated in place); "
        "loihi2 runs a program of graded units and links in one compiled loop "
        "(`backends/loihi2/fast_graded.py`, beside `fast.py`: batch innermost, exact integers in float64, "
        "dense links as one BLAS matmul per step — float32 for binary messages whose row sums stay below "
        "2^24 — the recurrence's 2×2 blocks walked per source). Both bit-exact as before (C kernels, Lava "
        "fixed_pt; the compiled paths against the numpy ones in tests); the spinnaker2 run loop writes its "
        "records into one preallocated array per variable read back (it copied both variables of every "
        "recorded population per step and stacked them: ≈ 25 µs CPU per step at batch 64). Measured after, "
        "three runs, peer in each: least loaded, spinnaker2 51,219 / 12,757, loihi2 50,471 / 7,302, the S4D "
        "loop 22,648 / 11,440 (2.26× / 1.12×, 2.23× / 0.64×); loaded, spinnaker2 30,101 / 6,128 and "
        "30,593 / 6,008, loihi2 44,701 / 3,519 and 35,838 / 3,363, the loop 14,383 / 6,370 and 11,023 / "
        "5,831 (batch 64: spinnaker2 0.96× and 1.03×, loihi2 0.55× and 0.58×). Then, at batch 64 (CPU time "
        "per step, thread time): spinnaker2's kernel ≈ 65 µs (float32 sums in the C kernel's sequential order "
        "per sample, no BLAS, no reassociation); loihi2 ≈ 110 µs (dense-link matmuls 48 µs, Lava's one-sign "
        "links making each signed link two floored matmuls; link buffers into unit inputs 10 µs; the "
        "device's input check 24 µs). *Second change:* spinnaker2's DiagSSM step holds its running sums "
        "for the whole batch, the sample innermost (`_diag_lanes`: the same float32 operations per sample in "
        "the same order, so numba vectorises over the batch; batch 1 keeps the per-sample loop); loihi2 "
        "stacks a source's dense links into one matmul per step (W⁺ and W⁻ of the signed C link: one "
        "128×64 float64 product), packs each binary W⁺/W⁻ pair of the input into one float32 matrix "
        "W⁺ + K·W⁻ (K = 2^10, 2^11: every partial sum below 2^24, W⁻·s = ⌊q/K⌋, W⁺·s = q − K·⌊q/K⌋, "
        "exact; the input's four links one 128×32 product) and floors a delay-0 link's sum straight into "
        "the next step's unit inputs (no ring pass). All bit-exact as before (the same tests, lanes against "
        "the per-sample loop, the packed pairs on all-spiking inputs). Measured, before (the previous "
        "commit's code) and after in the same run with the peer, best of 5, four runs (batch 1 / 64, "
        "steps/s): least loaded, spinnaker2 47,098 / 12,252 → 50,407 / 14,233 and 48,598 / 12,660 → "
        "49,430 / 13,213, loihi2 71,418 / 9,060 → 71,847 / 10,310 and 71,607 / 9,056 → 74,348 / 10,390, "
        "the S4D loop 15,043 / 11,142 and 15,525 / 11,163 (batch 64 after: spinnaker2 1.28× and 1.18×, "
        "loihi2 0.93× and 0.93×); loaded, batch 64: spinnaker2 1.01× and 1.12×, loihi2 1.04× and 1.35×. "
        "The loihi2 loop alone at batch 64: 110 → 97 µs per step (stacking 7 µs, packing 6 µs). "
        "**Still short at batch 64:** loihi2 (≈ 0.93× least loaded): the signed C link still needs W⁺·s "
        "and W⁻·s floored apart (24-bit payloads: no room to pack them in float64), a 128×64×64 float64 "
        "product ≈ 43 µs of the ≈ 97 µs loop step; outside the loop the device's input check (`_payload`) "
        "and the result reshaping ≈ 40 µs. Next fix: the input check in one compiled pass (the largest "
        "part left outside the loop). spinnaker2 is at or above the peer (1.01–1.28×); its next step "
        "would be register blocking (8 lanes × 4 modes of accumulators across each sum), without FMA "
        "(the C kernel rounds the product and the sum apart). *Third change (loihi2, batch 64):* the "
        "signed C link's W⁺/W⁻ pair runs as one float64 product W⁺ + K·W⁻ on every step whose max|s| keeps all "
        "partial sums below 2^53 (K chosen per step, else both products; here every step: max|s| < 2^18, "
        "column sums 208 / 204; the product 29 → 15 µs alone), the loop's tables are built once per program "
        "and the products go into preallocated rows; bit-exact as before (the numpy step, Lava). cProfile, "
        "20 runs of 300 steps on a loaded machine: the loop 113 → 77 µs per step, outside it 40 → 20 µs; "
        "before (the previous commit's loop) and after in the same runs, best of 7, ten rounds: after at or "
        "above before in most (e.g. 7,253 → 10,087, 10,302 → 12,896, 11,818 → 13,312, 10,410 → 12,333 "
        "steps/s against the S4D loop's 7,855, 9,779, 11,162, 10,848: 0.92× → 1.28×, 1.05× → 1.32×, 1.06× "
        "→ 1.19×, 0.96× → 1.14×), equal within the load's noise in the rest (0.87–0.92×). *Fourth change "
        "(loihi2, 2026-12-08):* of the ≈ 20 µs per step left outside the loop most was two run-long "
        "arrays made per run, a transposed (step, input, sample) copy of the input and the output's int64 "
        "record divided into a new float64 array (9.8 MB each at batch 64, fresh pages every run); the loop "
        "now reads the one input port as given and records the payloads as float64 integers (exact below "
        "2^53) that the device divides by the scale in place (an `.v_int` array only when recorded). "
        "cProfile per run of 300 steps: 30 → 24 ms; alternating processes, thread time, best of 5, batch 64: "
        "9,698–11,033 → 14,599–14,636 steps/s against the loop's 10,168–11,806 (0.86–1.09× → 1.24–1.25×); "
        "batch 1 unchanged."),
    "egru": (
        "*Profile and change (2026-12-07, the same runs as ssm_s4d).* Before: spinnaker2 1,104 / 284 "
        "steps/s (batch 1 / 64) against the reference's 2,336 / 1,566; cProfile at batch 64: the EGRU "
        "kernel's per-event numpy accumulation 47 %, the graded EGRU → LI projection's per-event "
        "`_accumulate` 24 %, the tanh table 14 %. Now the EGRU step (both accumulations, gates, table, "
        "threshold) and the graded projection's accumulation run compiled per sample "
        "(`backends/spinnaker2/kernel_fused.py`, the kernel's float32 order, bit-exact with the C kernels). "
        "Three runs after: 11,582 / 1,478, 23,049 / 1,627 and 24,729 / 3,392 against the reference's "
        "3,196 / 1,334, 5,147 / 3,022 and 5,538 / 2,897 (batch 1: 3.6–4.5×; batch 64: 0.54–1.2×, the "
        "machine's load changing within a run). At batch 64 the per-sample kernel is the cost: every sample "
        "has all 16 graded inputs, so each step accumulates 16 + ~26 event columns of 3·H = 192 gate rows "
        "per sample, one sample after another. Fix: the input events accumulated with the batch innermost "
        "(one weight column read for all samples, each sample's order unchanged). snnTorch and Norse have "
        "no EGRU, so the #19 goal has no peer here."),
}

#: why a target loses accuracy on a converted example, and the fix (shown only when the results show it)
_BSS2_RESET = ("measured in examples/onnx_digits/README.md (noiseless emulator vs reference, per neuron): each "
               "layer's mean rate is within 3 % of the reference, but neurons that fire more than every other step on "
               "the reference carry excess drive in the membrane after the subtractive reset, which the analog "
               "neuron, reset to its mean residue and held for half a step, cannot (39-41 % fewer spikes in the "
               "MobileNet's two deepest IF layers), while the others fire 0-10 % more; the per-neuron error "
               "compounds with depth. Not fixed (the biases' earlier DAC clipping is: constant event inputs).")
NOTES_FIDELITY = {(m, "brainscales2"): _BSS2_RESET for m in ("cnn", "cnn-maxpool", "resnet", "mobilenet")}


def throughput(d) -> list[str]:
    L = ["## 1. Emulator throughput vs Lava, snnTorch, Norse and Brian2", "", _hdr(d, "")]
    v = d["meta"]["versions"]
    L.append(f"Peers: snnTorch {v['snntorch']}, Norse {v['norse']}, Brian2 {v['brian2']} (numpy code generation), "
             f"Lava {v['lava-nc']} (`Loihi2SimCfg`, fixed_pt and floating_pt); torch {v['torch']}, numba "
             f"{v['numba']}. All on the CPU in one process (Lava: child processes), torch with "
             f"{d['meta'].get('torch_threads')} intra-op thread(s), OpenBLAS with "
             f"{d['meta'].get('blas_threads', 'default')} thread(s). steps/s = timesteps per "
             f"second; a batched step advances {d['batch']} samples. Best of up to 3 timed runs after a "
             "warm-up. Lava's per-step cost is the difference of two run lengths (its start-up removed). "
             "'agreement' is the output's agreement with the float reference (spike counts; Pearson r for "
             "graded outputs; 1 = identical).\n")
    rows = d["rows"]
    losses, losses_b = {}, {}   # simulator -> ["workload r×", ...]
    goal19 = []                 # (simulator, workload, batch, × the fastest peer: snnTorch, Norse, the S4D loop)
    for wl, desc in d["workloads"].items():
        r = [x for x in rows if x["workload"] == wl]
        if not r:
            continue
        b1 = {x["simulator"]: x for x in r if x["batch"] == 1}
        bb = {x["simulator"]: x for x in r if x["batch"] != 1}
        # the ratio's peer: snnTorch; the SSM workload's (bench/ssm_workload.py): its PyTorch S4D step loop
        peer = "PyTorch S4D step loop" if "snnTorch" not in b1 and "PyTorch S4D step loop" in b1 else "snnTorch"
        snn1, snnb = b1.get(peer, {}).get("steps_per_s"), bb.get(peer, {}).get("steps_per_s")
        lava = b1.get("Lava fixed_pt (loihi2 program)", {}).get("steps_per_s")
        for tab, bs in ((b1, 1), (bb, d["batch"])):   # issue #19: the fastest peer (the SSM's: its S4D loop)
            fast = max([tab[p]["steps_per_s"] for p in GOAL19_PEERS if tab.get(p, {}).get("steps_per_s")],
                       default=None)
            for sim, x in tab.items():
                if fast and sim.startswith("nmc") and sim != "nmc reference" and x.get("steps_per_s"):
                    goal19.append((sim, wl, bs, x["steps_per_s"] / fast))
                    if bs != 1 and x["steps_per_s"] < fast:   # a chip emulator behind the faster peer
                        losses_b.setdefault(sim, []).append(
                            f"{wl} {x['steps_per_s'] / fast:.2f}× the faster peer"
                            + (" — why and the fix: under its table" if wl in NOTES_WORKLOAD else ""))
        L += [f"### {wl}: {desc}", "",
              f"| simulator | batch 1 steps/s | × {peer} | × Lava fixed_pt | batch {d['batch']} steps/s | × {peer} | agreement |",
              "|---|---|---|---|---|---|---|"]
        for sim, x in b1.items():
            s1 = x["steps_per_s"]
            sb = bb.get(sim, {}).get("steps_per_s")
            r1 = s1 / snn1 if snn1 and s1 else None
            rl = s1 / lava if lava and s1 else None
            rb = sb / snnb if snnb and sb else None
            ag = x.get("agreement")
            extra = " (bit-exact with the loihi2 emulator)" if x.get("bit_exact_with_emulator") else ""
            if x.get("bit_exact_with_emulator") is False:
                extra = " (NOT equal to the loihi2 emulator)"
            L.append(f"| {sim}{extra} | {_f(s1)} | {_f(r1, 2)} | {_f(rl, 1)} "
                     f"| {_f(sb)} | {_f(rb, 2)} | {_f(ag, 3)} |")
            if sim.startswith("nmc") and r1 is not None and r1 < 1 and peer == "snnTorch":
                losses.setdefault(sim, []).append(f"{wl} {r1:.2f}×")
            if sim == "nmc reference" and rb is not None and rb < 1 and peer == "snnTorch":
                losses_b.setdefault(sim, []).append(f"{wl} {rb:.2f}×")
        if wl in NOTES_WORKLOAD:
            L += ["", NOTES_WORKLOAD[wl]]
        ref = [k for k in d.get("refused", {}) if k.startswith(wl + "/")]
        if ref:
            L.append("")
            L += [f"- {k.split('/')[1]} refuses it: {d['refused'][k]}" for k in ref]
        L.append("")
    mlp = [x for x in rows if x["workload"] == "lif_mlp" and x["batch"] == 1]
    by = {x["simulator"]: x["steps_per_s"] for x in mlp}
    L.append("**Targets of issue #11 (LIF MLP, batch 1):**")
    if "Lava fixed_pt (loihi2 program)" in by:
        lv = by["Lava fixed_pt (loihi2 program)"]
        L.append(f"- ≥ 100× Lava fixed_pt: nmc loihi2 emulator {by.get('nmc loihi2', 0) / lv:,.0f}× "
                 f"({'met' if by.get('nmc loihi2', 0) / lv >= 100 else 'missed'}); vs Lava floating_pt "
                 f"{by.get('nmc loihi2', 0) / by.get('Lava floating_pt', float('nan')):,.0f}×.")
    if "snnTorch" in by:
        s = by["snnTorch"]
        L.append("- ≥ 1× snnTorch: " + ", ".join(
            f"{k[4:]} {v / s:.2f}× ({'met' if v >= s else 'missed'})" for k, v in by.items() if k.startswith("nmc")) + ".")
    if losses:
        L += ["", "**Where nmc loses (× snnTorch < 1 at batch 1) and the fix:**"]
        L += [f"- {k} ({', '.join(losses[k])}): {NOTES.get(k, 'not profiled yet')}" for k in sorted(losses)]
    if goal19:
        miss = [g for g in goal19 if g[3] < 1]
        L += ["", "**Goal of issue #19 (every chip emulator ≥ 1× the fastest peer — the faster of snnTorch and "
              f"Norse; on ssm_s4d its PyTorch S4D step loop — on every workload, batch 1 and {d['batch']}):** " + ("met." if not miss else "missed: " + ", ".join(
                  f"{s_[4:]} {w} batch {b} {r:.2f}×" for s_, w, b, r in miss)
                  + f" (met in {len(goal19) - len(miss)} of {len(goal19)}).")]
    if losses_b:
        L += ["", f"**Where nmc loses at batch {d['batch']} and the fix:**"]
        L += [f"- {k} ({', '.join(losses_b[k])}): {NOTES_BATCHED.get(k, 'not profiled yet')}" for k in sorted(losses_b)]
    L.append("")
    return L


def compile_(d) -> list[str]:
    L = ["## 2. Compile time and peak memory vs network size", "", _hdr(d, ""),
         "Default pipeline of each target; each measurement in a fresh process after a warm-up compile; "
         "memory = peak traced allocation (tracemalloc) of a second compile; for compiles over 30 s the "
         "child's peak RSS (interpreter, torch and numba included) instead. `dense`: one LIF population with dense "
         "n×n recurrent weights + 32 inputs; `dense_ff`: 8 feed-forward LIF layers of width w, each fed by a dense "
         "w×w matrix (8·w² synapses, fan-in w ≤ 3,536: every neuron's inputs fit one core's 4,096 input axons, "
         "so it reaches 10⁸ on spinnaker2's 48-chip board and on loihi2's Hala Point spec — 1,488 cores at 10⁸, "
         "over the 8-chip Kapoho Point's 1,024 — where `dense` cannot); `conv`: the conv/IF/sum-pool/LIF net scaled up. k = fitted "
         "exponent of time ∝ synapses^k (log-log least squares; memory exponent beside it). A row that "
         f"runs past {d['timeout_s']:.0f} s, or is refused, stops its family.\n"]
    rows = d["rows"]
    for fam in ("dense", "dense_ff", "conv"):
        fr = [r for r in rows if r["family"] == fam]
        if not fr:
            continue
        sizes = sorted({r["synapses"] for r in fr if "synapses" in r})
        L += [f"### {fam}", "", "| target | " + " | ".join(f"{s:.2g} syn" for s in sizes) + " | k (time) | k (memory) |",
              "|---" * (len(sizes) + 3) + "|"]
        for t in dict.fromkeys(r["target"] for r in fr):
            cells = []
            tr = [r for r in fr if r["target"] == t]
            for s in sizes:
                x = next((r for r in tr if r.get("synapses") == s), None)
                if x is None:
                    cells.append("—")
                elif x["ok"]:
                    mem = (f"{x['peak_mb']:.1f} MB" if x.get("peak_mb") is not None
                           else f"RSS {x.get('peak_rss_mb') or 0:.0f} MB")
                    cells.append(f"{x['seconds']:.2f} s / {mem}" + (f" ({x['note']})" if x["note"] else ""))
                else:
                    cells.append(x["note"][:90])
            cells += [r["note"] for r in tr if "synapses" not in r]
            cells = cells[:len(sizes)] + ["—"] * (len(sizes) - len(cells))
            e = d["exponent"].get(f"{t}/{fam}", {})
            L.append(f"| {t} | " + " | ".join(cells) + f" | {_f(e.get('time'), 2)} | {_f(e.get('memory'), 2)} |")
        L.append("")
    big = [r for r in rows if r.get("ok") and 9e6 <= r.get("synapses", 0) < 2e7]
    if big:
        L.append("**Target: 10⁷ synapses in under 10 s** — " + "; ".join(
            f"{r['target']} {r['seconds']:.1f} s ({'met' if r['seconds'] < 10 else 'missed'})" for r in big) + ".")
        if any(r["seconds"] >= 10 for r in big):
            L += ["", "**Why the chip targets miss it, and the fix:** " + NOTES["compile"]]
    L += _compile_stages(d, rows)
    L.append("")
    return L


def _met(x, limit) -> str:
    return "not measured" if x is None else ("met" if x < limit else "missed")


def _huge_cell(r) -> str:
    """One target's measured 10⁸ compile against the goal: wall time, CPU time, and the peak RSS —
    the largest sampled while its stages ran (a compile retried on a larger spec: the retry's own),
    else the child's peak RSS."""
    if not r.get("ok"):
        return f"{r['target']}: {r.get('note', 'failed')[:120]}"
    stages = (r.get("stages_peak_rss_mb") or {}).values()
    peak = max(stages) if stages else (r.get("peak_rss_mb") or 0.0)
    return (f"{r['target']}{' (' + r['note'] + ')' if r.get('note') else ''} {r['synapses']:.3g} synapses: "
            f"{r['seconds']:.1f} s ({_met(r['seconds'], 60)}; CPU {_f(r.get('cpu_seconds'), 1)} s), "
            f"peak RSS {peak / 1024:.2f} GB ({_met(peak, 8192)})")


def _compile_stages(d, rows) -> list[str]:
    """Per-stage time and RSS of the largest dense compiles, and their extrapolation to 10⁸ synapses
    (``extrapolated``); results written before these were measured render what they have and say
    what is not measured."""
    L = []
    order = ["load", "normalize", "sparsify", "rewire", "quantize", "partition", "place", "route", "lower",
             "fidelity check"]
    ex = d.get("extrapolated")
    staged = [r for r in rows if r.get("ok") and r.get("synapses", 0) >= 9e5 and r.get("stages_s")
              and r["family"] in ("dense", "dense_ff")]
    if staged:
        seen = {k for r in staged for k in r["stages_s"] if k != "frontend"}
        names = [k for k in order if k in seen] + sorted(seen - set(order))
        rss = any(r.get("stages_peak_rss_mb") for r in staged)
        L += ["", "Per stage of the largest dense compiles: run time (s)" + (
              " / peak RSS while it runs (MB, sampled every 5 ms; the RSS as the compile starts — interpreter, "
              "torch, numba, the network's arrays — is in *RSS at start*)" if rss
              else " (RSS per stage: not measured in these results)")
              + ". `lower` includes the backend's lowering; `fidelity check` is the compile's own "
              "emulator-vs-reference run, and includes assembling the bundle:", "",
              "| target | family | synapses | " + " | ".join(names) + " | total | RSS at start |",
              "|---" * (len(names) + 5) + "|"]
        for r in sorted(staged, key=lambda r: (r["target"], r["family"], r["synapses"])):
            pk = r.get("stages_peak_rss_mb") or {}
            L.append(f"| {r['target']}{' (' + r['note'] + ')' if r['note'] else ''} | {r['family']} | {r['synapses']:.2g} | "
                     + " | ".join(_f(r["stages_s"].get(k), 2) + (f" / {pk[k]:,.0f}" if k in pk else "") for k in names)
                     + f" | {r['seconds']:.2f} | {_f(r.get('rss_start_mb'))} |")
    goal = "**Target: 10⁸ synapses in < 60 s and < 8 GB peak (issue #19)** — "
    huge = [r for r in rows if r.get("family") == "dense_ff" and r.get("synapses", 0) >= 9e7]
    if huge:
        L += ["", goal + "measured on `dense_ff`: " + "; ".join(_huge_cell(r) for r in huge) + "."]
        L += ["", NOTES["compile_1e8_measured"]]
        return L
    if not ex:
        L += ["", goal + "not measured (these results have no extrapolation to 10⁸: `extrapolated` needs per-stage "
              "RSS from at least two dense sizes of one target; run `python -m bench compile`)."]
        return L
    names = [k for k in order if any(k in v["stages"] for v in ex.values())]
    L += ["", "Extrapolated to 10⁸ synapses (each stage: its value at the largest size × (10⁸/size)^k, k fitted "
          "per stage over the sizes named, on the same spec; memory = RSS at start + the stage's RSS above it, "
          "scaled; s (k) / MB (k); the total's CPU time beside it — on a shared machine the wall time also "
          "waits for a core):", "",
          "| target | fitted on | " + " | ".join(names) + " | total (CPU) | peak RSS |", "|---" * (len(names) + 4) + "|"]
    for t, v in ex.items():
        st = v["stages"]
        L.append(f"| {t}{' (' + v['note'] + ')' if v['note'] else ''} | "
                 + ", ".join(f"{x:.2g}" for x in v["from_synapses"]) + " | "
                 + " | ".join((f"{_f(st[k]['s'], 1)} ({_f(st[k]['k_time'], 2)}) / {_f(st[k]['rss_mb'])} "
                               f"({_f(st[k]['k_mem'], 2)})") if k in st else "—" for k in names)
                 + f" | {_f(v['seconds'], 0)} s ({_f(v.get('cpu_seconds'), 0)} s) | {_f(v['peak_rss_mb'])} MB |")
    L += ["", goal + "; ".join(
        f"{t}: {_f(v['seconds'], 0)} s ({_met(v['seconds'], 60)}), peak RSS "
        + (f"{v['peak_rss_mb'] / 1024:.1f} GB" if v["peak_rss_mb"] is not None else "—")
        + f" ({_met(v['peak_rss_mb'], 8192)})" for t, v in ex.items()) + " (extrapolated, not run here)."]
    if any(_met(v["seconds"], 60) != "met" or _met(v["peak_rss_mb"], 8192) != "met" for v in ex.values()):
        L += ["", "**Why, and the fix:** " + NOTES["compile_1e8"]]
    return L


def placement(d) -> list[str]:
    lim = d["limits"]
    fan = d.get("fan_in", {})
    L = ["## 3. Placement quality", "", _hdr(d, ""),
         f"Per-core limits SpiNNaker-2-like ({lim['neurons_max']} neurons, {lim['memory_bytes'] // 1024} KiB synapse "
         f"memory, {lim['fan_in_max']} input axons, {lim['weight_bits']}-bit weights); feed-forward (3 layers) and "
         f"recurrent (ring-local) nets with scipy-sparse CSR weights, {fan.get('default', 64)} random synapses per "
         f"neuron ({fan.get('1e6', 16)} at 10⁶ neurons, to stay within memory and minutes); conv = two 3×3 conv/IF "
         "layers (expanded synapses). Traffic = rate-weighted inter-core spikes (multicast counted once per destination "
         "core) = the km1 (λ − 1) metric of the hypergraph whose nets are a source's targets and itself; sequential "
         "fill is the default of py-spinnaker2 and Lava; Mt-KaHyPar = km1 hypergraph partitioning, METIS = k-way on "
         "the block graph (both + repair + refinement); nmc keeps the best of all four (column *chosen*), then, where "
         "a block holds several neurons, moves and swaps single neurons from it while the exact traffic drops "
         "(passes/unit_moves.py; *+ units* where that was kept). Lower bound: "
         "per net, the cores its pins need under every per-core limit (passes/hypergraph.py), for conv layers the "
         "window bound and the LP over core types (passes/window_lp.py); *before* = the per-source bound "
         "⌈targets/capacity⌉ − 1. Ratios are to sequential fill. "
         "Times: partition pass stages in seconds (network model, block graph, sequential, METIS, greedy, Mt-KaHyPar, "
         "unit moves).\n",
         "| network | neurons | synapses | cores nmc (lower bound, sequential) | chosen | traffic nmc | Mt-KaHyPar | METIS | greedy | sequential "
         "| Mt-KaHyPar / seq | METIS / seq | nmc / seq | lower bound (before) | nmc / bound (before) | partition time | stages |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        seq = r["traffic_sequential"]
        sec = r.get("seconds", {})
        lb, lb0 = r["traffic_lower_bound"], r.get("traffic_lower_bound_before")
        stages = " / ".join(f"{sec[k]:.1f}" if k in sec else "—"
                            for k in ("model", "graph", "sequential", "metis", "greedy", "kahypar", "units"))
        rat = lambda v: f"{v / seq:.2f}" if v is not None and seq else "—"  # noqa: E731
        kh = r.get("traffic_kahypar")
        chosen = r.get("chosen", "metis") + (" + units" if (r.get("unit_moves") or {}).get("kept") else "")
        kh_s = _f(kh) if kh is not None else "skipped" if "kahypar" in (r.get("portfolio") or {}) else "—"
        L.append(f"| {r['kind']} | {r['neurons']:,} | {r['synapses']:,} | {r['cores_used']} ({r['cores_lower_bound']}, "
                 f"{r['cores_sequential']}) | {chosen} | {r['traffic']:,.0f} | {kh_s} | "
                 f"{_f(r.get('traffic_metis'))} | {_f(r['traffic_greedy'])} | {seq:,.0f} | {rat(kh)} | "
                 f"{rat(r.get('traffic_metis'))} | {r['traffic'] / seq if seq else 0:.3f} | {lb:,.0f} ({_f(lb0)}) | "
                 f"{r['traffic'] / lb if lb else 0:.1f} ({r['traffic'] / lb0 if lb0 else 0:.1f}) | "
                 f"{r['seconds_total']:.2f} s | {stages} |")
    L.append("")
    notes = _placement_notes(d)
    if notes:
        L += [f"- {n}" for n in notes] + [""]
    return L


def _placement_notes(d) -> list[str]:
    """The placement notes: the benchmark's prose (bench/placement.py NOTES, the current text rather
    than the copy in an older result file) and the measured unit-move note."""
    try:
        from .placement import NOTES as current
    except ImportError:   # pragma: no cover - the bench's placement module needs nir
        current = d.get("notes") or []
    return [*current, NOTES["placement_units"]] if d.get("rows") else list(current)


def placement_exact(d) -> list[str]:
    """§3's small-instance table: the exact optimum (passes/exact_partition.py) beside nmc and the bound."""
    L = ["### The exact optimum on small instances", "", _hdr(d, ""),
         f"The harness's builders scaled down (fan-in per neuron in the first column), the harness's memory and "
         f"input-axon limits (they do not bind here) and a small neuron limit; the partition pass runs as above "
         f"with blocks of {d.get('per_block', 4)} neurons (so its unit-move stage runs, as at 10⁵ neurons). "
         "Optimum: the least traffic of any assignment of single neurons under the same limits, a MILP solved by "
         f"HiGHS (passes/exact_partition.py) on the cores no optimum needs more of (*model cores*), stopped after "
         f"{d.get('time_limit', 60):.0f} s; where it stopped, the proven bound ≤ optimum ≤ the best assignment it "
         "found, so max(proven bound, lower bound) ≤ optimum ≤ min(found, nmc) and the ratios are given as the ranges "
         "those allow. Lower bound: the "
         "pass's, as in the table above (per net; conv: the window bound and LP); LP = the MILP's relaxation (with "
         "the per-net cut, passes/exact_partition.py).\n",
         "| network (fan-in) | neurons (per core) | cores nmc / model | lower bound | LP | optimum | HiGHS | nmc "
         "| sequential | nmc / optimum | optimum / bound |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lb, nmc, opt, dual = r["traffic_lower_bound"], r["traffic"], r["optimum"], r["dual_bound"]
        done = r["status"] == "optimal"
        if done:
            opt_s, r1, r2 = _f(opt, 1), f"{nmc / opt:.2f}" if opt else "—", f"{opt / lb:.2f}" if lb else "—"
        else:   # max(proven bound, lower bound) ≤ optimum ≤ min(best found, nmc)
            lo, hi = max(dual or 0.0, lb or 0.0), min(opt if opt is not None else nmc, nmc)
            opt_s = f"≥ {_f(dual, 1)} (found {_f(opt, 1)})"
            r1 = f"{nmc / hi:.2f}–{nmc / lo:.2f}" if lo and hi else "—"
            r2 = f"{lo / lb:.2f}–{hi / lb:.2f}" if lb else "—"
        chosen = r["chosen"] + (" + units" if r.get("unit_moves_kept") else "")
        L.append(f"| {r['kind']} ({r['fan_in'] or '3×3'}) | {r['neurons']} ({r['neurons_max']}) | {r['cores_used']} / "
                 f"{r['cores_model']} | {_f(lb, 1)} | {_f(r['lp_relaxation'], 1)} | {opt_s} | {r['status']}, "
                 f"{r['milp_seconds']:.0f} s | {_f(nmc, 1)} ({chosen}) | {_f(r['traffic_sequential'], 1)} | {r1} | {r2} |")
    L.append("")
    try:
        from .placement import EXACT_NOTES as notes
    except ImportError:   # pragma: no cover - the bench's placement module needs nir
        notes = d.get("notes") or []
    return L + [f"- {n}" for n in notes] + ([""] if notes else [])


def fidelity(d, thr) -> list[str]:
    L = ["## 4. Fidelity per target", "", _hdr(d, ""),
         "`examples/quickstart` (trained LIF MLP 64→128→10, T = 16, sklearn digits, default device of each target):\n",
         "| target | accuracy | Δ vs reference | class agreement with reference | spike-count agreement |",
         "|---|---|---|---|---|"]
    q = d["quickstart"]
    ra = q.get("reference", {}).get("accuracy")
    for t, r in q.items():
        if "refused" in r:
            L.append(f"| {t} | refused: {r['refused']} | | | |")
            continue
        L.append(f"| {t} ({r['device']}) | {r['accuracy']:.1%} ({r['samples']} digits) | "
                 f"{(r['accuracy'] - ra) * 100:+.1f} pt | {r['class_agreement']:.1%} | {r['spike_count_agreement']:.3f} |")
    if "onnx_digits" in d:
        o = d["onnx_digits"]
        ts = [k for k in next(iter(o.values())) if k not in ("ann", "exporter")]
        L += ["", "`examples/onnx_digits` (ANN → rate-coded SNN, T = 64, 397 test digits, trained in the run):", "",
              "| model | ANN | " + " | ".join(f"SNN {t}" for t in ts) + " |", "|---" * (len(ts) + 2) + "|"]
        for name, r in o.items():
            L.append(f"| {name} | {r['ann']:.1%} | " + " | ".join(f"{r[t]:.1%}" for t in ts) + " |")
        lost = [(name, t, r.get("reference", r["ann"]) - r[t]) for name, r in o.items() for t in ts
                if t != "reference" and r.get("reference", r["ann"]) - r[t] > 0.02]
        if lost:
            L += ["", "**Where a target loses more than 2 points against the reference SNN, and why:**"]
            by_note: dict[str, list[str]] = {}   # one line per cause, naming every model and target it explains
            for name, t, dl in lost:
                by_note.setdefault(NOTES_FIDELITY.get((name, t), "not analysed yet"), []).append(
                    f"{name} on {t} (−{dl * 100:.1f} pt)")
            L += [f"- {', '.join(who)}: {note}" for note, who in by_note.items()]
    if "exported" in d:
        L += exported(d["exported"])
    if thr:
        rows = [x for x in thr["rows"] if x["simulator"].startswith("nmc") and x["batch"] != 1]
        wls = list(dict.fromkeys(x["workload"] for x in rows))
        ts = list(dict.fromkeys(x["simulator"] for x in rows))
        L += ["", f"Output agreement with the float reference on the throughput workloads (batch {thr['batch']}, "
              "random input; from section 1):", "", "| target | " + " | ".join(wls) + " |", "|---" * (len(wls) + 1) + "|"]
        for t in ts:
            cell = {x["workload"]: x["agreement"] for x in rows if x["simulator"] == t}
            L.append(f"| {t[4:]} | " + " | ".join(_f(cell.get(w), 3) if w in cell else "refused" for w in wls) + " |")
    L.append("")
    return L


#: class agreement with the reference each target must reach on the exported networks (issue #15)
EXPORTED_BAR = {"spinnaker2": 0.98, "loihi2": 0.98, "brainscales2": 0.90}


def exported(e) -> list[str]:
    s = e["setup"]
    res = e["results"]
    ts = [t for t in next(iter(res.values())) if t not in ("train_s", "reference")]
    L = ["", f"Networks trained and exported by other frameworks (`bench/exported.py`: {s['data']}; "
             f"{s['train_iterations']} training steps of batch {s['batch']}; {s['test_samples']} test digits, "
             f"{s['perturbation']}; class = {s['class']}; brainscales2: {s['brainscales2']}), "
             "compiled with default options. Class agreement with the float reference (bar: "
             + ", ".join(f"{t} ≥ {b:.0%}" for t, b in EXPORTED_BAR.items()) + "):", "",
         "| framework / network | reference accuracy | " + " | ".join(ts) + " |", "|---" * (len(ts) + 2) + "|"]
    below = []
    for k, r in res.items():
        cells = []
        for t in ts:
            c = r.get(t, {})
            if "refused" in c:
                cells.append(f"refused: {c['refused']}")
                below.append((k, t, None))
                continue
            a = c["class_agreement"]
            ok = a >= EXPORTED_BAR.get(t, 0.0)
            cells.append(f"{a:.1%}" + ("" if ok else " **below**"))
            if not ok:
                below.append((k, t, a))
        L.append(f"| {k} | {r['reference']['accuracy']:.1%} | " + " | ".join(cells) + " |")
    if below:
        L += ["", "Below the bar: " + "; ".join(f"{k} on {t}" + ("" if a is None else f" ({a:.1%})")
                                               for k, t, a in below) + "."]
    return L


def transport(d) -> list[str]:
    L = ["## 5. Runtime transport", "", _hdr(d, ""),
         "Windows of 4 steps through a local session (`nmc.open`) and through `nmc serve` over loopback TCP "
         "(`nmc.connect`), same events (modes as `bench/transport.py` defines them; latency = send → outputs back, "
         "or the mean time per window where pipelined).\n",
         "| workload | mode | events/s | × local | latency per window (median) | p99 |", "|---|---|---|---|---|---|"]
    for wl, r in d["results"].items():
        loc = r["local"]["events_per_s"]
        for mode, f in r.items():
            if not isinstance(f, dict):
                continue
            L.append(f"| {wl} | {mode} | {f['events_per_s']:,.0f} | {f['events_per_s'] / loc:.2f} | "
                     f"{f['window_latency_ms']:.3f} ms | {_f(f.get('window_latency_p99_ms'), 3)}{' ms' if 'window_latency_p99_ms' in f else ''} |")
    L += ["", "The chip emulators stream with their state carried (`Device.advance`: a window costs O(window), "
          "no replay of the history). There is no peer runtime to compare with here (Lava and py-spinnaker2 "
          "have no streaming session service); the ratio is TCP vs the in-process session on the same machine. "
          "The echo device hands a window back whole (`advance`), so transport alone times no per-step device "
          "loop; the *numpy conversions* rows are the same run with the compiled event conversions "
          "(`nmc.runtime.event_kernels`) switched off, i.e. the code they replaced.", ""]
    bd = d.get("breakdown_us_per_window")
    if not bd:
        L += ["Where the time of a transport-alone window goes: not measured in these results (run "
              "`python -m bench transport`).", ""]
    else:
        # the pieces in the order a window meets them (the result file's keys are sorted)
        path = ["client: pack input table", "server: decode input table", "session: events → dense",
                "session: device advance", "session: dense → events", "session: whole step",
                "server: pack output table", "client: decode output table"]
        seen = {k for v in bd.values() for k in v}
        path += [k for p in ("client: pack input frame", "server: decode input frame", "session: step_windows",
                             "server: pack output frame", "client: decode output frame") for k in sorted(seen) if k.startswith(p + " (frames of")]
        keys = [k for k in path if k in seen] + sorted(seen - set(path))
        L += [f"Where the time of a transport-alone window goes ({d.get('events_per_window', 0):.0f} events in, "
              "as many out; µs per window, each piece timed alone in one process, best of 3 passes):", "",
              "| piece | " + " | ".join(bd) + " |", "|---" * (len(bd) + 1) + "|"]
        L += [f"| {k} | " + " | ".join(_f(bd[m].get(k), 1) for m in bd) + " |" for k in keys]
        L.append("")
    alone = next((r for wl, r in d["results"].items() if wl.startswith("transport alone") and "numpy" not in wl), None)
    if alone:
        loc = alone["local"]["events_per_s"]
        tcp = max((f["events_per_s"] for m, f in alone.items() if isinstance(f, dict) and m.startswith("tcp stream")),
                  default=0.0)
        cpu = alone["local"].get("events_per_cpu_s")
        tcp_cpu = max((f.get("events_per_cpu_s") or 0.0 for m, f in alone.items()
                       if isinstance(f, dict) and m.startswith("tcp stream")), default=0.0)
        L += [f"**Goals of issue #19 (transport alone, 1024 channels, p = 0.1):** local session ≥ 10⁷ events/s: "
              f"{loc:,.0f} ({'met' if loc >= 1e7 else 'missed'}"
              + (f"; {cpu:,.0f} by the stepping thread's CPU time, i.e. without the time other processes "
                 "took the core" if cpu else "") + f"); TCP stream ≥ 5·10⁶ events/s: {tcp:,.0f} "
              f"({'met' if tcp >= 5e6 else 'missed'}"
              + (f"; {tcp_cpu:,.0f} by the CPU time of the busier of client and server process" if tcp_cpu else "")
              + ").", ""]
        L += [("**Where the time goes:** " if loc >= 1e7 and tcp >= 5e6 else "**Why, and the fix:** ")
              + NOTES["transport"], ""]
    return L


def energy(d) -> list[str]:
    L = ["## 6. Energy against published measurements and SANA-FE", "", _hdr(d, ""),
         "`nmc.runtime.energy.profile` with each target's sourced constants (`hw_configs/*.toml`); SANA-FE "
         f"{d['calibration']['kws_loihi']['sanafe'].get('version') or ''} runs the same compiled network exported "
         "to its YAML format (`nmc.runtime.sanafe_peer`) on its Loihi architecture (calibrated on measurements; "
         "dynamic energy only). Workloads (`bench/energy_workloads.py`) rebuild the published topologies with "
         "random weights at the published activity level.\n"]
    if "calibration" not in d:
        return L + ["(no calibration results: re-run `python -m bench energy`)", ""]
    c, p = d["calibration"], d["published"]
    k, b, e = c["kws_loihi"], c["mnist_bss2"], c["egru_lm"]
    sf = k["sanafe"]
    L += ["| workload | quantity | nmc | SANA-FE | published | nmc / published | nmc / SANA-FE |",
          "|---|---|---|---|---|---|---|",
          f"| Loihi keyword spotter 390-256-256-29, 10 steps ({p['kws_loihi']['source']}) | dynamic energy per inference "
          f"| {_si(k['dynamic_per_inference_j'], 'J')} | {_si(sf.get('per_inference_j'), 'J')} | {_si(p['kws_loihi']['value'], 'J')} "
          f"| {k['ratio_dynamic_vs_published']:.3g} | {_f(k.get('ratio_nmc_vs_sanafe'), 2)} |",
          f"| same | chip time per inference (work-bound) | {_si(k['time']['work_per_inference_s'], 's')} "
          f"| {_si(sf.get('sim_time_per_inference_s'), 's')} | {_si(k['published_time_per_inference_s'], 's')} (296 inf/s) "
          f"| {1 / k['time_ratio_published_vs_work']:.3g} | "
          f"{_f(k['time']['work_per_inference_s'] / sf['sim_time_per_inference_s'] if sf.get('sim_time_per_inference_s') else None, 2)} |",
          f"| BrainScaleS-2 MNIST 256-246-10, 12 µs per frame ({p['mnist_bss2']['source']}) | energy per frame "
          f"| {_si(b['per_inference_j'], 'J')} | — (no BSS-2 model) | {_si(p['mnist_bss2']['value'], 'J')} | {b['ratio_vs_published']:.3g} | — |",
          f"| SpiNNaker 2 EGRU LM, 3 × EGRU(256), 95 % pruned ({p['egru_lm']['source']}) | GPU at batch 1 (Blouw 2018's measured GPU scaled by time per call) ÷ chip, per token "
          f"| {e['gpu_over_chip']:.3g}× | — (no EGRU model) | {e['published_gpu_over_chip']:.3g}× (A100; range 5–18×) "
          f"| same direction: {'yes' if e['same_direction'] else 'NO'} | — |"]
    dg = d["digits"].get("loihi2", {})
    if dg.get("ratio_nmc_vs_sanafe") is not None:
        L.append(f"| Loihi: quick-start digits MLP 64-128-10, 16 steps | dynamic energy per inference "
                 f"| {_si(dg['dynamic_per_inference_j'], 'J')} | {_si(dg['sanafe']['per_inference_j'], 'J')} | — | — "
                 f"| {dg['ratio_nmc_vs_sanafe']:.2f} |")
    f = k["fit"]
    L += ["", "**Notes on the differences.**", "",
          f"- *Loihi keyword spotter*: nmc and SANA-FE agree (×{k['ratio_nmc_vs_sanafe']:.2f} on energy, on time "
          f"within {abs(1 - k['time']['work_per_inference_s'] / sf['sim_time_per_inference_s']) * 100:.0f} %) and both are "
          f"~{1 / k['ratio_dynamic_vs_published']:.0f}× below the published 0.27 mJ. The measured cause is in the published "
          f"table itself: Blouw's \"dynamic\" energy is (running − idle power) × wall time = 81 mW × 3.38 ms = "
          f"{_si(k['time_proportional_j'], 'J')} per inference, i.e. time-proportional power; the run took 3.38 ms per "
          f"inference, {k['time_ratio_published_vs_work']:.1f}× the chip's work time, and the per-event energy of the "
          f"neurocores (nmc {_si(k['dynamic_per_inference_j'], 'J')}, SANA-FE {_si(sf.get('per_inference_j'), 'J')}) is "
          f"{k['dynamic_per_inference_j'] / p['kws_loihi']['value'] * 100:.1f} % of it. The rest is power drawn while the run "
          "is in progress whatever the activity (embedded x86 cores, host I/O, clocks) — not a per-event constant.",
          f"- *`nmc profile --fit` on that measurement*: fitting the trace the table describes (idle 29 mW, then 110 mW "
          f"at 296 inferences/s) recovers a running power of {f['fitted_static_w'] * 1e3:.1f} mW (published 110 mW; minus "
          f"idle = {f['fitted_minus_idle_w'] * 1e3:.1f} mW, published 81 mW) and per-event constants ≈ 0 (the trace is flat "
          f"at the published resolution, so it cannot tell events apart); with the fitted override nmc gives "
          f"{_si(f['refit_per_inference_j'], 'J')} per inference vs the published {_si(f['published_running_j'], 'J')} "
          "running energy (equal by construction: this shows the fit, not a prediction).",
          f"- *BrainScaleS-2*: like for like in time (the frame lasts 12 µs of hardware time, 85 k frames/s = 11.8 µs); "
          f"static power ({b['dominant_why']}) makes the frame's energy. The 200 mW comes from the same paper, so this "
          "checks the time accounting, not an independent per-event model.",
          f"- *EGRU LM*: the GPU at batch 1 uses {_si(e['baselines_per_token_j']['gpu'], 'J')} per token "
          f"(Blouw's measured running power, idle included, × Blouw's measured time per call: the 2018 measurement "
          f"carried over to this model by time per call, not a measurement of this model or of a current GPU), "
          f"the chip {_si(e['per_token_j'], 'J')} "
          f"(tick mode; {_si(e['per_token_by_mode_j']['work'], 'J')} with the tick shortened to the slowest PE's step). "
          f"Published: 65 mJ on SpiNNaker 2 vs 1.19 J on an A100. Same direction (the chip wins); nmc's factor is larger "
          "because its model is smaller (about 5 × 10⁴ kept weights vs the published model's millions) while the "
          f"GPU's cost per call is fixed. Against the ideal-MAC lower bound ({_si(e['baselines_per_token_j']['ideal_mac'], 'J')}, no memory, no "
          "static power) the chip loses, which is what the report used to show.", ""]
    L += ["| workload | before (44ca06a) | after | what changed |", "|---|---|---|---|"]
    bef = d.get("before") or {}
    if bef:
        L.append(f"| Loihi KWS, dynamic per inference | {_si(bef['kws_loihi']['dynamic_per_inference_j'], 'J')} "
                 f"| {_si(k['dynamic_per_inference_j'], 'J')} | inactive neurons at 52 pJ, axon-out messages 111 pJ, route pass (hops) |")
        L.append(f"| Loihi KWS, total per inference | {_si(bef['kws_loihi']['per_inference_j'], 'J')} "
                 f"| {_si(k['per_inference_j'], 'J')} | static once per chip, over the work time ({_si(k['time']['work_per_inference_s'], 's')}) "
                 f"instead of 10 ticks (tick mode: {_si(k['total_by_mode_per_inference_j']['tick'], 'J')}); Loihi's measured idle "
                 "29 mW (Blouw 2018) instead of the pre-silicon 104 mW |")
        L.append(f"| BSS-2 MNIST, per frame | {_si(bef['mnist_bss2']['per_inference_j'], 'J')} | {_si(b['per_inference_j'], 'J')} "
                 "| unchanged model; workload now the published 12 µs frame |")
        L.append(f"| EGRU LM per token (SpiNNaker 2) | {_si(bef['egru_lm']['per_token_j'], 'J')}, "
                 f"{bef['egru_lm']['per_token_j'] / bef['egru_lm']['fp32_mac_per_token_j']:.0f}× *more* than the baseline "
                 f"(ideal fp32 MACs) | {_si(e['per_token_j'], 'J')}, {e['gpu_over_chip']:.0f}× *less* than a GPU at batch 1 "
                 "| baseline = a GPU at batch 1 with idle power and memory traffic; per-PE active power no longer added to per-event "
                 "energies; EGRU MACs and unit updates at the cycles counted from the generated kernels (11 and 136) |")
        for t in ("spinnaker2", "loihi2", "brainscales2"):
            if t in bef.get("digits", {}) and t in d["digits"]:
                r = d["digits"][t]
                L.append(f"| digits MLP on {t}, per inference | {_si(bef['digits'][t]['per_inference_j'], 'J')} "
                         f"| {_si(r['per_inference_j'], 'J')} ({r['mode']} mode; other mode "
                         f"{_si(r['total_by_mode_per_inference_j']['work' if r['mode'] == 'tick' else 'tick'], 'J')}) | {r['dominant_why']} |")
    L += ["", "Static power is charged over real time: `work` mode = the slowest core's work per step (Loihi, "
          "barrier-synchronised); `tick` mode = the configured tick (SpiNNaker 2 and BrainScaleS-2 are tick-bound; "
          "their `work` figure is the shortest tick the placement allows). Both are in `bench/results/energy.json`.", ""]
    return L


def distributed(d) -> list[str]:
    L = ["## 7. Sweeps on Ray (`nmc sweep`)", "", _hdr(d, ""),
         f"The quick-start model on {d['target']}, grid `{d['grid']}` ({d['points']} points), {d['samples']} digits "
         f"per point (energy profiled over {d['energy_samples']}); Ray {d['versions']['ray']} embedded on this "
         "machine. Wall times include starting Ray and the workers' first imports.\n",
         "| run | wall time | points | same records as the plain loop |", "|---|---|---|---|"]
    if "plain_loop_s" in d:
        L.append(f"| plain loop in one process (no Ray) | {d['plain_loop_s']:.1f} s | {d['points']} | — |")
    for w, r in sorted(d["runs"].items()):
        eq = {True: "yes (bit for bit)", False: "**no**"}.get(r.get("equals_plain_loop"), "—")
        L.append(f"| Ray, {w} worker{'s' if w != '1' else ''} | {r['wall_s']:.1f} s | {r['computed']} | {eq} |")
    L.append("")
    if "speedup_2_vs_1" in d:
        o = d["overhead_per_task_s"]
        L.append(f"Speed-up 2 vs 1 workers: **{d['speedup_2_vs_1']:.2f}×** on {d['meta']['cpus']} cores shared with "
                 f"other jobs. Per-task overhead: a no-op task's round trip in a warm session is "
                 f"**{1e3 * d['noop_task_s']:.2f} ms** (what Ray adds to each point, against ~"
                 f"{d['plain_loop_s'] / d['points']:.0f} s of compile and evaluation per point); starting Ray "
                 f"costs {d['ray_start_s']:.1f} s once per sweep, plus each worker's first imports. "
                 + (f"The 1-worker sweep against the plain loop: {o:+.2f} s per point (start, cold imports and "
                    f"shipping included)." if o >= 0 else
                    f"The 1-worker sweep was even {-o:.2f} s per point faster than the plain loop in this run: "
                    "the load of the other jobs on this shared machine changed between the two runs by more than "
                    "Ray's overhead, so that difference is noise, not a cost."))
    else:
        L.append(f"Ray start {d['ray_start_s']:.1f} s; no-op task round trip {1e3 * d['noop_task_s']:.2f} ms.")
    L += ["", "| point | status | accuracy | agreement | energy / inference | dynamic part | cores | Pareto |",
          "|---|---|---|---|---|---|---|---|"]
    for r in d.get("records", []):
        p = ", ".join(f"{k.split('.')[1]}={v}" for k, v in r["params"].items())
        L.append(f"| {p} | {r['status']} | {_f(r.get('accuracy'), 3)} | {_f(r.get('agreement'), 3)} | "
                 f"{_si(r.get('energy_per_inference_j'), 'J')} | {_si(r.get('energy_dynamic_j'), 'J')} | "
                 f"{_f(r.get('cores'))} | {'yes' if r.get('pareto') else ''} |")
    L += ["", NOTES_DISTRIBUTED.format(samples=d["samples"], kb=16 * d["samples"] * 64 * 4 / 1e3), ""]
    return L


#: how the same sweep spreads over a cluster (on paper: measured here on one machine only)
NOTES_DISTRIBUTED = (
    "**On a cluster** (`nmc sweep ... --address HEAD:6379`, or `RAY_ADDRESS`; every node needs nmc with the "
    "`distributed` extra installed): each point is one task needing 1 CPU, scheduled wherever a CPU is free. "
    "*Shipped per task*: the point itself (target, pipeline text, grid values, key: a few hundred bytes) and a "
    "reference to the sweep's job — model bytes (92 kB for the quick-start NIR), compile options, the data set "
    "(here 16 steps × {samples} × 64 float32 = {kb:.0f} kB) and the reference predictions — which `ray.put` stores once; Ray "
    "copies it to a node's object store the first time a task there needs it, and every later task on that node "
    "reads it from shared memory. *Returned per task*: one results record (~600 bytes), appended to "
    "`results.jsonl` by the driver. *Cached per node*: the imported nmc/torch/numba in each long-lived worker "
    "process and numba's on-disk compiled loops (`cache=True`), so only a node's first task pays the cold "
    "start. *Not cached*: the compile itself (every point is a different pipeline). With N nodes of c CPUs "
    "the sweep takes about ⌈points / (N·c)⌉ × (time per point) + one cold start per worker; the driver's only "
    "serial work is the float reference run and the report. `nmc eval --workers N --address ...` ships the "
    "bundle's files once (object store) and one slice of the data per shard.")


def serve(d) -> list[str]:
    L = ["## 8. `nmc serve` under load", "", _hdr(d, ""),
         f"{d['model']} in a model repository, served by an `nmc serve REPO` child process; each client (a thread "
         f"in one of {d['rows'][-1].get('client_processes', 1)} client processes, on the same cores as the server) "
         f"opens a session, sends "
         f"{d['rows'][0]['windows_per_client']} windows of {d['rows'][0]['window']} steps one at a time and "
         "closes. Without batching each device takes one session (`--max-batch 1`, the others wait in the "
         f"queue); with batching a device steps up to ⌈64/devices⌉ sessions together (`--batch-wait-ms "
         f"{d['batch_wait_ms']:g}`). Each client process runs one untimed session first (imports, the first calls of "
         "the compiled event conversions), and the server listens with a backlog that takes the 64 connects at once. "
         + (f"Each configuration ran {len(d['rows'][0]['events_per_s_runs'])} times on a fresh server; the table shows "
            "the run of median events/s (all runs in the JSON; events lost summed over them). "
            if d['rows'] and 'events_per_s_runs' in d['rows'][0] else "")
         + "events/s: input events over the whole run (queueing included); latency: "
         "one window, send → outputs back (queueing for a device excluded); lost: client-sent − "
         "server-processed + server-sent − client-received; memory: the server's peak resident set.\n",
         "| devices | batching | clients | events/s | p50 latency | p99 latency | events lost | server memory |",
         "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        L.append(f"| {r['devices']} | {'yes' if r['batching'] else 'no'} | {r['clients']} | "
                 f"{r['events_per_s']:,.0f} | {r['window_latency_p50_ms']:.2f} ms | "
                 f"{r['window_latency_p99_ms']:.2f} ms | {r['events_lost']} | {r['server_peak_rss_mib']:.0f} MiB |")
    sp = d["speedup"]
    L += ["", f"Dynamic batching at {d['speedup_clients']} clients, events/s with batching ÷ without: "
          + ", ".join(f"**{v:.2f}×** on {k} device{'s' if k != '1' else ''}" for k, v in sp.items()) + ". "
          "Batching trades latency for throughput: a batched window waits for the other sessions' windows "
          "(at most the batch wait) and for a step of the whole batch. Each row is one run on 2 cores shared "
          "with other jobs: the 1-client rows (the same work with and without batching) show how much the load "
          "moves a figure. With 2 devices the two batching workers share the same 2 cores and one Python process "
          "(GIL), so a second device adds no compute here; its batches are half as full.", ""]
    met = [k for k, v in sp.items() if v >= 3]
    status = ("met" if len(met) == len(sp) else "missed" if not met else
              f"met with {', '.join(met)} device(s), not with {', '.join(k for k in sp if k not in met)}")
    L += [f"**Goal of issue #23** (batching ≥ 3× one session per device at {d['speedup_clients']} clients, 0 events "
          f"lost): {status} ("
          + "; ".join(f"{v:.2f}× on {k} device{'s' if k != '1' else ''}" for k, v in sp.items())
          + f"; events lost: {sum(r['events_lost'] for r in d['rows'])}). "
          + ("" if met else
             "Where it goes (profiled on 2026-12-07, not part of this run): the server and the client processes "
             "share the same 2 cores; a batch round waits for the slowest session's next window (up to the batch "
             "wait), and every window's decode, encode and hand-over run in the server's Python threads under "
             "one interpreter lock, which bound a round more than the batched emulator step does."), ""]
    return L


def render(out_dir) -> str:
    out_dir = Path(out_dir)
    secs = {k: load(k, out_dir) for k in ("throughput", "compile", "placement", "placement_exact", "fidelity",
                                          "transport", "energy", "distributed", "serve", "lm")}
    dates = sorted({v["meta"]["date"] for v in secs.values() if v})
    quick = any(v and v["meta"].get("quick") for v in secs.values())
    L = ["# Benchmarks", "",
         "Generated by `.venv/bin/python -m bench` (issue #11) from `bench/results/*.json`; do not edit by hand — "
         "re-run the harness (`python -m bench SECTION` for one section, `--report-only` to re-render). "
         f"Run on {', '.join(dates) or '?'}"
         + (f" on {next(v for v in secs.values() if v and 'error' not in v)['meta']['cpus']} CPU cores, no GPU"
            if any(v and "error" not in v for v in secs.values()) else "")
         + ". Absolute times on this machine are noisy (other work shares the cores); the figures that count are "
         "the ratios, each measured in the same run on the same machine." + (" **Quick (smoke) run: small sizes, "
         "no Lava/Brian2 — not representative.**" if quick else ""), ""]
    for k, fn in (("throughput", throughput), ("compile", compile_), ("placement", placement)):
        d = secs[k]
        if d is None:
            L += [f"## {k}", "", "Not run yet.", ""]
        elif "error" in d:
            L += [f"## {k}", "", f"The last run failed: `{d['error']}`.", ""]
        else:
            L += fn(d)
    d = secs["placement_exact"]   # under §3
    if d is not None:
        L += placement_exact(d) if "error" not in d else \
            ["### The exact optimum on small instances", "", f"The last run failed: `{d['error']}`.", ""]
    d = secs["fidelity"]
    L += (fidelity(d, secs["throughput"] if secs["throughput"] and "rows" in secs["throughput"] else None)
          if d and "error" not in d else ["## 4. Fidelity per target", "", f"Not available: {d and d.get('error')}", ""])
    from .lm import report as lm

    for k, fn in (("transport", transport), ("energy", energy), ("distributed", distributed), ("serve", serve),
                  ("lm", lm)):
        d = secs[k]
        if d is None:
            L += [f"## {k}", "", "TODO: not run yet.", ""]
        elif "error" in d:
            L += [f"## {k}", "", f"The last run failed: `{d['error']}`.", ""]
        else:
            L += fn(d)
    return "\n".join(L).rstrip() + "\n"
