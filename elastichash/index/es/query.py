"""I/O-free request bodies and response parsing for search, and document (de)serialisation.

Every strategy scores 256 - Hamming distance (an exact integer in a float32 score) and sorts
by ``_score`` descending then the ``id`` keyword ascending, so results are a total order that
matches the embedded backend's (distance ascending, id ascending).
"""

from __future__ import annotations

import base64
import math
from typing import Any

from elastichash.codes import (
    LONG_BITS,
    from_subcodes,
    from_words,
    subcodes,
    to_words,
)
from elastichash.index import filters
from elastichash.index.base import CodeRecord, Document, Hit
from elastichash.index.es.mapping import (
    BIT_VECTORS,
    FILTER_OBJECT,
    HIT_SOURCE_FIELDS,
    ID_FIELD,
    LABEL_SCORES,
    SUBCODE_FIELDS,
    VERSION_FIELD,
    WORD_FIELDS,
    filter_path,
)
from elastichash.index.es.neighbours import NBS_FIELD, subcode_term
from elastichash.index.es.script import (
    DENSE_BIT_FIELD,
    DENSE_BIT_SCRIPT_SOURCE,
    HAMMING_SCRIPT_ID,
)
from elastichash.index.schema import FIELDS, FieldSpec, empty

SORT: list[dict[str, Any]] = [{"_score": {"order": "desc"}}, {ID_FIELD: {"order": "asc"}}]


def word_params(code: bytes) -> dict[str, int]:
    return {name: w for name, w in zip(WORD_FIELDS, to_words(code), strict=True)}


def candidates_query(short: bytes, nbs_index: str) -> dict[str, Any]:
    """Stage 1: documents sharing any subcode within radius 2, via terms lookups."""
    should = [
        {"terms": {field: {"index": nbs_index, "id": subcode_term(v), "path": NBS_FIELD}}}
        for field, v in zip(SUBCODE_FIELDS, subcodes(short), strict=True)
    ]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def filter_clauses(clauses: list[filters.Clause] | None) -> list[dict[str, Any]]:
    """A parsed filter as filter-context queries (term/terms/range), one per clause."""
    out: list[dict[str, Any]] = []
    for c in clauses or ():
        path = filter_path(c.field)
        if c.kind == "keyword":
            out.append({"term": {path: c.terms[0]}} if len(c.terms) == 1
                       else {"terms": {path: list(c.terms)}})
        elif c.lo == c.hi and not (c.lo_open or c.hi_open):
            out.append({"term": {path: c.lo}})
        else:
            bounds: dict[str, float] = {}
            if c.lo != -math.inf:
                bounds["gt" if c.lo_open else "gte"] = c.lo
            if c.hi != math.inf:
                bounds["lt" if c.hi_open else "lte"] = c.hi
            out.append({"range": {path: bounds}})
    return out


