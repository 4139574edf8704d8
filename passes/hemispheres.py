"""Placing layers on hemispheres, chips and sequential runs: the partition pass
for targets whose placement granularity is a *logical neuron* on cores with a
row budget (BrainScaleS-2; :attr:`nmc.target_model.TargetModel.granularity`).

A hemisphere (the core) holds ``circuits_per_hemisphere`` circuits (columns)
and ``rows_per_hemisphere`` rows; every row drives all columns of its
hemisphere, so each hemisphere that holds part of a layer needs all of that
layer's rows (a layer split over two hemispheres uses its rows twice). A chip
has ``hemispheres`` hemispheres. The target model gives these limits
(``hemisphere_limits()``) and what each layer needs (``layer_demands(graph,
ctx)``: circuits per logical neuron and rows, from the same layer plan
lowering builds).

Greedy, in layer (schedule) order: fill the current hemisphere with whole
logical neurons (a merged neuron never straddles hemispheres) while the
layer's rows still fit; move to the next hemisphere, and after the last one of
a chip to the next **run** — a sequential re-use of the chip: the earlier
run's output spikes are recorded and replayed as the next run's input, which
changes nothing for feed-forward connections. A recurrent projection whose two
ends are not in one run cannot be split this way and is a violation (as is a
layer needing more rows than a hemisphere has).

The result is written as a ``Placement`` per layer (:func:`annotate`):
``core`` = run × hemispheres + hemisphere (the global hemisphere index),
``chip`` = the run, ``slot`` = the neuron's first circuit (chip-global).
Lowering reads it back with :func:`read` and checks it still fits with
:func:`check` (the passes are the Placement's only writer).
"""
from __future__ import annotations

import numpy as np

from nmc.annotations import Placement
from nmc.errors import DesignRuleError, NmcError, OptionError, Violation
from nmc.ir import Graph


def place(layers: list[dict], limits: dict) -> tuple[dict, list[Violation]]:
    """``layers``: [{name, circuits (per neuron), rows}], in schedule order.
    Returns {name: {"run", "hemisphere", "first_circuit" (per neuron, chip-global)}} and violations."""
    cpc, rph, hemis = limits["circuits_per_hemisphere"], limits["rows_per_hemisphere"], limits["hemispheres"]
    out, bad = {}, []
    run, hemi, used_c, used_r = 0, 0, 0, 0
    for L in layers:
        k = np.asarray(L["circuits"], np.int64)
        n = k.size
        if L["rows"] > rph:
            bad.append(Violation("synapse-rows", L["name"], rph, int(L["rows"]),
                                 "lower the fan-in (e.g. a rewire{fan_in=...} budget) or the number of distinct "
                                 "source groups; each neuron's inputs must fit one hemisphere's rows",
                                 "rows needed by the layer's projections"))
            continue
        if int(k.max(initial=0)) > cpc:
            bad.append(Violation("merged-circuits", L["name"], cpc, int(k.max()),
                                 "lower the fan-in of that neuron", "circuits of one logical neuron"))
            continue
        runs, hemi_of, first = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        j, here = 0, False  # here: the layer already uses the current hemisphere's rows
        while j < n:
            room = cpc - used_c
            fits = used_r + (0 if here else L["rows"]) <= rph and k[j] <= room
            if not fits:
                hemi, used_c, used_r, here = hemi + 1, 0, 0, False
                if hemi == hemis:
                    run, hemi = run + 1, 0
                continue
            if not here:
                used_r += L["rows"]
                here = True
            take = int(np.searchsorted(np.cumsum(k[j:]), room, side="right"))
            sl = slice(j, j + take)
            runs[sl], hemi_of[sl] = run, hemi
            first[sl] = hemi * cpc + used_c + np.concatenate([[0], np.cumsum(k[sl])[:-1]])
            used_c += int(k[sl].sum())
            j += take
        out[L["name"]] = {"run": runs, "hemisphere": hemi_of, "first_circuit": first}
    return out, bad


def recurrent_violations(projs: list[tuple[str, str]], where: dict) -> list[Violation]:
    """Recurrent (back-edge) projections must have both ends within one run."""
    bad = []
    for pre, post in projs:
        if pre not in where or post not in where:
            continue
        r = np.unique(np.concatenate([where[pre]["run"], where[post]["run"]]))
        if r.size > 1:
            bad.append(Violation("recurrent-split", post, 1, int(r.size),
                                 "make the recurrent layer smaller, or compile for a digital target "
                                 "(spinnaker2/loihi2)", f"recurrent projection {pre} → {post} spans runs"))
    return bad


