"""Placing layers on hemispheres, chips and sequential runs.

A hemisphere holds ``core.neurons_max`` circuits (columns) and
``synapse_array.rows`` rows; every row drives all columns of its hemisphere,
so each hemisphere that holds part of a layer needs all of that layer's rows
(a layer split over two hemispheres uses its rows twice). A chip has
``synapse_array.hemispheres`` hemispheres.

Greedy, in layer (schedule) order: fill the current hemisphere with whole
logical neurons (a merged neuron never straddles hemispheres) while the
layer's rows still fit; move to the next hemisphere, and after the last one of
a chip to the next **run** — a sequential re-use of the chip: the earlier
run's output spikes are recorded and replayed as the next run's input, which
changes nothing for feed-forward connections. A recurrent projection whose two
ends are not in one run cannot be split this way and is a violation (as is a
layer needing more rows than a hemisphere has).
"""
from __future__ import annotations

import numpy as np

from nmc.errors import Violation


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
