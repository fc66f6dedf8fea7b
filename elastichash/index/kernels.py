"""Hamming kernels over packed 256-bit codes: full scans, k-NN and candidate re-ranking.

The full scan uses faiss-cpu's SIMD popcount kernels (``hammings_knn_hc``, the routine behind
``IndexBinaryFlat``) directly on our own code array, so no second copy of the codes is kept.
Without faiss (it is an optional extra) a chunked numpy ``bitwise_count`` scan does the same
work several times slower.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BYTES

log = logging.getLogger(__name__)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
CHUNK = 1 << 16

_faiss: Any = None
try:
    import faiss as _faiss
except ImportError:  # pragma: no cover - exercised only without the faiss extra
    log.info("faiss-cpu not installed: exact search uses the numpy popcount scan")


def have_faiss() -> bool:
    return _faiss is not None


def _popcount_rows(x: npt.NDArray[np.uint64]) -> I32:
    bc = np.bitwise_count(x)
    out = bc[:, 0].astype(np.int32)
    for j in range(1, x.shape[1]):
        out += bc[:, j]
    return out


def distances(query: U8, codes: U8, *, use_faiss: bool = True) -> I32:
    """Distance from ``query`` (32,) to every row of ``codes`` (n, 32)."""
    n = codes.shape[0]
    out = np.empty(n, np.int32)
    if n == 0:
        return out
    if use_faiss and _faiss is not None:
        q = np.ascontiguousarray(query.reshape(1, -1))
        _faiss.hammings(
            _faiss.swig_ptr(q), _faiss.swig_ptr(codes), 1, n, LONG_BYTES, _faiss.swig_ptr(out)
        )
        return out
    q64 = np.ascontiguousarray(query).view(np.uint64)
    c64 = codes.view(np.uint64)
    for s in range(0, n, CHUNK):
        out[s : s + CHUNK] = _popcount_rows(c64[s : s + CHUNK] ^ q64)
    return out


def distances_at(query: U8, codes: U8, positions: npt.NDArray[Any]) -> I32:
    """Distances to the rows ``positions`` of ``codes`` (the stage-2 re-rank)."""
    if positions.size == 0:
        return np.zeros(0, np.int32)
    q64 = np.ascontiguousarray(query).view(np.uint64)
    return _popcount_rows(codes[positions].view(np.uint64) ^ q64)


def knn(query: U8, codes: U8, k: int, *, use_faiss: bool = True) -> tuple[I32, I64]:
    """The ``k`` nearest rows, ascending by distance (ties in arbitrary order)."""
    n = codes.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    if use_faiss and _faiss is not None:
        dist = np.empty(k, np.int32)
        ids = np.empty(k, np.int64)
        heap = _faiss.int_maxheap_array_t()
        heap.nh, heap.k = 1, k
        heap.ids, heap.val = _faiss.swig_ptr(ids), _faiss.swig_ptr(dist)
        q = np.ascontiguousarray(query.reshape(1, -1))
        _faiss.hammings_knn_hc(heap, _faiss.swig_ptr(q), _faiss.swig_ptr(codes), n, LONG_BYTES, 1)
        return dist, ids
    d = distances(query, codes, use_faiss=False)
    part = np.argpartition(d, k - 1)[:k] if k < n else np.arange(n)
    order = np.argsort(d[part], kind="stable")
    return d[part[order]], part[order].astype(np.int64)


def cut(positions: npt.NDArray[Any], dists: I32, need: int) -> tuple[npt.NDArray[Any], I32]:
    """Keep the ``need`` smallest distances *and every tie* at the boundary distance, so
    the caller can break ties by id."""
    if dists.size <= need:
        return positions, dists
    boundary = np.partition(dists, need - 1)[need - 1]
    keep = dists <= boundary
    return positions[keep], dists[keep]
