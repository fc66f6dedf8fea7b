"""The embedded index: SQLite for durability, numpy arrays for search.

Writes go to one writer thread: the SQLite transaction commits first (``synchronous=FULL``),
then the in-memory table publishes a new snapshot, and only then does ``upsert`` return, so
an acknowledged write is both durable and searchable. Searches run on a small reader pool
against the snapshot current when they start, and never wait for a commit's fsync (see
:meth:`EmbeddedIndex._in_view`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BYTES, SHORT_BYTES
from elastichash.errors import InvalidInput, Unavailable
from elastichash.index import binding, filters, kernels
from elastichash.index import duplicates as dup
from elastichash.index.base import (
    SCAN_BATCH,
    Capabilities,
    CodeRecord,
    Document,
    DuplicatesResult,
    Failure,
    Hit,
    SearchQuery,
    SearchResult,
    UpsertPlan,
    WriteResult,
    resolve_auto,
)
from elastichash.index.code_table import Candidates, CodeTable, Snapshot
from elastichash.index.query import PORTABLE_STRATEGIES
from elastichash.index.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
EMBEDDED_STRATEGIES = frozenset(PORTABLE_STRATEGIES)
_WHY_NOT = (("dense_bit", "Elasticsearch-only"),)
DB_NAME = "index.sqlite3"
# Times a read runs again on a newer snapshot when the database was a commit ahead of memory;
# past that it answers from what it has (a replaced or deleted row left out).
VIEW_ATTEMPTS = 5
VIEW_WAIT_S = 1.0
# Per image in memory: the 32-byte code, its 8-byte SQLite rowid, an alive flag and one 4-byte
# position in each of the 4 MIH tables.
BYTES_PER_IMAGE = LONG_BYTES + 8 + 1 + 4 * 4


class _Behind(Exception):
    """The pinned database view is a commit ahead of the memory snapshot: rows the snapshot
    holds were replaced or deleted there."""


def _check_found(found: dict[int, Any], wanted: set[int], last: bool) -> None:
    """Rows of a snapshot looked up in its database view: all are there unless the database
    is a commit ahead (then read again, or on the last attempt go without them)."""
    if len(found) < len(wanted) and not last:
        raise _Behind


@dataclass(frozen=True)
class _Groups:
    rows: list[npt.NDArray[np.int64]]  # SQLite rowids per group, in listing order
    positions: list[npt.NDArray[np.int64]]  # the same groups as snapshot positions
    images: int
    pairs: int


class EmbeddedIndex:
    def __init__(self, path: Path, *, strategy: str = "two_stage", read_threads: int = 4) -> None:
        if strategy not in EMBEDDED_STRATEGIES:
            raise InvalidInput(
                f"the embedded index has strategies {sorted(EMBEDDED_STRATEGIES)}",
                field="strategy",
            )
        self._caps = Capabilities(EMBEDDED_STRATEGIES, strategy, filter=True, text=True,
                                  why_not=_WHY_NOT)
        self.path = Path(path)
        self.strategy = strategy
        self._read_threads = read_threads
        self._store = Store(self.path / DB_NAME)
        self._table: CodeTable | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self.open_seconds = 0.0
        self._view_lock = threading.Lock()
        self._published = threading.Condition(self._view_lock)
        # Filterable values of every row, extended on the first filtered search after writes.
        self._columns = filters.Columns()
        self._columns_lock = threading.Lock()
        # The last self-join: (snapshot, max_distance, groups); pages of one listing reuse it.
        self._dup_cache: tuple[Snapshot, int, _Groups] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._table is not None:
            return
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="eh-index-writer")
        self._readers = ThreadPoolExecutor(self._read_threads, thread_name_prefix="eh-index-search")
        t0 = time.perf_counter()

        def load() -> CodeTable:
            self._store.open()
            return CodeTable(*self._store.load_codes())

        self._table = await self._run(self._writer, load)
        self.open_seconds = time.perf_counter() - t0
        log.info(
            "embedded index %s opened: %d codes in %.2fs (kernel: %s)",
            self.path,
            self._table.snapshot.n_alive,
            self.open_seconds,
            "faiss" if kernels.have_faiss() else "numpy",
        )

    async def close(self) -> None:
        if self._writer is None:
            return
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        count = self._table.snapshot.n_alive if self._table else 0
        self._table = None
        if readers is not None:
            readers.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(writer, self._store.close)
        writer.shutdown(wait=True)
        log.info("embedded index %s closed with %d codes", self.path, count)

    async def ready(self) -> bool:
        return self._table is not None

    # --- helpers -------------------------------------------------------------------------

    async def _run(self, pool: ThreadPoolExecutor | None, fn: Callable[[], T]) -> T:
        if pool is None:
            raise Unavailable("the index is not open")
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def _commit(self, snap: Snapshot) -> None:
        # The commit (its fsync) holds no lock a search takes: under a stream of writes a
        # search must not queue behind the disk. The memory snapshot is published after it,
        # under the lock searches pin their two views with, so memory is never ahead of the
        # database; the database may be one commit ahead, which _in_view handles.
        self._store.commit()
        with self._published:
            self.table.publish(snap)
            self._published.notify_all()

    def _in_view(self, read: Callable[[Snapshot, bool], T]) -> T:
        """``read(snap, last)`` over a memory snapshot and the database view pinned with it.
        Between a commit and its publication the database holds rows the snapshot lacks
        (harmless: they are not found) and lacks rows the snapshot still holds (replaced or
        deleted): a read that meets one raises :class:`_Behind` unless ``last``, and runs
        again once the next snapshot is out."""
        for attempt in range(VIEW_ATTEMPTS):
            with self._view_lock:
                self._store.begin_read()
                snap = self.table.snapshot
            try:
                return read(snap, attempt == VIEW_ATTEMPTS - 1)
            except _Behind:
                pass
            finally:
                self._store.end_read()
            self._wait_newer(snap)
        raise AssertionError("unreachable: the last attempt does not raise _Behind")

    def _wait_newer(self, snap: Snapshot) -> None:
        with self._published:
            self._published.wait_for(lambda: self.table.snapshot is not snap, VIEW_WAIT_S)

    @property
    def table(self) -> CodeTable:
        if self._table is None:
            raise Unavailable("the index is not open")
        return self._table

    # --- writes --------------------------------------------------------------------------

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        plan = UpsertPlan.of(docs)
        batch = plan.writes
        table = self.table
        failure: str | None = None
        stale: set[str] = set()
        if batch:

            def write() -> set[str]:
                try:
                    new_rows, old_rows, superseded = self._store.upsert(batch)
                    written = [d for d in batch if d.id not in superseded]
                    snap = table.apply(
                        np.array(old_rows, np.int64),
                        np.array(new_rows, np.int64),
                        np.frombuffer(b"".join(d.code for d in written), np.uint8).reshape(
                            -1, LONG_BYTES
                        ),
                        np.frombuffer(b"".join(d.short for d in written), np.uint8).reshape(
                            -1, SHORT_BYTES
                        ),
                    )
                    self._commit(snap)
                except BaseException:
                    self._store.rollback()
                    raise
                return superseded

            try:
                stale = await self._run(self._writer, write)
            except sqlite3.Error as exc:
                log.warning("index write of %d documents failed: %s", len(batch), exc)
                failure = f"store error: {exc}"
        return plan.results({
            d.id: WriteResult(d.id, False, failure, transient=True) if failure is not None
            else WriteResult(d.id, True, superseded=d.id in stale)
            for d in batch
        })

    async def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        table = self.table
        unique = list(dict.fromkeys(ids))

        def write() -> dict[str, int]:
            try:
                found = self._store.delete(unique)
                snap = table.apply(
                    np.array(sorted(found.values()), np.int64),
                    np.zeros(0, np.int64),
                    np.zeros((0, LONG_BYTES), np.uint8),
                    np.zeros((0, SHORT_BYTES), np.uint8),
                )
                self._commit(snap)
            except BaseException:
                self._store.rollback()
                raise
            return found

        try:
            found = await self._run(self._writer, write)
        except sqlite3.Error as exc:  # locked, disk full: the caller may retry (503)
            log.warning("index delete of %d ids failed: %s", len(unique), exc)
            raise Unavailable(f"index store error: {exc}", retry_after=1.0) from None
        seen: set[str] = set()
        out = []
        for i in ids:
            ok = i in found and i not in seen
            seen.add(i)
            out.append(WriteResult(i, ok, None if ok else "not_found"))
        return out

    async def record_failures(self, failures: Sequence[Failure]) -> None:
        items = [
            f if f.at else Failure(f.id, f.reason, f.message, f.source, time.time(), f.version)
            for f in failures
        ]
        if items:
            await self._run(self._writer, lambda: self._store.record_failures(items))

    # --- reads ---------------------------------------------------------------------------

    async def get(self, doc_id: str) -> Document | None:
        return await self._run(self._readers, lambda: self._store.get(doc_id))

    async def add_source(self, doc_id: str, source: str) -> bool:
        return await self._run(self._writer, lambda: self._store.add_source(doc_id, source))

    async def existing(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return await self._run(self._readers, lambda: self._store.existing(ids))

    async def get_preview(self, doc_id: str) -> bytes | None:
        return await self._run(self._readers, lambda: self._store.get_preview(doc_id))

    async def get_failure(self, doc_id: str) -> Failure | None:
        return await self._run(self._readers, lambda: self._store.get_failure(doc_id))

    async def recent_failures(self, limit: int = 50) -> list[Failure]:
        return await self._run(self._readers, lambda: self._store.recent_failures(limit))

    async def count(self) -> int:
        return self.table.snapshot.n_alive

    async def stats(self) -> dict[str, Any]:
        snap = self.table.snapshot
        disk, failures = await self._run(
            self._readers, lambda: (self._store.disk_bytes(), self._store.failure_count())
        )
        return {
            "backend": "embedded",
            "count": snap.n_alive,
            "strategy": self.strategy,
            "strategies": sorted(EMBEDDED_STRATEGIES),
            "kernel": "faiss" if kernels.have_faiss() else "numpy",
            # What search holds in memory now (fixed part and room to grow included), what
            # an empty index holds, and what each further image adds: plan RAM with the last.
            "memory_bytes": snap.nbytes,
            "memory_fixed_bytes": int(snap.tables.offsets.nbytes),
            "memory_bytes_per_image": BYTES_PER_IMAGE,
            "mih_delta": snap.n - snap.base_n,
            "dead_slots": int(snap.dead.size),
            "disk_bytes": disk,
            "failures": failures,
            "open_seconds": round(self.open_seconds, 3),
        }

    async def bind_model(self, name: str, spec: binding.ModelIdentity) -> None:
        """Record the model whose codes this index holds, or refuse another one
        (``ModelMismatch``; see :mod:`elastichash.index.binding`)."""

        def run() -> None:
            record = binding.bind(
                self._store.get_meta(binding.META_MODEL_NAME),
                self._store.get_meta(binding.META_MODEL_FINGERPRINT),
                self.table.snapshot.n_alive > 0, name, spec, f"the index at {self.path}")
            if record is not None:
                self._store.set_meta(binding.META_MODEL_NAME, record.name)
                self._store.set_meta(binding.META_MODEL_FINGERPRINT, record.fingerprint)

        await self._run(self._writer, run)

    async def model(self) -> tuple[str | None, str | None]:
        """(name, fingerprint) of the model this index is bound to, if any."""

        def run() -> tuple[str | None, str | None]:
            return (self._store.get_meta(binding.META_MODEL_NAME),
                    self._store.get_meta(binding.META_MODEL_FINGERPRINT))

        return await self._run(self._readers, run)

    async def capabilities(self) -> Capabilities:
        return self._caps

    async def scan(
        self, *, batch: int = SCAN_BATCH, after: str | None = None
    ) -> AsyncGenerator[list[CodeRecord], None]:
        while True:
            rows = await self._run(self._readers, partial(self._store.scan, after, batch))
            if not rows:
                return
            yield [CodeRecord(*r) for r in rows]
            after = rows[-1][0]

    async def search(self, query: SearchQuery) -> SearchResult:
        strategy = self._caps.check(query)
        if query.text is not None:
            return await self._search_words(query, strategy)
        code, short = query.codes()
        k, offset, max_distance = query.k, query.offset, query.max_distance
        strategy = resolve_auto(strategy, self.table.snapshot.n_alive)  # Unavailable if closed
        t0 = time.perf_counter()
        q = np.frombuffer(code, np.uint8)
        need = offset + k
        clauses = filters.parse(query.filter) if query.filter is not None else None

        def run(snap: Snapshot, last: bool) -> SearchResult:
            mask = None if clauses is None else self._filter_mask(snap, clauses)
            if strategy == "exact":
                cands = (CodeTable.exact(snap, q, need, max_distance) if mask is None else
                         CodeTable.exact_filtered(snap, q, need, max_distance, mask))
            else:
                cands = CodeTable.two_stage(snap, q, short, need, max_distance, mask)
            hits = self._page(snap, cands, offset, k, last)
            took = (time.perf_counter() - t0) * 1000.0
            return SearchResult(hits, cands.scanned, cands.total, took, strategy)

        return await self._run(self._readers, lambda: self._in_view(run))

    async def _search_words(self, query: SearchQuery, strategy: str) -> SearchResult:
        """Images whose labels the words name (WordNet: a word names every class below
        it); by label score, or by Hamming distance when a code comes with the words."""
        from elastichash.model.labels import vocabulary

        t0 = time.perf_counter()
        assert query.text is not None
        classes, _, _ = vocabulary().resolve(query.text)
        code = query.code
        clauses = filters.parse(query.filter) if query.filter is not None else None

        def run() -> SearchResult:
            rows = (self._store.rows_with_labels(sorted(classes)) if classes
                    else np.zeros(0, np.int64))
            if code is None:
                if clauses is not None and rows.size:
                    rows = rows[self._in_view(
                        lambda snap, _last: self._live_passing(snap, rows, clauses)[1])]
                page = rows[query.offset : query.offset + query.k].tolist()
                fields = self._store.fields_for(page)
                hits = [Hit(f.id, 0, **f.fields)
                        for r in page if (f := fields.get(r)) is not None]
                return SearchResult(hits, int(rows.size), int(rows.size),
                                    (time.perf_counter() - t0) * 1000.0, "words")

            def ranked(snap: Snapshot, last: bool) -> SearchResult:
                pos, keep = self._live_passing(snap, rows, clauses)
                pos = pos[keep]
                q = np.frombuffer(code, np.uint8)
                dists = np.unpackbits(snap.codes[pos] ^ q, axis=1).sum(axis=1).astype(np.int32)
                if query.max_distance is not None:
                    within = dists <= query.max_distance
                    pos, dists = pos[within], dists[within]
                cands = Candidates(pos, dists, int(pos.size), int(pos.size))
                hits = self._page(snap, cands, query.offset, query.k, last)
                return SearchResult(hits, cands.scanned, cands.total,
                                    (time.perf_counter() - t0) * 1000.0, "words+exact")

            return self._in_view(ranked)

        return await self._run(self._readers, run)

    def _live_passing(
        self, snap: Snapshot, rows: npt.NDArray[np.int64], clauses: list[filters.Clause] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Positions of ``rows`` in ``snap`` and, per row, whether it is there, alive and
        passes the filter: one mask lookup per row, nothing per passing row of the whole
        collection. Call inside a view."""
        pos, keep = snap.locate(rows)
        if clauses is not None and keep.any():
            keep[keep] = self._filter_mask(snap, clauses)[pos[keep]]
        return pos, keep

    def _filter_mask(self, snap: Snapshot, clauses: list[filters.Clause]) -> npt.NDArray[np.bool_]:
        """Per position of ``snap``: does the document pass the filter? Call inside a view."""
        rows = snap.rows[: snap.n]
        with self._columns_lock:
            if rows.size and int(rows[-1]) > self._columns.last_row:
                self._columns.extend(self._store.filter_fields_after(self._columns.last_row))
            return self._columns.mask_for(rows, clauses)

    async def duplicates(
        self, *, max_distance: int = dup.DEFAULT_DISTANCE, offset: int = 0,
        limit: int = dup.DEFAULT_LIMIT,
    ) -> DuplicatesResult:
        dup.check_page(max_distance, offset, limit)
        t0 = time.perf_counter()

        def run(snap: Snapshot, last: bool) -> DuplicatesResult:
            cached = self._dup_cache
            if cached is not None and cached[0] is snap and cached[1] == max_distance:
                found = cached[2]
            else:
                found = self._groups(snap, max_distance, last)
                self._dup_cache = (snap, max_distance, found)
            page = found.rows[offset : offset + limit]
            fields = self._store.fields_for([r for g in page for r in g.tolist()])
            _check_found(fields, {r for g in page for r in g.tolist()}, last)
            groups = []
            for rows, pos in zip(page, found.positions[offset : offset + limit], strict=True):
                keep = [i for i, r in enumerate(rows.tolist()) if r in fields]
                hits = [Hit(fields[r].id, 0, **fields[r].fields) for r in rows[keep].tolist()]
                groups.append(dup.make_group(hits, snap.codes[pos[keep]]))
            return DuplicatesResult(
                groups, len(found.rows), found.images, found.pairs, max_distance,
                (time.perf_counter() - t0) * 1000.0)

        return await self._run(self._readers, lambda: self._in_view(run))

    def _groups(self, snap: Snapshot, max_distance: int, last: bool) -> _Groups:
        alive = np.flatnonzero(snap.alive[: snap.n])
        join = dup.self_join(snap.codes[alive], max_distance)
        positions = [alive[g] for g in dup.groups(join)]
        rows = [snap.rows[p] for p in positions]
        ids = self._store.ids_for([r for g in rows for r in g.tolist()])
        _check_found(ids, {r for g in rows for r in g.tolist()}, last)
        order = dup.group_order([[ids.get(r, "") for r in g.tolist()] for g in rows])
        return _Groups([rows[i] for i in order], [positions[i] for i in order],
                       sum(p.size for p in positions), join.pair_count())

    def _page(
        self, snap: Snapshot, cands: Candidates, offset: int, k: int, last: bool
    ) -> list[Hit]:
        rows = snap.rows[cands.positions].tolist()
        dists = cands.dists.tolist()
        if len(rows) <= offset + k + 64:
            fields = self._store.fields_for(rows)
            ids = {r: f.id for r, f in fields.items()}
        else:
            ids = self._store.ids_for(rows)
            fields = {}
        _check_found(ids, set(rows), last)
        ranked = sorted((d, ids[r], r) for d, r in zip(dists, rows, strict=True) if r in ids)
        page = ranked[offset : offset + k]
        missing = [r for _, _, r in page if r not in fields]
        if missing:
            fields.update(self._store.fields_for(missing))
        return [
            Hit(f.id, d, **f.fields)
            for d, _, r in page
            if (f := fields.get(r)) is not None
        ]
