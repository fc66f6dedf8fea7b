"""Search within a subset: the filter language, and filtered embedded search against a brute
force over the documents that pass (exact ranking, ties by id, paging, totals), for selective
filters (the gathered path) and broad ones (the full scan that filters while ranking)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elastichash.errors import InvalidInput, UnsupportedQuery
from elastichash.index import filters
from elastichash.index.base import Document
from elastichash.index.code_table import SELECTIVE
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.query import SearchQuery
from tests.datasets import FILTERS, N, make_docs, passes


def reference(docs: list[Document], q: bytes, spec: dict[str, Any],
              max_distance: int | None) -> list[tuple[int, str]]:
    qa = np.frombuffer(q, np.uint8)
    out = []
    for d in docs:
        if passes(d, spec):
            dist = int(np.bitwise_count(np.frombuffer(d.code, np.uint8) ^ qa).sum())
            if max_distance is None or dist <= max_distance:
                out.append((dist, d.id))
    return sorted(out)




@pytest.fixture
async def loaded(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedIndex, list[Document]]]:
    docs = make_docs(np.random.default_rng(3))
    index = EmbeddedIndex(tmp_path / "idx")
    await index.open()
    await index.upsert(docs)
    yield index, docs
    await index.close()


async def test_filtered_exact_search_equals_brute_force_over_the_subset(
    loaded: tuple[EmbeddedIndex, list[Document]],
) -> None:
    index, docs = loaded
    rng = np.random.default_rng(4)
    shares = []
    for spec in FILTERS:
        shares.append(sum(passes(d, spec) for d in docs) / len(docs))
        for _ in range(4):
            q = docs[int(rng.integers(0, N))]
            for max_distance, offset, k in ((None, 0, 10), (6, 0, 50), (None, 7, 5)):
                res = await index.search(SearchQuery(
                    code=q.code, short=q.short, k=k, offset=offset, max_distance=max_distance,
                    strategy="exact", filter=spec))
                want = reference(docs, q.code, spec, max_distance)
                assert [(h.distance, h.id) for h in res.hits] == want[offset:offset + k], spec
                assert res.total == len(want)
    # Both paths ran: a filter under 1/SELECTIVE of the codes and one over it.
    assert min(shares) * SELECTIVE < 1 < max(shares) * SELECTIVE


async def test_filtered_two_stage_keeps_only_passing_mih_candidates(
    loaded: tuple[EmbeddedIndex, list[Document]],
) -> None:
    index, docs = loaded
    q = docs[11]
    for spec in FILTERS:
        res = await index.search(SearchQuery(code=q.code, short=q.short, k=1000,
                                             strategy="two_stage", filter=spec))
        allowed = {d.id for d in docs if passes(d, spec)}
        assert {h.id for h in res.hits} <= allowed
        # Every code within 11 bits shares a subcode within radius 2: none is missed.
        near = [(dist, i) for dist, i in reference(docs, q.code, spec, 11)]
        got = [(h.distance, h.id) for h in res.hits if h.distance <= 11]
        assert got == near


async def test_new_and_deleted_documents_change_what_a_filter_finds(
    loaded: tuple[EmbeddedIndex, list[Document]],
) -> None:
    index, docs = loaded
    spec = {"album": "fresh"}
    q = docs[0]
    query = SearchQuery(code=q.code, short=q.short, k=10, strategy="exact", filter=spec)
    assert (await index.search(query)).hits == []
    fresh = Document("new-1", q.code, q.short, metadata={"album": "fresh"})
    await index.upsert([fresh])
    assert [h.id for h in (await index.search(query)).hits] == ["new-1"]
    # Re-indexed without the album: its new row no longer passes.
    await index.upsert([Document("new-1", q.code, q.short, metadata={"album": "other"})])
    assert (await index.search(query)).hits == []
    await index.upsert([fresh])
    await index.delete(["new-1"])
    assert (await index.search(query)).hits == []


@pytest.mark.parametrize("spec", [
    {"colour": "red"}, {"album": 3}, {"album": []}, {"width": {"above": 3}},
    {"taken_at": {"gte": "yesterday"}}, {"width": "wide"},
])
async def test_a_malformed_filter_is_invalid_input_naming_the_filter(
    loaded: tuple[EmbeddedIndex, list[Document]], spec: Any,
) -> None:
    index, docs = loaded
    with pytest.raises((InvalidInput, UnsupportedQuery)) as err:
        await index.search(SearchQuery(code=docs[0].code, short=docs[0].short, filter=spec))
    assert err.value.field == "filter"


def test_dates_are_iso_days_date_times_or_unix_seconds() -> None:
    assert filters.to_seconds("2024-05-01", "t") == 1714521600.0
    assert filters.to_seconds("2024-05-01T02:00:00+02:00", "t") == 1714521600.0
    assert filters.to_seconds("2024-05-01T00:00:00", "t") == 1714521600.0  # UTC when no zone
    assert filters.to_seconds(1714521600, "t") == 1714521600.0
    [c] = filters.parse({"taken_at": {"gt": "2024-01-01", "gte": "2024-02-01", "lt": 2e9}})
    assert (c.lo, c.lo_open, c.hi, c.hi_open) == (1706745600.0, False, 2e9, True)


def test_ingest_fields_are_checked_and_tags_split() -> None:
    assert filters.ingest_metadata("rome", "a, b,a", "2024-05-01") == {
        "album": "rome", "tags": ["a", "b"], "taken_at": "2024-05-01"}
    for kwargs in ({"album": ""}, {"tags": [1]}, {"taken_at": "soon"}):
        with pytest.raises(InvalidInput) as err:
            filters.ingest_metadata(**kwargs)
        assert err.value.field == next(iter(kwargs))


@pytest.mark.timeout(180)
async def test_collection_fields_given_at_upload_filter_a_search_through_the_gateway(
    tmp_path: Path, model_path: Path,
) -> None:
    import aiohttp
    from aiohttp.test_utils import TestClient

    from tests.imagegen import make_image
    from tests.standalone import gateway_client, standalone_settings, wait_indexed

    async with gateway_client(standalone_settings(tmp_path, model_path), tmp_path) as client:
        client: TestClient  # type: ignore[no-redef]
        ids = []
        for album, seeds in (("rome", range(3)), ("oslo", range(3, 6))):
            form = aiohttp.FormData()
            form.add_field("album", album)
            form.add_field("tags", "trip")
            form.add_field("tags", album + "-city")
            form.add_field("taken_at", "2024-05-01" if album == "rome" else "2023-01-10")
            for s in seeds:
                form.add_field("file", make_image(s), filename=f"{s}.jpg",
                               content_type="image/jpeg")
            resp = await client.post("/v1/images", data=form)
            assert resp.status == 202, await resp.text()
            ids += [i["id"] for i in (await resp.json())["images"]]
        statuses = await wait_indexed(client, ids)
        meta = statuses[ids[0]]["metadata"]
        assert meta["album"] == "rome"
        assert meta["tags"] == ["trip", "rome-city"]
        assert meta["format"] == "jpeg"
        assert meta["ingested_at"] > 1.7e9

        async def found(spec: dict[str, Any]) -> set[str]:
            resp = await client.post("/v1/search", json={"id": ids[0], "k": 50, "filter": spec})
            body = await resp.json()
            assert resp.status == 200, body
            return {r["id"] for r in body["results"]}

        assert await found({"album": "rome"}) == set(ids[:3])
        assert await found({"tags": ["oslo-city"]}) == set(ids[3:])
        assert await found({"taken_at": {"gte": "2024-01-01"}, "tags": "trip"}) == set(ids[:3])
        assert await found({"album": "rome", "taken_at": {"lt": "2024-01-01"}}) == set()
        form = aiohttp.FormData()
        form.add_field("filter", '{"album": "oslo"}')
        form.add_field("file", make_image(4), filename="q.jpg", content_type="image/jpeg")
        body = await (await client.post("/v1/search", data=form)).json()
        assert {r["id"] for r in body["results"]} == set(ids[3:])

        resp = await client.post("/v1/search", json={"id": ids[0], "filter": {"colour": "red"}})
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "filter"
        bad = aiohttp.FormData()
        bad.add_field("taken_at", "someday")
        bad.add_field("file", make_image(9), filename="x.jpg", content_type="image/jpeg")
        resp = await client.post("/v1/images", data=bad)
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "taken_at"
