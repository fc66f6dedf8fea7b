"""Uploads in distributed mode, as subprocesses over a real RabbitMQ, with two encoder workers
and the real search engine as the index (the embedded index where none is configured,
outside CI): the latest upload of an id wins whichever encoder finishes last, the large view
gets its 1280 px preview, and a re-upload of indexed bytes adds its source."""

from __future__ import annotations

import io
from collections.abc import Callable

import aiohttp
import pytest
from PIL import Image

from elastichash.index.remote import RemoteIndex
from elastichash.pipeline import IngestItem
from tests.distributed import Cluster, Service, dead_letters, publish, wait_for
from tests.imagegen import make_image

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

OLD, NEW = 1_700_000_000_000_000_000, 1_700_000_000_000_000_500


async def start(c: Cluster, index_env: dict[str, str] | None) -> tuple[Service, Service]:
    search = c.search_service(index_env)
    await c.ready(search)
    indexer = c.indexer(batch_max=4)
    workers = [indexer, c.encoder(batch_max=2, prefetch=4), c.encoder(batch_max=2, prefetch=4)]
    gateway = c.gateway()
    for svc in [*workers, gateway]:
        await c.ready(svc)
    return indexer, gateway


async def test_uploads_in_distributed_mode(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster],
    index_env: dict[str, str] | None,
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    indexer, gateway = await start(c, index_env)
    remote = RemoteIndex(c.search_url)
    await remote.open()

    async def written(n: float) -> None:
        async def done() -> bool:
            return await indexer.metric("eh_indexer_written_total") >= n

        await wait_for(done, 120, f"{n:g} documents written (or superseded)")

    try:
        # 1. The older of two uploads of one id reaches the index last (as when one encoder
        #    worker is slower than another): the newer stays.
        newer, older = make_image(1, size=(96, 72)), make_image(2, size=(64, 48))
        await publish(rabbitmq_url, amqp_prefix, [IngestItem(
            "same-id", newer, "newer.jpg", {"width": 96, "height": 72}, "image/jpeg", NEW)])
        await written(1)
        await publish(rabbitmq_url, amqp_prefix, [IngestItem(
            "same-id", older, "older.jpg", {"width": 64, "height": 48}, "image/jpeg", OLD)])
        await written(2)
        doc = await remote.get("same-id")
        assert doc is not None
        assert (doc.source, doc.version, doc.metadata["width"]) == ("newer.jpg", NEW, 96)
        # An even older upload that fails is no news about the latest upload either.
        await publish(rabbitmq_url, amqp_prefix, [IngestItem(
            "same-id", b"\xff\xd8 cut short", "broken.jpg", {}, "image/jpeg", OLD - 1)])

        async def recorded() -> bool:
            return await indexer.metric("eh_indexer_failures_total") >= 1

        await wait_for(recorded, 120, "the failure handled")
        assert await remote.get_failure("same-id") is None

        async with aiohttp.ClientSession() as http:
            # 2. Through the gateway, which stamps each upload: the second upload wins.
            for seed, size in ((3, (64, 48)), (4, (80, 60))):
                form = aiohttp.FormData()
                form.add_field("id", "via-gateway")
                form.add_field("file", make_image(seed, size=size), filename=f"{seed}.jpg",
                               content_type="image/jpeg")
                async with http.post(gateway.url("/v1/images"), data=form) as resp:
                    assert resp.status == 202, await resp.text()
            await written(4)
            doc = await remote.get("via-gateway")
            assert doc is not None
            assert doc.metadata["width"] == 80
            assert doc.version > NEW  # a real upload stamp: nanoseconds since 1970

            # 3. A photo larger than the large view: its preview is 1280 px on the long side.
            big = make_image(5, size=(1600, 1200))
            form = aiohttp.FormData()
            form.add_field("file", big, filename="big.jpg", content_type="image/jpeg")
            async with http.post(gateway.url("/v1/images"), data=form) as resp:
                assert resp.status == 202, await resp.text()
                big_id = (await resp.json())["images"][0]["id"]
            await written(5)
            async with http.get(gateway.url(f"/v1/images/{big_id}/preview"),
                                allow_redirects=False) as resp:
                assert resp.status == 200, resp.headers.get("Location")
                assert resp.content_type == "image/jpeg"
                assert resp.headers["ETag"]
                preview = Image.open(io.BytesIO(await resp.read()))
            assert preview.size == (1280, 960)
            async with http.get(gateway.url(f"/v1/images/{big_id}/thumbnail")) as resp:
                assert max(Image.open(io.BytesIO(await resp.read())).size) == 256
            # A small image has no preview beyond its thumbnail: the address redirects there.
            async with http.get(gateway.url("/v1/images/same-id/preview"),
                                allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/v1/images/same-id/thumbnail"

            # 4. The same bytes again under another name: indexed already, the name is added.
            form = aiohttp.FormData()
            form.add_field("file", big, filename="copy-of-big.jpg", content_type="image/jpeg")
            async with http.post(gateway.url("/v1/images"), data=form) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["images"][0]["status"] == "indexed"
            async with http.get(gateway.url(f"/v1/images/{big_id}")) as resp:
                status = await resp.json()
            assert status["source"] == "big.jpg"
            assert status["sources"] == ["big.jpg", "copy-of-big.jpg"]
    finally:
        await remote.close()
    # Only the broken upload's copy, with its reason, for the operator.
    assert await dead_letters(rabbitmq_url, amqp_prefix) == [("same-id", "unsupported_format")]
