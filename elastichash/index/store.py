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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BYTES, SHORT_BYTES
from elastichash.index.base import Document, Failure
from elastichash.index.filters import label_scores
from elastichash.index.schema import FIELDS, FieldSpec, with_source

log = logging.getLogger(__name__)

# The layout of release 1 (schema 1), kept verbatim: a new database replays it and then every
# migration, so new and migrated databases cannot differ. Document field columns past these
# are generated from the field table (index/schema.py) by _sync_fields.
_SCHEMA_V1 = """
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
"""


def _v2_migration_log(conn: sqlite3.Connection) -> None:
    # Schema 1 kept only a version string in meta; from 2 on every applied migration is a row.
    conn.execute(
        "CREATE TABLE schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    conn.execute(
        "INSERT INTO schema_migrations VALUES (1, 'initial layout', strftime('%s', 'now'))"
    )


def _v3_previews(conn: sqlite3.Connection) -> None:
    # Large-view previews (1280 px), kept apart from thumbnails like them.
    conn.execute("CREATE TABLE IF NOT EXISTS previews (id TEXT PRIMARY KEY, data BLOB NOT NULL)")


def _v4_labels(conn: sqlite3.Connection) -> None:
    # The model's top classes per document (metadata "labels"), for search by words; rows of
    # replaced or deleted documents are removed with them. Filled from what is stored.
    conn.execute("CREATE TABLE labels (row INTEGER NOT NULL, label TEXT NOT NULL,"
                 " score REAL NOT NULL)")
    conn.execute("CREATE INDEX labels_label ON labels(label, score)")
    conn.execute("CREATE INDEX labels_row ON labels(row)")
    for row, metadata in conn.execute(
        "SELECT row, metadata FROM docs WHERE metadata LIKE '%\"labels\"%'"
    ).fetchall():
        meta = json.loads(metadata)
        conn.executemany("INSERT INTO labels(row, label, score) VALUES (?, ?, ?)",
                         [(row, lab, sc) for lab, sc in label_scores(meta)])


def _v5_versions(conn: sqlite3.Connection) -> None:
    # The upload sequence of each document (Document.version): a write with a lower one is
    # dropped. Documents written before have 0, which any versioned write replaces.
    conn.execute("ALTER TABLE docs ADD COLUMN version INTEGER NOT NULL DEFAULT 0")


def _v6_failure_versions(conn: sqlite3.Connection) -> None:
    # The failed upload's sequence: a failure record outlives the write of an older upload.
    conn.execute("ALTER TABLE failures ADD COLUMN version INTEGER NOT NULL DEFAULT 0")


# Ordered: MIGRATIONS[i] takes a database from schema i + 1 to i + 2. Append, never edit.
MIGRATIONS: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = (
    ("migration log", _v2_migration_log),
    ("previews table", _v3_previews),
    ("labels table", _v4_labels),
    ("document versions", _v5_versions),
    ("failure versions", _v6_failure_versions),
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)

_SQL_TYPE = {"keyword": "TEXT", "keywords": "TEXT", "text": "TEXT", "json": "TEXT",
             "number": "REAL", "date": "REAL"}
# Binary fields need their own translator here: thumbnails live in the thumbs table,
# previews in the previews table.
_BINARY = {"thumbnail", "preview"}
if {f.name for f in FIELDS if f.kind == "binary"} != _BINARY:
    raise RuntimeError("store.py keeps binary document fields in tables of their own: add one")
COLUMNS = tuple(f for f in FIELDS if f.kind != "binary")
_COLUMN_LIST = ", ".join(f.name for f in COLUMNS)
_SOURCES = next(f for f in COLUMNS if f.name == "sources")


def _to_column(spec: FieldSpec, value: Any) -> Any:
    if spec.kind in ("json", "keywords"):  # keywords: a JSON array
        return json.dumps(list(value) if spec.kind == "keywords" else value) if value else None
    return value


