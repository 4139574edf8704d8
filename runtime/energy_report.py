"""Energy report output: rich tables, JSON, and a self-contained HTML page.

The HTML page embeds its plots as base64 PNGs (matplotlib, Agg backend):
energy by layer and kind, the chip grid coloured by per-core energy (when
the bundle is placed), a spike raster of chosen layers, and power over time
(estimated, with the measured trace overlaid when given).
"""
from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
from rich.table import Table

from .energy import KINDS, Activity


def _j(x: float) -> str:
    for unit, f in (("J", 1), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(x) >= f or unit == "pJ":
            return f"{x / f:.3g} {unit}"
    return f"{x:.3g} J"


def tables(rep: dict, top_cores: int = 12) -> list[Table]:
    t = Table(title=f"energy per layer — {rep['target']} ({rep['device']}), spec {rep['spec']}")
    t.add_column("node")
    for k in KINDS:
        t.add_column(k.replace("_", " "), justify="right")
    t.add_column("total", justify="right")
    for n, e in rep["per_node_j"].items():
        t.add_row(n, *(_j(e[k]) for k in KINDS), _j(e["total"]))
    t.add_row("static", *[""] * len(KINDS), _j(rep["by_kind_j"]["static"]), style="dim")
    out = [t]
    if rep["per_core_j"]:
        c = Table(title=f"energy per core (top {min(top_cores, len(rep['per_core_j']))} of {len(rep['per_core_j'])})")
        c.add_column("core")
        for k in ("synaptic_ops", "neuron_updates", "packets", "static", "total"):
            c.add_column(k.replace("_", " "), justify="right")
        for core, e in sorted(rep["per_core_j"].items(), key=lambda kv: -kv[1]["total"])[:top_cores]:
            c.add_row(core, *(_j(e[k]) for k in ("synaptic_ops", "neuron_updates", "packets", "static", "total")))
        out.append(c)
    s = Table(title="totals", show_header=False)
    s.add_row("per inference", _j(rep["per_inference_j"]) + f" (static over the {rep['mode']} time)")
    tm = rep["time"]
    other = "work" if rep["mode"] == "tick" else "tick"
    s.add_row(f"per inference, {other} time", _j(rep["total_by_mode_j"][other] / rep["batch"]))
    s.add_row("time per inference", f"tick {tm['tick_per_inference_s'] * 1e3:.4g} ms"
              + (f", work {tm['work_per_inference_s'] * 1e3:.4g} ms" if tm["work_per_inference_s"] is not None else ""))
    s.add_row("dominant", rep["dominant_why"])
    s.add_row("per timestep", _j(rep["per_step_j"] / rep["batch"]))
    s.add_row("average power", f"{rep['average_power_w'] * 1e3:.4g} mW")
    s.add_row("cores / chips used", f"{rep['cores_used']} / {rep['chips_used']}")
    nb = rep["neurobench"]
    s.add_row("activation sparsity", f"{nb['activation_sparsity']:.3f}")
    s.add_row("connection sparsity", f"{nb['connection_sparsity']:.3f}")
    s.add_row("effective AC / MAC per sample", f"{nb['effective_ac_per_sample']:.4g} / {nb['effective_mac_per_sample']:.4g}")
    s.add_row("footprint", f"{nb['footprint_bytes']:,} bytes")
    conv = rep["conventional"]
    s.add_row("dynamic energy per inference", _j(rep["dynamic_j"] / rep["batch"]))
    s.add_row("same network as dense fp32 MACs (45 nm)",
              f"{_j(conv['fp32_j'] / rep['batch'])} per inference"
              + (f" = {rep['dynamic_savings_vs_fp32']:.3g}× the dynamic estimate"
                 if rep.get("dynamic_savings_vs_fp32") else ""))
    for k, v in rep.get("baselines", {}).items():
        s.add_row(f"baseline: {v['label']}", f"{_j(v['per_inference_j'])} per inference ({v['includes']})")
    if "measured" in rep:
        m = rep["measured"]
        s.add_row("measured per inference", f"{_j(m['per_inference_j'])} (estimate / measured = {m['ratio']:.3g})")
        if "fit" in m:
            s.add_row("fit R²", f"{m['fit']['r2']:.4f}")
    out.append(s)
    return out


def to_json(rep: dict) -> bytes:
    return (json.dumps(rep, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
            + "\n").encode()


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(rep: dict, act: Activity, graph, measured: np.ndarray | None = None, raster_nodes=None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nmc.annotations import Placement

    figs = {}
    nodes = list(rep["per_node_j"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bottom = np.zeros(len(nodes))
    for k in KINDS:
        vals = np.array([rep["per_node_j"][n][k] for n in nodes])
        if vals.sum() > 0:
            ax.bar(nodes, vals, bottom=bottom, label=k.replace("_", " "))
            bottom += vals
    ax.set_ylabel("energy (J)")
    ax.set_title("dynamic energy by layer and kind")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    figs["Energy by layer"] = _png(fig)

    if rep["per_core_j"]:
        pos = {}
        for n in graph.nodes:
            p = graph.ann(n, Placement)
            if p is not None and p.x is not None:
                for c, x, y, ch in zip(np.asarray(p.core).reshape(-1), np.asarray(p.x).reshape(-1),
                                       np.asarray(p.y).reshape(-1),
                                       np.asarray(p.chip if p.chip is not None else np.zeros_like(p.core)).reshape(-1)):
                    pos[int(c)] = (int(x), int(y), int(ch))
        if pos:
            X = max(v[0] for v in pos.values()) + 1
            Y = max(v[1] for v in pos.values()) + 1
            grid = np.zeros((Y, X))
            for c, e in rep["per_core_j"].items():
                if int(c) in pos:
                    x, y, _ = pos[int(c)]
                    grid[y, x] += e["total"]
            fig, ax = plt.subplots(figsize=(4, 3))
            im = ax.imshow(grid, cmap="magma", origin="lower")
            fig.colorbar(im, ax=ax, label="J")
            ax.set_title("per-core energy on the chip grid")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            figs["Chip grid"] = _png(fig)

    raster_nodes = raster_nodes or list(act.spikes)[:3]
    if raster_nodes:
        fig, axes = plt.subplots(len(raster_nodes), 1, figsize=(7, 1.6 * len(raster_nodes)), squeeze=False)
        for ax, n in zip(axes[:, 0], raster_nodes):
            s = act.spikes[n]
            t, i = np.nonzero(s)
            ax.scatter(t, i, s=2, marker="|", color="black")
            ax.set_ylabel(n, fontsize=7)
            ax.set_xlim(-0.5, s.shape[0] - 0.5)
        axes[-1, 0].set_xlabel("timestep")
        axes[0, 0].set_title("spike raster (first sample)")
        figs["Spike raster"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 2.8))
    step_s = np.asarray(rep.get("step_s_series", [rep["tick_s"]] * len(rep["per_step_j_series"])))
    est = np.asarray(rep["per_step_j_series"]) / (step_s * rep["batch"])
    ax.plot(np.concatenate([[0.0], np.cumsum(step_s)[:-1]]) * 1e3, est * 1e3, label=f"estimated ({rep.get('mode', 'tick')} time)")
    if measured is not None:
        ax.plot(np.arange(measured.shape[-1]) * rep["tick_s"] * 1e3, measured.mean(0) / rep["tick_s"] * 1e3,
                label="measured", alpha=0.8)
    ax.set_xlabel("time in inference (ms)")
    ax.set_ylabel("power (mW)")
    ax.set_title("power over time")
    ax.legend(fontsize=7)
    figs["Power over time"] = _png(fig)
    return figs


def to_html(rep: dict, figs: dict[str, str]) -> bytes:
    rows = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_j(e[k])}</td>" for k in KINDS)
                   + f"<td><b>{_j(e['total'])}</b></td></tr>" for n, e in rep["per_node_j"].items())
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in KINDS)
    summary = [("per inference", _j(rep["per_inference_j"])), ("per timestep", _j(rep["per_step_j"] / rep["batch"])),
               ("average power", f"{rep['average_power_w'] * 1e3:.4g} mW"),
               ("static per inference", _j(rep["by_kind_j"]["static"] / rep["batch"]) + f" ({rep['mode']} time)"),
               ("per inference, tick / work time", " / ".join(_j(rep["total_by_mode_j"][m] / rep["batch"])
                                                             for m in ("tick", "work"))),
               ("dominant", rep["dominant_why"]),
               ("cores / chips", f"{rep['cores_used']} / {rep['chips_used']}"),
               ("dense fp32 on a 45 nm processor", _j(rep["conventional"]["fp32_j"] / rep["batch"]) + " per inference")]
    for k, v in rep.get("baselines", {}).items():
        summary.append((f"baseline: {v['label']}", _j(v["per_inference_j"]) + f" per inference ({v['includes']})"))
    if "measured" in rep:
        summary.append(("measured per inference", _j(rep["measured"]["per_inference_j"])))
    summ = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in summary)
    imgs = "".join(f"<figure><figcaption>{html.escape(k)}</figcaption><img alt='{html.escape(k)}' "
                   f"src='data:image/png;base64,{v}'></figure>" for k, v in figs.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>nmc energy report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}
figure{{display:inline-block;margin:0.5em}}figcaption{{font-weight:bold}}</style></head><body>
<h1>Energy report: {html.escape(rep['target'])} ({html.escape(rep['device'])})</h1>
<p>spec <code>{html.escape(rep['spec'])}</code>, {rep['steps']} steps × {rep['batch']} inference(s), tick {rep['tick_s']} s</p>
<table>{summ}</table>
<h2>Per layer</h2><table><tr><th>node</th>{head}<th>total</th></tr>{rows}</table>
<h2>Plots</h2>{imgs}
</body></html>
"""
    return page.encode()
