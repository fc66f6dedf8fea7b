"""Filtered search on the engine backend: the filter goes into the query's filter context
(term/terms/range on the derived ``filter`` object) and the results equal the embedded
backend's for the same documents, filters and strategies, on the stand-in and the real
engine. An index made before the filter object existed gains it through the
reindex-behind-alias path, values included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elastichash.index.base import SearchQuery
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.es import query as es_query
from elastichash.index.es.mapping import BIT_VECTORS, FILTER_OBJECT
from tests.datasets import FILTERS, make_docs, passes
from tests.engines import Engine, older_index


@pytest.fixture(params=["stand-in", "real engine"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(
        "stand_in" if request.param == "stand-in" else "real_engine")
    return found


async def test_filtered_search_equals_the_embedded_backend(
    engine_index: EngineIndex, tmp_path: Path
) -> None:
    docs = make_docs(np.random.default_rng(3))
    assert all(r.ok for r in await engine_index.upsert(docs))
    await engine_index.refresh()
    assert (await engine_index.capabilities()).filter
    embedded = EmbeddedIndex(tmp_path / "emb")
    await embedded.open()
    try:
        await embedded.upsert(docs)
        strategies = ["exact", "two_stage"] + (
            ["dense_bit"] if BIT_VECTORS in engine_index.features else [])
        rng = np.random.default_rng(5)
        nonempty = 0
        for spec in FILTERS:
            allowed = {d.id for d in docs if passes(d, spec)}
            for _ in range(2):
                q = docs[int(rng.integers(0, len(docs)))]
                for max_distance, offset, k in ((None, 0, 10), (6, 3, 40)):
                    for strategy in strategies:
                        query = SearchQuery(code=q.code, short=q.short, k=k, offset=offset,
                                            max_distance=max_distance, strategy=strategy,
                                            filter=spec)
                        got = await engine_index.search(query)
                        emb = await embedded.search(query.model_copy(update={
                            "strategy": "exact" if strategy == "dense_bit" else strategy}))
                        pairs = [(h.distance, h.id) for h in got.hits]
                        assert pairs == [(h.distance, h.id) for h in emb.hits], (spec, strategy)
                        assert got.total == emb.total, (spec, strategy)
                        assert {i for _, i in pairs} <= allowed
                        nonempty += bool(pairs)
        assert nonempty > len(FILTERS) * len(strategies)
    finally:
        await embedded.close()


async def test_an_index_without_the_filter_object_is_reindexed_with_its_values(
    engine: Engine,
) -> None:
    docs = make_docs(np.random.default_rng(8))[:60]
    async with older_index(engine, FILTER_OBJECT, docs) as (second, old):
        assert second.concrete == f"{second.names.alias}-v2" != old
        await second.refresh()
        spec = {"album": ["album-1", "album-2", "album-3"], "width": {"gte": 500}}
        q = docs[0]
        res = await second.search(SearchQuery(code=q.code, short=q.short, k=100,
                                              strategy="exact", filter=spec))
        want = sorted((int(np.bitwise_count(np.frombuffer(d.code, np.uint8)
                                            ^ np.frombuffer(q.code, np.uint8)).sum()), d.id)
                      for d in docs if passes(d, spec))
        assert want
        assert [(h.distance, h.id) for h in res.hits] == want
        assert [await second.get(d.id) for d in docs] == docs


def test_a_filter_becomes_term_terms_and_range_clauses() -> None:
    from elastichash.index import filters
    clauses = filters.parse({"album": "a", "tags": ["x", "y"], "width": 3,
                             "taken_at": {"gte": "2024-05-01", "lt": 1.8e9}})
    assert es_query.filter_clauses(clauses) == [
        {"term": {"filter.album": "a"}},
        {"terms": {"filter.tags": ["x", "y"]}},
        {"term": {"filter.width": 3.0}},
        {"range": {"filter.taken_at": {"gte": 1714521600.0, "lt": 1.8e9}}},
    ]
