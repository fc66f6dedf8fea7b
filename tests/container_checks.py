"""What both container tests check: uploads through the gateway, counts, and searches."""

from __future__ import annotations

import os

import aiohttp
import pytest

from elastichash.pipeline import IngestItem

# Both container test modules: opt-in (they build images and start containers), long.
MARKS = [
    pytest.mark.containers,
    pytest.mark.timeout(1800),  # image builds and stack starts on 2 shared cores
    pytest.mark.skipif(
        os.environ.get("EH_TEST_CONTAINERS") != "1",
        reason="builds and runs containers: make test-containers",
    ),
]


async def upload(http: aiohttp.ClientSession, url: str, batch: list[IngestItem]) -> list[str]:
    form = aiohttp.FormData()
    for item in batch:
        form.add_field("file", item.data, filename=item.source, content_type="image/jpeg")
    async with http.post(f"{url}/v1/images", data=form) as resp:
        body = await resp.json()
        assert resp.status == 202, body
        assert not body["errors"], body
        return [img["id"] for img in body["images"]]


async def indexed_count(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/v1/stats") as resp:
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["count"])


async def status(http: aiohttp.ClientSession, url: str, ident: str) -> str:
    async with http.get(f"{url}/v1/images/{ident}") as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["status"])


async def searchable_by_upload_and_id(
    http: aiohttp.ClientSession, url: str, items: list[IngestItem]
) -> None:
    """A sample of the items: each found by its own bytes, and by its id, at distance 0."""
    step = max(1, len(items) // 8)
    for item in items[::step]:
        form = aiohttp.FormData()
        form.add_field("file", item.data, filename="q.jpg", content_type="image/jpeg")
        form.add_field("k", "5")
        async with http.post(f"{url}/v1/search", data=form) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        top = body["results"][0]
        assert (top["id"], top["distance"]) == (item.id, 0)

    for item in items[3::step]:  # by id: itself first, then its nearest neighbours in order
        async with http.post(f"{url}/v1/search", json={"id": item.id, "k": 10}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        hits = body["results"]
        assert (hits[0]["id"], hits[0]["distance"]) == (item.id, 0)
        assert len(hits) == 10
        assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
