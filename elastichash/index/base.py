"""The ``Index`` protocol every backend implements, and the records it speaks in.

Codes cross this boundary as packed bytes: ``code`` is the 256-bit long code (32 bytes),
``short`` the 64-bit short code (8 bytes). Callers derive ``short`` (the model knows its
bit selection); the index never guesses it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from elastichash.index.query import MAX_K, STRATEGIES, Capabilities, SearchQuery, Strategy
from elastichash.index.schema import FIELDS, HIT_SPECS, hit_values, record_class

__all__ = [
    "AUTO_EXACT_MAX", "MAX_K", "SCAN_BATCH", "STRATEGIES", "Capabilities", "CodeRecord",
    "Document", "Failure", "Hit", "Index", "SearchQuery", "SearchResult", "Strategy",
    "WriteResult", "hit_of", "resolve_auto",
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
    """One item per id from a batch: the last occurrence wins, unless an earlier one is
    newer (a higher ``version``). Insertion order follows each id's first occurrence."""
    latest: dict[str, V] = {}
    for item in items:
        if item.id not in latest or item.version >= latest[item.id].version:
            latest[item.id] = item
    return latest


@runtime_checkable
class Index(Protocol):
    """A searchable, durable store of codes. All methods are coroutines; backends keep
    CPU-heavy work off the event loop themselves."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        """Insert or replace by id. One result per input, in order. A replaced id's old
        code is no longer found. A document whose ``version`` is below the stored one's is
        not written (``superseded``): the newer upload stays."""
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
