"""Versioned wire schemas for everything that crosses RabbitMQ, in one place.

Three message kinds:

* **ingest** (gateway -> encoder): the raw image bytes as the body (never base64 in JSON:
  a third less traffic and no decode step) plus validated headers: schema version, id,
  source, metadata as a JSON string, content type. A size cap applies to the body.
* **index** (encoder -> indexer): JSON, either a document (``schema.DocumentBody``, the
  search service's document JSON too: codes as hex, thumbnail as base64) or a failure
  record, so status can say why an image was not indexed.
* **encode RPC** (gateway -> encoder -> gateway): request = raw image bytes, reply = JSON.

Every schema carries ``v``; a consumer refuses versions it does not know (dead-lettered with
reason ``unsupported_version``) instead of guessing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from elastichash.errors import InvalidInput
from elastichash.ids import check_id
from elastichash.index.base import Document, Failure
from elastichash.index.schema import (
    FIELDS,
    HEX16,
    HEX64,
    MAX_METADATA_BYTES,
    MAX_PREVIEW_BYTES,
    MAX_SOURCE_CHARS,
    MAX_SOURCES,
    MAX_THUMBNAIL_BYTES,
    MAX_VERSION,
    DocumentBody,
    check_metadata,
    checked_id,
)
from elastichash.pipeline import IngestItem

SCHEMA_VERSION = 1

# Header names. The x-eh- prefix keeps them apart from broker headers (x-death, ...).
H_VERSION = "x-eh-v"
H_ID = "x-eh-id"
H_SOURCE = "x-eh-source"
H_METADATA = "x-eh-metadata"
H_SEQ = "x-eh-seq"  # the upload's sequence (IngestItem.seq), carried to Document.version
H_REASON = "x-eh-reason"  # on dead-lettered copies: stable reason code
H_DETAIL = "x-eh-detail"  # on dead-lettered copies: human-readable message
H_QUEUE = "x-eh-queue"  # on dead-lettered copies: where the message was consumed from

# The limits below apply on every queue (ingest and index), checked by the consumer too: a
# message published by something other than our gateway or encoder gets no more trust.
# The document limits (metadata size and depth, source length, thumbnail size) live with the
# document schema in elastichash.index.schema.
# An index message: the base64 thumbnail and preview, sources, metadata and a few fixed fields.
MAX_INDEX_MESSAGE_BYTES = ((MAX_THUMBNAIL_BYTES + MAX_PREVIEW_BYTES) * 4 // 3
                           + (MAX_SOURCES + 1) * MAX_SOURCE_CHARS + MAX_METADATA_BYTES + 16 * 1024)
MAX_REASON_CHARS = 64
MAX_FAILURE_MESSAGE_CHARS = 2000


class BadMessage(InvalidInput):
    """A message that can never be processed: dead-letter it with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestHeaders(_Frozen):
    v: Literal[1] = 1
    id: str
    source: str | None = Field(default=None, max_length=MAX_SOURCE_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_type: str | None = Field(default=None, max_length=128)
    seq: int = Field(default=0, ge=0, le=MAX_VERSION)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_id(value)


def _text(headers: Mapping[str, Any], name: str) -> str | None:
    """A string header, strictly: a number or a boolean where a string belongs is refused,
    not turned into one."""
    value = headers.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadMessage("bad_headers", f"header {name} is not UTF-8") from None
    raise BadMessage("bad_headers", f"header {name} must be a string, not {type(value).__name__}")


def encode_ingest(item: IngestItem) -> tuple[bytes, dict[str, Any], str | None]:
    """Body, headers and content type of an ingest message (validated before sending)."""
    try:
        check_metadata(item.metadata)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="metadata") from None
    meta = json.dumps(item.metadata, separators=(",", ":"), ensure_ascii=False)
    IngestHeaders(
        id=item.id, source=item.source, metadata=item.metadata, content_type=item.content_type,
        seq=item.seq,
    )
    headers: dict[str, Any] = {H_VERSION: SCHEMA_VERSION, H_ID: item.id, H_METADATA: meta}
    if item.source is not None:
        headers[H_SOURCE] = item.source
    if item.seq:
        headers[H_SEQ] = item.seq
    return item.data, headers, item.content_type