def _from_column(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "json":
        return json.loads(value) if value else {}
    if spec.kind == "keywords":
        return tuple(json.loads(value)) if value else ()
    return value


# A JSON array parameter instead of N placeholders: one statement for any number of keys.
_IN_JSON = "(SELECT value FROM json_each(?))"
_UPSERT = (
    f"INSERT OR REPLACE INTO docs(id, code, short, has_thumb, version, {_COLUMN_LIST})"
    f" VALUES (?, ?, ?, ?, ?{', ?' * len(COLUMNS)})"
)
_HIT_COLUMNS = tuple(f for f in COLUMNS if f.in_hits)
_HIT_LIST = ", ".join(f.name for f in _HIT_COLUMNS)


def schema_version(conn: sqlite3.Connection) -> int:
    """0 for an empty database; otherwise the schema it was last migrated to."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_migrations" in tables:
        return int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        return int(row[0]) if row else 0
    return 0


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one migration per transaction, then add
    the columns of document fields new to the field table. A database from a newer release
    is refused: this code would not know what its later migrations changed."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"index store {path} has schema {version}, newer than this release's "
            f"{SCHEMA_VERSION}: open it with the release that wrote it, or a later one"
        )
    if version == 0:
        # IF NOT EXISTS throughout: a creation cut short is finished by the next open.
        conn.executescript(_SCHEMA_V1)
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', '1')")
        version = 1
    for target, (name, step) in enumerate(MIGRATIONS[version - 1 :], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, strftime('%s', 'now'))",
                (target, name),
            )
            # Releases before schema 2 read this key and refuse anything but their own.
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(target),)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("index store %s migrated to schema %d (%s)", path, target, name)
    _sync_fields(conn)


def _sync_fields(conn: sqlite3.Connection) -> None:
    """Add a column (and, for a filterable field, an index) per field-table row missing."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(docs)")}
    for spec in COLUMNS:
        if spec.name not in have:
            conn.execute(f"ALTER TABLE docs ADD COLUMN {spec.name} {_SQL_TYPE[spec.kind]}")
            log.info("index store: added document field %s (%s)", spec.name, spec.kind)
        if spec.filterable:
            conn.execute(f"CREATE INDEX IF NOT EXISTS docs_{spec.name} ON docs({spec.name})")


