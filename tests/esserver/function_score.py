"""``function_score`` with ``script_score`` and ``field_value_factor`` functions, weights,
score and boost modes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.esserver.errors import EsError, check_keys, illegal, parsing
from tests.esserver.scripts import compile_script
from tests.esserver.state import StoredDoc

if TYPE_CHECKING:
    from tests.esserver.query import Compiler, Matcher

KEYS = {"query", "functions", "score_mode", "boost_mode", "max_boost", "min_score", "boost",
        "script_score", "weight", "filter", "field_value_factor"}
FUNCTION_KEYS = {"filter", "weight", "script_score", "field_value_factor"}
FVF_KEYS = {"field", "factor", "modifier", "missing"}
SCORE_MODES = {"multiply", "sum", "avg", "first", "max", "min"}
BOOST_MODES = {"multiply", "replace", "sum", "avg", "max", "min"}

Fn = Callable[[StoredDoc, float], float]


def f32(x: float) -> float:
    """Scores are float32 in Lucene."""
    return float(np.float32(x))


def _function(c: Compiler, spec: dict[str, Any]) -> tuple[Any, Fn | None, float]:
    check_keys("function_score", spec, FUNCTION_KEYS)
    filt = c.compile(spec["filter"]) if "filter" in spec else None
    fn: Fn | None = None
    if "script_score" in spec:
        ss = check_keys("script_score", spec["script_score"], {"script"})
        fn = compile_script(ss["script"], c.cluster)
    if "field_value_factor" in spec:
        fn = _field_value_factor(spec["field_value_factor"])
    weight = float(spec.get("weight", 1.0))
    return filt, fn, weight


def _field_value_factor(spec: Any) -> Fn:
    check_keys("field_value_factor", spec, FVF_KEYS)
    field, factor = spec.get("field"), float(spec.get("factor", 1.0))
    if not isinstance(field, str):
        raise parsing("[field_value_factor] requires a [field]")
    if spec.get("modifier", "none") != "none":
        raise illegal("test server: field_value_factor supports modifier none only")
    missing = spec.get("missing")

    def run(doc: StoredDoc, _score: float) -> float:
        got = doc.fields.get(field)
        if not got:
            if missing is None:
                raise EsError(400, "illegal_argument_exception",
                              f"Missing value for field [{field}]")
            return float(missing) * factor
        return float(min(got)) * factor  # the first doc value: the smallest

    return run


def _combine(mode: str, values: list[float], weights: list[float]) -> float:
    if mode == "multiply":
        out = 1.0
        for v in values:
            out *= v
        return out
    if mode == "sum":
        return sum(values)
    if mode == "avg":
        return sum(values) / sum(weights)
    if mode == "first":
        return values[0]
    return max(values) if mode == "max" else min(values)


def q_function_score(c: Compiler, body: Any) -> Matcher:
    check_keys("function_score", body, KEYS)
    inner = c.compile(body.get("query", {"match_all": {}}))
    if "functions" in body and ("script_score" in body or "weight" in body):
        raise parsing("failed to parse [function_score] query. already found [functions] array, "
                      "now encountering [script_score].")
    specs = body.get("functions")
    if specs is None:
        specs = [{k: body[k] for k in ("script_score", "weight", "filter", "field_value_factor")
                  if k in body}]
        specs = [s for s in specs if s]
    functions = [_function(c, s) for s in specs]
    score_mode = body.get("score_mode", "multiply")
    boost_mode = body.get("boost_mode", "multiply")
    if score_mode not in SCORE_MODES:
        raise illegal(f"illegal score_mode [{score_mode}]")
    if boost_mode not in BOOST_MODES:
        raise illegal(f"illegal boost_mode [{boost_mode}]")
    max_boost = float(body.get("max_boost", 3.4028235e38))
    min_score = body.get("min_score")
    boost = float(body.get("boost", 1.0))

    def match(doc: StoredDoc) -> float | None:
        qs = inner(doc)
        if qs is None:
            return None
        values: list[float] = []
        weights: list[float] = []
        for filt, fn, weight in functions:
            if filt is not None and filt(doc) is None:
                continue
            v = fn(doc, qs) if fn is not None else 1.0
            if v < 0:
                raise EsError(400, "illegal_argument_exception",
                              "function score query returned an invalid score: "
                              f"{v} for doc: 0; score must be a non-negative real number")
            values.append(v * weight)
            weights.append(weight)
        if not values:  # no function applied: the query score stands
            fs = 1.0
            score = qs if boost_mode != "replace" else 1.0
        else:
            fs = min(_combine(score_mode, values, weights), max_boost)
            score = {
                "multiply": qs * fs,
                "replace": fs,
                "sum": qs + fs,
                "avg": (qs + fs) / 2,
                "max": max(qs, fs),
                "min": min(qs, fs),
            }[boost_mode]
        score = f32(score * boost)
        return None if min_score is not None and score < float(min_score) else score

    return match
