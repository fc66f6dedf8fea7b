"""Differential test: one sequence of requests sent to the stand-in (tests/esserver) and to the
real engine gives the same answers: mappings, per-item bulk statuses and error types, hits in
order with distances, totals and candidates for every strategy with paging and
``max_distance``, gets, deletes, and the error types of malformed requests.

Each side goes through its own adapter (the stand-in speaks Elasticsearch 8, the real engine
is OpenSearch unless ES_URL names an Elasticsearch), so this also checks that the adapters
translate the two clients into the same protocol answers. Two differences are the engines'
own and are named here rather than hidden: Elasticsearch >= 8.15 maps the bit vector field
(OpenSearch has none), and Elasticsearch >= 8.8 calls a document that does not parse a
``document_parsing_exception`` where OpenSearch keeps ``mapper_parsing_exception``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from elastichash.index.base import Document, SearchQuery
from elastichash.index.es import EngineIndex
from elastichash.index.es.client import EngineApiError
from elastichash.index.es.script import DENSE_BIT_FIELD, HAMMING_SCRIPT_ID
from tests.engines import Engine, drop, make_index


def docs(n: int) -> list[Document]:
    rng = np.random.default_rng(31)
    centre = rng.integers(0, 256, 32, dtype=np.uint8)
    out = []
    for i in range(n):
        bits = np.unpackbits(centre)
        bits[rng.choice(256, size=int(rng.integers(0, 30)), replace=False)] ^= 1
        code = np.packbits(bits).tobytes()
        out.append(Document(id=f"d{i:03d}", code=code, short=code[:8], source=f"s{i}",
                            metadata={"i": i}))
    return out


# Engine differences, not stand-in bugs (see the module docstring).
SAME_ERROR = {"document_parsing_exception": "mapper_parsing_exception"}


def common_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in mapping["properties"].items() if k != DENSE_BIT_FIELD}
    return {**mapping, "properties": props}


async def outcome(call: Any) -> Any:
    """The answer of a call, or the type of its error: what must agree across engines."""
    try:
        return await call
    except EngineApiError as exc:
        return ("error", exc.status, exc.error_type)


async def sequence(idx: EngineIndex) -> dict[str, Any]:
    client, names = idx.client, idx.names
    data = docs(80)
    out: dict[str, Any] = {}
    concrete = idx.concrete
    mapping = await client.get_mapping(names.alias)
    out["mapping"] = common_mapping(mapping[concrete]["mappings"])
    out["script"] = await client.get_script(HAMMING_SCRIPT_ID)

    # Bulk through the backend (every item created), then raw items good and bad.
    out["upsert"] = [(r.ok, r.error) for r in await idx.upsert(data)]
    good = json.dumps({"id": "raw1", "f0": "1", "f1": "2", "f2": "3", "f3": "4",
                       "r0": 1, "r1": 2, "r2": 3, "r3": 4})
    lines = [
        ({"index": {"_index": names.alias, "_id": "raw1"}}, good),  # created
        ({"index": {"_index": names.alias, "_id": "raw1"}}, good),  # updated
        ({"index": {"_index": names.alias, "_id": "stray"}}, '{"stray": 1}'),  # strict mapping
        ({"index": {"_index": names.alias, "_id": "badlong"}}, '{"r0": "x"}'),  # not a long
        ({"index": {"_index": names.nbs, "_id": "1"}}, '{"nbs": ["1"]}'),  # write-blocked
        ({"delete": {"_index": names.alias, "_id": "never"}}, None),  # not found
        ({"delete": {"_index": names.alias, "_id": "raw1"}}, None),  # deleted
    ]
    ndjson = "".join(json.dumps(h) + "\n" + (b + "\n" if b else "") for h, b in lines)
    resp = await client.bulk(ndjson)
    out["bulk_errors"] = resp["errors"]
    items = []
    for item in resp["items"]:
        (op, info), = item.items()
        err = info.get("error") or {}
        kind = SAME_ERROR.get(err.get("type"), err.get("type"))
        items.append((op, info["_id"], info["status"], info.get("result"), kind))
    out["bulk_items"] = items

    # Search sees only refreshed writes; get is realtime.
    q0 = SearchQuery(code=data[0].code, short=data[0].short, k=5, strategy="exact")
    out["before_refresh"] = (await idx.search(q0)).total
    out["get_realtime"] = await idx.get(data[0].id) == data[0]
    await idx.refresh()

    searches = []
    for i, strategy in enumerate(("two_stage", "exact", "auto")):
        for k, offset, maxd in ((10, 0, None), (7, 3, None), (25, 0, 40), (5, 10, 55),
                                (1000, 0, None), (3, 0, 0)):
            d = data[(i * 7 + k) % len(data)]
            res = await idx.search(SearchQuery(code=d.code, short=d.short, k=k, offset=offset,
                                               max_distance=maxd, strategy=strategy))
            searches.append((strategy, k, offset, maxd, res.total, res.candidates,
                             [(h.id, h.distance, h.source, h.metadata) for h in res.hits]))
    out["searches"] = searches
    out["scan"] = [r.id for batch in [b async for b in idx.scan(batch=30)] for r in batch]

    out["gets"] = [await idx.get(i) for i in ("d005", "missing", "raw1")]
    out["deletes"] = [(r.ok, r.error) for r in await idx.delete(["d001", "d001", "nope"])]
    await idx.refresh()
    out["count_after_delete"] = await idx.count()

    # Malformed requests: the same error type.
    bad_bodies: list[dict[str, Any]] = [
        {"query": {"match_all": {}}, "sizee": 3},
        {"query": {"no_such_query": {}}},
        {"query": {"match_all": {}}, "size": -5},
        {"query": {"script_score": {"query": {"match_all": {}},
                                    "script": {"id": "eh-no-such-script", "params": {}}}}},
    ]
    out["bad_searches"] = [await outcome(client.search(names.alias, b)) for b in bad_bodies]
    out["missing_index"] = await outcome(client.count("eh-test-does-not-exist"))
    out["missing_get"] = await client.get(names.alias, "missing")
    out["exists"] = (await client.exists(names.alias), await client.exists("eh-test-nope"))
    out["failures"] = await idx.recent_failures()
    return out


@pytest.fixture
async def pair(stand_in: Engine, real_engine: Engine) -> AsyncIterator[tuple[EngineIndex,
                                                                               EngineIndex]]:
    a, b = make_index(stand_in), make_index(real_engine)
    await a.open()
    await b.open()
    yield a, b
    for idx in (a, b):
        await drop(idx)
        await idx.close()


async def test_the_stand_in_answers_like_the_real_engine(
    pair: tuple[EngineIndex, EngineIndex],
) -> None:
    stand_in, real = pair
    got, want = await sequence(stand_in), await sequence(real)
    assert want["searches"][0][-1], "the sequence must find something"
    assert any(s[-1] and s[3] is not None for s in want["searches"])
    for key in want:
        assert got[key] == want[key], key
