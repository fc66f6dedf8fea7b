"""The Elasticsearch backend against the protocol test server (or a live cluster: ES_URL).

Parity: two_stage results equal the embedded backend's, and a brute-force reference's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from elastichash.codes import hamming_many, subcodes, subcodes_array
from elastichash.errors import Unavailable, UnsupportedQuery
from elastichash.index.base import Document, Failure, SearchQuery
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import ElasticsearchIndex
from elastichash.index.es.bulk import BulkPolicy
from tests.esserver.server import EsTestServer
from tests.esserver.support import LIVE, drop, make_index, needs_test_server

pytest_plugins = ["tests.esserver.fixtures"]

N_DOCS = 600
N_QUERIES = 200


def make_docs(rng: np.random.Generator, n: int) -> list[Document]:
    """Clustered codes so that queries have MIH candidates at small and medium distances."""
    centres = rng.integers(0, 256, (12, 32), dtype=np.uint8)
    out = []
    for i in range(n):
        bits = np.unpackbits(centres[i % len(centres)])
        flips = rng.choice(256, size=int(rng.integers(0, 40)), replace=False)
        bits[flips] ^= 1
        code = np.packbits(bits)
        out.append(Document(id=f"img-{i:04d}", code=code.tobytes(), short=code[:8].tobytes(),
                            source=f"file://{i}.jpg", metadata={"n": i}))
    return out


def reference(docs: list[Document], code: bytes, short: bytes, k: int, offset: int,
              max_distance: int | None) -> tuple[list[tuple[int, str]], int, int]:
    """Brute force two_stage: (page of (distance, id), total, candidates)."""
    codes = np.frombuffer(b"".join(d.code for d in docs), np.uint8).reshape(-1, 32)
    subs = subcodes_array(np.frombuffer(b"".join(d.short for d in docs), np.uint8).reshape(-1, 8))
    q = np.array(subcodes(short), dtype=np.uint16)
    near = np.bitwise_count(subs ^ q) <= 2
    cand = near.any(axis=1)
    dist = hamming_many(code, codes)
    keep = cand & (dist <= (256 if max_distance is None else max_distance))
    ranked = sorted((int(dist[i]), docs[i].id) for i in np.flatnonzero(keep))
    return ranked[offset: offset + k], int(keep.sum()), int(cand.sum())


@pytest.fixture
async def loaded(es_index: ElasticsearchIndex) -> AsyncIterator[tuple[ElasticsearchIndex,
                                                                       list[Document]]]:
    docs = make_docs(np.random.default_rng(7), N_DOCS)
    results = await es_index.upsert(docs)
    assert all(r.ok for r in results)
    await es_index.refresh()
    return es_index, docs


def queries(docs: list[Document], n: int) -> list[tuple[bytes, bytes, int, int, int | None]]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        bits = np.unpackbits(np.frombuffer(docs[int(rng.integers(len(docs)))].code, np.uint8))
        bits[rng.choice(256, size=int(rng.integers(0, 12)), replace=False)] ^= 1
        code = np.packbits(bits).tobytes()
        k, offset = [(10, 0), (25, 0), (5, 3), (1000, 0)][i % 4]
        max_distance = [None, 20, 45, None, 8][i % 5]
        out.append((code, code[:8], k, offset, max_distance))
    return out


async def test_two_stage_equals_embedded_and_reference_over_200_queries(
    loaded: tuple[ElasticsearchIndex, list[Document]], tmp_path: Path
) -> None:
    es, docs = loaded
    embedded = EmbeddedIndex(tmp_path / "emb", strategy="two_stage")
    await embedded.open()
    try:
        assert all(r.ok for r in await embedded.upsert(docs))
        nonempty = 0
        for code, short, k, offset, maxd in queries(docs, N_QUERIES):
            got = await es.search(SearchQuery(
                    code=code, short=short, k=k, offset=offset, max_distance=maxd
                ))
            emb = await embedded.search(SearchQuery(
                    code=code, short=short, k=k, offset=offset, max_distance=maxd
                ))
            ref, total, cands = reference(docs, code, short, k, offset, maxd)
            pairs = [(h.distance, h.id) for h in got.hits]
            assert pairs == [(h.distance, h.id) for h in emb.hits]
            assert pairs == ref
            assert (got.total, got.candidates) == (total, cands) == (emb.total, emb.candidates)
            nonempty += bool(pairs)
        assert nonempty > N_QUERIES // 2
    finally:
        await embedded.close()


async def test_exact_and_dense_bit_rank_every_document(
    loaded: tuple[ElasticsearchIndex, list[Document]],
) -> None:
    es, docs = loaded
    codes = np.frombuffer(b"".join(d.code for d in docs), np.uint8).reshape(-1, 32)
    strategies = ["exact"] + (["dense_bit"] if es.dense_bit else [])
    for code, short, k, offset, maxd in queries(docs, 20):
        dist = hamming_many(code, codes)
        ranked = sorted((int(dist[i]), d.id) for i, d in enumerate(docs)
                        if maxd is None or dist[i] <= maxd)
        for strategy in strategies:
            got = await es.search(SearchQuery(
                    code=code, short=short, k=k, offset=offset, max_distance=maxd, strategy=strategy
                ))
            assert [(h.distance, h.id) for h in got.hits] == ranked[offset: offset + k]
            assert (got.total, got.candidates) == (len(ranked), len(docs))


async def test_hits_carry_document_fields_and_get_round_trips(
    loaded: tuple[ElasticsearchIndex, list[Document]],
) -> None:
    es, docs = loaded
    got = await es.search(SearchQuery(code=docs[3].code, short=docs[3].short, k=1))
    assert got.hits[0].id == docs[3].id
    assert got.hits[0].distance == 0
    assert got.hits[0].source == docs[3].source
    assert got.hits[0].metadata == {"n": 3}
    thumb = Document(id="thumb", code=docs[0].code, short=docs[0].short, thumbnail=b"\xff\xd8jpg")
    await es.upsert([thumb])
    assert await es.get("thumb") == thumb  # realtime: no refresh needed
    assert await es.get("missing") is None


async def test_search_refuses_what_the_index_cannot_serve(es_index: ElasticsearchIndex) -> None:
    code, short = bytes(32), bytes(8)
    for extra in ({"text": "cat"}, {"filter": {"source": "x"}}):
        with pytest.raises(UnsupportedQuery) as exc:
            await es_index.search(SearchQuery(code=code, short=short, **extra))
        assert exc.value.field in extra
    if not es_index.dense_bit:
        with pytest.raises(UnsupportedQuery, match=r"8\.15"):
            await es_index.search(SearchQuery(code=code, short=short, strategy="dense_bit"))


async def test_writes_become_searchable_after_refresh_but_get_is_realtime(
    es_index: ElasticsearchIndex,
) -> None:
    doc = make_docs(np.random.default_rng(1), 1)[0]
    assert [r.ok for r in await es_index.upsert([doc])] == [True]
    assert (await es_index.get(doc.id)) is not None
    assert (await es_index.search(SearchQuery(
            code=doc.code, short=doc.short
        ))).total == 0  # refresh_interval -1
    await es_index.refresh()
    assert [h.id for h in (await es_index.search(SearchQuery(
            code=doc.code, short=doc.short
        ))).hits] == [doc.id]


async def test_reindexing_an_id_replaces_its_code_and_delete_removes_it(
    es_index: ElasticsearchIndex,
) -> None:
    a, b = make_docs(np.random.default_rng(2), 2)
    moved = Document(id=a.id, code=b.code, short=b.short)
    results = await es_index.upsert([a, moved])  # the same id twice: the last one wins
    assert [r.ok for r in results] == [True, True]
    await es_index.refresh()
    assert (await es_index.search(SearchQuery(
            code=a.code, short=a.short, max_distance=0
        ))).hits == []
    assert [h.id for h in (await es_index.search(SearchQuery(
            code=b.code, short=b.short, max_distance=0
        ))).hits] == [a.id]
    deleted = await es_index.delete([a.id, "never-there"])
    assert deleted[0].ok
    assert not deleted[1].ok
    assert deleted[1].error == "not_found"
    await es_index.refresh()
    assert await es_index.count() == 0


async def test_failure_records_are_kept_newest_first_and_cleared_by_a_later_write(
    es_index: ElasticsearchIndex,
) -> None:
    await es_index.record_failures([
        Failure(id="x1", reason="corrupt", message="bad header", source="a.jpg", at=10.0),
        Failure(id="x2", reason="truncated", message="eof", at=20.0),
    ])
    assert (await es_index.get_failure("x1")) == Failure("x1", "corrupt", "bad header", "a.jpg",
                                                         10.0)
    await es_index.refresh()
    assert [f.id for f in await es_index.recent_failures()] == ["x2", "x1"]
    doc = make_docs(np.random.default_rng(3), 1)[0]
    await es_index.upsert([Document(id="x1", code=doc.code, short=doc.short)])
    assert await es_index.get_failure("x1") is None


async def test_bootstrap_twice_is_a_no_op(
    es_index: ElasticsearchIndex, es_server: EsTestServer | None
) -> None:
    before = await es_index.client.indices.get_settings(index=es_index.names.alias)
    mark = len(es_server.log) if es_server else 0
    again = ElasticsearchIndex(es_index._url, es_index.names.alias, nbs_index=es_index.names.nbs)
    await again.open()
    await again.close()
    after = await es_index.client.indices.get_settings(index=es_index.names.alias)
    assert before == after  # same concrete index (uuid), same settings
    if es_server is not None:
        writes = [r for r in es_server.log[mark:] if r[0] not in ("GET", "HEAD")
                  and not r[1].split("?")[0].endswith(("/_count", "/_search"))]
        assert writes == []


@needs_test_server
async def test_429s_are_retried_for_the_failed_items_only(
    es_index: ElasticsearchIndex, es_server: EsTestServer
) -> None:
    docs = make_docs(np.random.default_rng(4), 6)
    ids = [d.id for d in docs]
    es_server.faults.reject_items(ids[:2], 429, times=2)  # recovers within 3 retries
    es_server.faults.reject_items([ids[2]], 429, times=10)  # never within the budget
    es_server.faults.reject_items([ids[3]], 500, times=1)  # not retryable
    es_server.faults.item_attempts.clear()
    results = await es_index.upsert(docs)
    assert [r.id for r in results] == ids
    assert [r.ok for r in results] == [True, True, False, False, True, True]
    assert results[2].transient
    assert "es_rejected_execution_exception" in (results[2].error or "")
    assert not results[3].transient
    attempts = es_server.faults.item_attempts
    assert [attempts[(es_index.names.concrete, i)] for i in ids] == [3, 3, 4, 1, 1, 1]
    for doc, result in zip(docs, results, strict=True):
        assert (await es_index.get(doc.id) is not None) == result.ok


@needs_test_server
async def test_an_outage_fails_readiness_and_writes_transiently_until_it_recovers(
    es_index: ElasticsearchIndex, es_server: EsTestServer
) -> None:
    docs = make_docs(np.random.default_rng(5), 4)
    pending = list(docs)  # what an indexer has not acked yet
    es_server.faults.set_outage(True)
    assert not await es_index.ready()
    results = await es_index.upsert(pending)
    assert all(not r.ok and r.transient for r in results)
    pending = [d for d, r in zip(pending, results, strict=True) if not r.ok]
    assert len(pending) == 4
    with pytest.raises(Unavailable):
        await es_index.search(SearchQuery(code=docs[0].code, short=docs[0].short))
    es_server.faults.set_outage(False)
    assert await es_index.ready()
    results = await es_index.upsert(pending)
    assert all(r.ok for r in results)
    await es_index.refresh()
    assert await es_index.count() == 4


@needs_test_server
async def test_whole_request_503_is_retried_and_a_timeout_is_a_transient_failure(
    es_url: str, nbs_index: str, es_server: EsTestServer
) -> None:
    idx = make_index(es_url, nbs_index, request_timeout_s=0.3,
                     bulk=BulkPolicy(max_retries=1, initial_backoff_s=0.01))
    await idx.open()
    try:
        docs = make_docs(np.random.default_rng(6), 2)
        es_server.faults.fail_requests(503, path=r"/_bulk$", times=1)
        assert all(r.ok for r in await idx.upsert(docs[:1]))
        es_server.faults.delay(1.0, path=r"/_bulk$")
        results = await idx.upsert(docs[1:])
        assert not results[0].ok
        assert results[0].transient
    finally:
        es_server.faults.clear()
        await drop(idx)
        await idx.close()


async def test_concurrent_searches_share_one_client(
    loaded: tuple[ElasticsearchIndex, list[Document]],
) -> None:
    es, docs = loaded
    got = await asyncio.gather(*(es.search(SearchQuery(
            code=d.code, short=d.short, k=1
        )) for d in docs[:20]))
    assert [r.hits[0].id for r in got] == [d.id for d in docs[:20]]


def test_the_module_runs_live_when_es_url_is_set() -> None:
    assert isinstance(LIVE, bool)


async def test_a_gateway_counts_an_elasticsearch_index_through_the_search_service(
    es_index: ElasticsearchIndex,
) -> None:
    """The distributed wiring of docker-compose: gateway -> RemoteIndex -> search service ->
    Elasticsearch. RemoteIndex.count() reads the service's stats, which every backend must
    answer with a 'count'."""
    from aiohttp.test_utils import TestServer

    from elastichash.index.remote import RemoteIndex
    from search_service.app import create_app
    from search_service.config import SearchServiceSettings

    docs = make_docs(np.random.default_rng(9), 3)
    await es_index.upsert(docs)
    await es_index.refresh()
    served = ElasticsearchIndex(es_index._url, es_index.names.alias, nbs_index=es_index.names.nbs)
    async with TestServer(create_app(SearchServiceSettings(), index=served)) as server:
        remote = RemoteIndex(str(server.make_url("/")).rstrip("/"))
        await remote.open()
        try:
            assert await remote.count() == 3
            assert (await remote.stats())["count"] == 3
        finally:
            await remote.close()