def decode_ingest(
    body: bytes, headers: Mapping[str, Any], content_type: str | None, max_bytes: int
) -> IngestItem:
    """Validate an ingest message; raises :class:`BadMessage` with a stable reason."""
    version = headers.get(H_VERSION)
    # ``True == 1`` in Python: a boolean is not a version.
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BadMessage("unsupported_version", f"ingest schema version {version!r} unknown")
    try:
        meta_text = _text(headers, H_METADATA) or "{}"
        if len(meta_text.encode()) > MAX_METADATA_BYTES:
            raise BadMessage("bad_headers", f"metadata over {MAX_METADATA_BYTES} bytes")
        meta = check_metadata(json.loads(meta_text))
        seq = headers.get(H_SEQ, 0)
        if type(seq) is not int:  # a boolean or a string is no sequence
            raise BadMessage("bad_headers", f"header {H_SEQ} must be an integer")
        parsed = IngestHeaders(
            seq=seq,
            id=_text(headers, H_ID) or "",
            source=_text(headers, H_SOURCE),
            metadata=meta,
            content_type=content_type,
        )
    except (ValidationError, ValueError, InvalidInput, RecursionError) as exc:
        if isinstance(exc, BadMessage):
            raise
        raise BadMessage("bad_headers", f"invalid ingest headers: {exc}") from exc
    if not body:
        raise BadMessage("empty", "empty image body")
    if len(body) > max_bytes:
        raise BadMessage("too_large", f"image of {len(body)} bytes over the {max_bytes} cap")
    return IngestItem(
        id=parsed.id,
        data=body,
        source=parsed.source,
        metadata=parsed.metadata,
        content_type=parsed.content_type,
        seq=parsed.seq,
    )


class IndexDoc(DocumentBody):
    """A document for the indexer: :class:`DocumentBody` (the search service's JSON too) plus
    the message kind and schema version."""

    kind: Literal["doc"] = "doc"
    v: Literal[1] = 1

    @classmethod
    def of(cls, doc: Document, *, binary: bool = True) -> IndexDoc:
        return cls(**DocumentBody.of(doc, binary=binary).model_dump())


class IndexFailure(_Frozen):
    kind: Literal["failure"] = "failure"
    v: Literal[1] = 1
    id: str
    reason: str = Field(max_length=MAX_REASON_CHARS)
    message: str = Field(max_length=MAX_FAILURE_MESSAGE_CHARS)
    source: str | None = Field(default=None, max_length=MAX_SOURCE_CHARS)
    at: float = Field(default_factory=time.time)
    version: int = Field(default=0, ge=0, le=MAX_VERSION)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return checked_id(value)

    def failure(self) -> Failure:
        return Failure(id=self.id, reason=self.reason, message=self.message,
                       source=self.source, at=self.at, version=self.version)


IndexMessage = Annotated[IndexDoc | IndexFailure, Field(discriminator="kind")]
_INDEX_ADAPTER: TypeAdapter[IndexDoc | IndexFailure] = TypeAdapter(IndexMessage)
BINARY_FIELDS = tuple(spec for spec in FIELDS if spec.kind == "binary")


def decode_index(body: bytes) -> IndexDoc | IndexFailure:
    """Validate an index message, strictly typed (JSON ``true`` is no version, a number no
    string); raises :class:`BadMessage` with a stable reason."""
    if len(body) > MAX_INDEX_MESSAGE_BYTES:
        raise BadMessage(
            "too_large", f"index message of {len(body)} bytes over {MAX_INDEX_MESSAGE_BYTES}"
        )
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadMessage("bad_message", f"index message is not JSON: {exc}") from exc
    version = raw.get("v") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and "v" in raw and (type(version) is not int or version != 1):
        raise BadMessage("unsupported_version", f"index schema version {version!r} unknown")
    for spec in BINARY_FIELDS:
        value = raw.get(spec.name) if isinstance(raw, dict) else None
        cap = spec.max_bytes
        if isinstance(value, str) and len(value) > cap * 4 // 3 + 4:  # a whole image in its place
            raise BadMessage("too_large", f"{spec.name} of about {len(value) * 3 // 4} bytes "
                                          f"over the {cap} cap")
    try:
        parsed = _INDEX_ADAPTER.validate_python(raw, strict=True)
    except ValidationError as exc:
        raise BadMessage("bad_message", f"invalid index message: {exc}") from exc
    if isinstance(parsed, IndexDoc):
        for spec in BINARY_FIELDS:
            value = getattr(parsed, spec.name)
            size = len(base64.b64decode(value)) if value is not None else 0
            if size > spec.max_bytes:
                raise BadMessage("too_large",
                                 f"{spec.name} of {size} bytes over the {spec.max_bytes} cap")
    return parsed


class EncodeReply(_Frozen):
    v: Literal[1] = 1
    ok: bool
    code: str | None = Field(default=None, pattern=HEX64)
    short: str | None = Field(default=None, pattern=HEX16)
    reason: str | None = None
    message: str | None = None


def decode_reply(body: bytes) -> EncodeReply:
    try:
        return EncodeReply.model_validate_json(body)
    except ValidationError as exc:
        raise BadMessage("bad_message", f"invalid encode reply: {exc}") from exc
