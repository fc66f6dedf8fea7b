"""The embedded index's whole in-memory table (:class:`CodeTable`): codes, MIH tables and
alive flags by row, published as immutable snapshots; the search half of the embedded index.

Per code: 32 B long code + 8 B SQLite rowid + 1 B alive flag + 16 B of MIH tables = 57 B
(ids and fields stay in SQLite; a page of hits reads them back by rowid).

Concurrency: writers (one thread) build a new immutable :class:`Snapshot` and publish it
with one attribute assignment; a search reads ``table.snapshot`` once and works on it.
Appends write past the published ``n``, which no reader looks at; removals copy the alive
flags first (copy-on-write), so a running search never sees a half-applied batch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BYTES, subcodes, subcodes_array
from elastichash.index import kernels, mih

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
HEADROOM = 4096
TIE_MARGIN = 64  # extra heap entries so the boundary's ties rarely need a second scan
# A filter keeping at most 1/SELECTIVE of the codes gathers just those; a broader one scans all.
SELECTIVE = 8
A = TypeVar("A", bound=npt.NDArray[Any])


@dataclass(frozen=True)
class Snapshot:
    codes: U8  # (cap, 32); rows [:n] valid
    rows: I64  # (cap,) SQLite rowids, strictly increasing over [:n]
    alive: npt.NDArray[np.bool_]  # (cap,)
    n: int
    n_alive: int
    dead: I64  # sorted positions < n that are no longer alive
    tables: mih.Tables  # covers positions [:base_n]
    base_n: int
    delta_subs: npt.NDArray[np.uint16]  # (cap_d, 4); [:n - base_n] valid

    @property
    def nbytes(self) -> int:
        return int(
            self.codes.nbytes
            + self.rows.nbytes
            + self.alive.nbytes
            + self.dead.nbytes
            + self.tables.nbytes
            + self.delta_subs.nbytes
        )

    def locate(self, rows: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Where each of ``rows`` (SQLite rowids, any order) sits in this snapshot, and
        whether it is there and alive; the position of a row that is not is meaningless."""
        if not self.n:
            return np.zeros(rows.size, np.int64), np.zeros(rows.size, bool)
        pos = np.minimum(np.searchsorted(self.rows[: self.n], rows), self.n - 1)
        return pos, (self.rows[pos] == rows) & self.alive[pos]


@dataclass(frozen=True)
class Candidates:
    positions: npt.NDArray[np.int64]
    dists: npt.NDArray[np.int32]
    total: int  # matches within max_distance (or all alive codes) before paging
    scanned: int  # codes whose full distance was computed


def _ranked(
    pos: npt.NDArray[Any], d: npt.NDArray[np.int32], need: int, max_distance: int | None,
    scanned: int,
) -> Candidates:
    """Candidates within ``max_distance``: the ``need`` nearest and their boundary ties."""
    if max_distance is not None:
        within = d <= max_distance
        pos, d = pos[within], d[within]
    total = int(pos.size)
    pos, d = kernels.cut(pos, d, need)
    return Candidates(pos.astype(np.int64), d, total, scanned)


