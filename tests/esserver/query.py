"""Query DSL evaluation: each query compiles to ``(doc) -> score | None`` (None: no match).

Implements what the backend sends, with Elasticsearch's semantics: match_all, exists, ids,
term, terms (values or lookup from another index's ``_source``), range (numbers), bool (must,
filter, should, must_not, minimum_should_match), constant_score, function_score
(script_score and field_value_factor functions, weight, score_mode, boost_mode, max_boost,
min_score), nested (score_mode avg, max, min, sum, none) and the script_score query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.esserver.errors import EsError, check_keys, illegal, parsing
from tests.esserver.function_score import f32, q_function_score
from tests.esserver.mapping import field_spec
from tests.esserver.scripts import compile_script
from tests.esserver.state import Cluster, IndexState, StoredDoc

Matcher = Callable[[StoredDoc], float | None]


class Compiler:
    def __init__(self, cluster: Cluster, targets: list[IndexState]) -> None:
        self.cluster = cluster
        self.targets = targets

    def compile(self, q: Any) -> Matcher:
        if not isinstance(q, dict) or len(q) != 1:
            raise parsing("[_na] query malformed, must start with start_object")
        (kind, body), = q.items()
        handler = getattr(self, "_q_" + kind, None)
        if handler is None:
            raise EsError(400, "parsing_exception", f"unknown query [{kind}]", line=1, col=1)
        result: Matcher = handler(body)
        return result

    def _searchable(self, field: str) -> bool:
        specs = [s for s in (field_spec(t.mappings, field) for t in self.targets) if s]
        for spec in specs:
            if spec.get("index") is False:
                raise EsError(400, "query_shard_exception",
                              f"failed to create query: Cannot search on field [{field}] since "
                              "it is not indexed.")
        return bool(specs)

    def _q_match_all(self, body: Any) -> Matcher:
        boost = float(check_keys("match_all", body, {"boost"}).get("boost", 1.0))
        return lambda doc: boost

    def _q_exists(self, body: Any) -> Matcher:
        field = check_keys("exists", body, {"field", "boost"})["field"]
        boost = float(body.get("boost", 1.0))
        return lambda doc: boost if doc.fields.get(field) else None

    def _q_term(self, body: Any) -> Matcher:
        (field, spec), = body.items()
        value = spec.get("value") if isinstance(spec, dict) else spec
        boost = float(spec.get("boost", 1.0)) if isinstance(spec, dict) else 1.0
        return self._terms_matcher(field, [value], boost)

    def _q_terms(self, body: Any) -> Matcher:
        if not isinstance(body, dict):
            raise parsing("[terms] query malformed")
        boost = float(body.get("boost", 1.0))
        fields = [k for k in body if k != "boost"]
        if len(fields) != 1:
            raise parsing("[terms] query does not support multiple fields")
        field = fields[0]
        spec = body[field]
        if isinstance(spec, list):
            return self._terms_matcher(field, spec, boost)
        check_keys("terms", spec, {"index", "id", "path", "routing"})
        for key in ("index", "id", "path"):
            if key not in spec:
                raise parsing(f"[terms] query lookup element requires specifying the {key}")
        return self._terms_matcher(field, self._lookup(spec), boost)

    def _lookup(self, spec: dict[str, Any]) -> list[Any]:
        # Realtime get of the lookup document, as Elasticsearch does; a missing one matches nothing.
        index = self.cluster.resolve(spec["index"])
        if len(index) != 1:
            raise illegal(f"terms lookup index [{spec['index']}] must resolve to one index")
        doc = index[0].docs.get(str(spec["id"]))
        if doc is None:
            return []
        value: Any = doc.source_dict()
        for part in spec["path"].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return []
        return value if isinstance(value, list) else [value]

    def _terms_matcher(self, field: str, values: list[Any], boost: float) -> Matcher:
        if not self._searchable(field):
            return lambda doc: None
        wanted = {("true" if v else "false") if isinstance(v, bool) else v for v in values}
        wanted |= {str(v) for v in values if not isinstance(v, bool)}

        def match(doc: StoredDoc) -> float | None:
            got = doc.fields.get(field)
            return boost if got and any(v in wanted for v in got) else None

        return match

    def _q_range(self, body: Any) -> Matcher:
        # Numeric fields only (what the backend's filters send: doubles).
        if not isinstance(body, dict) or len(body) != 1:
            raise parsing("[range] query doesn't support multiple fields")
        (field, spec), = body.items()
        ops = check_keys("range", spec, {"gt", "gte", "lt", "lte", "boost"})
        boost = float(ops.get("boost", 1.0))
        if not self._searchable(field):
            return lambda doc: None
        tests = [(op, float(v)) for op, v in ops.items() if op != "boost"]
        passes = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__,
                  "lte": float.__le__}

        def match(doc: StoredDoc) -> float | None:
            got = doc.fields.get(field) or []
            ok = any(all(passes[op](float(v), bound) for op, bound in tests) for v in got)
            return boost if ok else None

        return match

    def _q_bool(self, body: Any) -> Matcher:
        check_keys("bool", body, {"must", "filter", "should", "must_not",
                                  "minimum_should_match", "boost"})

        def clauses(key: str) -> list[Matcher]:
            value = body.get(key, [])
            return [self.compile(c) for c in (value if isinstance(value, list) else [value])]

        must, filt, should, must_not = (clauses(k) for k in ("must", "filter", "should",
                                                             "must_not"))
        default_msm = 0 if (must or filt) else 1
        msm = int(str(body.get("minimum_should_match", default_msm)))
        if should:
            msm = max(0, min(msm, len(should))) if msm >= 0 else max(0, len(should) + msm)
        else:
            msm = 0
        boost = float(body.get("boost", 1.0))

        def match(doc: StoredDoc) -> float | None:
            score = 0.0
            for m in must:
                s = m(doc)
                if s is None:
                    return None
                score += s
            if any(m(doc) is None for m in filt) or any(m(doc) is not None for m in must_not):
                return None
            hits = 0
            for m in should:
                s = m(doc)
                if s is not None:
                    hits += 1
                    score += s
            if hits < msm:
                return None
            return score * boost

        return match

    def _q_constant_score(self, body: Any) -> Matcher:
        check_keys("constant_score", body, {"filter", "boost"})
        if "filter" not in body:
            raise parsing("[constant_score] requires a 'filter' element")
        inner = self.compile(body["filter"])
        boost = float(body.get("boost", 1.0))
        return lambda doc: None if inner(doc) is None else boost

    def _q_script_score(self, body: Any) -> Matcher:
        check_keys("script_score", body, {"query", "script", "min_score", "boost"})
        if "query" not in body or "script" not in body:
            raise parsing("[script_score] requires [query] and [script]")
        inner = self.compile(body["query"])
        script = compile_script(body["script"], self.cluster)
        min_score = body.get("min_score")
        boost = float(body.get("boost", 1.0))

        def match(doc: StoredDoc) -> float | None:
            qs = inner(doc)
            if qs is None:
                return None
            score = f32(script(doc, qs) * boost)
            if score < 0:
                raise illegal(f"script_score script returned an invalid score [{score}] for doc "
                              "[0]. Must be a non-negative score!")
            return None if min_score is not None and score < float(min_score) else score

        return match

    def _q_nested(self, body: Any) -> Matcher:
        check_keys("nested", body, {"path", "query", "score_mode", "ignore_unmapped", "boost"})
        if "path" not in body or "query" not in body:
            raise parsing("[nested] requires 'path' and 'query' field")
        path = body["path"]
        specs = [s for s in (field_spec(t.mappings, path) for t in self.targets) if s]
        if not specs or any(s.get("type") != "nested" for s in specs):
            raise EsError(400, "query_shard_exception",
                          f"[nested] nested object under path [{path}] is not of nested type")
        inner = self.compile(body["query"])
        mode = body.get("score_mode", "avg")
        combine = {"avg": lambda v: sum(v) / len(v), "max": max, "min": min, "sum": sum,
                   "none": lambda v: 0.0}.get(mode)
        if combine is None:
            raise illegal(f"No ScoreMode found for name [{mode}]")
        boost = float(body.get("boost", 1.0))

        def match(doc: StoredDoc) -> float | None:
            scores = [s for child in doc.fields.get(path) or []
                      if (s := inner(StoredDoc(b"{}", child, 0, 0))) is not None]
            return f32(combine(scores) * boost) if scores else None

        return match

    def _q_function_score(self, body: Any) -> Matcher:
        return q_function_score(self, body)