def partition(graph: Graph, ctx, target) -> dict | None:
    """Place the layers of ``graph`` with the target model's demands and limits and
    write their Placement (module docstring); violations raise one
    :class:`~nmc.errors.DesignRuleError` listing them all. Returns the placement.

    A graph the target refuses outright (an unsupported node, a dt beyond the
    DAC's time constants: any other typed error of its layer plan) is left
    unplaced, and lowering, which builds the same plan first, refuses it with
    that same error (None returned)."""
    try:
        layers, recurrent = target.layer_demands(graph, ctx)
    except (DesignRuleError, OptionError):
        raise
    except NmcError:
        return None
    limits = target.hemisphere_limits()
    where, bad = place(layers, limits)
    bad += recurrent_violations(recurrent, where)
    if bad:
        raise DesignRuleError(bad, target=target.name)
    annotate(graph, where, limits)
    return where


def annotate(graph: Graph, where: dict, limits: dict) -> None:
    """Write ``where`` (from :func:`place`) as one Placement per layer."""
    hemis = int(limits["hemispheres"])
    for name, w in where.items():
        run = np.asarray(w["run"], np.int64)
        graph.annotate(name, Placement(core=(run * hemis + np.asarray(w["hemisphere"], np.int64)).astype(np.int32),
                                       chip=run.astype(np.int32),
                                       slot=np.asarray(w["first_circuit"], np.int64).astype(np.int32)))


def read(graph: Graph, sizes: dict[str, int], limits: dict) -> dict | None:
    """The placement of the layers ``sizes`` ({name: neurons}) from their Placement
    annotations, in :func:`place`'s form; None when no layer has one (a pipeline
    without ``partition``). Some placed and some not, or a size that differs, is a
    :class:`~nmc.errors.PassError`."""
    from nmc.errors import PassError

    hemis = int(limits["hemispheres"])
    ann = {k: graph.ann(k, Placement) for k in sizes}
    if all(a is None or a.core is None for a in ann.values()):
        return None
    out = {}
    for k, n in sizes.items():
        a = ann[k]
        if a is None or a.core is None or a.chip is None or a.slot is None or np.size(a.core) != n:
            raise PassError("the layer's Placement is missing or does not match its neurons (a pass after "
                            "partition changed the graph)", node=k, hint="run partition last in --passes")
        run = np.asarray(a.chip, np.int64).reshape(-1)
        out[k] = {"run": run, "hemisphere": np.asarray(a.core, np.int64).reshape(-1) - run * hemis,
                  "first_circuit": np.asarray(a.slot, np.int64).reshape(-1)}
    return out


def check(layers: list[dict], where: dict, limits: dict) -> list[Violation]:
    """Violations of a placement read back against the layers' demands now: circuits
    of a hemisphere over ``circuits_per_hemisphere`` or overlapping, rows over
    ``rows_per_hemisphere`` (a pass after partition changed what the layers need)."""
    cpc, rph, hemis = limits["circuits_per_hemisphere"], limits["rows_per_hemisphere"], limits["hemispheres"]
    bad, rows, cols = [], {}, {}
    hint = "run partition after every pass that changes weights or fan-in"
    for L in layers:
        w = where[L["name"]]
        k = np.asarray(L["circuits"], np.int64)
        for key in {(int(r), int(h)) for r, h in zip(w["run"], w["hemisphere"])}:
            n, _ = rows.get(key, (0, ""))
            rows[key] = (n + int(L["rows"]), L["name"])
        for r, h, f, c in zip(w["run"], w["hemisphere"], w["first_circuit"], k):
            lo = int(f) - int(h) * cpc
            if not (0 <= int(h) < hemis and 0 <= lo and lo + int(c) <= cpc):
                bad.append(Violation("placement", L["name"], cpc, lo + int(c), hint,
                                     "circuits of a logical neuron outside its hemisphere"))
                break
            cols.setdefault((int(r), int(h)), []).append((lo, lo + int(c), L["name"]))
    for key, (n, name) in rows.items():
        if n > rph:
            bad.append(Violation("synapse-rows", name, rph, n, hint, f"rows of run {key[0]} hemisphere {key[1]}"))
    for key, spans in cols.items():
        spans.sort()
        clash = next((b for a, b in zip(spans, spans[1:]) if b[0] < a[1]), None)
        if clash is not None:
            bad.append(Violation("placement", clash[2], 1, 2, hint,
                                 f"circuits used twice in run {key[0]} hemisphere {key[1]}"))
    return bad
