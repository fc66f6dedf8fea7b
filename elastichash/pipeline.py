"""The seam between the gateway and whatever encodes and indexes its images.

Standalone mode plugs in :class:`elastichash.standalone.LocalPipeline` (asyncio queues in
one process); distributed mode plugs in the gateway's AMQP pipeline (RabbitMQ). The gateway
code above this seam is the same in both modes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from elastichash.index.base import Document, Failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestItem:
    id: str
    data: bytes
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    # Stamped by the pipeline that accepts the upload (a nanosecond clock that only grows):
    # the document's version, so that of two uploads of one id the later one wins.
    seq: int = 0


class UploadClock:
    """Upload sequences: wall-clock nanoseconds, so they keep growing across restarts and
    agree roughly across gateways; strictly increasing within a process even when the clock
    steps back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = 0

    def next(self) -> int:
        with self._lock:
            self.last = max(time.time_ns(), self.last + 1)
            return self.last

    def observe(self, seq: int) -> None:
        """A sequence handed out earlier (found in the spool at start): later ones exceed it."""
        with self._lock:
            self.last = max(self.last, seq)


@dataclass(frozen=True)
class QueryCode:
    code: bytes  # 32 bytes
    short: bytes  # 8 bytes


@runtime_checkable
class Pipeline(Protocol):
    async def start(self) -> None:
        """Connect, declare, start background tasks. Called once from the app's lifespan."""
        ...

    async def stop(self) -> None:
        """Stop intake, drain what is in flight within the grace period, close."""
        ...

    async def submit(self, items: Sequence[IngestItem]) -> None:
        """Return only once every item is durably accepted (broker-confirmed in distributed
        mode). Raise :class:`elastichash.errors.Unavailable` when that cannot be done; then
        the caller answers 503 and the client retries (ids are deterministic)."""
        ...

    async def encode_query(self, data: bytes) -> QueryCode:
        """Encode one query image now, never behind the ingest backlog. Raises
        :class:`elastichash.errors.ImageError` for bad images, ``Unavailable`` on timeout."""
        ...

    def short_of(self, code: bytes) -> bytes:
        """The short code the model selects from a long code (for raw-code searches)."""
        ...

    def model_info(self) -> dict[str, Any]:
        """Name, fingerprint, code bits and short-bit source of the model in use."""
        ...

    def is_queued(self, image_id: str) -> bool | None:
        """Whether the id is accepted and not yet indexed or failed; None where this pipeline
        cannot know (distributed mode: the broker holds the backlog)."""
        ...

    async def backlog(self) -> int | None:
        """Images accepted and not yet indexed or failed, or None if unknown."""
        ...

    async def ready(self) -> bool: ...


def with_preview(doc: Document, item: IngestItem, size: int, max_pixels: int,
                 budget: Any = None) -> Document:
    """``doc`` with a JPEG of ``size`` pixels on its long side for the page's large view, made
    by a second decode at that size (JPEG draft) within the decode ``budget``; unchanged for
    ``size`` 0, for an image no larger than its thumbnail, and when the preview cannot be made
    (that costs only the preview). The one place previews are made, in standalone mode and in
    the encoder worker alike; CPU work, for an executor thread."""
    import dataclasses

    from elastichash.errors import ElasticHashError
    from elastichash.model.preprocess import THUMBNAIL_SIZE, make_thumbnail

    meta = item.metadata
    if not size or max(meta.get("width", size), meta.get("height", size)) <= THUMBNAIL_SIZE:
        return doc
    try:
        preview = make_thumbnail(item.data, size, max_pixels, budget)
    except ElasticHashError as exc:
        log.info("no preview for %s: %s", item.id, exc.message)
        return doc
    return dataclasses.replace(doc, preview=preview)


# The model's top classes travel in the document's metadata under this key (a list of
# {"id", "name", "score"}), so every backend stores them and every hit returns them.
LABELS_KEY = "labels"


def ingest_record(item: IngestItem, result: Any, now: float) -> Document | Failure:
    """The index record of one encoded ingest item: a document, or the failure that replaced
    it. The one place documents are built from encoder results, in standalone mode and in
    the encoder worker alike. ``result`` is an ``Encoded`` or the error it raised."""
    from elastichash.errors import ElasticHashError

    if isinstance(result, ElasticHashError):
        reason = getattr(result, "reason", result.code)
        return Failure(item.id, reason, result.message, item.source, now, item.seq)
    metadata = dict(item.metadata)
    labels = getattr(result, "labels", ())
    if labels:
        metadata[LABELS_KEY] = [{"id": x.id, "name": x.name, "score": x.score} for x in labels]
    return Document(
        id=item.id,
        code=bytes(result.code),
        short=bytes(result.short),
        source=item.source,
        sources=(item.source,) if item.source else (),
        metadata=metadata,
        thumbnail=result.thumbnail,
        version=item.seq,
    )
