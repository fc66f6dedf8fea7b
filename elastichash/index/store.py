"""The durable half of the embedded index: one SQLite database in WAL mode.

Every method here is synchronous and blocking; :class:`~elastichash.index.embedded.EmbeddedIndex`
calls writes on one dedicated writer thread and reads on a small reader pool, each thread with
its own connection (WAL lets readers run while the writer commits).

Durability: ``synchronous=FULL`` in WAL mode fsyncs the WAL on every commit, so a batch that
``upsert`` returned survives SIGKILL *and* power loss. ``NORMAL`` would survive SIGKILL only;
the fsync costs about a millisecond per batch, which batching amortises.

Rows use ``AUTOINCREMENT`` so a rowid is never reused: the in-memory tables key on rowids and
rely on them increasing strictly.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BYTES, SHORT_BYTES
from elastichash.index.base import Document, Failure

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    code BLOB NOT NULL,
    short BLOB NOT NULL,
    source TEXT,
    thumbnail_url TEXT,
    metadata TEXT,
    has_thumb INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thumbs (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    id TEXT PRIMARY KEY, reason TEXT NOT NULL, message TEXT NOT NULL, source TEXT, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_at ON failures(at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- the model's top classes per document (from metadata "labels"), for search by words;
-- rows of replaced or deleted documents are removed with them
CREATE TABLE IF NOT EXISTS labels (row INTEGER NOT NULL, label TEXT NOT NULL, score REAL NOT NULL);
CREATE INDEX IF NOT EXISTS labels_label ON labels(label, score);
CREATE INDEX IF NOT EXISTS labels_row ON labels(row);
"""
# A JSON array parameter instead of N placeholders: one statement for any number of keys.
_IN_JSON = "(SELECT value FROM json_each(?))"


@dataclass(frozen=True)
class Row:
    """Display fields of one document, as a hit needs them."""

    row: int
    id: str
    source: str | None
    thumbnail_url: str | None
    metadata: dict[str, Any]


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30.0, cached_statements=64
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


def doc_labels(doc: Document) -> list[tuple[str, float]]:
    """(class id, score) of a document's labels (metadata "labels"); malformed entries skipped."""
    out: list[tuple[str, float]] = []
    raw = doc.metadata.get("labels") if isinstance(doc.metadata, dict) else None
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            score = item.get("score")
            out.append((item["id"], float(score) if isinstance(score, (int, float)) else 0.0))
    return out


