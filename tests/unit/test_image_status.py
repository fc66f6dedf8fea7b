"""An image's status says what happened to its latest upload; uploading indexed bytes again
says they are indexed and leaves the stored document as it was."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from elastichash.cli.standalone import open_local
from elastichash.index.schema import MAX_SOURCE_CHARS
from elastichash.settings import IndexSettings, ModelSettings, RemoteIndexSettings
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.ingest import ADD_SOURCE_CONCURRENCY
from gateway.state import Components
from search_service.app import create_app as create_search_app
from search_service.config import SearchServiceSettings
from tests.imagegen import make_image
from tests.standalone import (
    form_with_files,
    gateway_client,
    standalone_settings,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.timeout(120)


async def test_a_failed_reupload_under_an_indexed_id_reads_failed_and_keeps_the_old_image(
        client: TestClient) -> None:
    resp = await client.post("/v1/images", data=form_with_files(
        [("good.jpg", make_image(1), "image/jpeg")], id="photo"))
    assert resp.status == 202
    await wait_indexed(client, ["photo"])
    truncated = make_image(2, size=(640, 480))[:3000]  # a readable header, no pixels
    resp = await client.post("/v1/images", data=form_with_files(
        [("bad.jpg", truncated, "image/jpeg")], id="photo"))
    assert resp.status == 202, await resp.text()

    async def settled() -> bool:
        body = await (await client.get("/v1/images/photo")).json()
        return bool(body["status"] != "queued")

    await wait_for(settled, 60, "the re-upload to settle")
    body = await (await client.get("/v1/images/photo")).json()
    assert body["status"] == "failed", body
    assert body["reason"] == "truncated"
    assert "indexed earlier under this id is kept" in body["message"]
    # The old image is still searchable under the id.
    resp = await client.post("/v1/search", json={"id": "photo", "k": 1})
    assert (await resp.json())["results"][0]["id"] == "photo"


async def test_uploading_indexed_bytes_again_answers_indexed_and_appends_the_source(
        client: TestClient) -> None:
    data = make_image(5)
    resp = await client.post("/v1/images", data=form_with_files(
        [("first-name.jpg", data, "image/jpeg")]))
    image_id = (await resp.json())["images"][0]["id"]
    await wait_indexed(client, [image_id])
    resp = await client.post("/v1/images", data=form_with_files(
        [("second-name.jpg", data, "image/jpeg"), ("new.jpg", make_image(6), "image/jpeg")]))
    body = await resp.json()
    assert resp.status == 202
    assert [i["status"] for i in body["images"]] == ["indexed", "queued"]
    assert body["images"][0]["id"] == image_id
    resp = await client.post("/v1/images", data=form_with_files(
        [("third-name.jpg", data, "image/jpeg")]))
    assert resp.status == 200  # nothing queued at all
    assert (await resp.json())["images"][0]["status"] == "indexed"
    status = await (await client.get(f"/v1/images/{image_id}")).json()
    assert (status["status"], status["source"]) == ("indexed", "first-name.jpg")
    assert status["sources"] == ["first-name.jpg", "second-name.jpg", "third-name.jpg"]


async def test_an_upload_looks_its_images_up_in_the_index_once_not_once_each(
        tmp_path: Path, model_path: Path) -> None:
    lookups: list[tuple[str, int]] = []

    @asynccontextmanager
    async def components(cfg: GatewaySettings) -> AsyncIterator[Components]:
        async with open_local(cfg.model, cfg.limits, cfg.index, tmp_path / "spool",
                              cfg.spool, cfg.preview_px) as local:
            index: Any = local.index
            get, existing = index.get, index.existing

            async def counted_get(doc_id: str) -> Any:
                lookups.append(("get", 1))
                return await get(doc_id)

            async def counted_existing(ids: Sequence[str]) -> set[str]:
                lookups.append(("existing", len(ids)))
                return set(await existing(ids))

            index.get, index.existing = counted_get, counted_existing
            yield Components(local.pipeline, index, "embedded")

    app = create_app(standalone_settings(tmp_path, model_path), components)
    async with TestClient(TestServer(app)) as client:
        files = [(f"{s}.jpg", make_image(300 + s), "image/jpeg") for s in range(10)]
        resp = await client.post("/v1/images", data=form_with_files(files))
        assert resp.status == 202, await resp.text()
        assert lookups == [("existing", 10)]
        ids = [i["id"] for i in (await resp.json())["images"]]
        await wait_indexed(client, ids)
        lookups.clear()
        resp = await client.post("/v1/images", data=form_with_files(files[:3]))
        assert resp.status == 200
        assert [i["status"] for i in (await resp.json())["images"]] == ["indexed"] * 3
        assert lookups == [("existing", 3)]


def _png_of_zero_size() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


async def test_answers_name_what_is_wrong_without_paths_or_heap_addresses(
        client: TestClient, tmp_path: Path) -> None:
    resp = await client.post("/v1/images", data=form_with_files(
        [("zero.png", _png_of_zero_size(), "image/png"),
         ("junk.gif", b"GIF89a" + b"x" * 40, "image/gif")]))
    body = await resp.json()
    assert resp.status == 422, body
    zero, junk = body["errors"]
    assert "zero size" in zero["message"]
    assert "cannot identify image file" in junk["message"]
    assert " at 0x" not in junk["message"]
    stats = await (await client.get("/v1/stats")).text()
    assert str(tmp_path) not in stats


async def test_thumbnails_of_reusable_ids_are_revalidated_not_cached_as_immutable(
        client: TestClient) -> None:
    resp = await client.post("/v1/images", data=form_with_files(
        [("a.jpg", make_image(7), "image/jpeg")], id="thumb-id"))
    assert resp.status == 202
    await wait_indexed(client, ["thumb-id"])
    first = await client.get("/v1/images/thumb-id/thumbnail")
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    again = await client.get("/v1/images/thumb-id/thumbnail", headers={"If-None-Match": etag})
    assert again.status == 304
    resp = await client.post("/v1/images", data=form_with_files(
        [("b.jpg", make_image(8), "image/jpeg")], id="thumb-id"))

    async def replaced() -> bool:
        resp = await client.get("/v1/images/thumb-id/thumbnail",
                                headers={"If-None-Match": etag})
        return resp.status == 200

    await wait_for(replaced, 60, "the new thumbnail")


async def test_stats_and_candidates_count_what_a_user_can_act_on(client: TestClient) -> None:
    resp = await client.post("/v1/images", data=form_with_files(
        [(f"s{i}.jpg", make_image(900 + i), "image/jpeg") for i in range(5)]))
    ids = [i["id"] for i in (await resp.json())["images"]]
    await wait_indexed(client, ids)
    for image_id in ids[:2]:
        assert (await client.delete(f"/v1/images/{image_id}")).status == 204
    found = await (await client.post("/v1/search", json={"id": ids[2], "strategy": "exact"})
                   ).json()
    assert found["candidates"] == 3  # deleted slots are not candidates
    stats = await (await client.get("/v1/stats")).json()
    assert stats["count"] == 3
    index = stats["index"]
    assert index["memory_bytes_per_image"] == 57
    assert 0 < index["memory_fixed_bytes"] < index["memory_bytes"]
    assert "memory_bytes_per_code" not in index


async def test_a_preview_sized_for_the_large_view_is_stored_and_served(
        client: TestClient) -> None:
    import io

    from PIL import Image

    big, small = make_image(31, size=(2000, 1500)), make_image(32)
    resp = await client.post("/v1/images", data=form_with_files(
        [("big.jpg", big, "image/jpeg")], id="big"))
    resp = await client.post("/v1/images", data=form_with_files(
        [("small.jpg", small, "image/jpeg")], id="small"))
    await wait_indexed(client, ["big", "small"])
    preview = await client.get("/v1/images/big/preview")
    assert preview.status == 200
    assert preview.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(await preview.read())).size == (1280, 960)
    # No preview of an image no larger than its thumbnail: the thumbnail stands in.
    resp = await client.get("/v1/images/small/preview", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/v1/images/small/thumbnail"
    # Replaced by a small image, the id has no stale preview; deleted, it has none at all.
    await client.post("/v1/images", data=form_with_files(
        [("now-small.jpg", make_image(33), "image/jpeg")], id="big"))

    async def replaced() -> bool:
        resp = await client.get("/v1/images/big/preview", allow_redirects=False)
        return resp.status == 302

    await wait_for(replaced, 60, "the stale preview to go")
    assert (await client.delete("/v1/images/big")).status == 204
    assert (await client.get("/v1/images/big/preview")).status == 404


async def test_reuploads_add_their_sources_to_a_slow_search_service_concurrently_each_error_its_own(
        tmp_path: Path, model_path: Path) -> None:
    """The gateway over the search service (real, in-process) whose source appends each take
    DELAY: 14 appends take about two delays, not fourteen; a source the service refuses is
    that image's error alone; the sources of one image keep the upload's order."""
    delay, in_flight, peak = 0.5, [0], [0]

    @web.middleware
    async def slow_sources(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.endswith("/_sources"):
            return await handler(request)
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            await asyncio.sleep(delay)  # a slow service, as seen from the gateway
            return await handler(request)
        finally:
            in_flight[0] -= 1

    search = create_search_app(SearchServiceSettings(index=IndexSettings(
        backend="embedded", data_dir=tmp_path / "search-index")))
    search.middlewares.append(slow_sources)
    server = TestServer(search)
    await server.start_server()
    settings = GatewaySettings(
        mode="standalone", model=ModelSettings(path=model_path, batch_size=16),
        index=RemoteIndexSettings(backend="remote", search_url=str(server.make_url(""))))
    try:
        async with gateway_client(settings, tmp_path) as client:
            images = [make_image(900 + i, size=(64, 48)) for i in range(12)]
            resp = await client.post("/v1/images", data=form_with_files(
                [(f"first-{i}.jpg", d, "image/jpeg") for i, d in enumerate(images)]))
            assert resp.status == 202, await resp.text()
            ids = [i["id"] for i in (await resp.json())["images"]]
            statuses = await wait_indexed(client, ids)
            assert {s["status"] for s in statuses.values()} == {"indexed"}, statuses
            long_name = "x" * MAX_SOURCE_CHARS + ".jpg"  # the service refuses this source
            again = [(f"again-{i}.jpg", d, "image/jpeg") for i, d in enumerate(images)]
            again += [("again-0-second.jpg", images[0], "image/jpeg"),
                      (long_name, images[1], "image/jpeg")]
            started = time.monotonic()
            resp = await client.post("/v1/images", data=form_with_files(again))
            took = time.monotonic() - started
            body = await resp.json()
            assert resp.status == 200, body  # nothing queued: every image is indexed
            assert [(i["filename"], i["status"]) for i in body["images"]] == [
                (name, "indexed") for name, _, _ in again[:-1]]
            assert [(e["filename"], e["code"]) for e in body["errors"]] == [
                (long_name, "invalid_input")]
            assert f"1 to {MAX_SOURCE_CHARS} characters" in body["errors"][0]["message"]
            assert 2 <= peak[0] <= ADD_SOURCE_CONCURRENCY
            # One after another, the 14 appends would take 7 s; at 8 at a time, about 1 s.
            assert took < len(again) * delay / 2, took
            status = await (await client.get(f"/v1/images/{ids[0]}")).json()
            assert status["sources"] == ["first-0.jpg", "again-0.jpg", "again-0-second.jpg"]
            status = await (await client.get(f"/v1/images/{ids[1]}")).json()
            assert status["sources"] == ["first-1.jpg", "again-1.jpg"]
    finally:
        await server.close()
