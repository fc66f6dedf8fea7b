"""The ``Index`` protocol every backend implements, and the records it speaks in.

Codes cross this boundary as packed bytes: ``code`` is the 256-bit long code (32 bytes),
``short`` the 64-bit short code (8 bytes). Callers derive ``short`` (the model knows its
bit selection); the index never guesses it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from elastichash.codes import LONG_BYTES, SHORT_BYTES
from elastichash.errors import InvalidInput
from elastichash.ids import check_id
from elastichash.index.query import MAX_K, STRATEGIES, Capabilities, SearchQuery, Strategy
from elastichash.index.schema import FIELDS, HIT_SPECS, hit_values, record_class

__all__ = [
    "AUTO_EXACT_MAX", "MAX_K", "SCAN_BATCH", "STRATEGIES", "Capabilities", "CodeRecord",
    "Document", "Failure", "Hit", "Index", "SearchQuery", "SearchResult", "Strategy",
    "UpsertPlan", "WriteResult", "check_document", "hit_of", "latest_by_id", "resolve_auto",
]

SCAN_BATCH = 1000
# 'auto' ranks the whole index (exact) up to this many codes, where a full scan costs well
# under a millisecond and finds every match; above it, multi-index hashing (two_stage).
AUTO_EXACT_MAX = 100_000


def resolve_auto(strategy: str, count: int) -> str:
    if strategy != "auto":
        return strategy
    return "exact" if count <= AUTO_EXACT_MAX else "two_stage"


if TYPE_CHECKING:
    # What typed code sees. At run time both records are generated from the field table
    # (index/schema.py): a new row works everywhere without a line here; a field that code
    # reads by name needs its line here too (tests/unit/test_field_table.py names it).
    @dataclass(frozen=True)
    class Document:
        id: str
        code: bytes  # 32 bytes, long code
        short: bytes  # 8 bytes, short code
        source: str | None = None  # where the image came from: URL, path or upload name
        # Every source the same image was uploaded under, first first (``source`` is the first).
        sources: tuple[str, ...] = ()
        thumbnail_url: str | None = None  # for documents imported with an external thumbnail
        metadata: dict[str, Any] = field(default_factory=dict)
        thumbnail: bytes | None = None  # small JPEG kept by backends that store one
        # A JPEG for the large view, written with the document; ``get`` may leave it out (it
        # is large), ``get_preview`` reads it.
        preview: bytes | None = None
        # Not a document field: the upload's sequence (the gateway's nanosecond stamp). A
        # write with a lower version than the stored one is dropped, so the latest upload of
        # an id wins however the encoders order their work. 0: unversioned (imports, tools).
        version: int = 0

    @dataclass(frozen=True)
    class Hit:
        id: str
        distance: int
        source: str | None = None
        thumbnail_url: str | None = None
        metadata: dict[str, Any] = field(default_factory=dict)
else:
    Document = record_class(
        "Document", [("id", str), ("code", bytes), ("short", bytes)], FIELDS,
        "A document: its id, its codes (32-byte long, 8-byte short), one attribute per row"
        " of the field table, and the upload's version.",
        trailing=[("version", int, field(default=0))])
    Hit = record_class(
        "Hit", [("id", str), ("distance", int)], HIT_SPECS,
        "A search hit: id, distance, and the fields of the table returned with hits.")


def hit_of(doc: Document, distance: int) -> Hit:
    """The hit for ``doc`` at ``distance``."""
    return Hit(doc.id, distance, **hit_values(doc))


class CodeRecord(NamedTuple):
    """One document's codes, as :meth:`Index.scan` yields them."""

    id: str
    code: bytes
    short: bytes


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    candidates: int  # codes whose full distance was computed (stage-2 work)
    total: int  # matches within max_distance (or all ranked ones) before paging
    took_ms: float
    strategy: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Images whose codes chain together within the distance (single linkage). ``members``
    start with the suggested keeper; each hit's ``distance`` is its distance to the keeper.
    ``distances`` is the pairwise matrix in ``members`` order (None for very large groups)."""

    members: list[Hit]
    keeper: str
    distances: list[list[int]] | None


@dataclass(frozen=True)
class DuplicatesResult:
    groups: list[DuplicateGroup]  # this page
    total: int  # groups in all
    images: int  # images in all groups
    pairs: int  # pairs of images within max_distance
    max_distance: int
    took_ms: float


@dataclass(frozen=True)
class WriteResult:
    """Outcome of one item of a batch write. ``transient`` failures may be retried."""

    id: str
    ok: bool
    error: str | None = None
    transient: bool = False
    # ok, but not written: the index holds a newer version of the id (a later upload).
    superseded: bool = False


@dataclass(frozen=True)
class Failure:
    """An image that could not be indexed, kept so status and the web page can say why."""

    id: str
    reason: str  # stable code: corrupt, truncated, unsupported_format, too_many_pixels, ...
    message: str
    source: str | None = None
    at: float = 0.0  # unix time
    # The failed upload's sequence (Document.version): a failure older than the indexed
    # document is not recorded, and a document older than the failure does not clear it.
    version: int = 0


class _Versioned(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=_Versioned)


def latest_by_id(items: Iterable[V]) -> dict[str, V]:
    """One item per id from a batch: the one that writing the batch in order leaves. A later
    occurrence replaces an earlier one unless the earlier is newer (a higher ``version``); an
    unversioned one (0) replaces whatever came before, as it replaces whatever is stored.
    Insertion order follows each id's first occurrence."""
    latest: dict[str, V] = {}
    for item in items:
        if item.id not in latest or not item.version or item.version >= latest[item.id].version:
            latest[item.id] = item
    return latest


