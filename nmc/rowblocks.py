"""Row blocks: slices of axis 0 that keep the temporaries of big weight arithmetic small.

A dense 10⁸-synapse matrix is 800 MB in float64, and a formula like
``round(w / scale)`` over it makes several such temporaries at once. Done one
block of rows at a time the temporaries stay :data:`BLOCK_ELEMENTS` elements,
and the result is the same bits: elementwise operations, maxima and sums
along one row do not depend on how the rows are grouped (a sum over all
elements does, so it is never done blockwise here).
"""
from __future__ import annotations

import numpy as np

BLOCK_ELEMENTS = 1 << 20   # elements per block (8 MB of float64)


def row_blocks(shape) -> list[slice]:
    """Slices of axis 0 of about :data:`BLOCK_ELEMENTS` elements each, covering every row once
    (one empty slice for an array without rows; a 0-d array is one row)."""
    rows = int(shape[0]) if len(shape) else 1
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64))) if len(shape) > 1 else 1
    step = max(1, BLOCK_ELEMENTS // per_row)
    return [slice(r, min(rows, r + step)) for r in range(0, rows, step)] or [slice(0, 0)]
