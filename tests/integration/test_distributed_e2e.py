"""The whole distributed system as subprocesses: gateway, two encoders, one indexer and the
search service over a real RabbitMQ, with the real search engine as the index (the embedded
index where no engine is configured, outside CI). 500 images in over HTTP; every one
searchable, none twice; the engine index records the gateway's model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from elastichash.index.es import EngineIndex
from elastichash.index.remote import RemoteIndex
from tests.distributed import (
    Cluster,
    account,
    dead_letters,
    images,
    wait_for,
)
from tests.engines import NBS_INDEX

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

N = 500
PER_REQUEST = 50


async def test_500_images_over_http_are_each_searchable_exactly_once(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster],
    index_env: dict[str, str] | None,
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    search = c.search_service(index_env)
    await c.ready(search)
    workers = [c.indexer(), c.encoder(), c.encoder()]
    gateway = c.gateway()
    for svc in workers:
        await c.ready(svc)
    await c.ready(gateway)
    if index_env is not None:  # the gateway bound the engine index to its model at start
        from elastichash.model.contract import load_spec

        engine = EngineIndex(index_env["EH_SEARCH_INDEX__ENGINE__URL"],
                             index_env["EH_SEARCH_INDEX__ENGINE__INDEX"],
                             kind=index_env["EH_SEARCH_INDEX__BACKEND"], nbs_index=NBS_INDEX)
        await engine.open()
        try:
            assert (await engine.model()) == (str(c.model), load_spec(c.model).fingerprint)
        finally:
            await engine.close()
    items = images(range(20_000, 20_000 + N))

    async with aiohttp.ClientSession() as http:
        accepted: list[str] = []
        for start in range(0, N, PER_REQUEST):
            form = aiohttp.FormData()
            for item in items[start : start + PER_REQUEST]:
                form.add_field("file", item.data, filename=item.source, content_type="image/jpeg")
            async with http.post(gateway.url("/v1/images"), data=form) as resp:
                body = await resp.json()
                assert resp.status == 202, body
                assert not body.get("errors")
                accepted += [img["id"] for img in body["images"]]
        assert sorted(accepted) == sorted(i.id for i in items)  # content ids, as sent

        indexed, failed = await account(c.search_url, items, timeout=180)
        assert len(indexed) == N
        assert not failed
        # An engine makes writes searchable at its next refresh (get is realtime).
        remote = RemoteIndex(c.search_url)
        await remote.open()
        try:
            async def all_searchable() -> bool:
                return await remote.count() == N

            await wait_for(all_searchable, 30, "every document searchable")
            stats = await remote.stats()
            assert stats["backend"] == (index_env or {}).get("EH_SEARCH_INDEX__BACKEND",
                                                              "embedded")
        finally:
            await remote.close()

        async def hits_of(ident: str) -> list[str]:
            async with http.post(gateway.url("/v1/search"), json={"id": ident, "k": 10}) as resp:
                assert resp.status == 200, await resp.text()
                return [h["id"] for h in (await resp.json())["results"]]

        sem = asyncio.Semaphore(8)

        async def check(ident: str) -> None:
            async with sem:
                hits = await hits_of(ident)
            assert hits.count(ident) == 1, (ident, hits)
            assert len(hits) == len(set(hits))

        await asyncio.gather(*(check(i.id) for i in items))
        # Search by upload: the query is encoded by an encoder worker over the RPC queue.
        form = aiohttp.FormData()
        form.add_field("file", items[3].data, filename="q.jpg", content_type="image/jpeg")
        form.add_field("k", "5")
        async with http.post(gateway.url("/v1/search"), data=form) as resp:
            assert resp.status == 200, await resp.text()
            top = (await resp.json())["results"]
        assert top
        assert top[0]["distance"] == 0
        assert items[3].id in [h["id"] for h in top if h["distance"] == 0]
        async with http.get(gateway.url(f"/v1/images/{items[0].id}")) as resp:
            assert (await resp.json())["status"] == "indexed"
    assert await dead_letters(rabbitmq_url, amqp_prefix) == []
