"""I/O-free parts of the Elasticsearch backend: query bodies, documents, neighbours, bulk
result mapping."""

from __future__ import annotations

import itertools
import json

from elastichash.codes import from_subcodes, neighbours, to_words
from elastichash.index.base import Document
from elastichash.index.es import query as q
from elastichash.index.es.bulk import in_order, item_result
from elastichash.index.es.mapping import (
    BIT_VECTORS,
    has_dense_bit,
    parse_version,
    retrieval_mapping,
    server_features,
)
from elastichash.index.es.neighbours import nbs_actions
from elastichash.index.es.script import HAMMING_SCRIPT_ID

CODE = bytes(range(200, 232))
SHORT = from_subcodes([0, 1, 65535, 4660])


def test_two_stage_body_is_elastichash_terms_lookup_with_the_stored_script() -> None:
    body = q.two_stage_body(CODE, SHORT, "nbs", k=5, offset=10, max_distance=12)
    fs = body["query"]["function_score"]
    should = fs["query"]["constant_score"]["filter"]["bool"]["should"]
    assert should[2] == {"terms": {"f2": {"index": "nbs", "id": "65535", "path": "nbs"}}}
    script = fs["functions"][0]["script_score"]["script"]
    assert script["id"] == HAMMING_SCRIPT_ID
    assert [script["params"][f"r{i}"] for i in range(4)] == to_words(CODE)
    assert (body["from"], body["size"], body["min_score"]) == (10, 5, 244)
    assert body["sort"] == [{"_score": {"order": "desc"}}, {"id": {"order": "asc"}}]


def test_document_source_round_trips_and_words_are_signed() -> None:
    doc = Document(id="a", code=CODE, short=SHORT, source="s", metadata={"k": 1},
                   thumbnail=b"jpg")
    src = q.document_source(doc, dense_bit=True)
    assert src["r0"] < 0
    assert src["f2"] == "65535"
    assert src["code_bits"] == CODE.hex()
    assert q.document_from_source("a", json.loads(json.dumps(src))) == doc


def test_neighbour_documents_hold_the_137_values_within_radius_2() -> None:
    first = list(itertools.islice(nbs_actions("nbs"), 3))
    assert isinstance(first[2].source, str)
    body = json.loads(first[2].source)
    assert first[2].id == "2"
    head, line, end = first[2].lines().split("\n")
    assert json.loads(head) == {"index": {"_index": "nbs", "_id": "2"}}
    assert json.loads(line) == body
    assert end == ""
    assert body["nbs"] == [str(v) for v in neighbours(2)]
    assert len(body["nbs"]) == 137


def test_bulk_items_map_to_results_in_input_order() -> None:
    r429 = item_result("a", {"status": 429, "error": {"type": "es_rejected", "reason": "x"}})
    assert r429.transient
    assert not r429.ok
    r404 = item_result("b", {"status": 404, "result": "not_found"})
    assert r404.error == "not_found"
    assert not r404.transient
    r400 = item_result("c", {"status": 400, "error": {"type": "mapper", "reason": "y"}})
    assert not r400.transient
    assert [r.id for r in in_order(["c", "a", "c"], {"a": r429, "c": r400})] == ["c", "a", "c"]


def test_bit_vectors_need_elasticsearch_8_15_and_are_detected_from_the_mapping() -> None:
    assert BIT_VECTORS not in server_features("elasticsearch", parse_version("8.14.3"))
    assert BIT_VECTORS in server_features("elasticsearch", parse_version("8.15.0"))
    assert BIT_VECTORS in server_features("elasticsearch", (9, 0))
    assert BIT_VECTORS not in server_features("opensearch", parse_version("2.19.6"))
    assert BIT_VECTORS not in server_features("opensearch", (3, 3))
    assert has_dense_bit({"x-v1": {"mappings": retrieval_mapping(True)}})
    assert not has_dense_bit({"x-v1": {"mappings": retrieval_mapping(False)}})
