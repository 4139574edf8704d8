"""The placement plot (``reports/placement.png``): the board's router grid,
left coloured by load (neurons placed on each router node's cores, as a
fraction of the node's capacity), right by traffic (rate-weighted packets per
step sent plus received by the node's cores). Chip borders are drawn. Uses
matplotlib's Agg backend; the PNG carries no timestamp or version metadata so
bundles stay byte-identical."""
from __future__ import annotations

import io

import numpy as np


def placement_png(lim, gxy: np.ndarray, neurons: np.ndarray, traffic: np.ndarray, title: str = "") -> bytes:
    """``gxy``: (K, 2) global router coordinates per core; ``neurons``/``traffic``: per core."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    GX, GY = lim.chips_x * lim.mesh_x, lim.chips_y * lim.mesh_y
    load = np.zeros((GY, GX))
    traf = np.zeros((GY, GX))
    if gxy.size:
        np.add.at(load, (gxy[:, 1], gxy[:, 0]), neurons)
        np.add.at(traf, (gxy[:, 1], gxy[:, 0]), traffic)
    cap = (lim.neurons_max or max(float(neurons.max(initial=1)), 1.0)) * lim.cores_per_node
    fig = Figure(figsize=(10, 4.2), dpi=80, layout="constrained")
    for i, (arr, lab, cmap) in enumerate(((load / cap, "load (fraction of node capacity)", "viridis"),
                                          (traf, "traffic (packets/step sent+received)", "magma"))):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(arr, origin="lower", cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=lab)
        for cx in range(1, lim.chips_x):
            ax.axvline(cx * lim.mesh_x - 0.5, color="w", lw=1.5)
        for cy in range(1, lim.chips_y):
            ax.axhline(cy * lim.mesh_y - 0.5, color="w", lw=1.5)
        ax.set_xlabel("router x")
        ax.set_ylabel("router y")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
