"""Edge cases of the gateway and standalone pipeline: caps that must trigger early, the SSRF
guard's DNS path, status transitions, spool replay after a crash."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from elastichash.errors import ForbiddenTarget, InvalidInput, PayloadTooLarge
from elastichash.ids import content_id
from elastichash.index.base import Failure
from elastichash.index.embedded import EmbeddedIndex
from elastichash.model.encoder import Encoder
from elastichash.pipeline import IngestItem
from elastichash.settings import ImageLimits, ModelSettings
from elastichash.standalone import LocalPipeline
from gateway.config import FetchSettings
from gateway.fetch import Fetcher, GuardedResolver
from gateway.state import COMPONENTS
from tests.imagegen import make_image
from tests.standalone import (
    form_with_files,
    gateway_client,
    runner_port,
    serve_static,
    standalone_settings,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.timeout(120)


def jpeg(seed: int) -> tuple[str, bytes, str]:
    return (f"img{seed}.jpg", make_image(seed), "image/jpeg")


async def test_a_request_over_the_whole_request_cap_is_refused_before_it_is_read(
        tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path, max_request_bytes=20_000)
    async with gateway_client(settings, tmp_path) as client:
        files = [jpeg(s) for s in range(8)]  # each under the per-file cap, together over
        resp = await client.post("/v1/images", data=form_with_files(files))
        body = await resp.json()
        assert resp.status == 413
        # The Content-Length check, not the per-file one, refused it.
        assert body["error"]["message"].startswith("request is ")
        assert (await (await client.get("/v1/stats")).json())["count"] == 0


async def test_the_resolver_refuses_names_that_resolve_to_private_addresses() -> None:
    resolver = GuardedResolver(FetchSettings())
    with pytest.raises(ForbiddenTarget, match="forbidden address"):
        await resolver.resolve("localhost", 80)
    allowed = GuardedResolver(FetchSettings(allow_networks=[ip_network("127.0.0.0/8")]))
    assert (await allowed.resolve("localhost", 80))[0]["host"].startswith("127.")
    await resolver.close()
    await allowed.close()


@pytest.fixture
async def awkward_host() -> AsyncIterator[str]:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8\xff" + b"0" * 300_000, content_type="image/jpeg")

    async def endless(_: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(_)
        for _i in range(1000):
            await resp.write(b"\xff" * 65536)
        return resp

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)  # the server under test must give up first
        return web.Response(body=b"late")

    runner = await serve_static([web.get("/big", big), web.get("/endless", endless),
                                 web.get("/slow", slow)], host="127.0.0.2")
    try:
        yield f"http://127.0.0.2:{runner_port(runner)}"
    finally:
        await runner.cleanup()


async def test_fetching_is_capped_in_size_and_time(awkward_host: str) -> None:
    fetcher = Fetcher(FetchSettings(allow_networks=[ip_network("127.0.0.2/32")],
                                    max_bytes=100_000, timeout_s=0.5))
    await fetcher.open()
    try:
        with pytest.raises(PayloadTooLarge, match="100000"):
            await fetcher.fetch(f"{awkward_host}/big")  # declared length over the cap
        with pytest.raises(PayloadTooLarge):
            await fetcher.fetch(f"{awkward_host}/endless")  # streamed, no length
        with pytest.raises(InvalidInput, match="longer than"):
            await fetcher.fetch(f"{awkward_host}/slow")
    finally:
        await fetcher.close()


async def test_delete_needs_the_api_key_too(tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path, api_keys=["k1"])
    async with gateway_client(settings, tmp_path) as client:
        assert (await client.delete("/v1/images/abc")).status == 401
        assert (await client.delete("/v1/images/abc", headers={"X-API-Key": "k1"})).status == 404


async def test_readyz_fails_when_the_index_is_down(client: TestClient) -> None:
    assert (await client.get("/readyz")).status == 200
    await client.app[COMPONENTS].index.close()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["index"] is False
    await client.app[COMPONENTS].index.open()


async def test_the_last_page_has_no_next_offset(client: TestClient) -> None:
    resp = await client.post("/v1/images", data=form_with_files([jpeg(s) for s in range(5)]))
    ids = [i["id"] for i in (await resp.json())["images"]]
    await wait_indexed(client, ids)
    page = await (await client.post("/v1/search", json={"id": ids[0], "k": 3,
                                                        "strategy": "exact"})).json()
    assert page["next_offset"] == 3
    last = await (await client.post("/v1/search", json={"id": ids[0], "k": 3, "offset": 3,
                                                        "strategy": "exact"})).json()
    assert len(last["results"]) == 2
    assert last["next_offset"] is None


async def test_search_by_upload_refuses_non_images_and_over_size_files(
        tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path, limits=ImageLimits(max_bytes=5000))
    async with gateway_client(settings, tmp_path) as client:
        resp = await client.post("/v1/search", data=form_with_files(
            [("a.txt", b"plain text", "text/plain")]))
        assert resp.status == 415
        resp = await client.post("/v1/search", data=form_with_files(
            [("big.jpg", make_image(1, size=(600, 400)), "image/jpeg")]))
        assert resp.status == 413


async def test_status_goes_queued_then_indexed_and_stats_count_down(client: TestClient) -> None:
    comp = client.app[COMPONENTS]
    data = make_image(500)
    # Hold the worker back by filling its queue first is racy; instead look at what the
    # pipeline reports for an id it was just given, before the worker can finish it.
    resp = await client.post("/v1/images", data=form_with_files([("a.jpg", data,
                                                                  "image/jpeg")]))
    image_id = (await resp.json())["images"][0]["id"]
    first = await (await client.get(f"/v1/images/{image_id}")).json()
    assert first["status"] in ("queued", "indexed")
    await wait_indexed(client, [image_id])

    async def drained() -> bool:
        stats = await (await client.get("/v1/stats")).json()
        return bool(stats["queued"] == 0 and stats["count"] == 1)

    await wait_for(drained, 30, "stats to show nothing queued")
    assert comp.pipeline.is_queued(image_id) is False


async def test_an_old_failure_does_not_hide_a_new_submission(client: TestClient) -> None:
    comp = client.app[COMPONENTS]
    await comp.index.record_failures([Failure("photo-1", "corrupt", "bad bytes", None, 1.0)])
    assert (await (await client.get("/v1/images/photo-1")).json())["status"] == "failed"
    resp = await client.post("/v1/images", data=form_with_files([jpeg(501)], id="photo-1"))
    assert resp.status == 202
    status = (await (await client.get("/v1/images/photo-1")).json())["status"]
    assert status in ("queued", "indexed")
    final = await wait_indexed(client, ["photo-1"])
    assert final["photo-1"]["status"] == "indexed"


async def test_too_many_files_after_some_were_queued_still_reports_what_was_accepted(
        tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path, max_files_per_request=40)
    async with gateway_client(settings, tmp_path) as client:
        resp = await client.post("/v1/images", data=form_with_files(
            [jpeg(s) for s in range(600, 641)]))
        body = await resp.json()
        assert resp.status == 202, body
        accepted = [i["id"] for i in body["images"]]
        assert len(accepted) >= 32
        assert body["errors"][-1]["message"].startswith("at most 40 files")
        statuses = await wait_indexed(client, accepted)
        assert {s["status"] for s in statuses.values()} == {"indexed"}


async def test_an_id_field_names_the_file_that_follows_it(client: TestClient) -> None:
    resp = await client.post("/v1/images", data=form_with_files([jpeg(700)], id="named-1"))
    assert (await resp.json())["images"][0]["id"] == "named-1"
    form = form_with_files([jpeg(701)])
    form.add_field("id", "dangling")
    resp = await client.post("/v1/images", data=form)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "id"


async def test_images_accepted_before_a_crash_are_indexed_after_restart(
        tmp_path: Path, model_path: Path) -> None:
    encoder = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path),
                                      ImageLimits())
    spool = tmp_path / "spool"
    images = {content_id(make_image(800 + s)): make_image(800 + s) for s in range(6)}
    items = [IngestItem(i, d, f"{i}.jpg", {}) for i, d in images.items()]

    index = EmbeddedIndex(tmp_path / "index")
    await index.open()
    crashed = LocalPipeline(encoder, index, spool)  # never started: the worker never ran
    await crashed.submit(items)
    assert len(list(spool.glob("*.img"))) == 6
    await index.close()

    index = EmbeddedIndex(tmp_path / "index")
    await index.open()
    restarted = LocalPipeline(encoder, index, spool)
    await restarted.start()
    assert all(restarted.is_queued(i) for i in images) or await index.count() > 0
    await asyncio.wait_for(restarted.drained(), 60)
    assert await index.count() == 6
    for image_id in images:
        doc = await index.get(image_id)
        assert doc is not None
        assert Image.open(io.BytesIO(doc.thumbnail or b"")).format == "JPEG"
    assert list(spool.glob("*")) == []
    await restarted.stop()
    await index.close()


class FlakyIndex(EmbeddedIndex):
    """A real embedded index whose first writes fail, as when another process holds the
    SQLite write lock."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures_left = failures

    async def upsert(self, docs: Any) -> Any:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise OSError("database is locked")
        return await super().upsert(docs)


async def test_the_standalone_worker_survives_failed_writes_with_a_full_queue(
        tmp_path: Path, model_path: Path) -> None:
    encoder = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path),
                                      ImageLimits())
    index = FlakyIndex(tmp_path / "index", failures=2)
    await index.open()
    pipeline = LocalPipeline(encoder, index, tmp_path / "spool", batch_size=2, queue_size=2)
    await pipeline.start()
    try:
        items = [IngestItem(content_id(make_image(900 + s)), make_image(900 + s))
                 for s in range(10)]
        # Producers keep the tiny queue full while the worker's first writes fail.
        await asyncio.gather(*(pipeline.submit([it]) for it in items))
        await asyncio.wait_for(pipeline.drained(), 60)
        assert await pipeline.ready()
        assert await index.count() == 10
        assert pipeline.counts["retried"] >= 2
    finally:
        await pipeline.stop()
        await index.close()
