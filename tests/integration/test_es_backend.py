"""The engine backend's contract, run by every engine: the stand-in (protocol test server,
which also runs the fault-injection tests) and the real engine the test command starts
(OpenSearch; or ES_URL / OPENSEARCH_URL). Each engine subclasses :class:`EngineContract`.

Parity: two_stage results equal the embedded backend's, and a brute-force reference's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from elastichash.codes import hamming_many, radius_masks, subcodes, subcodes_array
from elastichash.errors import Unavailable, UnsupportedQuery
from elastichash.index.base import Document, Failure, SearchQuery
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.es.bulk import BulkPolicy
from elastichash.index.es.client import WrongEngine
from elastichash.index.es.mapping import BIT_VECTORS
from elastichash.index.es.neighbours import NBS_DOCS
from elastichash.index.es.script import HAMMING_SCRIPT_ID, HAMMING_SCRIPT_SOURCE
from tests.engines import Engine, drop, make_index, through_search_service

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


class EngineContract:
    """What every engine must do; a subclass provides the ``engine`` fixture."""

    @pytest.fixture
    async def loaded(self, engine_index: EngineIndex) -> AsyncIterator[tuple[EngineIndex,
                                                                           list[Document]]]:
        docs = make_docs(np.random.default_rng(7), N_DOCS)
        results = await engine_index.upsert(docs)
        assert all(r.ok for r in results)
        await engine_index.refresh()
        return engine_index, docs

    async def test_two_stage_equals_embedded_and_reference_over_200_queries(
        self, loaded: tuple[EngineIndex, list[Document]], tmp_path: Path
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
        self, loaded: tuple[EngineIndex, list[Document]],
    ) -> None:
        es, docs = loaded
        codes = np.frombuffer(b"".join(d.code for d in docs), np.uint8).reshape(-1, 32)
        strategies = ["exact"] + (["dense_bit"] if BIT_VECTORS in es.features else [])
        for code, short, k, offset, maxd in queries(docs, 20):
            dist = hamming_many(code, codes)
            ranked = sorted((int(dist[i]), d.id) for i, d in enumerate(docs)
                            if maxd is None or dist[i] <= maxd)
            for strategy in strategies:
                got = await es.search(SearchQuery(
                    code=code, short=short, k=k, offset=offset, max_distance=maxd,
                    strategy=strategy,
                ))
                assert [(h.distance, h.id) for h in got.hits] == ranked[offset: offset + k]
                assert (got.total, got.candidates) == (len(ranked), len(docs))

    async def test_hits_carry_document_fields_and_get_round_trips(
        self, loaded: tuple[EngineIndex, list[Document]],
    ) -> None:
        es, docs = loaded
        got = await es.search(SearchQuery(code=docs[3].code, short=docs[3].short, k=1))
        assert got.hits[0].id == docs[3].id
        assert got.hits[0].distance == 0
        assert got.hits[0].source == docs[3].source
        assert got.hits[0].metadata == {"n": 3}
        thumb = Document(id="thumb", code=docs[0].code, short=docs[0].short,
                         thumbnail=b"\xff\xd8jpg")
        await es.upsert([thumb])
        assert await es.get("thumb") == thumb  # realtime: no refresh needed
        assert await es.get("missing") is None

    async def test_search_refuses_what_the_index_cannot_serve(
        self, engine_index: EngineIndex
    ) -> None:
        code, short = bytes(32), bytes(8)
        query = SearchQuery(code=code, short=short, strategy="dense_bit")
        if BIT_VECTORS not in engine_index.features:
            assert "dense_bit" not in (await engine_index.capabilities()).strategies
            with pytest.raises(UnsupportedQuery, match=r"8\.15"):
                await engine_index.search(query)
        else:  # an engine that has bit vectors serves the strategy it declares
            assert "dense_bit" in (await engine_index.capabilities()).strategies
            assert (await engine_index.search(query)).strategy == "dense_bit"

    async def test_writes_become_searchable_after_refresh_but_get_is_realtime(
        self, engine_index: EngineIndex,
    ) -> None:
        doc = make_docs(np.random.default_rng(1), 1)[0]
        assert [r.ok for r in await engine_index.upsert([doc])] == [True]
        assert (await engine_index.get(doc.id)) is not None
        assert await engine_index.existing([doc.id, "missing"]) == {doc.id}  # realtime too
        assert (await engine_index.search(SearchQuery(
                code=doc.code, short=doc.short
            ))).total == 0  # refresh_interval -1
        await engine_index.refresh()
        assert [h.id for h in (await engine_index.search(SearchQuery(
                code=doc.code, short=doc.short
            ))).hits] == [doc.id]

    async def test_reindexing_an_id_replaces_its_code_and_delete_removes_it(
        self, engine_index: EngineIndex,
    ) -> None:
        a, b = make_docs(np.random.default_rng(2), 2)
        moved = Document(id=a.id, code=b.code, short=b.short)
        results = await engine_index.upsert([a, moved])  # the same id twice: the last one wins
        assert [r.ok for r in results] == [True, True]
        await engine_index.refresh()
        assert (await engine_index.search(SearchQuery(
                code=a.code, short=a.short, max_distance=0
            ))).hits == []
        assert [h.id for h in (await engine_index.search(SearchQuery(
                code=b.code, short=b.short, max_distance=0
            ))).hits] == [a.id]
        deleted = await engine_index.delete([a.id, "never-there"])
        assert deleted[0].ok
        assert not deleted[1].ok
        assert deleted[1].error == "not_found"
        await engine_index.refresh()
        assert await engine_index.count() == 0

    async def test_failure_records_are_kept_newest_first_and_cleared_by_a_later_write(
        self, engine_index: EngineIndex,
    ) -> None:
        await engine_index.record_failures([
            Failure(id="x1", reason="corrupt", message="bad header", source="a.jpg", at=10.0),
            Failure(id="x2", reason="truncated", message="eof", at=20.0),
        ])
        assert (await engine_index.get_failure("x1")) == Failure(
            "x1", "corrupt", "bad header", "a.jpg", 10.0
        )
        await engine_index.refresh()
        assert [f.id for f in await engine_index.recent_failures()] == ["x2", "x1"]
        doc = make_docs(np.random.default_rng(3), 1)[0]
        await engine_index.upsert([Document(id="x1", code=doc.code, short=doc.short)])
        assert await engine_index.get_failure("x1") is None

    async def test_bootstrap_twice_is_a_no_op(
        self, engine: Engine, engine_index: EngineIndex
    ) -> None:
        names = engine_index.names
        before = [await engine_index.client.get_settings(i)
                  for i in (names.alias, names.nbs, names.failures)]
        script = await engine_index.client.get_script(HAMMING_SCRIPT_ID)
        mark = len(engine.server.log) if engine.server else 0
        again = EngineIndex(engine.url, names.alias, kind=engine.kind, nbs_index=names.nbs)
        await again.open()
        await again.close()
        after = [await engine_index.client.get_settings(i)
                 for i in (names.alias, names.nbs, names.failures)]
        # Same concrete indices (uuids), same settings (the neighbours index still complete and
        # write-blocked), the same stored script.
        assert before == after
        assert script == HAMMING_SCRIPT_SOURCE
        assert await engine_index.client.get_script(HAMMING_SCRIPT_ID) == script
        assert await engine_index.client.count(names.nbs) == NBS_DOCS
        if engine.server is not None:  # the stand-in logs requests: no write was sent
            writes = [r for r in engine.server.log[mark:] if r[0] not in ("GET", "HEAD")
                      and not r[1].split("?")[0].endswith(("/_count", "/_search"))]
            assert writes == []

    async def test_the_neighbours_index_holds_the_radius_2_ball_of_every_subcode(
        self, engine_index: EngineIndex,
    ) -> None:
        client, nbs = engine_index.client, engine_index.names.nbs
        masks = radius_masks()
        for value in (0, 1, 0xBEEF, 0xFFFF):
            src = await client.get(nbs, str(value))
            assert src is not None
            assert sorted(int(v) for v in src["nbs"]) == sorted(int(value ^ m) for m in masks)
        assert len(masks) == 137

    async def test_concurrent_searches_share_one_client(
        self, loaded: tuple[EngineIndex, list[Document]],
    ) -> None:
        es, docs = loaded
        got = await asyncio.gather(*(es.search(SearchQuery(
                code=d.code, short=d.short, k=1
            )) for d in docs[:20]))
        assert [r.hits[0].id for r in got] == [d.id for d in docs[:20]]

    async def test_a_gateway_counts_an_engine_index_through_the_search_service(
        self, engine_index: EngineIndex,
    ) -> None:
        """The distributed wiring of docker-compose: gateway -> RemoteIndex -> search service ->
        the engine. RemoteIndex.count() reads the service's stats, which every backend must
        answer with a 'count'."""
        docs = make_docs(np.random.default_rng(9), 3)
        await engine_index.upsert(docs)
        await engine_index.refresh()
        async with through_search_service(engine_index) as remote:
            assert await remote.count() == 3
            assert (await remote.stats())["count"] == 3


class TestStandIn(EngineContract):
    """The protocol test server: the contract, and the faults only it can inject."""

    @pytest.fixture
    def engine(self, stand_in: Engine) -> Engine:
        return stand_in

    async def test_429s_are_retried_for_the_failed_items_only(
        self, engine_index: EngineIndex, stand_in: Engine
    ) -> None:
        es_server = stand_in.server
        assert es_server is not None
        docs = make_docs(np.random.default_rng(4), 6)
        ids = [d.id for d in docs]
        es_server.faults.reject_items(ids[:2], 429, times=2)  # recovers within 3 retries
        es_server.faults.reject_items([ids[2]], 429, times=10)  # never within the budget
        es_server.faults.reject_items([ids[3]], 500, times=1)  # not retryable
        es_server.faults.item_attempts.clear()
        results = await engine_index.upsert(docs)
        assert [r.id for r in results] == ids
        assert [r.ok for r in results] == [True, True, False, False, True, True]
        assert results[2].transient
        assert "es_rejected_execution_exception" in (results[2].error or "")
        assert not results[3].transient
        attempts = es_server.faults.item_attempts
        assert [attempts[(engine_index.names.concrete, i)] for i in ids] == [3, 3, 4, 1, 1, 1]
        for doc, result in zip(docs, results, strict=True):
            assert (await engine_index.get(doc.id) is not None) == result.ok

    async def test_copies_of_an_id_that_stood_aside_share_the_failure_of_the_written_one(
        self, engine_index: EngineIndex, stand_in: Engine
    ) -> None:
        # Superseded means the index holds this upload or a newer one: not so when the copy
        # written instead failed, so the others fail with it (and are retried with it). The
        # invalid copy fails on its own and hides neither.
        es_server = stand_in.server
        assert es_server is not None
        a, b = make_docs(np.random.default_rng(12), 2)
        old, new = replace(a, version=1), replace(a, version=2)
        cut = Document(a.id, a.code[:5], a.short, version=3)
        # 429 until the retries run out (1 + 3 attempts); 500 is not retried.
        for status, times, transient in ((500, 1, False), (429, 4, True)):
            es_server.faults.reject_items([a.id], status, times=times)
            results = await engine_index.upsert([old, new, cut, b])
            assert [(r.id, r.ok, r.transient) for r in results] == [
                (a.id, False, transient), (a.id, False, transient), (a.id, False, False),
                (b.id, True, False)]
            assert results[0] == results[1]
            assert "code must be 32 bytes" in (results[2].error or "")
            assert await engine_index.get(a.id) is None

    async def test_an_outage_fails_readiness_and_writes_until_it_recovers(
        self, engine_index: EngineIndex, stand_in: Engine
    ) -> None:
        es_server = stand_in.server
        assert es_server is not None
        docs = make_docs(np.random.default_rng(5), 4)
        pending = list(docs)  # what an indexer has not acked yet
        es_server.faults.set_outage(True)
        assert not await engine_index.ready()
        # Nothing answered: one error for the batch, so a worker retries it in place.
        with pytest.raises(Unavailable, match="wrote none of 4"):
            await engine_index.upsert(pending)
        with pytest.raises(Unavailable):
            await engine_index.search(SearchQuery(code=docs[0].code, short=docs[0].short))
        with pytest.raises(Unavailable):
            await anext(engine_index.scan())
        es_server.faults.set_outage(False)
        assert await engine_index.ready()
        results = await engine_index.upsert(pending)
        assert all(r.ok for r in results)
        await engine_index.refresh()
        assert await engine_index.count() == 4

    async def test_whole_request_503_is_retried_and_a_timeout_fails_the_batch(
        self, stand_in: Engine
    ) -> None:
        es_server = stand_in.server
        assert es_server is not None
        idx = make_index(stand_in, request_timeout_s=1.0,
                         bulk=BulkPolicy(max_retries=1, initial_backoff_s=0.01))
        await idx.open()
        try:
            docs = make_docs(np.random.default_rng(6), 2)
            es_server.faults.fail_requests(503, path=r"/_bulk$", times=1)
            assert all(r.ok for r in await idx.upsert(docs[:1]))
            es_server.faults.delay(3.0, path=r"/_bulk$")
            with pytest.raises(Unavailable, match="wrote none of 1"):
                await idx.upsert(docs[1:])
        finally:
            es_server.faults.clear()
            await drop(idx)
            await idx.close()


class TestRealEngine(EngineContract):
    """The real engine: OpenSearch started by the test command, or ES_URL / OPENSEARCH_URL."""

    @pytest.fixture
    def engine(self, real_engine: Engine) -> Engine:
        return real_engine


async def test_the_wrong_client_for_an_engine_names_the_right_backend(
    stand_in: Engine, real_engine: Engine
) -> None:
    """The Elasticsearch client refuses OpenSearch (product check) and the OpenSearch adapter
    refuses Elasticsearch: either way the error names the backend that would work."""
    other = {"elasticsearch": "opensearch", "opensearch": "elasticsearch"}
    for engine in (stand_in, real_engine):
        wrong = EngineIndex(engine.url, "eh-test-wrong", kind=other[engine.kind],
                            nbs_index="eh-test-wrong-nbs")
        with pytest.raises(WrongEngine) as exc:
            await wrong.open()
        await wrong.close()
        assert exc.value.found == engine.kind
        assert f"EH_*_INDEX__BACKEND={engine.kind}" in exc.value.message


def test_the_engine_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from search_service.config import SearchServiceSettings

    monkeypatch.setenv("EH_SEARCH_INDEX__BACKEND", "opensearch")
    monkeypatch.setenv("EH_SEARCH_INDEX__ENGINE__URL", "http://os:9200")
    monkeypatch.setenv("EH_SEARCH_INDEX__ENGINE__SHARDS", "3")
    index = SearchServiceSettings().index
    assert (index.engine.kind, index.engine.url, index.engine.shards) == (
        "opensearch", "http://os:9200", 3)
    built = EngineIndex.from_settings(index)
    assert (built.kind, built.url, built.layout.shards) == ("opensearch", "http://os:9200", 3)
    # The flat names of earlier releases are still read.
    monkeypatch.delenv("EH_SEARCH_INDEX__ENGINE__URL")
    monkeypatch.setenv("EH_SEARCH_INDEX__ES_URL", "http://old:9200")
    assert SearchServiceSettings().index.engine.url == "http://old:9200"
