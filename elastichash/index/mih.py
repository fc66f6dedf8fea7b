"""Multi-index hashing tables over the four 16-bit subcodes of the short code.

Each of the four tables is a CSR bucket array: ``offsets`` (65,537 uint32 per table) and
``positions`` (one uint32 per indexed code) sorted by subcode, so the bucket of value ``v`` is
``positions[offsets[v]:offsets[v + 1]]``. That is 4 x 4 = 16 bytes per code (plus 1 MiB in
all for the offsets), the memory of ElasticHash's four keyword fields without their terms.

A lookup takes the 137 values within radius 2 of each query subcode (548 buckets) and
gathers their positions in one vectorised step; by pigeonhole it finds every code whose
64-bit short code is within distance 4 * 3 - 1 = 11 of the query's.

The tables are immutable: codes appended after a build live in a small *delta* that is
scanned linearly until :func:`merge` folds it in (dropping dead positions on the way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastichash.codes import NUM_SUBCODES, SUBCODE_BITS, radius_masks

NUM_VALUES = 1 << SUBCODE_BITS
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class Tables:
    offsets: U32  # (4, 65537)
    positions: U32  # (4, m): positions sorted by subcode within each table

    @property
    def size(self) -> int:
        return int(self.positions.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.positions.nbytes)


def empty() -> Tables:
    return Tables(
        np.zeros((NUM_SUBCODES, NUM_VALUES + 1), np.uint32), np.zeros((NUM_SUBCODES, 0), np.uint32)
    )


def build(subs: U16, positions: U32 | None = None) -> Tables:
    """Tables for ``subs`` (m, 4) uint16 at ``positions`` (default 0..m-1)."""
    m = subs.shape[0]
    pos = np.arange(m, dtype=np.uint32) if positions is None else positions
    offsets = np.empty((NUM_SUBCODES, NUM_VALUES + 1), np.uint32)
    out = np.empty((NUM_SUBCODES, m), np.uint32)
    for t in range(NUM_SUBCODES):
        col = np.ascontiguousarray(subs[:, t])
        order = np.argsort(col, kind="stable")  # radix sort for uint16: linear time
        out[t] = pos[order]
        offsets[t, 0] = 0
        np.cumsum(np.bincount(col, minlength=NUM_VALUES), out=offsets[t, 1:])
    return Tables(offsets, out)


def merge(base: Tables, delta_subs: U16, delta_pos: U32, alive: npt.NDArray[np.bool_]) -> Tables:
    """Fold a delta into ``base``, keeping only positions still alive.

    The base keys are implied by the offsets, so no short codes need to stay in memory."""
    offsets = np.empty_like(base.offsets)
    keep_base = alive[base.positions[0]] if base.size else np.zeros(0, bool)
    keep_delta = alive[delta_pos] if delta_pos.size else np.zeros(0, bool)
    m = int(keep_base.sum()) + int(keep_delta.sum())
    out = np.empty((NUM_SUBCODES, m), np.uint32)
    values = np.arange(NUM_VALUES, dtype=np.uint16)
    for t in range(NUM_SUBCODES):
        base_keys = np.repeat(values, np.diff(base.offsets[t]))
        base_pos = base.positions[t]
        keep_t = alive[base_pos]
        keys = np.concatenate([base_keys[keep_t], delta_subs[keep_delta, t]])
        pos = np.concatenate([base_pos[keep_t], delta_pos[keep_delta]])
        order = np.argsort(keys, kind="stable")
        out[t] = pos[order]
        offsets[t, 0] = 0
        np.cumsum(np.bincount(keys, minlength=NUM_VALUES), out=offsets[t, 1:])
    return Tables(offsets, out)


def query_values(query_subs: list[int]) -> npt.NDArray[np.int64]:
    """(4, 137) neighbour values of the query's subcodes, radius 2."""
    masks = radius_masks().astype(np.int64)
    return np.array(query_subs, dtype=np.int64)[:, None] ^ masks[None, :]


def lookup(tables: Tables, values: npt.NDArray[np.int64]) -> U32:
    """Positions in the union of the buckets ``values`` (4, v) name; may repeat a position."""
    if tables.size == 0:
        return np.zeros(0, np.uint32)
    rows = np.arange(NUM_SUBCODES)[:, None]
    starts = tables.offsets[rows, values].astype(np.int64).ravel()
    ends = tables.offsets[rows, values + 1].astype(np.int64).ravel()
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.uint32)
    # Flat index into positions.ravel(): each bucket's start shifted by its table's row.
    base = starts + np.repeat(rows.ravel() * tables.size, values.shape[1])
    nonzero = lengths > 0
    base, lengths = base[nonzero], lengths[nonzero]
    shift = np.repeat(base - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    flat = shift + np.arange(total, dtype=np.int64)
    out: U32 = tables.positions.ravel()[flat]
    return out


def unique(found: U32) -> U32:
    """Sorted distinct positions of ``found`` (a code shows up once per table it matched in).

    A sort of the uint32 array (SIMD in numpy 2) and a neighbour compare: several times
    faster than ``np.unique``, and the ascending order makes the re-rank's gather sequential."""
    if found.size < 2:
        return found.copy()
    s = np.sort(found)
    keep = np.empty(s.size, bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: U32 = s[keep]
    return out


def scan_delta(delta_subs: U16, delta_pos: U32, values: npt.NDArray[np.int64]) -> U32:
    """Delta positions any of whose subcodes is among the query's neighbour values."""
    if delta_pos.size == 0:
        return np.zeros(0, np.uint32)
    hit = np.zeros(delta_pos.size, bool)
    for t in range(NUM_SUBCODES):
        table = np.zeros(NUM_VALUES, bool)
        table[values[t]] = True
        hit |= table[delta_subs[:, t]]
    return delta_pos[hit]
