"""JSON shapes of the search service's HTTP API, shared by the service and ``RemoteIndex``.

One place decides how a code, a document, a hit or a failure looks on the wire, so the
server and its client cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pydantic import ValidationError

from elastichash.codes import LONG_BITS, SHORT_BITS, from_hex, to_hex, to_words
from elastichash.errors import InvalidInput, invalid_input
from elastichash.index.base import (
    CodeRecord,
    Document,
    DuplicateGroup,
    DuplicatesResult,
    Failure,
    Hit,
    SearchQuery,
    SearchResult,
    WriteResult,
)
from elastichash.index.schema import (
    FIELDS,
    HIT_FIELDS,
    MAX_VERSION,
    DocumentBody,
    empty,
    parse_code,
    parse_short,
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


def document_to_json(doc: Document, *, thumbnail: bool = True,
                     preview: bool = True) -> dict[str, Any]:
    if not preview:
        doc = dataclasses.replace(doc, preview=None)
    out = DocumentBody.of(doc, binary=thumbnail).model_dump()
    for spec in FIELDS:  # binary fields only when asked for and present
        if spec.kind == "binary" and out[spec.name] is None:
            del out[spec.name]
    out["words"] = to_words(doc.code)  # ElasticHash's r0..r3, for clients that store those
    out["has_thumbnail"] = doc.thumbnail is not None
    return out


# Written by document_to_json for readers; not part of the body a writer sends.
_OUTPUT_ONLY = ("has_thumbnail",)


def document_from_json(item: Any) -> Document:
    if not isinstance(item, dict):
        raise InvalidInput("a document must be a JSON object", field="documents")
    try:
        body = DocumentBody.model_validate(
            {k: v for k, v in item.items() if k not in _OUTPUT_ONLY}
        )
    except ValidationError as exc:
        raise invalid_input(exc) from None
    return body.document()


def hit_to_json(hit: Hit) -> dict[str, Any]:
    return {"id": hit.id, "distance": hit.distance, **{f: getattr(hit, f) for f in HIT_FIELDS}}


def result_to_json(res: SearchResult) -> dict[str, Any]:
    return {
        "results": [hit_to_json(h) for h in res.hits],
        "total": res.total,
        "candidates": res.candidates,
        "took_ms": round(res.took_ms, 3),
        "strategy": res.strategy,
    }


def hit_from_json(h: dict[str, Any]) -> Hit:
    return Hit(
        str(h["id"]),
        int(h["distance"]),
        **{s.name: h.get(s.name) or empty(s) for s in FIELDS if s.in_hits},
    )


def result_from_json(body: dict[str, Any]) -> SearchResult:
    hits = [hit_from_json(h) for h in body["results"]]
    return SearchResult(
        hits,
        int(body["candidates"]),
        int(body["total"]),
        float(body["took_ms"]),
        str(body["strategy"]),
    )


def duplicates_to_json(res: DuplicatesResult) -> dict[str, Any]:
    return {
        "groups": [
            {
                "keeper": g.keeper,
                "members": [hit_to_json(h) for h in g.members],
                "distances": g.distances,
            }
            for g in res.groups
        ],
        "total": res.total,
        "images": res.images,
        "pairs": res.pairs,
        "max_distance": res.max_distance,
        "took_ms": round(res.took_ms, 3),
    }


def duplicates_from_json(body: dict[str, Any]) -> DuplicatesResult:
    groups = [
        DuplicateGroup(
            [hit_from_json(h) for h in g["members"]], str(g["keeper"]), g.get("distances")
        )
        for g in body["groups"]
    ]
    return DuplicatesResult(
        groups,
        int(body["total"]),
        int(body["images"]),
        int(body["pairs"]),
        int(body["max_distance"]),
        float(body["took_ms"]),
    )


def write_result_to_json(r: WriteResult) -> dict[str, Any]:
    return {"id": r.id, "ok": r.ok, "error": r.error, "transient": r.transient,
            "superseded": r.superseded}


def write_result_from_json(item: dict[str, Any]) -> WriteResult:
    return WriteResult(
        str(item["id"]), bool(item["ok"]), item.get("error"), bool(item.get("transient")),
        bool(item.get("superseded")),
    )


def failure_to_json(f: Failure) -> dict[str, Any]:
    return {"id": f.id, "reason": f.reason, "message": f.message, "source": f.source, "at": f.at,
            "version": f.version}


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
    version = item.get("version") or 0
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        raise InvalidInput(f"version must be an integer from 0 to {MAX_VERSION}", field="version")
    return Failure(item["id"], item["reason"], item["message"], source, at_f, version)
