"""``_search`` and ``_count`` over the refreshed snapshot of the target indices."""

from __future__ import annotations

import time
from typing import Any

from tests.esserver.errors import EsError, illegal, parsing, token_name
from tests.esserver.mapping import field_spec
from tests.esserver.query import Compiler
from tests.esserver.state import Cluster, IndexState, StoredDoc

SEARCH_KEYS = {"query", "size", "from", "sort", "min_score", "track_total_hits", "_source",
               "timeout", "track_scores", "search_after"}


def _unknown_key(key: str, value: Any) -> EsError:
    return parsing(f"Unknown key for a {token_name(value)} in [{key}].")


def _matches(cluster: Cluster, targets: list[IndexState], query: Any
             ) -> list[tuple[float, IndexState, str, StoredDoc]]:
    match = Compiler(cluster, targets).compile(query if query is not None else {"match_all": {}})
    out = []
    for index in targets:
        for doc_id, doc in index.searchable().items():
            score = match(doc)
            if score is not None:
                out.append((score, index, doc_id, doc))
    return out


def count(cluster: Cluster, targets: list[IndexState], body: dict[str, Any]) -> dict[str, Any]:
    for key, value in body.items():
        if key != "query":
            raise _unknown_key(key, value)
    n = len(_matches(cluster, targets, body.get("query")))
    return {"count": n, "_shards": _shards(targets)}


def _shards(targets: list[IndexState]) -> dict[str, int]:
    n = sum(int(t.setting("index.number_of_shards")) for t in targets)
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


def _parse_sort(sort: Any, targets: list[IndexState]) -> list[tuple[str, bool]]:
    items = sort if isinstance(sort, list) else [sort]
    out: list[tuple[str, bool]] = []
    for item in items:
        if isinstance(item, str):
            field, order = item, ("desc" if item == "_score" else "asc")
        elif isinstance(item, dict) and len(item) == 1:
            (field, spec), = item.items()
            if isinstance(spec, str):
                order = spec
            elif isinstance(spec, dict):
                for key in spec:
                    if key not in ("order", "missing", "unmapped_type", "mode"):
                        raise parsing(f"[field_sort] unknown field [{key}]")
                order = spec.get("order", "desc" if field == "_score" else "asc")
            else:
                raise parsing(f"[sort] malformed for [{field}]")
        else:
            raise parsing("[sort] malformed")
        if order not in ("asc", "desc"):
            raise illegal(f"Unknown SortOrder [{order}]")
        if field == "_id":
            raise illegal("Fielddata access on the _id field is disallowed, you can re-enable "
                          "it by updating the dynamic cluster setting: "
                          "indices.id_field_data.enabled")
        if field != "_score":
            specs = [s for s in (field_spec(t.mappings, field) for t in targets) if s]
            if not specs:
                raise EsError(400, "query_shard_exception",
                              f"No mapping found for [{field}] in order to sort on")
            if any(s.get("doc_values") is False for s in specs):
                raise illegal(f"Can't load fielddata on [{field}] because fielddata is "
                              "unsupported on fields of type [keyword]. Use doc values instead.")
        out.append((field, order == "desc"))
    return out


def _source_filter(spec: Any, src: dict[str, Any]) -> dict[str, Any] | None:
    if spec is False:
        return None
    if spec is True or spec is None:
        return src
    includes = spec if isinstance(spec, list) else spec.get("includes", []) \
        if isinstance(spec, dict) else [spec]
    excludes = spec.get("excludes", []) if isinstance(spec, dict) else []
    out = {k: v for k, v in src.items() if (not includes or k in includes)}
    return {k: v for k, v in out.items() if k not in excludes}


def _after(ordered: list[Any], after: Any, sort: list[tuple[str, bool]],
           sort_value: Any) -> list[Any]:
    """The matches strictly after the ``search_after`` sort values, in sort order."""
    if not isinstance(after, list) or len(after) != len(sort):
        raise illegal("search_after has " + str(len(after) if isinstance(after, list) else 0)
                      + f" value(s) but sort has {len(sort)}.")

    def beyond(m: Any) -> bool:
        for (field, desc), ref in zip(sort, after, strict=True):
            v = sort_value(m, field, desc)
            if v is None or v == ref:
                continue  # missing sorts last; equal: the next key decides
            return bool(v < ref) if desc else bool(v > ref)
        return False

    return [m for m in ordered if beyond(m)]


def search(cluster: Cluster, targets: list[IndexState], body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    for key, value in body.items():
        if key not in SEARCH_KEYS:
            raise _unknown_key(key, value)
    size, offset = int(body.get("size", 10)), int(body.get("from", 0))
    window = min(int(t.setting("index.max_result_window")) for t in targets) if targets else 10000
    if size < 0 or offset < 0:
        raise illegal("[from] and [size] must be non-negative")
    if size + offset > window:
        raise illegal(f"Result window is too large, from + size must be less than or equal to: "
                      f"[{window}] but was [{size + offset}]. See the scroll api for a more "
                      "efficient way to request large data sets.")
    sort = _parse_sort(body["sort"], targets) if "sort" in body else [("_score", True)]
    matches = _matches(cluster, targets, body.get("query"))
    if "min_score" in body:
        matches = [m for m in matches if m[0] >= float(body["min_score"])]

    def sort_value(m: tuple[float, IndexState, str, StoredDoc], field: str, desc: bool) -> Any:
        if field == "_score":
            return m[0]
        vals = m[3].fields.get(field)
        return (max(vals) if desc else min(vals)) if vals else None

    # Stable multi-key sort: apply keys from last to first; missing values sort last.
    ordered = list(matches)
    for field, desc in reversed(sort):
        present = [m for m in ordered if sort_value(m, field, desc) is not None]
        absent = [m for m in ordered if sort_value(m, field, desc) is None]
        present.sort(key=lambda m, f=field, d=desc: sort_value(m, f, d),  # type: ignore[misc]
                     reverse=desc)
        ordered = present + absent
    if "search_after" in body:
        ordered = _after(ordered, body["search_after"], sort, sort_value)
    # Lucene breaks remaining ties by shard then doc order; insertion order stands in for it.
    page = ordered[offset: offset + size]
    scored = any(f == "_score" for f, _ in sort) or bool(body.get("track_scores"))
    hits = []
    for m in page:
        hit: dict[str, Any] = {"_index": m[1].name, "_id": m[2],
                               "_score": m[0] if scored else None}
        src = _source_filter(body.get("_source"), m[3].source_dict())
        if src is not None:
            hit["_source"] = src
        if "sort" in body:
            hit["sort"] = [sort_value(m, f, d) for f, d in sort]
        hits.append(hit)
    tth = body.get("track_total_hits", 10000)
    hits_obj: dict[str, Any] = {
        "max_score": max((m[0] for m in matches), default=None) if scored else None,
        "hits": hits,
    }
    if tth is not False:
        cap = len(matches) if tth is True else int(tth)
        hits_obj["total"] = {"value": min(len(matches), cap),
                             "relation": "eq" if len(matches) <= cap else "gte"}
    return {
        "took": int((time.perf_counter() - started) * 1000),
        "timed_out": False,
        "_shards": _shards(targets),
        "hits": {"total": hits_obj.pop("total"), **hits_obj} if "total" in hits_obj
        else hits_obj,
    }
