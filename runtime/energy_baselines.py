"""Conventional baselines for an energy report: the same network, batch 1.

Each is labelled with what it includes (``hw_configs/baselines/conventional.toml``
holds the numbers with their sources):

* ``gpu`` / ``cpu`` — a processor stepping the network at batch 1, one framework
  call per step (a token of a language model, a step of an SNN): energy per step =
  measured running power (idle included) × max(measured time per call, dense
  weight bytes ÷ memory bandwidth). Memory traffic enters through the time the
  weights need to stream in; idle power through the running power.
* ``ideal_mac`` — every stored synapse as one fp32 MAC per step at 45 nm: a lower
  bound with no memory traffic and no static power (what nmc used to compare with).

Per inference = per step × steps. The comparison against a neuromorphic chip is
``baseline / chip`` (> 1: the chip uses less energy).
"""
from __future__ import annotations

import tomllib
from importlib import resources

from nmc.errors import ConfigError

_FIELDS = ("value", "unit", "grade", "source")


def load(path=None) -> dict[str, dict]:
    """The baselines table: {name: {"name": str, key: value}} with each entry's source checked."""
    if path is None:
        text = resources.files("nmc.hw_configs").joinpath("baselines/conventional.toml").read_text()
        where = "nmc.hw_configs/baselines/conventional.toml"
    else:
        text, where = open(path, encoding="utf-8").read(), str(path)
    raw = tomllib.loads(text)
    out = {}
    for sec, body in raw.items():
        d = {"name": body.get("name", sec), "sources": {}}
        for k, v in body.items():
            if k == "name":
                continue
            if not isinstance(v, dict) or any(f not in v for f in _FIELDS):
                raise ConfigError(f"baseline entry '{sec}.{k}' needs value, unit, grade and source", path=where)
            d[k] = float(v["value"])
            d["sources"][k] = v["source"]
        out[sec] = d
    return out


def baselines(act, spec=None, table: dict | None = None, calls_per_inference: int | None = None) -> dict:
    """Energy per inference (J) of the run's network on each baseline, with labels.

    ``calls_per_inference``: framework calls per inference — the run's steps by default
    (the network stepped like the chip steps it: a recurrent net, a token per step);
    1 for the equivalent ANN evaluated once per input."""
    t = table or load()
    steps = act.steps if calls_per_inference is None else int(calls_per_inference)
    dense = act.dense_macs_per_step
    out = {}
    for key in ("gpu", "cpu"):
        b = t[key]
        mem_s = act.dense_weights * b["weight_bytes"] / b["memory_bytes_per_s"]
        step_s = max(b["call_s"], mem_s)
        out[key] = {"label": b["name"], "per_inference_j": b["running_w"] * step_s * steps,
                    "per_step_j": b["running_w"] * step_s, "step_s": step_s,
                    "bound": "memory traffic" if mem_s > b["call_s"] else "per-call latency",
                    "includes": "idle power, memory traffic (through time), batch 1",
                    "source": b["sources"]["running_w"]}
    m = t["ideal_mac"]
    out["ideal_mac"] = {"label": m["name"], "per_inference_j": dense * m["fp32_mac_j"] * steps,
                        "per_step_j": dense * m["fp32_mac_j"], "includes": "MACs only (a lower bound)",
                        "source": m["sources"]["fp32_mac_j"]}
    return out
