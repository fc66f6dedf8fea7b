"""Hamming kernels over packed 256-bit codes: full scans, k-NN, range scans and re-ranking.

The full scans use faiss-cpu's SIMD popcount kernels (``hammings_knn_hc``, the routine behind
``IndexBinaryFlat``; ``hamming_range_search``; ``hamming_count_thres``) directly on our own code
array, so no second copy of the codes is kept. Without faiss (an optional extra) chunked numpy
``bitwise_count`` scans do the same work several times slower.

The stage-2 re-rank gathers candidate rows with ``np.take`` (a contiguous 32-byte copy per row,
several times faster than fancy indexing on a 2-D array) and folds the four per-word popcounts
with integer adds on a 32-bit view instead of a reduction over a short axis.
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


def _query_row(query: U8) -> U8:
    return np.ascontiguousarray(query.reshape(1, -1))


def popcount_rows(x: npt.NDArray[np.uint64]) -> I32:
    """Row sums of the popcounts of an (m, 4) uint64 array (256-bit rows)."""
    bc = np.bitwise_count(x)  # (m, 4) uint8, each <= 64
    if x.shape[1] != 4:
        summed: I32 = bc.sum(axis=1, dtype=np.int32)
        return summed
    # The four byte counts of a row are one little- or big-endian uint32: add them pairwise
    # in 16-bit lanes (each <= 128), then the two lanes (<= 256); endianness does not matter.
    w = np.ascontiguousarray(bc).view(np.uint32).reshape(-1)
    w = (w & 0x00FF00FF) + ((w >> 8) & 0x00FF00FF)
    out: I32 = ((w & 0xFFFF) + (w >> 16)).view(np.int32)
    return out


def distances(query: U8, codes: U8, *, use_faiss: bool = True) -> I32:
    """Distance from ``query`` (32,) to every row of ``codes`` (n, 32)."""
    n = codes.shape[0]
    out = np.empty(n, np.int32)
    if n == 0:
        return out
    if use_faiss and _faiss is not None:
        q = _query_row(query)
        _faiss.hammings(
            _faiss.swig_ptr(q), _faiss.swig_ptr(codes), 1, n, LONG_BYTES, _faiss.swig_ptr(out)
        )
        return out
    q64 = np.ascontiguousarray(query).view(np.uint64)
    c64 = codes.view(np.uint64)
    for s in range(0, n, CHUNK):
        out[s : s + CHUNK] = popcount_rows(c64[s : s + CHUNK] ^ q64)
    return out


def distances_at(query: U8, codes: U8, positions: npt.NDArray[Any]) -> I32:
    """Distances to the rows ``positions`` of ``codes`` (the stage-2 re-rank)."""
    if positions.size == 0:
        return np.zeros(0, np.int32)
    q64 = np.ascontiguousarray(query).view(np.uint64)
    rows = np.take(codes, positions, axis=0).view(np.uint64)
    return popcount_rows(np.bitwise_xor(rows, q64, out=rows))


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
        q = _query_row(query)
        _faiss.hammings_knn_hc(heap, _faiss.swig_ptr(q), _faiss.swig_ptr(codes), n, LONG_BYTES, 1)
        return dist, ids
    d = distances(query, codes, use_faiss=False)
    part = np.argpartition(d, k - 1)[:k] if k < n else np.arange(n)
    order = np.argsort(d[part], kind="stable")
    return d[part[order]], part[order].astype(np.int64)


def within(query: U8, codes: U8, radius: int, *, use_faiss: bool = True) -> tuple[I64, I32]:
    """Every row at distance <= ``radius``, in position order, with its distance."""
    n = codes.shape[0]
    if n == 0 or radius < 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    if use_faiss and _faiss is not None:
        res = _faiss.RangeSearchResult(1)
        q = _query_row(query)
        # faiss keeps distances strictly below its radius.
        _faiss.hamming_range_search(
            _faiss.swig_ptr(q), _faiss.swig_ptr(codes), 1, n, radius + 1, LONG_BYTES, res
        )
        m = int(_faiss.rev_swig_ptr(res.lims, 2)[1])
        if m == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        pos = _faiss.rev_swig_ptr(res.labels, m).astype(np.int64)
        dist = _faiss.rev_swig_ptr(res.distances, m).astype(np.int32)
        order = np.argsort(pos, kind="stable")
        return pos[order], dist[order]
    d = distances(query, codes, use_faiss=False)
    pos = np.flatnonzero(d <= radius)
    return pos, d[pos]


def count_within(query: U8, codes: U8, radius: int, *, use_faiss: bool = True) -> int:
    """How many rows are at distance <= ``radius`` (one scan, nothing stored)."""
    n = codes.shape[0]
    if n == 0 or radius < 0:
        return 0
    if use_faiss and _faiss is not None:
        out = np.zeros(1, np.uint64)
        q = _query_row(query)
        _faiss.hamming_count_thres(
            _faiss.swig_ptr(q),
            _faiss.swig_ptr(codes),
            1,
            n,
            radius,
            LONG_BYTES,
            _faiss.swig_ptr(out),
        )
        return int(out[0])
    return int(np.count_nonzero(distances(query, codes, use_faiss=False) <= radius))


def cut(positions: npt.NDArray[Any], dists: I32, need: int) -> tuple[npt.NDArray[Any], I32]:
    """Keep the ``need`` smallest distances *and every tie* at the boundary distance, so
    the caller can break ties by id."""
    if dists.size <= need:
        return positions, dists
    boundary = np.partition(dists, need - 1)[need - 1]
    keep = dists <= boundary
    return positions[keep], dists[keep]
