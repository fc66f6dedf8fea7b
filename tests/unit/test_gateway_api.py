"""Every gateway endpoint in-process over a real standalone stack (real model, real index)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from elastichash import codes
from elastichash.ids import content_id
from elastichash.settings import ImageLimits
from gateway.config import FetchSettings
from tests.imagegen import make_image
from tests.standalone import (
    form_with_files,
    gateway_client,
    runner_port,
    serve_static,
    standalone_settings,
    wait_indexed,
)

pytestmark = pytest.mark.timeout(120)


async def upload(client: TestClient, files: list[tuple[str, bytes, str]],
                 **fields: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/images", data=form_with_files(files, **fields))
    return resp.status, await resp.json()


def jpeg(seed: int) -> tuple[str, bytes, str]:
    return (f"img{seed}.jpg", make_image(seed), "image/jpeg")


async def test_upload_is_accepted_with_content_hash_ids_and_becomes_searchable(
        client: TestClient) -> None:
    files = [jpeg(s) for s in range(6)]
    status, body = await upload(client, files)
    assert status == 202, body
    ids = [img["id"] for img in body["images"]]
    assert ids == [content_id(data) for _, data, _ in files]
    assert all(img["status_url"] == f"/v1/images/{img['id']}" for img in body["images"])
    statuses = await wait_indexed(client, ids)
    assert {s["status"] for s in statuses.values()} == {"indexed"}

    for _, data, _ in files[:3]:
        resp = await client.post("/v1/search", data=form_with_files([("q.jpg", data,
                                                                      "image/jpeg")], k="3"))
        result = await resp.json()
        assert resp.status == 200, result
        assert result["results"][0] == {**result["results"][0], "id": content_id(data),
                                        "distance": 0}
        assert result["results"][0]["thumbnail_url"].endswith("/thumbnail")


async def test_resubmitting_an_image_returns_the_same_id_without_duplicating(
        client: TestClient) -> None:
    _, first = await upload(client, [jpeg(1)])
    await wait_indexed(client, [first["images"][0]["id"]])
    _, second = await upload(client, [jpeg(1)])
    assert second["images"][0]["id"] == first["images"][0]["id"]
    await wait_indexed(client, [second["images"][0]["id"]])
    stats = await (await client.get("/v1/stats")).json()
    assert stats["count"] == 1


async def test_a_client_given_id_is_used(client: TestClient) -> None:
    status, body = await upload(client, [jpeg(2)], id="holiday-2024:001")
    assert status == 202
    assert body["images"][0]["id"] == "holiday-2024:001"
    await wait_indexed(client, ["holiday-2024:001"])


async def test_a_bad_file_in_a_batch_costs_only_that_file(client: TestClient) -> None:
    good = [jpeg(s) for s in range(10, 14)]
    full = make_image(99)
    truncated = ("broken.jpg", full[: len(full) // 2], "image/jpeg")  # header intact
    text = ("notes.txt", b"just some text, not an image", "text/plain")
    status, body = await upload(client, [*good[:2], truncated, text, *good[2:]])
    assert status == 202
    assert [e["filename"] for e in body["errors"]] == ["notes.txt"]
    assert body["errors"][0]["code"] == "unsupported_media_type"
    ids = [img["id"] for img in body["images"]]
    assert len(ids) == 5
    statuses = await wait_indexed(client, ids)
    broken_id = content_id(truncated[1])
    assert statuses[broken_id]["status"] == "failed"
    assert statuses[broken_id]["reason"] in ("truncated", "corrupt")
    assert [s["status"] for i, s in statuses.items() if i != broken_id] == ["indexed"] * 4
    failures = await (await client.get("/v1/failures")).json()
    assert failures["failures"][0]["id"] == broken_id


async def test_only_non_images_is_415_with_per_file_errors(client: TestClient) -> None:
    status, body = await upload(client, [("a.txt", b"hello", "text/plain")])
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["errors"][0]["filename"] == "a.txt"


async def test_decompression_bomb_is_refused_with_422(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a few KB
    status, body = await upload(client, [("bomb.png", buf.getvalue(), "image/png")])
    assert status == 422
    assert body["error"]["code"] == "bad_image"
    assert "pixels" in body["error"]["message"]


async def test_over_size_upload_is_413(tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path,
                                   limits=ImageLimits(max_bytes=2000),
                                   max_request_bytes=50_000)
    async with gateway_client(settings, tmp_path) as client:
        status, body = await upload(client, [jpeg(3)])
        assert status == 413
        assert body["error"]["code"] == "payload_too_large"
        resp = await client.post("/v1/images", data=form_with_files(
            [("big.jpg", make_image(4, size=(900, 700)) * 3, "image/jpeg")]))
        assert resp.status == 413


async def test_write_endpoints_need_an_api_key_when_keys_are_set(
        tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path, api_keys=["s3cret"])
    async with gateway_client(settings, tmp_path) as client:
        resp = await client.post("/v1/images", data=form_with_files([jpeg(5)]))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
        resp = await client.post("/v1/images", data=form_with_files([jpeg(5)]),
                                 headers={"X-API-Key": "s3cret"})
        assert resp.status == 202
        # Search stays open.
        resp = await client.post("/v1/search", json={"code": "0" * 64})
        assert resp.status == 200


async def test_search_by_id_reuses_the_stored_code_and_pages(client: TestClient) -> None:
    files = [jpeg(s) for s in range(20, 32)]
    _, body = await upload(client, files)
    ids = [i["id"] for i in body["images"]]
    await wait_indexed(client, ids)
    resp = await client.post("/v1/search", json={"id": ids[0], "k": 5,
                                                 "strategy": "exact"})
    page1 = await resp.json()
    assert resp.status == 200, page1
    assert page1["results"][0]["id"] == ids[0]
    assert page1["results"][0]["distance"] == 0
    assert page1["query"]["id"] == ids[0]
    assert page1["total"] == 12
    assert page1["next_offset"] == 5
    resp = await client.post("/v1/search", json={"id": ids[0], "k": 5, "offset": 5,
                                                 "strategy": "exact"})
    page2 = await resp.json()
    seen = [r["id"] for r in page1["results"] + page2["results"]]
    assert len(set(seen)) == 10
    dists = [r["distance"] for r in page1["results"] + page2["results"]]
    assert dists == sorted(dists)

    # The same ranking by raw code: the query code round-trips through hex.
    resp = await client.post("/v1/search", json={"code": page1["query"]["code"], "k": 5,
                                                 "strategy": "exact"})
    by_code = await resp.json()
    assert [r["id"] for r in by_code["results"]] == [r["id"] for r in page1["results"]]

    cap = page1["results"][2]["distance"]
    resp = await client.post("/v1/search", json={"id": ids[0], "k": 50,
                                                 "max_distance": cap, "strategy": "exact"})
    capped = await resp.json()
    assert all(r["distance"] <= cap for r in capped["results"])
    assert capped["total"] == len(capped["results"]) >= 3


@pytest.mark.parametrize(("body", "field"), [
    ({"code": "xyz"}, "code"),
    ({"code": "ab" * 31}, "code"),
    ({"code": "0" * 64, "short": "123"}, "short"),
    ({"code": "0" * 64, "k": 0}, "k"),
    ({"code": "0" * 64, "k": 1001}, "k"),
    ({"code": "0" * 64, "strategy": "fastest"}, "strategy"),
    ({"code": "0" * 64, "max_distance": 300}, "max_distance"),
    ({"code": "0" * 64, "id": "x"}, None),
    ({"colour": "red"}, None),
])
async def test_malformed_search_is_400_naming_the_field(
        client: TestClient, body: dict[str, Any], field: str | None) -> None:
    resp = await client.post("/v1/search", json=body)
    err = await resp.json()
    assert resp.status == 400, err
    assert err["error"]["code"] == "invalid_input"
    if field:
        assert err["error"]["field"] == field


async def test_a_search_body_of_another_kind_is_400_naming_every_kind_of_query(
        client: TestClient) -> None:
    resp = await client.post("/v1/search", data=b"elephant",
                             headers={"Content-Type": "text/plain"})
    err = await resp.json()
    assert resp.status == 400, err
    assert "text" in err["error"]["message"]
    assert "multipart/form-data" in err["error"]["message"]


async def test_search_by_unknown_id_is_404(client: TestClient) -> None:
    resp = await client.post("/v1/search", json={"id": "nope"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_delete_removes_the_image_from_status_and_search(client: TestClient) -> None:
    _, body = await upload(client, [jpeg(40), jpeg(41)])
    ids = [i["id"] for i in body["images"]]
    await wait_indexed(client, ids)
    thumb = await client.get(f"/v1/images/{ids[0]}/thumbnail")
    assert thumb.status == 200
    assert thumb.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(await thumb.read())).size[0] <= 256
    assert (await client.delete(f"/v1/images/{ids[0]}")).status == 204
    assert (await client.get(f"/v1/images/{ids[0]}")).status == 404
    assert (await client.delete(f"/v1/images/{ids[0]}")).status == 404
    resp = await client.post("/v1/search", json={"id": ids[1], "k": 10, "strategy": "exact"})
    assert ids[0] not in [r["id"] for r in (await resp.json())["results"]]


async def test_operational_endpoints(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    await client.post("/v1/search", json={"code": "f" * 64})
    metrics = await (await client.get("/metrics")).text()
    assert "eh_gateway_requests_total" in metrics
    spec = await (await client.get("/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/images", "/v1/search", "/v1/stats"} <= set(spec["paths"])
    # every /v1 route the app serves is described, with its methods
    served = {(r.resource.canonical, r.method.lower()) for r in client.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/v1/")
              and r.method != "HEAD"}
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert served - {("/v1/openapi.json", "get")} <= described, served - described
    stats = await (await client.get("/v1/stats")).json()
    assert stats["backend"] == "embedded"
    assert stats["mode"] == "standalone"
    assert stats["model"]["code_bits"] == 256
    missing = await client.get("/v1/nothing-here")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


# --- URLs: fetched server-side, private targets refused -------------------------------


@pytest.fixture
async def image_host() -> AsyncIterator[tuple[str, bytes]]:
    data = make_image(77)

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/jpeg")

    async def hop(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/secret.jpg")

    runner = await serve_static([web.get("/a.jpg", image), web.get("/hop", hop)],
                                host="127.0.0.2")
    try:
        yield f"http://127.0.0.2:{runner_port(runner)}", data
    finally:
        await runner.cleanup()


async def test_url_ingest_and_search_fetch_from_allowed_hosts(
        tmp_path: Path, model_path: Path, image_host: tuple[str, bytes]) -> None:
    base, data = image_host
    settings = standalone_settings(
        tmp_path, model_path, fetch=FetchSettings(allow_networks=[ip_network("127.0.0.2/32")]))
    async with gateway_client(settings, tmp_path) as client:
        resp = await client.post("/v1/images", json={"urls": [f"{base}/a.jpg"]})
        body = await resp.json()
        assert resp.status == 202, body
        assert body["images"][0]["id"] == content_id(data)
        await wait_indexed(client, [content_id(data)])
        resp = await client.post("/v1/search", json={"url": f"{base}/a.jpg", "k": 1})
        result = await resp.json()
        assert result["results"][0]["id"] == content_id(data)
        assert result["results"][0]["distance"] == 0
        # An allowed host that redirects to a forbidden one is refused at the redirect.
        resp = await client.post("/v1/images", json={"urls": [f"{base}/hop"]})
        body = await resp.json()
        assert resp.status == 400
        assert body["errors"][0]["code"] == "forbidden_url"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://localhost/x.jpg", "http://10.1.2.3/x.jpg",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/x.jpg", "http://192.168.0.1/",
])
async def test_private_loopback_and_link_local_urls_are_refused(
        client: TestClient, url: str) -> None:
    resp = await client.post("/v1/search", json={"url": url})
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "forbidden_url"
    resp = await client.post("/v1/images", json={"urls": [url]})
    assert (await resp.json())["errors"][0]["code"] == "forbidden_url"


async def test_raw_code_search_derives_the_short_code_from_the_model(
        client: TestClient) -> None:
    files = [jpeg(60)]
    _, body = await upload(client, files)
    await wait_indexed(client, [body["images"][0]["id"]])
    resp = await client.post("/v1/search", json={"id": body["images"][0]["id"]})
    code = (await resp.json())["query"]["code"]
    resp = await client.post("/v1/search", json={"code": code, "strategy": "two_stage"})
    result = await resp.json()
    assert result["results"][0]["distance"] == 0
    assert len(codes.from_hex(code)) == 32

