"""Sparse storage formats of a weight matrix (rows = targets, columns = sources).

* CSR: ``indptr`` (rows + 1, int64), ``indices`` (nnz, column of each kept
  weight, row-major), ``values`` (nnz).
* ELL: ``indices``/``values`` of shape (rows, K) with K = the largest row
  length; padding entries have index −1 and value 0.

Conv kernels are stored as (out_channels, in·kh·kw) matrices. Sizes in bytes
(:func:`storage_bytes`) count values at ``weight_bits``, column indices at the
smallest of 8/16/32 bits that addresses every column, and CSR row pointers at
``ptr_bytes``.
"""
from __future__ import annotations

import math

import numpy as np


def as_matrix(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    return w.reshape(w.shape[0], -1) if w.ndim != 2 else w


def to_csr(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = as_matrix(w)
    rr, cc = np.nonzero(m)
    indptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rr, minlength=m.shape[0]), out=indptr[1:])
    return indptr, cc.astype(np.int64), m[rr, cc]


def csr_to_dense(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, cols: int) -> np.ndarray:
    rows = indptr.size - 1
    out = np.zeros((rows, cols), dtype=values.dtype)
    out[np.repeat(np.arange(rows), np.diff(indptr)), indices] = values
    return out


def to_ell(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = as_matrix(w)
    indptr, idx, val = to_csr(m)
    lens = np.diff(indptr)
    k = int(lens.max(initial=0))
    rows = np.repeat(np.arange(m.shape[0]), lens)
    pos = np.arange(idx.size) - np.repeat(indptr[:-1], lens)
    ind = np.full((m.shape[0], k), -1, dtype=np.int64)
    vals = np.zeros((m.shape[0], k), dtype=m.dtype)
    ind[rows, pos], vals[rows, pos] = idx, val
    return ind, vals


def ell_to_dense(indices: np.ndarray, values: np.ndarray, cols: int) -> np.ndarray:
    out = np.zeros((indices.shape[0], cols), dtype=values.dtype)
    r, p = np.nonzero(indices >= 0)
    out[r, indices[r, p]] = values[r, p]
    return out


def index_bits(cols: int) -> int:
    return next(b for b in (8, 16, 32, 64) if cols <= 2 ** b)


def storage_bytes(mask: np.ndarray, weight_bits: int, ptr_bytes: int = 4) -> dict:
    """Bytes of the matrix stored dense, CSR and ELL (see the module docstring)."""
    m = as_matrix(mask) != 0
    nnz = int(m.sum())
    wb = weight_bits / 8
    ib = index_bits(m.shape[1]) / 8
    return {"dense": int(math.ceil(m.size * wb)),
            "csr": int(math.ceil(nnz * (wb + ib) + (m.shape[0] + 1) * ptr_bytes)),
            "ell": int(math.ceil(m.shape[0] * int(m.sum(1).max(initial=0)) * (wb + ib))),
            "index_bits": index_bits(m.shape[1])}
