"""The protocol test server behaves like Elasticsearch 8 where the backend depends on it:
media-type headers, the product header, strictness and ES-shaped errors. The strictness
tests also run against a live cluster (ES_URL), which keeps the server honest."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError

from elastichash.index.es.script import HAMMING_SCRIPT_ID

V8 = "application/vnd.elasticsearch+json; compatible-with=8"
V9 = "application/vnd.elasticsearch+json; compatible-with=9"


async def raw(url: str, method: str, path: str, headers: dict[str, str],
              body: Any = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as s, s.request(
        method, url + path, headers=headers, data=None if body is None else json.dumps(body)
    ) as r:
        text = await r.text()
        return r.status, dict(r.headers), json.loads(text) if text else None


async def test_a_9x_client_media_type_is_refused_like_elasticsearch_8(es_url: str) -> None:
    status, headers, body = await raw(es_url, "POST", "/_count", {"Accept": V9,
                                                                  "Content-Type": V9}, {})
    assert status == 400
    assert body["error"]["type"] == "media_type_header_exception"
    assert body["error"]["root_cause"][0]["type"] == "media_type_header_exception"
    assert "found 9" in body["error"]["caused_by"]["reason"]
    assert body["status"] == 400
    assert headers.get("X-Elastic-Product") == "Elasticsearch"


async def test_8x_media_types_are_answered_with_the_product_header(es_url: str) -> None:
    status, headers, body = await raw(es_url, "GET", "/", {"Accept": V8})
    assert status == 200
    assert body["version"]["number"].startswith("8.")
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert "compatible-with=8" in headers["Content-Type"]


async def test_mismatched_accept_and_content_type_versions_are_refused(es_url: str) -> None:
    status, _, body = await raw(es_url, "POST", "/_count",
                                {"Accept": V8, "Content-Type": "application/json"}, {})
    assert status == 400
    assert body["error"]["type"] == "media_type_header_exception"


async def test_the_real_client_passes_its_product_check(es_client: AsyncElasticsearch) -> None:
    info = await es_client.info()
    assert info["tagline"] == "You Know, for Search"


async def test_an_unknown_query_parameter_is_a_400(es_client: AsyncElasticsearch,
                                                   es_index: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        await es_client.perform_request("GET", f"/{es_index.names.alias}/_count?bogus=1",
                                        headers={"accept": "application/json"})
    assert exc.value.error == "illegal_argument_exception"
    assert "unrecognized parameter: [bogus]" in str(exc.value.body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"query": {"match_all": {}}, "sizee": 3}, "parsing_exception"),
        ({"query": {"no_such_query": {}}}, "parsing_exception"),
        ({"query": {"bool": {"should": [], "shoud": []}}}, ("parsing_exception",
                                                           "x_content_parse_exception")),
        ({"query": {"match_all": {}}, "sort": [{"_id": "asc"}]}, "illegal_argument_exception"),
        ({"query": {"script_score": {"query": {"match_all": {}},
                                     "script": {"source": "Math.random() +", "params": {}}}}},
         "script_exception"),
    ],
)
async def test_malformed_searches_are_refused_with_elasticsearch_errors(
    es_client: AsyncElasticsearch, es_index: Any, body: dict[str, Any], error: Any
) -> None:
    with pytest.raises(ApiError) as exc:
        await es_client.search(index=es_index.names.alias, body=body)
    assert exc.value.status_code == 400
    errors = error if isinstance(error, tuple) else (error,)
    assert exc.value.body["error"]["type"] in errors or exc.value.body["error"][
        "root_cause"][0]["type"] in errors


async def test_an_unknown_mapping_parameter_is_refused(es_client: AsyncElasticsearch) -> None:
    with pytest.raises(BadRequestError) as exc:
        await es_client.indices.create(
            index="eh-test-badmapping",
            mappings={"properties": {"f0": {"type": "keyword", "indexx": False}}},
        )
    assert exc.value.error == "mapper_parsing_exception"


async def test_strict_mapping_and_write_block_fail_single_bulk_items(
    es_client: AsyncElasticsearch, es_index: Any
) -> None:
    resp = await es_client.bulk(operations=[
        {"index": {"_index": es_index.names.alias, "_id": "a"}}, {"stray": 1},
        {"index": {"_index": es_index.names.nbs, "_id": "1"}}, {"nbs": ["1"]},
    ])
    assert resp["errors"]
    first, second = (next(iter(i.values())) for i in resp["items"])
    assert (first["status"], first["error"]["type"]) == (400, "strict_dynamic_mapping_exception")
    assert (second["status"], second["error"]["type"]) == (403, "cluster_block_exception")


async def test_unknown_stored_script_sources_are_refused(es_client: AsyncElasticsearch) -> None:
    with pytest.raises(BadRequestError) as exc:
        await es_client.put_script(id="eh-test-bad", script={"lang": "painless",
                                                             "source": "doc['x'].value +"})
    assert exc.value.error == "script_exception"


async def test_the_stored_hamming_script_is_there_after_bootstrap(
    es_client: AsyncElasticsearch, es_index: Any
) -> None:
    got = await es_client.get_script(id=HAMMING_SCRIPT_ID)
    assert "Long.bitCount(doc['r3'].value ^ params.r3)" in got["script"]["source"]


async def test_missing_index_errors_are_shaped_like_elasticsearch(
    es_client: AsyncElasticsearch,
) -> None:
    with pytest.raises(ApiError) as exc:
        await es_client.count(index="eh-test-does-not-exist")
    assert exc.value.status_code == 404
    err = exc.value.body["error"]
    assert err["type"] == "index_not_found_exception"
    assert err["root_cause"][0]["index"] == "eh-test-does-not-exist"
