"""JSON shapes of the search service's HTTP API, shared by the service and ``RemoteIndex``.

One place decides how a code, a document, a hit or a failure looks on the wire, so the
server and its client cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from elastichash.codes import (
    LONG_BITS,
    SHORT_BITS,
    CodeError,
    from_hex,
    from_subcodes,
    from_words,
    to_hex,
    to_words,
)
from elastichash.errors import InvalidInput
from elastichash.index.base import (
    CodeRecord,
    Document,
    Failure,
    Hit,
    SearchQuery,
    SearchResult,
    WriteResult,
)


def parse_code(body: dict[str, Any]) -> bytes:
    """The long code from ``code`` (64 hex digits) or ``words`` ([r0, r1, r2, r3])."""
    if body.get("code") is not None:
        if not isinstance(body["code"], str):
            raise InvalidInput("code must be a string of 64 hex digits", field="code")
        try:
            return from_hex(body["code"], LONG_BITS)
        except CodeError as exc:
            raise InvalidInput(f"code: {exc}", field="code") from None
    if body.get("words") is not None:
        words = body["words"]
        if not isinstance(words, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in words
        ):
            raise InvalidInput(
                "words must be a list of four 64-bit integers [r0, r1, r2, r3]", field="words"
            )
        try:
            return from_words(words)
        except CodeError as exc:
            raise InvalidInput(f"words: {exc}", field="words") from None
    raise InvalidInput(
        "give the long code as 'code' (64 hex digits) or 'words' ([r0..r3])", field="code"
    )


def parse_short(body: dict[str, Any]) -> bytes:
    """The short code from ``short`` (16 hex digits) or ``subcodes`` ([f0, f1, f2, f3])."""
    if body.get("short") is not None:
        if not isinstance(body["short"], str):
            raise InvalidInput("short must be a string of 16 hex digits", field="short")
        try:
            return from_hex(body["short"], SHORT_BITS)
        except CodeError as exc:
            raise InvalidInput(f"short: {exc}", field="short") from None
    if body.get("subcodes") is not None:
        subs = body["subcodes"]
        if not isinstance(subs, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in subs
        ):
            raise InvalidInput("subcodes must be a list of four 16-bit integers", field="subcodes")
        try:
            return from_subcodes(subs)
        except CodeError as exc:
            raise InvalidInput(f"subcodes: {exc}", field="subcodes") from None
    raise InvalidInput(
        "the short code is required: 'short' (16 hex digits) or 'subcodes' ([f0..f3])",
        field="short",
    )


# Alternative spellings of the codes a search body may use instead of hex code/short.
_CODE_KEYS = ("code", "words", "short", "subcodes")


def query_from_json(body: dict[str, Any]) -> SearchQuery:
    """A :class:`SearchQuery` from a search body: the query fields plus the codes as hex
    (``code``, ``short``) or integers (``words``, ``subcodes``); or words alone."""
    fields = {k: v for k, v in body.items() if k not in _CODE_KEYS}
    if any(body.get(k) is not None for k in _CODE_KEYS) or body.get("text") is None:
        fields["code"] = parse_code(body)
        fields["short"] = parse_short(body)
    return SearchQuery.parse(fields)


def record_to_json(r: CodeRecord) -> dict[str, Any]:
    return {"id": r.id, "code": to_hex(r.code), "short": to_hex(r.short)}


def record_from_json(item: dict[str, Any]) -> CodeRecord:
    return CodeRecord(
        str(item["id"]), from_hex(item["code"], LONG_BITS), from_hex(item["short"], SHORT_BITS)
    )


def document_to_json(doc: Document, *, thumbnail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": doc.id,
        "code": to_hex(doc.code),
        "words": to_words(doc.code),
        "short": to_hex(doc.short),
        "source": doc.source,
        "thumbnail_url": doc.thumbnail_url,
        "metadata": doc.metadata,
        "has_thumbnail": doc.thumbnail is not None,
    }
    if thumbnail and doc.thumbnail is not None:
        out["thumbnail"] = base64.b64encode(doc.thumbnail).decode("ascii")
    return out


def document_from_json(item: Any) -> Document:
    if not isinstance(item, dict):
        raise InvalidInput("a document must be a JSON object", field="documents")
    doc_id = item.get("id")
    if not isinstance(doc_id, str):
        raise InvalidInput("a document needs a string 'id'", field="id")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object", field="metadata")
    thumb = item.get("thumbnail")
    thumbnail = None
    if thumb is not None:
        try:
            thumbnail = base64.b64decode(thumb, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidInput("thumbnail must be base64", field="thumbnail") from None
    for key in ("source", "thumbnail_url"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidInput(f"{key} must be a string", field=key)
    return Document(
        id=doc_id,
        code=parse_code(item),
        short=parse_short(item),
        source=item.get("source"),
        thumbnail_url=item.get("thumbnail_url"),
        metadata=metadata,
        thumbnail=thumbnail,
    )


def hit_to_json(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.id,
        "distance": hit.distance,
        "source": hit.source,
        "thumbnail_url": hit.thumbnail_url,
        "metadata": hit.metadata,
    }


def result_to_json(res: SearchResult) -> dict[str, Any]:
    return {
        "results": [hit_to_json(h) for h in res.hits],
        "total": res.total,
        "candidates": res.candidates,
        "took_ms": round(res.took_ms, 3),
        "strategy": res.strategy,
    }


def result_from_json(body: dict[str, Any]) -> SearchResult:
    hits = [
        Hit(
            h["id"],
            int(h["distance"]),
            h.get("source"),
            h.get("thumbnail_url"),
            h.get("metadata") or {},
        )
        for h in body["results"]
    ]
    return SearchResult(
        hits,
        int(body["candidates"]),
        int(body["total"]),
        float(body["took_ms"]),
        str(body["strategy"]),
    )


def write_result_to_json(r: WriteResult) -> dict[str, Any]:
    return {"id": r.id, "ok": r.ok, "error": r.error, "transient": r.transient}


def write_result_from_json(item: dict[str, Any]) -> WriteResult:
    return WriteResult(
        str(item["id"]), bool(item["ok"]), item.get("error"), bool(item.get("transient"))
    )


def failure_to_json(f: Failure) -> dict[str, Any]:
    return {"id": f.id, "reason": f.reason, "message": f.message, "source": f.source, "at": f.at}


def failure_from_json(item: Any) -> Failure:
    if not isinstance(item, dict) or not all(
        isinstance(item.get(k), str) for k in ("id", "reason", "message")
    ):
        raise InvalidInput("a failure needs string 'id', 'reason' and 'message'", field="failures")
    at = item.get("at") or 0.0
    source = item.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidInput("source must be a string or null", field="source")
    try:
        at_f = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    except OverflowError:
        at_f = None
    if at_f is None or not math.isfinite(at_f):
        raise InvalidInput("at must be a finite unix time", field="at")
    return Failure(item["id"], item["reason"], item["message"], source, at_f)
