"""Sweep reports: the Pareto front (accuracy up, energy down, cores down), a PNG and an HTML page.

A point is on the front when no other ``ok`` point is at least as good in all
three (accuracy — or agreement with the reference without labels —, energy per
inference, cores) and better in one. Points without an energy figure (the
reference target) are compared on accuracy alone among themselves.
"""
from __future__ import annotations

import base64
import html
import io

from .point import score


def _objectives(r: dict) -> tuple[float, float, float]:
    e = r.get("energy_per_inference_j")
    c = r.get("cores")
    return (-(score(r) or 0.0), float("inf") if e is None else float(e), float("inf") if c is None else float(c))


def pareto(records: list[dict]) -> set[str]:
    """Keys of the ``ok`` records on the front."""
    ok = [r for r in records if r.get("status") == "ok"]
    objs = {r["key"]: _objectives(r) for r in ok}
    front = set()
    for k, a in objs.items():
        dominated = any(all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a))
                        for kk, b in objs.items() if kk != k)
        if not dominated:
            front.add(k)
    return front


def plot_png(records: list[dict], title: str = "") -> bytes:
    """Accuracy vs energy per inference (log), marker size = cores, front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok" and r.get("energy_per_inference_j") is not None]
    front = pareto(records)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    es = [r["energy_per_inference_j"] for r in ok]
    top = max(es) if es else 1.0
    unit, scale = next(((u, m) for u, m in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)) if top >= m),
                       ("pJ", 1e-12))
    for t in sorted({r["target"] for r in ok}):
        rs = [r for r in ok if r["target"] == t]
        ax.scatter([r["energy_per_inference_j"] / scale for r in rs], [100 * (score(r) or 0) for r in rs],
                   s=[30 + 20 * (r.get("cores") or 1) for r in rs], alpha=0.6, label=t)
    fr = sorted((r for r in ok if r["key"] in front), key=lambda r: r["energy_per_inference_j"])
    if fr:
        ax.plot([r["energy_per_inference_j"] / scale for r in fr], [100 * (score(r) or 0) for r in fr], "k--", lw=1,
                label="Pareto front")
    if es and min(es) > 0 and max(es) / min(es) > 10:  # several orders of magnitude (targets differ): log
        ax.set_xscale("log")
    else:
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel(f"energy per inference ({unit})")
    ax.set_ylabel("accuracy (%)" if any("accuracy" in r for r in ok) else "agreement with reference (%)")
    ax.set_title(title or "sweep: accuracy vs energy (marker size: cores)")
    if ok:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


COLUMNS = ("index", "target", "params", "status", "accuracy", "agreement", "energy_per_inference_j", "cores",
           "chips", "bits", "compile_s", "rule / error")


def html_report(records: list[dict], png: bytes, title: str) -> bytes:
    """One self-contained page: the plot and a table of every point (front marked)."""
    front = pareto(records)
    rows = []
    for r in sorted(records, key=lambda r: r.get("index", 0)):
        cells = []
        for c in COLUMNS:
            v = r.get("rule") or r.get("error") if c == "rule / error" else r.get(c)
            if c == "params":
                v = ", ".join(f"{k}={x}" for k, x in (v or {}).items())
            elif isinstance(v, float):
                v = f"{v:.4g}"
            cells.append(f"<td>{html.escape('' if v is None else str(v))}</td>")
        cls = ' class="front"' if r["key"] in front else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    counts = {s: sum(r.get("status") == s for r in records) for s in ("ok", "no_fit", "failed", "crashed")}
    img = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}tr.front{{background:#e6f4e6;font-weight:bold}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(records)} points: {', '.join(f'{v} {k}' for k, v in counts.items() if v)}; {len(front)} on the Pareto front
(accuracy up, energy per inference down, cores down), highlighted.</p>
<img alt="accuracy vs energy" src="data:image/png;base64,{img}">
<table><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in COLUMNS)}</tr>
{chr(10).join(rows)}
</table></body></html>
""".encode()
