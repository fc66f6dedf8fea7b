"""The scripts this server can run: the 64-bit-word Hamming script and the bit-vector one.

No painless interpreter: a source is recognised by its exact shape, and its field and
parameter names are taken from it, so a script referring to the wrong field or parameter
behaves as it would on Elasticsearch (error or wrong scores). Any other source is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.esserver.errors import EsError, parsing
from tests.esserver.state import Cluster, StoredDoc

ScriptFn = Callable[[StoredDoc, float], float]
MASK64 = (1 << 64) - 1

_TERM = r"-\s*Long\.bitCount\(\s*doc\['(\w+)'\]\.value\s*\^\s*params\.(\w+)\s*\)"
_WORDS = re.compile(rf"^\s*(?:return\s+)?(\d+)((?:\s*{_TERM})+)\s*;?\s*$")
_TERMS = re.compile(_TERM)
_HAMMING = re.compile(
    r"^\s*(?:return\s+)?(\d+)\s*-\s*hamming\(\s*params\.(\w+)\s*,\s*'(\w+)'\s*\)\s*;?\s*$"
)
SCRIPT_KEYS = {"id", "source", "lang", "params", "options"}


def compile_error(source: str) -> EsError:
    return EsError(
        400,
        "script_exception",
        "compile error",
        script_stack=["..."],
        script=source,
        lang="painless",
        caused_by={"type": "illegal_argument_exception",
                   "reason": "test server: unrecognised script source"},
    )


def check_source(source: str) -> None:
    if not (_WORDS.match(source) or _HAMMING.match(source)):
        raise compile_error(source)


def _runtime_error(source: str, reason: str) -> EsError:
    return EsError(
        400,
        "script_exception",
        "runtime error",
        script=source,
        lang="painless",
        caused_by={"type": "illegal_state_exception", "reason": reason},
    )


def _missing(field: str) -> str:
    return (
        "A document doesn't have a value for a field! Use doc[<field>].size()==0 to check if a "
        f"document is missing a field! [{field}]"
    )


def compile_script(spec: Any, cluster: Cluster) -> ScriptFn:
    if not isinstance(spec, dict):
        raise parsing("[script] expected an object")
    for key in spec:
        if key not in SCRIPT_KEYS:
            raise parsing(f"[script] unknown field [{key}]")
    params: dict[str, Any] = spec.get("params", {})
    if "id" in spec:
        stored = cluster.scripts.get(spec["id"])
        if stored is None:
            # The shards fail to build the query: a 400 for the whole search, as on a real
            # engine (found by tests/integration/test_engine_differential.py; it was a 404 here).
            missing = f"unable to find script [{spec['id']}] in cluster state"
            raise EsError(400, "search_phase_execution_exception", "all shards failed",
                          caused_by={"type": "query_shard_exception",
                                     "reason": "failed to create query",
                                     "caused_by": {"type": "resource_not_found_exception",
                                                   "reason": missing}})
        source = stored["source"]
    elif "source" in spec:
        if spec.get("lang", "painless") != "painless":
            raise illegal_lang(spec["lang"])
        source = spec["source"]
    else:
        raise parsing("must specify either [source] for an inline script or [id] for a stored "
                      "script")
    words = _WORDS.match(source)
    if words:
        return _words_fn(source, int(words.group(1)), _TERMS.findall(words.group(2)), params)
    ham = _HAMMING.match(source)
    if ham:
        return _hamming_fn(source, int(ham.group(1)), ham.group(2), ham.group(3), params)
    raise compile_error(source)


def illegal_lang(lang: str) -> EsError:
    return EsError(400, "illegal_argument_exception", f"script_lang not supported [{lang}]")


def _words_fn(source: str, const: int, terms: list[tuple[str, str]],
              params: dict[str, Any]) -> ScriptFn:
    values: list[tuple[str, int]] = []
    for field, param in terms:
        value = params.get(param)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _runtime_error(source, f"params.{param} is {value!r}, not a long")
        values.append((field, value & MASK64))

    def run(doc: StoredDoc, _score: float) -> float:
        total = const
        for field, value in values:
            got = doc.fields.get(field)
            if not got:
                raise _runtime_error(source, _missing(field))
            total -= ((got[0] & MASK64) ^ value).bit_count()
        return float(total)

    return run


def _hamming_fn(source: str, const: int, param: str, field: str,
                params: dict[str, Any]) -> ScriptFn:
    vector = params.get(param)
    if isinstance(vector, str):
        query = bytes.fromhex(vector)
    elif isinstance(vector, list) and all(isinstance(v, int) and -128 <= v <= 127 for v in vector):
        query = bytes(v & 0xFF for v in vector)
    else:
        raise _runtime_error(source, f"params.{param} must be a hex string or a list of bytes")
    qint = int.from_bytes(query, "big")

    def run(doc: StoredDoc, _score: float) -> float:
        got = doc.fields.get(field)
        if not got:
            raise _runtime_error(source, _missing(field))
        if len(got[0]) != len(query):
            raise _runtime_error(source, "vector dimensions differ")
        return float(const - (int.from_bytes(got[0], "big") ^ qint).bit_count())

    return run