def _filtered(query: dict[str, Any] | None, clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """``query`` (None: every document) restricted to the filter clauses."""
    if not clauses:
        return MATCH_ALL if query is None else query
    return {"bool": {"filter": ([] if query is None else [query]) + clauses}}


def _page(query: dict[str, Any], k: int, offset: int, max_distance: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "query": query,
        "sort": SORT,
        "from": offset,
        "size": k,
        "track_total_hits": True,
        "_source": {"includes": HIT_SOURCE_FIELDS},
    }
    if max_distance is not None:
        body["min_score"] = LONG_BITS - max_distance
    return body


def two_stage_body(
    code: bytes, short: bytes, nbs_index: str, *, k: int, offset: int, max_distance: int | None,
    where: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    # ElasticHash's query: a zero-scored filter plus the stored script, summed.
    cands = _filtered(candidates_query(short, nbs_index), where or [])
    query = {
        "function_score": {
            "query": {"constant_score": {"filter": cands, "boost": 0}},
            "functions": [
                {"script_score": {"script": {"id": HAMMING_SCRIPT_ID, "params": word_params(code)}}}
            ],
            "score_mode": "sum",
            "boost_mode": "sum",
        }
    }
    return _page(query, k, offset, max_distance)


def exact_body(code: bytes, *, k: int, offset: int, max_distance: int | None,
               where: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    query = {
        "script_score": {
            "query": _filtered(None, where or []),
            "script": {"id": HAMMING_SCRIPT_ID, "params": word_params(code)},
        }
    }
    return _page(query, k, offset, max_distance)


def dense_bit_body(code: bytes, *, k: int, offset: int, max_distance: int | None,
                   where: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # Signed bytes: the one query-vector form every bit-vector-capable version accepts.
    vector = [b - 256 if b > 127 else b for b in code]
    query = {
        "script_score": {
            "query": _filtered(None, where or []),
            "script": {"source": DENSE_BIT_SCRIPT_SOURCE, "params": {"query_vector": vector}},
        }
    }
    return _page(query, k, offset, max_distance)


SCAN_SOURCE = [*SUBCODE_FIELDS, *WORD_FIELDS]


def scan_body(batch: int, after: str | None) -> dict[str, Any]:
    """One page of every document's codes in id order (``search_after`` on the unique id)."""
    body: dict[str, Any] = {
        "query": {"match_all": {}},
        "sort": [{ID_FIELD: {"order": "asc"}}],
        "size": batch,
        "track_total_hits": False,
        "_source": {"includes": SCAN_SOURCE},
    }
    if after is not None:
        body["search_after"] = [after]
    return body


def records_from_response(resp: dict[str, Any]) -> list[CodeRecord]:
    return [
        CodeRecord(
            h["_id"],
            from_words([int(h["_source"][r]) for r in WORD_FIELDS]),
            from_subcodes([int(h["_source"][f]) for f in SUBCODE_FIELDS]),
        )
        for h in resp["hits"]["hits"]
    ]


# What each strategy needs beyond the common layout (see mapping.server_features).
STRATEGY_NEEDS: dict[str, str] = {"dense_bit": BIT_VECTORS}


def strategy_request(
    strategy: str, code: bytes, short: bytes, nbs_index: str, *,
    k: int, offset: int, max_distance: int | None,
    clauses: list[filters.Clause] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(search body, query counting the documents scored); the count is needed only with
    ``max_distance``, since otherwise the total already counts every scored document.
    ``clauses`` (a parsed filter) restrict both to the documents that pass."""
    where = filter_clauses(clauses)
    page: dict[str, Any] = {"k": k, "offset": offset, "max_distance": max_distance, "where": where}
    if strategy == "two_stage":
        body = two_stage_body(code, short, nbs_index, **page)
        count: dict[str, Any] = _filtered(candidates_query(short, nbs_index), where)
    elif strategy == "exact":
        body, count = exact_body(code, **page), _filtered(None, where)
    elif strategy == "dense_bit":
        body, count = dense_bit_body(code, **page), _filtered(None, where)
    else:
        raise ValueError(f"no request for strategy {strategy!r}")
    return body, None if max_distance is None else count


MATCH_ALL: dict[str, Any] = {"match_all": {}}


# --- search by words ----------------------------------------------------------------------
# The same ranking as the embedded label index (store.rows_with_labels): documents carrying
# any of the classes, by their best score among them, ties by id; with a code, by Hamming
# distance among those documents. The classes come from labels.vocabulary().resolve().


def labelled(classes: list[str]) -> dict[str, Any]:
    """Documents with a label among ``classes`` (filter context: no score)."""
    return {"nested": {"path": LABEL_SCORES, "score_mode": "none",
                       "query": {"terms": {f"{LABEL_SCORES}.id": classes}}}}


def best_label_score(classes: list[str]) -> dict[str, Any]:
    """Scores each document by its best label score among ``classes`` (a float32 of the
    stored double, which keeps the order of the scores the model rounded to 4 decimals)."""
    inner = {"function_score": {
        "query": {"terms": {f"{LABEL_SCORES}.id": classes}},
        "field_value_factor": {"field": f"{LABEL_SCORES}.score", "missing": 0},
        "boost_mode": "replace",
    }}
    return {"nested": {"path": LABEL_SCORES, "score_mode": "max", "query": inner}}


def words_request(
    classes: list[str], code: bytes | None, *, k: int, offset: int,
    max_distance: int | None, clauses: list[filters.Clause] | None = None,
) -> dict[str, Any]:
    """The search body of a search by words (``classes`` non-empty), with or without a code;
    ``total`` of its answer counts every match (``max_distance`` applies with a code only)."""
    where = filter_clauses(clauses)
    if code is not None:
        return exact_body(code, k=k, offset=offset, max_distance=max_distance,
                          where=[labelled(classes), *where])
    query = best_label_score(classes)
    if where:
        query = {"bool": {"must": [query], "filter": where}}
    return _page(query, k, offset, None)


def hits_from_response(resp: dict[str, Any], *, words: bool = False) -> tuple[list[Hit], int]:
    """(hits, total) from a search response built by this module; ``words``: a search by
    words alone, whose hits have no distance (0, as on the embedded index)."""
    out: list[Hit] = []
    for h in resp["hits"]["hits"]:
        src = h.get("_source") or {}
        fields = {s.name: _from_source(s, src.get(s.name)) for s in FIELDS if s.in_hits}
        distance = 0 if words else LONG_BITS - round(h["sort"][0])
        out.append(Hit(id=h["_id"], distance=distance, **fields))
    return out, int(resp["hits"]["total"]["value"])


def _to_source(spec: FieldSpec, value: Any) -> Any:
    return base64.b64encode(value).decode("ascii") if spec.kind == "binary" else value


def _from_source(spec: FieldSpec, value: Any) -> Any:
    if value is None or value == "":
        return empty(spec)
    if spec.kind == "keywords":
        return tuple(value) if isinstance(value, list) else (value,)
    return base64.b64decode(value) if spec.kind == "binary" else value


def document_source(doc: Document, *, dense_bit: bool) -> dict[str, Any]:
    body: dict[str, Any] = {ID_FIELD: doc.id}
    body.update(zip(SUBCODE_FIELDS, map(subcode_term, subcodes(doc.short)), strict=True))
    body.update(word_params(doc.code))
    for spec in FIELDS:  # unset fields stay out of _source
        value = getattr(doc, spec.name)
        if value is not None and value != {} and value != ():
            body[spec.name] = _to_source(spec, value)
    if doc.version:
        body[VERSION_FIELD] = doc.version
    values = {name: found for name in filters.FILTER_FIELDS
              if (found := filters.field_values(name, doc.source, doc.metadata))}
    if values:
        body[FILTER_OBJECT] = values
    labels = filters.label_scores(doc.metadata)
    if labels:
        body[LABEL_SCORES] = [{"id": c, "score": score} for c, score in labels]
    if dense_bit:
        body[DENSE_BIT_FIELD] = doc.code.hex()
    return body


def document_from_source(doc_id: str, src: dict[str, Any]) -> Document:
    return Document(
        id=doc_id,
        code=from_words([int(src[r]) for r in WORD_FIELDS]),
        short=from_subcodes([int(src[f]) for f in SUBCODE_FIELDS]),
        version=int(src.get(VERSION_FIELD) or 0),
        **{s.name: _from_source(s, src.get(s.name)) for s in FIELDS},
    )
