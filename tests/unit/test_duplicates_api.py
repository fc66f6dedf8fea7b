"""Near-duplicate groups through every layer: the embedded index, the search service and
``RemoteIndex`` (distributed mode), the gateway over a real model and the CLI.

The index-level tests plant near-duplicates among random codes and check the groups against
brute force; the gateway test uploads real images (one of them twice under two ids, one
re-encoded) and deletes through the API as a user of the Duplicates view would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from elastichash import cli
from elastichash.codes import select_bits
from elastichash.errors import InvalidInput
from elastichash.index.base import Document, DuplicatesResult
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.incoming import DuplicatePolicy, screen, skipped_duplicate_of
from elastichash.index.remote import RemoteIndex
from elastichash.settings import IndexSettings
from search_service.app import create_app
from search_service.config import SearchServiceSettings
from tests.datasets import SHORT, brute_groups, brute_pairs, planted_docs
from tests.imagegen import make_image
from tests.standalone import (
    gateway_client,
    standalone_settings,
    wait_indexed,
)

U8 = npt.NDArray[np.uint8]


def expected_groups(codes: U8, d: int) -> list[list[str]]:
    groups = [[f"img{i:04d}" for i in g] for g in brute_groups(len(codes), brute_pairs(codes, d))]
    return sorted(groups, key=lambda g: (-len(g), min(g)))


def all_ids(res: DuplicatesResult) -> list[list[str]]:
    return [sorted(h.id for h in g.members) for g in res.groups]


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedIndex]:
    index = EmbeddedIndex(tmp_path / "idx")
    await index.open()
    yield index
    await index.close()


async def test_embedded_groups_equal_brute_force_and_page(embedded: EmbeddedIndex) -> None:
    docs, codes = planted_docs(400, 11)
    await embedded.upsert(docs)
    for d in (0, 5, 8, 11):
        want = expected_groups(codes, d)
        res = await embedded.duplicates(max_distance=d, limit=200)
        assert all_ids(res) == want, f"D={d}"
        assert res.total == len(want)
        assert res.images == sum(len(g) for g in want)
        assert res.pairs == len(brute_pairs(codes, d))
    first = await embedded.duplicates(max_distance=8, offset=0, limit=3)
    rest = await embedded.duplicates(max_distance=8, offset=3, limit=200)
    assert all_ids(first) + all_ids(rest) == expected_groups(codes, 8)


async def test_each_group_has_its_matrix_and_keeps_the_largest_then_oldest(
    embedded: EmbeddedIndex,
) -> None:
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    near = base.copy()
    near[0] ^= 0b111  # 3 bits away
    sizes = {"small": (100, 100, 1.0), "big-new": (400, 300, 3.0), "big-old": (300, 400, 2.0)}
    docs = [
        Document(i, (near if i == "small" else base).tobytes(), bytes(8),
                 metadata={"width": w, "height": h, "ingested_at": at})
        for i, (w, h, at) in sizes.items()
    ]
    await embedded.upsert(docs)
    (group,) = (await embedded.duplicates(max_distance=4)).groups
    assert group.keeper == "big-old"  # same pixels as big-new, ingested earlier
    assert [(h.id, h.distance) for h in group.members] == [
        ("big-old", 0), ("big-new", 0), ("small", 3)
    ]
    assert group.distances == [[0, 0, 3], [0, 0, 3], [3, 3, 0]]
    assert (await embedded.duplicates(max_distance=2)).total == 1  # the two identical ones


async def test_a_delete_or_a_new_image_changes_the_next_listing(embedded: EmbeddedIndex) -> None:
    docs, codes = planted_docs(200, 5)
    await embedded.upsert(docs)
    before = await embedded.duplicates(max_distance=8, limit=200)
    gone = before.groups[0].members[-1].id
    await embedded.delete([gone])
    after = await embedded.duplicates(max_distance=8, limit=200)
    assert gone not in {h.id for g in after.groups for h in g.members}
    keep = np.array([d.id != gone for d in docs])
    survivors = [d.id for d in docs if d.id != gone]
    want = [[survivors[i] for i in g]
            for g in brute_groups(int(keep.sum()), brute_pairs(codes[keep], 8))]
    assert all_ids(after) == sorted(want, key=lambda g: (-len(g), min(g)))
    twin = Document("twin", docs[0].code, docs[0].short)
    await embedded.upsert([twin])
    again = await embedded.duplicates(max_distance=0, limit=200)
    assert ["img0000", "twin"] in all_ids(again)


async def test_bad_parameters_are_refused(embedded: EmbeddedIndex) -> None:
    for kwargs in ({"max_distance": 12}, {"max_distance": -1}, {"limit": 0}, {"offset": -1},
                   {"limit": 201}):
        with pytest.raises(InvalidInput):
            await embedded.duplicates(**kwargs)  # type: ignore[arg-type]


async def test_the_search_service_serves_the_same_groups_to_remote_index(
    tmp_path: Path, embedded: EmbeddedIndex
) -> None:
    docs, _ = planted_docs(300, 3)
    await embedded.upsert(docs)
    srv = TestServer(create_app(SearchServiceSettings(
        index=IndexSettings(data_dir=tmp_path / "svc"))))
    await srv.start_server()
    remote = RemoteIndex(str(srv.make_url("")))
    await remote.open()
    try:
        await remote.upsert(docs)
        for d, offset in ((8, 0), (11, 2)):
            got = await remote.duplicates(max_distance=d, offset=offset, limit=5)
            want = await embedded.duplicates(max_distance=d, offset=offset, limit=5)
            assert got.groups == want.groups
            assert (got.total, got.images, got.pairs) == (want.total, want.images, want.pairs)
        with pytest.raises(InvalidInput):
            await remote.duplicates(max_distance=12)
    finally:
        await remote.close()
        await srv.close()


def test_cli_prints_the_groups_as_json_and_as_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    docs, codes = planted_docs(120, 9)

    async def fill() -> None:
        index = EmbeddedIndex(tmp_path / "index")
        await index.open()
        await index.upsert(docs)
        await index.close()

    asyncio.run(fill())
    assert cli.main(["duplicates", "--data", str(tmp_path), "--max-distance", "6",
                     "--limit", "200", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    got = [sorted(m["id"] for m in g["members"]) for g in body["groups"]]
    assert got == expected_groups(codes, 6)
    assert cli.main(["duplicates", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(expected_groups(codes, 8))} groups")
    assert "keep" in out
    assert cli.main(["duplicates", "--data", str(tmp_path), "--max-distance", "12"]) == 2


@pytest.mark.timeout(180)
async def test_gateway_lists_duplicates_of_real_images_and_deletes_with_the_key(
    tmp_path: Path, model_path: Path
) -> None:
    settings = standalone_settings(tmp_path, model_path, api_keys=["k1"])
    photo = make_image(1, size=(320, 240))
    files = {"orig": photo, "copy": photo, "other": make_image(2), "third": make_image(3)}
    async with gateway_client(settings, tmp_path) as client:
        client: TestClient  # type: ignore[no-redef]
        for image_id, data in files.items():
            form = aiohttp.FormData()
            form.add_field("id", image_id)
            form.add_field("file", data, filename=f"{image_id}.jpg", content_type="image/jpeg")
            resp = await client.post("/v1/images", data=form, headers={"X-API-Key": "k1"})
            assert resp.status == 202, await resp.text()
        await wait_indexed(client, list(files))
        resp = await client.get("/v1/duplicates")
        body = await resp.json()
        assert resp.status == 200, body
        assert body["max_distance"] == 8
        groups = [sorted(m["id"] for m in g["members"]) for g in body["groups"]]
        assert ["copy", "orig"] in groups
        group = body["groups"][groups.index(["copy", "orig"])]
        assert group["keeper"] == "orig"  # same size: the one ingested first
        assert group["distances"] == [[0, 0], [0, 0]]
        assert group["members"][0]["thumbnail_url"] == "/v1/images/orig/thumbnail"
        assert group["members"][0]["metadata"]["width"] == 320

        resp = await client.get("/v1/duplicates", params={"max_distance": "12"})
        assert resp.status in (400, 422)
        assert (await resp.json())["error"]["field"] == "max_distance"
        resp = await client.delete("/v1/images/orig")
        assert resp.status == 401
        resp = await client.delete("/v1/images/orig", headers={"X-API-Key": "k1"})
        assert resp.status == 204
        body = await (await client.get("/v1/duplicates")).json()
        assert "orig" not in {m["id"] for g in body["groups"] for m in g["members"]}


async def test_screen_marks_or_skips_near_duplicates_of_the_index_and_of_the_batch(
    embedded: EmbeddedIndex,
) -> None:
    rng = np.random.default_rng(8)
    base = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    near = base.copy()
    near[:, 5] ^= 0b1011  # 3 bits from its original
    doc = lambda i, c: Document(i, c.tobytes(), select_bits(c, SHORT).tobytes())  # noqa: E731
    await embedded.upsert([doc("a", base[0])])
    incoming = [doc("a", base[0]),  # the same id again: not a duplicate of itself
                doc("a-near", near[0]), doc("b", base[1]), doc("b-near", near[1]),
                doc("c", base[2])]
    kept, skipped = await screen(embedded, incoming, DuplicatePolicy(4))
    assert skipped == []
    marks = {d.id: (d.metadata.get("duplicate_of"), d.metadata.get("duplicate_distance"))
             for d in kept}
    assert marks == {"a": (None, None), "a-near": ("a", 3), "b": (None, None),
                     "b-near": ("b", 3), "c": (None, None)}
    kept, skipped = await screen(embedded, incoming, DuplicatePolicy(4, skip=True))
    assert [d.id for d in kept] == ["a", "b", "c"]
    assert [(f.id, f.reason, skipped_duplicate_of(f)) for f in skipped] == [
        ("a-near", "duplicate", "a"), ("b-near", "duplicate", "b")]
    kept, skipped = await screen(embedded, incoming, DuplicatePolicy(2))
    assert skipped == []
    assert all("duplicate_of" not in d.metadata for d in kept)  # 3 bits: beyond 2


@pytest.mark.timeout(180)
@pytest.mark.parametrize("policy", ["keep", "skip"])
async def test_ingest_marks_an_incoming_duplicate_in_its_status_and_document(
    tmp_path: Path, model_path: Path, policy: str
) -> None:
    settings = standalone_settings(tmp_path, model_path)
    settings.index.duplicate_distance = 8
    settings.index.duplicate_policy = policy  # type: ignore[assignment]
    photo = make_image(5, size=(200, 150))
    async with gateway_client(settings, tmp_path) as client:
        client: TestClient  # type: ignore[no-redef]
        for image_id in ("orig", "copy"):
            form = aiohttp.FormData()
            form.add_field("id", image_id)
            form.add_field("file", photo, filename=f"{image_id}.jpg", content_type="image/jpeg")
            assert (await client.post("/v1/images", data=form)).status == 202
            statuses = await wait_indexed(client, [image_id])
        orig = await (await client.get("/v1/images/orig")).json()
        assert orig["status"] == "indexed"
        assert orig["duplicate_of"] is None
        copy = statuses["copy"]
        if policy == "keep":
            assert copy["status"] == "indexed"
            assert copy["duplicate_of"] == "orig"
            assert copy["metadata"]["duplicate_of"] == "orig"
            assert copy["metadata"]["duplicate_distance"] == 0
        else:
            final = await (await client.get("/v1/images/copy")).json()
            assert final["status"] == "skipped", final
            assert final["duplicate_of"] == "orig"
            assert final["reason"] == "duplicate"
            body = await (await client.get("/v1/duplicates")).json()
            assert body["total"] == 0  # the copy never reached the index