def check_document(doc: Document) -> str | None:
    """Why ``doc`` cannot be written (any backend), or None."""
    try:
        check_id(doc.id)
    except InvalidInput as exc:
        return exc.message
    if len(doc.code) != LONG_BYTES:
        return f"code must be {LONG_BYTES} bytes, got {len(doc.code)}"
    if len(doc.short) != SHORT_BYTES:
        return f"short must be {SHORT_BYTES} bytes, got {len(doc.short)}"
    try:
        json.dumps(doc.metadata)
    except (TypeError, ValueError) as exc:
        return f"metadata is not JSON: {exc}"
    return None


@dataclass(frozen=True)
class UpsertPlan:
    """A batch to upsert, split as every backend splits it, so that a batch gives the results
    and leaves the index that its documents written one by one would: an invalid copy fails
    alone (it never hides a valid copy of its id), and of the valid copies of an id one is
    written (:func:`latest_by_id`), the others standing aside as superseded by it."""

    docs: Sequence[Document]
    errors: list[str | None]  # per position: why that copy is not written
    latest: dict[str, Document]  # the copy of each id to write

    @classmethod
    def of(cls, docs: Sequence[Document]) -> UpsertPlan:
        errors = [check_document(d) for d in docs]
        return cls(docs, errors,
                   latest_by_id(d for d, err in zip(docs, errors, strict=True) if err is None))

    @property
    def writes(self) -> list[Document]:
        return list(self.latest.values())

    def results(self, written: Mapping[str, WriteResult]) -> list[WriteResult]:
        """One result per input position from the results of :attr:`writes` by id. A copy
        that stood aside is ``superseded`` only when its id's written copy succeeded (ok
        means the index holds this upload or a newer one); otherwise it shares that failure,
        to be retried with it."""
        out = []
        for doc, err in zip(self.docs, self.errors, strict=True):
            if err is not None:
                out.append(WriteResult(doc.id, False, err))
                continue
            result = written[doc.id]
            stood_aside = self.latest[doc.id] is not doc and result.ok
            out.append(WriteResult(doc.id, True, superseded=True) if stood_aside else result)
        return out


@runtime_checkable
class Index(Protocol):
    """A searchable, durable store of codes. All methods are coroutines; backends keep
    CPU-heavy work off the event loop themselves."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        """Insert or replace by id. One result per input, in order. A replaced id's old
        code is no longer found. A document whose ``version`` is below the stored one's is
        not written (``superseded``): the newer upload stays. Invalid and repeated ids are
        split by :class:`UpsertPlan`, the same on every backend."""
        ...

    async def add_source(self, doc_id: str, source: str) -> bool:
        """Append ``source`` to the document's ``sources`` (the same bytes uploaded under
        another name); False when there is no such document."""
        ...

    async def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        """Remove by id; deleting a missing id is ok=False with error 'not_found'."""
        ...

    async def get(self, doc_id: str) -> Document | None:
        """The document, its preview left out (see :meth:`get_preview`)."""
        ...

    async def get_preview(self, doc_id: str) -> bytes | None:
        """The document's large-view JPEG, None when it has none (or does not exist)."""
        ...

    async def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are indexed: one round trip for a whole upload, where a ``get``
        each would cost one per image (and carry documents nobody reads)."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """Rank by 256-bit Hamming distance, ties broken by id; ``offset``/``k`` page.
        A query the backend cannot serve is ``UnsupportedQuery`` (see :meth:`capabilities`)."""
        ...

    async def capabilities(self) -> Capabilities:
        """The strategies and query features this index serves."""
        ...

    def scan(
        self, *, batch: int = SCAN_BATCH, after: str | None = None
    ) -> AsyncGenerator[list[CodeRecord], None]:
        """Every document's codes in id order, ``batch`` at a time, starting after the id
        ``after`` (a cursor: the last id seen). Not a snapshot: a document written or deleted
        during the scan may or may not be seen; each id comes at most once."""
        ...

    async def duplicates(
        self, *, max_distance: int = 8, offset: int = 0, limit: int = 20
    ) -> DuplicatesResult:
        """Groups of near-duplicate images (256-bit distance <= ``max_distance`` <= 11 to
        another member), biggest first, then by smallest id; ``offset``/``limit`` page."""
        ...

    async def record_failures(self, failures: Sequence[Failure]) -> None:
        """Keep failure records (replacing older ones for the same id). A later successful
        upsert of the id removes its failure record."""
        ...

    async def get_failure(self, doc_id: str) -> Failure | None: ...

    async def recent_failures(self, limit: int = 50) -> list[Failure]:
        """Newest first."""
        ...

    async def count(self) -> int: ...

    async def stats(self) -> dict[str, Any]: ...

    async def ready(self) -> bool: ...