@dataclass(frozen=True)
class Row:
    """The fields of one document that a hit carries (``HIT_FIELDS``)."""

    row: int
    id: str
    fields: dict[str, Any]


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
    return label_scores(doc.metadata)


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
        try:
            migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
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

    def upsert(self, docs: Sequence[Document]) -> tuple[list[int], list[int], set[str]]:
        """Insert or replace ``docs`` (ids unique within the call) in one transaction, left
        open: the caller publishes the in-memory change and calls :meth:`commit` together.
        A versioned document older than the stored one is left out (superseded).

        Returns (new rowids of the documents written, in input order, rowids that were
        replaced, ids superseded)."""
        conn = self.writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = conn.execute(
                f"SELECT row, id, version FROM docs WHERE id IN {_IN_JSON}",
                (json.dumps([d.id for d in docs]),),
            ).fetchall()
            have = {i: v for _, i, v in stored}
            stale = {d.id for d in docs if d.version and have.get(d.id, 0) > d.version}
            docs = [d for d in docs if d.id not in stale]
            old = [(r, i) for r, i, _ in stored if i not in stale]
            new_rows: list[int] = []
            cur = conn.cursor()
            for d in docs:
                cur.execute(
                    _UPSERT,
                    (
                        d.id,
                        d.code,
                        d.short,
                        d.thumbnail is not None,
                        d.version,
                        *(_to_column(f, getattr(d, f.name)) for f in COLUMNS),
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
            no_thumb = [d.id for d in docs if d.thumbnail is None and d.id in old_ids]
            if no_thumb:
                conn.execute(f"DELETE FROM thumbs WHERE id IN {_IN_JSON}",
                             (json.dumps(no_thumb),))
            if docs and conn.execute("SELECT EXISTS(SELECT 1 FROM failures)").fetchone()[0]:
                # The failure of a newer upload stays (the latest upload failed).
                conn.executemany("DELETE FROM failures WHERE id = ? AND (? = 0 OR version <= ?)",
                                 [(d.id, d.version, d.version) for d in docs])
            if old_ids:  # a replaced image's preview goes with it
                conn.execute(f"DELETE FROM previews WHERE id IN {_IN_JSON}",
                             (json.dumps(sorted(old_ids)),))
            previews = [(d.id, d.preview) for d in docs if d.preview is not None]
            if previews:
                conn.executemany("INSERT OR REPLACE INTO previews(id, data) VALUES (?, ?)",
                                 previews)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new_rows, [r for r, _ in old], stale

    def add_source(self, doc_id: str, source: str) -> bool:
        """Append ``source`` to the document's sources, in a transaction of its own."""
        conn = self.writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            r = conn.execute("SELECT source, sources FROM docs WHERE id = ?",
                             (doc_id,)).fetchone()
            if r is not None:
                merged = with_source(_from_column(_SOURCES, r[1]), r[0], source)
                conn.execute("UPDATE docs SET sources = ? WHERE id = ?",
                             (_to_column(_SOURCES, merged), doc_id))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return r is not None

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
            conn.execute(f"DELETE FROM previews WHERE id IN {_IN_JSON}", payload)
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
            # A versioned failure older than the indexed document, or than the failure
            # recorded, is left out: it is not what happened to the latest upload.
            conn.executemany(
                "INSERT OR REPLACE INTO failures(id, reason, message, source, at, version)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE NOT (? > 0 AND ("
                " EXISTS(SELECT 1 FROM docs WHERE id = ? AND version > ?)"
                " OR EXISTS(SELECT 1 FROM failures WHERE id = ? AND version > ?)))",
                [(f.id, f.reason, f.message, f.source, f.at, f.version,
                  f.version, f.id, f.version, f.id, f.version) for f in failures],
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
            f"SELECT id, code, short, has_thumb, version, {_COLUMN_LIST} FROM docs WHERE id = ?",
            (doc_id,),
        ).fetchone()
        if r is None:
            return None
        thumb = None
        if r[3]:
            t = conn.execute("SELECT data FROM thumbs WHERE id = ?", (doc_id,)).fetchone()
            thumb = bytes(t[0]) if t else None
        fields = {f.name: _from_column(f, v) for f, v in zip(COLUMNS, r[5:], strict=True)}
        return Document(id=r[0], code=bytes(r[1]), short=bytes(r[2]), thumbnail=thumb,
                        version=int(r[4]), **fields)

    def existing(self, ids: Sequence[str]) -> set[str]:
        cur = self.reader().execute(
            f"SELECT id FROM docs WHERE id IN {_IN_JSON}", (json.dumps(list(ids)),)
        )
        return {r[0] for r in cur.fetchall()}

    def get_preview(self, doc_id: str) -> bytes | None:
        r = self.reader().execute("SELECT data FROM previews WHERE id = ?", (doc_id,)).fetchone()
        return bytes(r[0]) if r else None

    def ids_for(self, rows: Sequence[int]) -> dict[int, str]:
        cur = self.reader().execute(
            f"SELECT row, id FROM docs WHERE row IN {_IN_JSON}", (json.dumps(list(rows)),)
        )
        return dict(cur.fetchall())

    def fields_for(self, rows: Sequence[int]) -> dict[int, Row]:
        cur = self.reader().execute(
            f"SELECT row, id, {_HIT_LIST} FROM docs WHERE row IN {_IN_JSON}",
            (json.dumps(list(rows)),),
        )
        return {
            r[0]: Row(r[0], r[1], {f.name: _from_column(f, v)
                                   for f, v in zip(_HIT_COLUMNS, r[2:], strict=True)})
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

    def rows_with_labels(self, labels: Sequence[str]) -> npt.NDArray[np.int64]:
        """Rows of live documents carrying any of ``labels``, by their best score among
        them, best first, ties by id: the ranking of a search by words. Read straight into
        one array (no Python object per row)."""
        cur = self.reader().execute(
            "SELECT d.row FROM labels l JOIN docs d ON d.row = l.row"
            f" WHERE l.label IN {_IN_JSON} GROUP BY d.row ORDER BY MAX(l.score) DESC, d.id",
            (json.dumps(list(labels)),),
        )
        return np.fromiter((r for (r,) in cur), np.int64)

    def get_meta(self, key: str) -> str | None:
        row = self.reader().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def filter_fields_after(self, row: int) -> Iterator[tuple[int, str | None, dict[str, Any]]]:
        """(row, source, metadata) of every document with a row above ``row``, in row order:
        what the in-memory filter columns need (``filters.Columns``)."""
        cur = self.reader().execute(
            "SELECT row, source, metadata FROM docs WHERE row > ? ORDER BY row", (row,)
        )
        for r, source, metadata in cur:
            yield r, source, json.loads(metadata) if metadata else {}

    def get_failure(self, doc_id: str) -> Failure | None:
        r = self.reader().execute(
            "SELECT id, reason, message, source, at, version FROM failures WHERE id = ?",
            (doc_id,),
        ).fetchone()
        return Failure(*r) if r else None

    def recent_failures(self, limit: int) -> list[Failure]:
        cur = self.reader().execute(
            "SELECT id, reason, message, source, at, version FROM failures"
            " ORDER BY at DESC, id LIMIT ?",
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
