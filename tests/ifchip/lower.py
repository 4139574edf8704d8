"""Graph → :class:`~.program.IFChipProgram`.

Each IF node fed by one Affine/Linear node becomes a layer. Its float update
``v += dt·r·(W·s + b)`` is scaled by a power of two ``S`` per layer (the
largest for which every |dt·r·W|·S ≤ 127): ``w = rint(dt·r·W·S)``, ``bias =
rint(dt·r·b·S)``, ``thr = rint(v_threshold·S)``; exact when those products are
integers (the error is at most half an LSB per weight otherwise).
"""
from __future__ import annotations

import nir
import numpy as np

from nmc.errors import UnsupportedNodeError

from .program import IFChipProgram, Layer, make

W_MAX = 127
V_MAX = 2 ** 31 - 1


def lower(graph, ctx) -> IFChipProgram:
    order, back = graph.schedule()
    if back:
        a, b = sorted(back)[0]
        raise UnsupportedNodeError("ifchip runs feed-forward networks only", node=b,
                                   hint=f"remove the recurrent edge {a} -> {b}")
    dt = float(graph.meta["dt"])
    layers: list[Layer] = []
    depth = {k: 0 for k in graph.inputs}
    outputs = {}
    for name in order:
        node = graph.nodes[name]
        preds = graph.preds(name)
        if isinstance(node, nir.Input):
            continue
        if isinstance(node, nir.Output):
            if len(preds) != 1 or not any(l.name == preds[0] for l in layers):
                raise UnsupportedNodeError("an ifchip output must be fed by one IF layer", node=name,
                                           hint="end the network with an IF node")
            outputs[name] = preds[0]
            continue
        if isinstance(node, (nir.Affine, nir.Linear)):
            if len(preds) != 1 or preds[0] not in depth:
                raise UnsupportedNodeError("an ifchip synapse layer takes one input or IF layer", node=name)
            continue
        if not isinstance(node, nir.IF):
            raise UnsupportedNodeError(f"ifchip has no {type(node).__name__} node", node=name,
                                       hint="ifchip takes Input → Affine/Linear → IF → … → Output")
        if len(preds) != 1 or not isinstance(graph.nodes[preds[0]], (nir.Affine, nir.Linear)):
            raise UnsupportedNodeError("an ifchip IF layer is fed by one Affine/Linear node", node=name)
        syn = graph.nodes[preds[0]]
        src = graph.preds(preds[0])[0]
        n = int(np.prod(graph.shape_out(name)))
        g = dt * np.broadcast_to(np.asarray(node.r, float).reshape(-1), (n,))
        w = g[:, None] * np.asarray(syn.weight, float).reshape(n, -1)
        b = g * (np.asarray(syn.bias, float).reshape(-1) if isinstance(syn, nir.Affine) else np.zeros(n))
        reset = graph.reset_mode(name)
        if reset == "zero" and np.any(np.asarray(node.v_reset, float) != 0):
            raise UnsupportedNodeError("ifchip resets to zero only", node=name, hint="use v_reset = 0 or --reset subtract")
        peak = float(np.max(np.abs(w), initial=0.0))
        S = 2.0 ** np.floor(np.log2(W_MAX / peak)) if peak > 0 else 1.0
        thr = np.rint(np.broadcast_to(np.asarray(node.v_threshold, float).reshape(-1), (n,)) * S)
        if np.any(np.abs(thr) > V_MAX) or np.any(np.abs(np.rint(b * S)) > V_MAX):
            raise UnsupportedNodeError("threshold or bias exceeds ifchip's 32-bit membrane", node=name,
                                       hint="scale the layer's weights up relative to its threshold")
        depth[name] = depth[src] + 1
        layers.append(Layer(name, src, np.rint(w * S).astype(np.int32), np.rint(b * S).astype(np.int32),
                            thr.astype(np.int32), reset, depth[name], float(S)))
    return make(layers, {k: int(np.prod(graph.shape_out(k))) for k in graph.inputs}, outputs, graph)