class Store:
    """Owns the writer connection and hands out one reader connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        conn.executescript(_SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )
        version = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"index store {self.path} has schema {version}, expected {SCHEMA_VERSION}"
            )
        self._writer = conn

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    # --- bulk load -----------------------------------------------------------------------

    def load_codes(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """All (rowids, long codes, short codes) in rowid order, with one query."""
        cur = self.reader().execute("SELECT row, code, short FROM docs ORDER BY row")
        rows: list[int] = []
        codes: list[bytes] = []
        shorts: list[bytes] = []
        while batch := cur.fetchmany(65536):
            r, c, s = zip(*batch, strict=True)
            rows.extend(r)
            codes.extend(c)
            shorts.extend(s)
        n = len(rows)
        return (
            np.array(rows, dtype=np.int64),
            np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(n, LONG_BYTES),
            np.frombuffer(b"".join(shorts), dtype=np.uint8).reshape(n, SHORT_BYTES),
        )

    # --- writes (writer thread only) -----------------------------------------------------

    def upsert(self, docs: Sequence[Document]) -> tuple[list[int], list[int]]:
        """Insert or replace ``docs`` (ids unique within the call) in one transaction, left
        open: the caller publishes the in-memory change and calls :meth:`commit` together.

        Returns (new rowids in input order, rowids that were replaced)."""
        conn = self.writer
        ids = [d.id for d in docs]
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = conn.execute(
                f"SELECT row, id FROM docs WHERE id IN {_IN_JSON}", (json.dumps(ids),)
            ).fetchall()
            new_rows: list[int] = []
            cur = conn.cursor()
            for d in docs:
                cur.execute(
                    "INSERT OR REPLACE INTO docs"
                    "(id, code, short, source, thumbnail_url, metadata, has_thumb)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        d.id,
                        d.code,
                        d.short,
                        d.source,
                        d.thumbnail_url,
                        json.dumps(d.metadata) if d.metadata else None,
                        d.thumbnail is not None,
                    ),
                )
                assert cur.lastrowid is not None
                new_rows.append(cur.lastrowid)
            if old:
                conn.execute(f"DELETE FROM labels WHERE row IN {_IN_JSON}",
                             (json.dumps([r for r, _ in old]),))
            conn.executemany(
                "INSERT INTO labels(row, label, score) VALUES (?, ?, ?)",
                [(row, lab[0], lab[1]) for row, d in zip(new_rows, docs, strict=True)
                 for lab in doc_labels(d)],
            )
            thumbs = [(d.id, d.thumbnail) for d in docs if d.thumbnail is not None]
            if thumbs:
                conn.executemany("INSERT OR REPLACE INTO thumbs(id, data) VALUES (?, ?)", thumbs)
            old_ids = {i for _, i in old}
            stale = [d.id for d in docs if d.thumbnail is None and d.id in old_ids]
            if stale:
                conn.execute(f"DELETE FROM thumbs WHERE id IN {_IN_JSON}", (json.dumps(stale),))
            if conn.execute("SELECT EXISTS(SELECT 1 FROM failures)").fetchone()[0]:
                conn.execute(f"DELETE FROM failures WHERE id IN {_IN_JSON}", (json.dumps(ids),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new_rows, [r for r, _ in old]

    def delete(self, ids: Sequence[str]) -> dict[str, int]:
        """Delete ``ids`` in a transaction left open (see :meth:`upsert`); returns id -> rowid
        for those that existed."""
        conn = self.writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            payload = (json.dumps(list(ids)),)
            found = dict(
                (i, r)
                for r, i in conn.execute(
                    f"SELECT row, id FROM docs WHERE id IN {_IN_JSON}", payload
                )
            )
            conn.execute(f"DELETE FROM docs WHERE id IN {_IN_JSON}", payload)
            conn.execute(f"DELETE FROM thumbs WHERE id IN {_IN_JSON}", payload)
            if found:
                conn.execute(f"DELETE FROM labels WHERE row IN {_IN_JSON}",
                             (json.dumps(list(found.values())),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return found

    def commit(self) -> None:
        self.writer.execute("COMMIT")

    def rollback(self) -> None:
        if self.writer.in_transaction:
            self.writer.execute("ROLLBACK")

    def record_failures(self, failures: Iterable[Failure]) -> None:
        conn = self.writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO failures(id, reason, message, source, at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(f.id, f.reason, f.message, f.source, f.at) for f in failures],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- reads (any thread) --------------------------------------------------------------

    def begin_read(self) -> None:
        """Pin this thread's reader to the current database state (a WAL read snapshot)."""
        conn = self.reader()
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM docs LIMIT 1").fetchall()

    def end_read(self) -> None:
        conn = self.reader()
        if conn.in_transaction:
            conn.execute("COMMIT")

    def get(self, doc_id: str) -> Document | None:
        conn = self.reader()
        r = conn.execute(
            "SELECT id, code, short, source, thumbnail_url, metadata, has_thumb"
            " FROM docs WHERE id = ?",
            (doc_id,),
        ).fetchone()
        if r is None:
            return None
        thumb = None
        if r[6]:
            t = conn.execute("SELECT data FROM thumbs WHERE id = ?", (doc_id,)).fetchone()
            thumb = bytes(t[0]) if t else None
        return Document(
            id=r[0],
            code=bytes(r[1]),
            short=bytes(r[2]),
            source=r[3],
            thumbnail_url=r[4],
            metadata=json.loads(r[5]) if r[5] else {},
            thumbnail=thumb,
        )

    def ids_for(self, rows: Sequence[int]) -> dict[int, str]:
        cur = self.reader().execute(
            f"SELECT row, id FROM docs WHERE row IN {_IN_JSON}", (json.dumps(list(rows)),)
        )
        return dict(cur.fetchall())

    def fields_for(self, rows: Sequence[int]) -> dict[int, Row]:
        cur = self.reader().execute(
            f"SELECT row, id, source, thumbnail_url, metadata FROM docs WHERE row IN {_IN_JSON}",
            (json.dumps(list(rows)),),
        )
        return {
            r[0]: Row(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {})
            for r in cur.fetchall()
        }

    def scan(self, after: str | None, limit: int) -> list[tuple[str, bytes, bytes]]:
        """Up to ``limit`` (id, code, short) with id > ``after``, in id order (the UNIQUE
        index on id serves the range)."""
        cur = self.reader().execute(
            "SELECT id, code, short FROM docs WHERE id > ? ORDER BY id LIMIT ?",
            (after if after is not None else "", limit),
        )
        return [(r[0], bytes(r[1]), bytes(r[2])) for r in cur.fetchall()]

    def rows_with_labels(self, labels: Sequence[str]) -> list[tuple[int, float]]:
        """(row, best score among ``labels``) of live documents carrying any of them,
        best first, ties by id: the ranking of a search by words."""
        return [
            (int(r), float(sc))
            for r, sc in self.reader().execute(
                "SELECT d.row, MAX(l.score) AS best FROM labels l JOIN docs d ON d.row = l.row"
                f" WHERE l.label IN {_IN_JSON} GROUP BY d.row ORDER BY best DESC, d.id",
                (json.dumps(list(labels)),),
            ).fetchall()
        ]

    def get_meta(self, key: str) -> str | None:
        row = self.reader().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_failure(self, doc_id: str) -> Failure | None:
        r = (
            self.reader()
            .execute("SELECT id, reason, message, source, at FROM failures WHERE id = ?", (doc_id,))
            .fetchone()
        )
        return Failure(*r) if r else None

    def recent_failures(self, limit: int) -> list[Failure]:
        cur = self.reader().execute(
            "SELECT id, reason, message, source, at FROM failures ORDER BY at DESC, id LIMIT ?",
            (limit,),
        )
        return [Failure(*r) for r in cur.fetchall()]

    def count(self) -> int:
        return int(self.reader().execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def failure_count(self) -> int:
        return int(self.reader().execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    def disk_bytes(self) -> int:
        return sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
        )