def _grow(arr: A, need: int) -> A:
    if arr.shape[0] >= need:
        return arr
    cap = max(need, arr.shape[0] + arr.shape[0] // 4, HEADROOM)
    out = np.zeros((cap, *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out  # type: ignore[return-value]


class CodeTable:
    def __init__(self, rows: I64, codes: U8, shorts: U8) -> None:
        n = rows.shape[0]
        if codes.shape != (n, LONG_BYTES) or shorts.shape[0] != n:
            raise ValueError(
                f"rows {rows.shape}, codes {codes.shape}, shorts {shorts.shape} disagree"
            )
        c = np.zeros((n + HEADROOM, LONG_BYTES), np.uint8)
        c[:n] = codes
        r = np.zeros(n + HEADROOM, np.int64)
        r[:n] = rows
        alive = np.zeros(n + HEADROOM, bool)
        alive[:n] = True
        tables = mih.build(subcodes_array(shorts)) if n else mih.empty()
        self.snapshot = Snapshot(
            c, r, alive, n, n, np.zeros(0, np.int64), tables, n, np.zeros((HEADROOM, 4), np.uint16)
        )
        self._lock = threading.Lock()

    # --- writes (one writer at a time) --------------------------------------------------

    def publish(self, snap: Snapshot) -> None:
        self.snapshot = snap

    def apply(self, removed_rows: I64, new_rows: I64, new_codes: U8, new_shorts: U8) -> Snapshot:
        """The snapshot after this change, not yet published (see :meth:`publish`); calls
        must be serialised with their publication (the index's single writer thread)."""
        with self._lock:
            s = self.snapshot
            alive, dead, n_alive = s.alive, s.dead, s.n_alive
            if removed_rows.size and s.n:
                pos, live = s.locate(removed_rows)
                pos = pos[live]
                if pos.size:
                    alive = s.alive.copy()
                    alive[pos] = False
                    dead = np.union1d(dead, pos.astype(np.int64))
                    n_alive -= int(pos.size)
            m = new_rows.shape[0]
            n = s.n + m
            codes, rows = _grow(s.codes, n), _grow(s.rows, n)
            alive = _grow(alive, n)
            d_n = s.n - s.base_n
            delta = _grow(s.delta_subs, d_n + m)
            codes[s.n : n] = new_codes
            rows[s.n : n] = new_rows
            alive[s.n : n] = True
            delta[d_n : d_n + m] = subcodes_array(new_shorts)
            snap = replace(
                s,
                codes=codes,
                rows=rows,
                alive=alive,
                n=n,
                n_alive=n_alive + m,
                dead=dead,
                delta_subs=delta,
            )
            if dead.size > max(1024, n >> 10):
                snap = self._compact(snap)
            elif n - snap.base_n > max(65536, n >> 5):
                snap = self._merge(snap)
            return snap

    @staticmethod
    def _merge(s: Snapshot) -> Snapshot:
        d_n = s.n - s.base_n
        tables = mih.merge(
            s.tables, s.delta_subs[:d_n], np.arange(s.base_n, s.n, dtype=np.uint32), s.alive
        )
        return replace(s, tables=tables, base_n=s.n, delta_subs=np.zeros((HEADROOM, 4), np.uint16))

    @classmethod
    def _compact(cls, s: Snapshot) -> Snapshot:
        """Drop dead codes and renumber positions (dead rows slow the exact scan's k-NN)."""
        s = cls._merge(s)
        keep = s.alive[: s.n]
        remap = np.cumsum(keep, dtype=np.int64) - 1
        n = int(keep.sum())
        codes = np.zeros((n + HEADROOM, LONG_BYTES), np.uint8)
        codes[:n] = s.codes[: s.n][keep]
        rows = np.zeros(n + HEADROOM, np.int64)
        rows[:n] = s.rows[: s.n][keep]
        alive = np.zeros(n + HEADROOM, bool)
        alive[:n] = True
        positions = remap[s.tables.positions].astype(np.uint32)
        log.debug("compacted code table: %d -> %d codes", s.n, n)
        return Snapshot(
            codes,
            rows,
            alive,
            n,
            n,
            np.zeros(0, np.int64),
            mih.Tables(s.tables.offsets, positions),
            n,
            s.delta_subs,
        )

    # --- search ---------------------------------------------------------------------------

    @staticmethod
    def two_stage(
        s: Snapshot,
        code: U8,
        short: bytes,
        need: int,
        max_distance: int | None,
        mask: npt.NDArray[np.bool_] | None = None,
    ) -> Candidates:
        """MIH candidates re-ranked on 256 bits; with ``mask`` (per position), only the
        candidates that pass it."""
        values = mih.query_values(subcodes(short))
        found = mih.lookup(s.tables, values)
        d_n = s.n - s.base_n
        if d_n:
            extra = mih.scan_delta(
                s.delta_subs[:d_n], np.arange(s.base_n, s.n, dtype=np.uint32), values
            )
            found = np.concatenate([found, extra])
        pos = mih.unique(found)
        if s.dead.size:
            pos = pos[s.alive[pos]]
        if mask is not None:
            pos = pos[mask[pos]]
        d = kernels.distances_at(code, s.codes, pos)
        return _ranked(pos, d, need, max_distance, int(pos.size))

    @staticmethod
    def exact(s: Snapshot, code: U8, need: int, max_distance: int | None) -> Candidates:
        """The ``need`` nearest alive codes plus every code tied with the last of them.

        One heap scan for ``need + dead + margin`` codes settles almost every query: it holds
        every code at the boundary distance unless its last entry sits at that distance too;
        only then a range scan fetches the whole tie set. With ``max_distance`` the heap also
        answers the count when its last entry lies beyond the range; otherwise a counting scan
        (no output) does.
        """
        n = s.n
        if n == 0:
            return Candidates(np.zeros(0, np.int64), np.zeros(0, np.int32), 0, 0)
        codes = s.codes[:n]
        n_dead = int(s.dead.size)
        k = min(n, need + n_dead + max(need, TIE_MARGIN))
        dist, ids = kernels.knn(code, codes, k)
        last = int(dist[-1])
        ok = s.alive[ids] if n_dead else None
        if max_distance is not None:
            inside = dist <= max_distance
            ok = inside if ok is None else ok & inside
        dk, ik = (dist, ids) if ok is None else (dist[ok], ids[ok])
        if max_distance is None:
            total = s.n_alive
        elif k >= n or last > max_distance:
            total = int(dk.size)  # the heap holds every code within range
        else:
            dead_d = kernels.distances_at(code, codes, s.dead)
            dead_in = int(np.count_nonzero(dead_d <= max_distance))
            total = kernels.count_within(code, codes, max_distance) - dead_in
        if dk.size < need:
            # Fewer than ``need`` matches in the heap: it holds all of them (k >= n, or its
            # last entry is beyond ``max_distance``; ``k`` covers every dead code).
            return Candidates(ik, dk, total, s.n_alive)
        boundary = int(dk[need - 1])
        if k >= n or last > boundary:
            keep = dk <= boundary
            return Candidates(ik[keep], dk[keep], total, s.n_alive)
        # The heap cut through the tie set at ``boundary``: fetch all of it.
        pos, d = kernels.within(code, codes, boundary)
        if n_dead:
            live = s.alive[pos]
            pos, d = pos[live], d[live]
        # Deleted slots are scanned too, but they are not candidates of this query.
        return Candidates(pos, d, total, s.n_alive)

    @staticmethod
    def exact_filtered(
        s: Snapshot,
        code: U8,
        need: int,
        max_distance: int | None,
        mask: npt.NDArray[np.bool_],
    ) -> Candidates:
        """Exact ranking of the alive codes that pass ``mask`` (per position, length >= n).

        A selective filter gathers and scores only its rows; a broad one (over 1/SELECTIVE of
        the table) scores every code in one SIMD scan and drops the rest while ranking, which
        is cheaper than gathering most rows one by one. Both return the ``need`` nearest plus
        their boundary ties, as :meth:`exact` does."""
        n = s.n
        keep = mask[:n] & s.alive[:n]
        sel = np.flatnonzero(keep)
        if sel.size * SELECTIVE <= n:
            return _ranked(sel, kernels.distances_at(code, s.codes, sel), need, max_distance,
                           int(sel.size))
        d_all = kernels.distances(code, s.codes[:n])
        # Every slot was scored, but only the rows that pass are this query's candidates.
        return _ranked(sel, d_all[sel], need, max_distance, int(sel.size))
