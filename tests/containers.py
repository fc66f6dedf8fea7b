"""What both container tests check: uploads through the gateway, counts, and searches."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest

from elastichash.model.labels import vocabulary
from elastichash.pipeline import IngestItem
from tests.broker import free_ports_in

# Both container test modules: opt-in (they build images and start containers), long.
MARKS = [
    pytest.mark.containers,
    pytest.mark.timeout(1800),  # image builds and stack starts on 2 shared cores
    pytest.mark.skipif(
        os.environ.get("EH_TEST_CONTAINERS") != "1",
        reason="builds and runs containers: make test-containers",
    ),
]


def host_ports(n: int) -> list[int]:
    """``n`` free host ports for a test stack: from ``EH_TEST_PORT_RANGE`` when set, else
    from 20000-32767, below the kernel's ephemeral range. A fixed port there can be taken at
    any moment as the local end of someone's connection (podman then cannot publish it:
    seen here with a port in TIME-WAIT)."""
    return free_ports_in(os.environ.get("EH_TEST_PORT_RANGE", "20000-32767"), n)


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
    """The index's count from /v1/stats; 0 while the stats have no count yet (the gateway
    answers within a budget and leaves out what was not ready: a loaded machine)."""
    async with http.get(f"{url}/v1/stats") as resp:
        assert resp.status == 200, await resp.text()
        count = (await resp.json())["count"]
        return int(count) if count is not None else 0


async def settled_count(http: aiohttp.ClientSession, url: str, timeout_s: float = 60) -> int:
    """The count once the stats give one (not the 0 of an unanswered budget)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get(f"{url}/v1/stats") as resp:
            count = (await resp.json())["count"]
        if count is not None:
            return int(count)
        assert time.monotonic() < deadline, "/v1/stats gave no count"
        await asyncio.sleep(0.5)


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


async def searchable_by_words(
    http: aiohttp.ClientSession, url: str, items: list[IngestItem]
) -> None:
    """Each sampled image's top label finds it among the images carrying that label, every
    result carries the label, and words with the image's id rank the image itself first;
    an unknown word gives no results and a hint."""
    step = max(1, len(items) // 4)
    for item in items[1::step]:
        async with http.get(f"{url}/v1/images/{item.id}") as resp:
            labels = (await resp.json())["metadata"]["labels"]
        assert labels, f"{item.id} has no labels"
        top = labels[0]["name"]
        found: list[dict[str, Any]] = []
        offset = 0
        while True:  # every page: the image may rank anywhere among those with the label
            query = {"text": top, "k": 100, "offset": offset}
            async with http.post(f"{url}/v1/search", json=query) as resp:
                body = await resp.json()
                assert resp.status == 200, body
            assert body["hint"] is None, body
            found += body["results"]
            if len(body["results"]) < 100:
                break
            offset += 100
        assert item.id in [r["id"] for r in found], (top, item.id)
        # Every result carries a class the words name (the class and the ones below it in
        # WordNet), ranked by its best score among those classes.
        classes, _, _ = vocabulary().resolve(top)
        scores = []
        for r in found:
            named = [lab["score"] for lab in r["metadata"]["labels"] if lab["id"] in classes]
            assert named, (top, r)
            scores.append(max(named))
        assert scores == sorted(scores, reverse=True), "ranked by label score"

        async with http.post(f"{url}/v1/search", json={"text": top, "id": item.id}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert (body["results"][0]["id"], body["results"][0]["distance"]) == (item.id, 0)

    async with http.post(f"{url}/v1/search", json={"text": "xyzzy"}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["results"] == []
    assert "xyzzy" in body["hint"]
