"""The embedded index: durability, replacement, deletion, ranking, paging and concurrency."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastichash.codes import hamming_many
from elastichash.errors import UnsupportedQuery
from elastichash.index.base import Document, Failure, Index, SearchQuery
from elastichash.index.embedded import EmbeddedIndex


def make_docs(n: int, seed: int = 0, prefix: str = "d") -> list[Document]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    return [
        Document(
            f"{prefix}{i:05d}",
            codes[i].tobytes(),
            codes[i, :8].tobytes(),
            source=f"s{i}",
            metadata={"i": i},
        )
        for i in range(n)
    ]


def brute(docs: list[Document], q: bytes) -> list[tuple[int, str]]:
    codes = np.frombuffer(b"".join(d.code for d in docs), np.uint8).reshape(-1, 32)
    d = hamming_many(np.frombuffer(q, np.uint8), codes)
    return sorted((int(x), doc.id) for x, doc in zip(d, docs, strict=True))


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[EmbeddedIndex]:
    idx = EmbeddedIndex(tmp_path / "idx")
    await idx.open()
    yield idx
    await idx.close()


async def test_embedded_index_satisfies_the_protocol(index: EmbeddedIndex) -> None:
    assert isinstance(index, Index)
    assert await index.ready()


async def test_documents_survive_close_and_reopen(tmp_path: Path) -> None:
    docs = make_docs(300)
    docs[0] = Document(
        docs[0].id,
        docs[0].code,
        docs[0].short,
        thumbnail=b"\xff\xd8jpeg",
        thumbnail_url="http://t/0.jpg",
        metadata={"title": "x"},
    )
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    assert all(r.ok for r in await idx.upsert(docs))
    await idx.close()
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    try:
        assert await idx.count() == 300
        assert await idx.get(docs[0].id) == docs[0]
        res = await idx.search(SearchQuery(code=docs[7].code, short=docs[7].short, k=1))
        assert res.hits[0].id == docs[7].id
        assert res.hits[0].distance == 0
    finally:
        await idx.close()


async def test_upsert_replaces_the_code_and_the_old_code_is_not_found(tmp_path: Path) -> None:
    docs = make_docs(50)
    new = make_docs(1, seed=99)[0]
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    await idx.upsert(docs)
    await idx.upsert([Document(docs[3].id, new.code, new.short, source="new")])
    for strategy in ("exact", "two_stage"):
        old = await idx.search(SearchQuery(
                code=docs[3].code, short=docs[3].short, k=50, max_distance=0, strategy=strategy
            ))
        assert old.hits == []
        found = await idx.search(SearchQuery(
                code=new.code, short=new.short, k=1, strategy=strategy
            ))
        assert (found.hits[0].id, found.hits[0].distance, found.hits[0].source) == (
            docs[3].id,
            0,
            "new",
        )
    await idx.close()
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    assert await idx.count() == 50
    assert (await idx.search(SearchQuery(
            code=docs[3].code, short=docs[3].short, k=5, max_distance=0
        ))).hits == []
    await idx.close()


async def test_existing_names_the_indexed_ids_among_those_asked(index: EmbeddedIndex) -> None:
    docs = make_docs(5)
    await index.upsert(docs)
    await index.delete([docs[1].id])
    assert await index.existing([d.id for d in docs] + ["nope"]) == {
        docs[0].id, docs[2].id, docs[3].id, docs[4].id}
    assert await index.existing([]) == set()


async def test_delete_is_durable_and_missing_ids_report_not_found(tmp_path: Path) -> None:
    docs = make_docs(40)
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    await idx.upsert(docs)
    res = await idx.delete([docs[1].id, "nope"])
    assert [(r.ok, r.error) for r in res] == [(True, None), (False, "not_found")]
    assert (
        await idx.search(SearchQuery(
                code=docs[1].code, short=docs[1].short, k=3, max_distance=0, strategy="exact"
            ))
    ).hits == []
    await idx.close()
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    assert await idx.get(docs[1].id) is None
    assert await idx.count() == 39
    await idx.close()


async def test_exact_matches_brute_force_with_ties_by_id_and_stable_paging(
    index: EmbeddedIndex,
) -> None:
    docs = make_docs(400)
    # Duplicate codes under other ids force ties.
    docs += [Document(f"a{i:03d}", docs[0].code, docs[0].short) for i in range(30)]
    await index.upsert(docs)
    q = docs[0].code
    truth = brute(docs, q)
    for strategy in ("exact", "two_stage"):
        full = await index.search(SearchQuery(
                code=q, short=docs[0].short, k=100, strategy=strategy
            ))
        got = [(h.distance, h.id) for h in full.hits]
        if strategy == "exact":
            assert got == truth[:100]
            assert full.total == len(docs)
        else:
            assert got[:31] == truth[:31]  # everything at distance 0 is found by MIH
        pages = []
        for off in range(0, 60, 7):
            page = await index.search(SearchQuery(
                    code=q, short=docs[0].short, k=7, offset=off, strategy=strategy
                ))
            pages += [(h.distance, h.id) for h in page.hits]
        assert pages[:60] == got[:60]


async def test_k_and_max_distance_bound_the_results(index: EmbeddedIndex) -> None:
    docs = make_docs(500)
    await index.upsert(docs)
    q = docs[5].code
    truth = brute(docs, q)
    for strategy in ("exact", "two_stage"):
        res = await index.search(SearchQuery(
                code=q, short=docs[5].short, k=1000, max_distance=110, strategy=strategy
            ))
        assert all(h.distance <= 110 for h in res.hits)
        if strategy == "exact":
            assert [(h.distance, h.id) for h in res.hits] == [t for t in truth if t[0] <= 110]
            assert res.total == len(res.hits)
    assert len((await index.search(SearchQuery(
            code=q, short=docs[5].short, k=3, strategy="exact"
        ))).hits) == 3


async def test_queries_it_cannot_serve_are_refused_naming_the_field(
    index: EmbeddedIndex,
) -> None:
    code, short = bytes(32), bytes(8)
    cases = [
        ({"strategy": "dense_bit"}, "strategy"),
    ]
    for kwargs, field_name in cases:
        with pytest.raises(UnsupportedQuery) as exc:
            await index.search(SearchQuery(code=code, short=short, **kwargs))
        assert exc.value.field == field_name
    with pytest.raises(UnsupportedQuery, match="Elasticsearch-only"):
        await index.search(SearchQuery(code=code, short=short, strategy="dense_bit"))


async def test_bad_documents_fail_alone(index: EmbeddedIndex) -> None:
    good = make_docs(2)
    res = await index.upsert(
        [
            good[0],
            Document("bad id!", bytes(32), bytes(8)),
            Document("short", bytes(32), bytes(4)),
            good[1],
        ]
    )
    assert [r.ok for r in res] == [True, False, False, True]
    assert await index.count() == 2


async def test_failures_are_kept_newest_first_and_cleared_by_a_later_upsert(
    index: EmbeddedIndex,
) -> None:
    await index.record_failures(
        [
            Failure("f1", "corrupt", "bad jpeg", "a.jpg", 1.0),
            Failure("f2", "truncated", "cut", None, 2.0),
        ]
    )
    assert [f.id for f in await index.recent_failures(10)] == ["f2", "f1"]
    assert (await index.get_failure("f1")) == Failure("f1", "corrupt", "bad jpeg", "a.jpg", 1.0)
    await index.upsert([Document("f1", bytes(32), bytes(8))])
    assert await index.get_failure("f1") is None


async def test_searches_during_writes_see_consistent_results(index: EmbeddedIndex) -> None:
    base = make_docs(2000)
    await index.upsert(base)
    q = base[10]
    stop = asyncio.Event()

    async def writer() -> None:
        for s in range(0, 6000, 500):
            await index.upsert(make_docs(500, seed=s + 1, prefix=f"w{s}_"))
            # replace the query's document with itself: it must never disappear
            await index.upsert([q])
        stop.set()

    async def reader() -> int:
        n = 0
        while not stop.is_set():
            for strategy in ("exact", "two_stage"):
                res = await index.search(SearchQuery(
                        code=q.code, short=q.short, k=5, strategy=strategy
                    ))
                assert res.hits
                assert res.hits[0].id == q.id
                assert res.hits[0].distance == 0
                n += 1
        return n

    _, n1, n2 = await asyncio.gather(writer(), reader(), reader())
    assert n1 + n2 > 0
    assert await index.count() == 8000


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**31), flips=st.lists(st.integers(0, 63), max_size=11, unique=True))
async def test_two_stage_finds_every_code_within_short_distance_11(
    tmp_path: Path, seed: int, flips: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    target = codes[0].copy()
    for b in flips:  # flip up to 11 of the 64 short bits (the first 8 bytes here)
        target[b // 8] ^= 1 << (7 - b % 8)
    codes[1] = target
    docs = [Document(f"p{i}", c.tobytes(), c[:8].tobytes()) for i, c in enumerate(codes)]
    idx = EmbeddedIndex(tmp_path / f"h{seed}_{len(flips)}")
    await idx.open()
    try:
        await idx.upsert(docs)
        res = await idx.search(SearchQuery(
                code=docs[0].code, short=docs[0].short, k=1000, strategy="two_stage"
            ))
        found = {h.id for h in res.hits}
        shorts = codes[:, :8]
        within = hamming_many(codes[0, :8], shorts) <= 11
        assert {f"p{i}" for i in np.flatnonzero(within)} <= found
        assert "p1" in found
        exact = await idx.search(SearchQuery(
                code=docs[0].code, short=docs[0].short, k=1000, strategy="exact"
            ))
        ranked = {h.id: h.distance for h in exact.hits}
        assert all(ranked[h.id] == h.distance for h in res.hits)
    finally:
        await idx.close()


async def test_memory_per_code_stays_under_64_bytes(tmp_path: Path) -> None:
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    await idx.upsert(make_docs(20000))
    await idx.close()
    idx = EmbeddedIndex(tmp_path)
    await idx.open()
    stats = await idx.stats()
    await idx.close()
    # 57 B per code plus fixed 1 MiB of MIH offsets and 4096 slots of headroom.
    assert stats["memory_bytes"] <= 57 * 20000 + (1 << 20) + 4096 * 57 + 65536


async def test_a_search_does_not_wait_for_a_commit_to_reach_the_disk(
    index: EmbeddedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_docs(200)
    await index.upsert(base)
    new = make_docs(1, seed=99, prefix="new")[0]
    store = index._store
    committing, disk = threading.Event(), threading.Event()
    commit = store.commit

    def slow_commit() -> None:  # an fsync on a busy disk
        committing.set()
        assert disk.wait(10)
        commit()

    monkeypatch.setattr(store, "commit", slow_commit)
    write = asyncio.ensure_future(index.upsert([new]))
    try:
        assert await asyncio.to_thread(committing.wait, 10)
        res = await asyncio.wait_for(
            index.search(SearchQuery(code=new.code, short=new.short, k=3, strategy="exact")), 5)
        assert res.hits[0].id != new.id  # answered from before the write
    finally:
        disk.set()
    assert (await write)[0].ok
    res = await index.search(SearchQuery(code=new.code, short=new.short, k=3, strategy="exact"))
    assert res.hits[0].id == new.id


async def test_a_search_between_a_commit_and_its_publication_waits_for_it_not_a_short_page(
    index: EmbeddedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_docs(200)
    await index.upsert(base)
    q = base[7]
    store = index._store
    committed, publish = threading.Event(), threading.Event()
    commit = store.commit

    def commit_then_stall() -> None:  # the database is now a commit ahead of memory
        commit()
        committed.set()
        assert publish.wait(10)

    waiting = threading.Event()
    wait_newer = index._wait_newer

    def note_wait(snap: object) -> None:
        waiting.set()
        wait_newer(snap)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "commit", commit_then_stall)
    monkeypatch.setattr(index, "_wait_newer", note_wait)
    write = asyncio.ensure_future(index.upsert([q]))  # q replaced by itself: a new row
    try:
        assert await asyncio.to_thread(committed.wait, 10)
        search = asyncio.ensure_future(
            index.search(SearchQuery(code=q.code, short=q.short, k=5, strategy="exact")))
        assert await asyncio.to_thread(waiting.wait, 10), "the search did not notice"
    finally:
        publish.set()
    res = await search
    assert [h.id for h in res.hits][:1] == [q.id]
    assert res.hits[0].distance == 0
    assert len(res.hits) == 5
    assert (await write)[0].ok
