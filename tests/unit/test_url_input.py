"""Malformed URLs are the client's error (400, naming the URL), and an ingest request
answers for each of its URLs whatever one of them does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import FetchSettings
from tests.imagegen import make_image
from tests.standalone import (
    gateway_client,
    runner_port,
    serve_static,
    standalone_settings,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.timeout(120)

LONG_LABEL = "http://" + "a" * 300 + ".example.com/x.jpg"
MALFORMED = [
    LONG_LABEL,
    "http://a..b.example.com/x.jpg",
    "http://" + "b" * 250 + "." + "c" * 10 + ".com/x.jpg",
]
# Refused by the URL parser itself (a whole search is a 400 for these as well)
BAD_SHAPE = [
    "http://a.example:99999/x.jpg",
    "ftp://example.com/x.jpg",
    "not a url",
    "http://exa mple.com/x.jpg",
]


@pytest.fixture
async def image_host() -> AsyncIterator[str]:
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=make_image(int(request.match_info["n"])),
                            content_type="image/jpeg")

    runner = await serve_static([web.get("/img/{n}.jpg", image)], host="127.0.0.2")
    try:
        yield f"http://127.0.0.2:{runner_port(runner)}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(tmp_path: Path, model_path: Path) -> AsyncIterator[TestClient]:
    settings = standalone_settings(
        tmp_path, model_path,
        fetch=FetchSettings(allow_networks=[ip_network("127.0.0.2/32")], timeout_s=5))
    async with gateway_client(settings, tmp_path) as c:
        yield c


@pytest.mark.parametrize("url", MALFORMED)
async def test_search_by_a_malformed_url_is_a_400_that_names_it(client: TestClient,
                                                                url: str) -> None:
    resp = await client.post("/v1/search", json={"url": url})
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["field"] == "url"
    assert "malformed" in body["error"]["message"]
    assert url[:60] in body["error"]["message"]


async def test_ingest_answers_for_each_url_when_some_are_malformed(
        client: TestClient, image_host: str) -> None:
    good = [f"{image_host}/img/{n}.jpg" for n in range(5)]
    resp = await client.post("/v1/images",
                             json={"urls": [*good[:2], *MALFORMED, *BAD_SHAPE, *good[2:]]})
    body = await resp.json()
    assert resp.status == 202, body
    assert sorted(i["url"] for i in body["images"]) == sorted(good)
    assert sorted(e["url"] for e in body["errors"]) == sorted(MALFORMED + BAD_SHAPE)
    assert all(e["url"][:60] in e["message"] for e in body["errors"]), body["errors"]
    assert {e["code"] for e in body["errors"]} == {"invalid_input"}
    statuses = await wait_indexed(client, [i["id"] for i in body["images"]])
    assert {s["status"] for s in statuses.values()} == {"indexed"}


async def test_an_ingest_of_only_malformed_urls_is_a_400_listing_each(client: TestClient) -> None:
    resp = await client.post("/v1/images", json={"urls": MALFORMED + BAD_SHAPE})
    body = await resp.json()
    assert resp.status == 400, body
    assert sorted(e["url"] for e in body["errors"]) == sorted(MALFORMED + BAD_SHAPE)


async def test_a_redirect_to_a_malformed_host_is_a_400_too(tmp_path: Path,
                                                          client: TestClient) -> None:
    async def hop(_: web.Request) -> web.Response:
        raise web.HTTPFound(LONG_LABEL)

    runner = await serve_static([web.get("/hop", hop)], host="127.0.0.2")
    try:
        resp = await client.post(
            "/v1/search", json={"url": f"http://127.0.0.2:{runner_port(runner)}/hop"})
        body = await resp.json()
        assert resp.status == 400, body
        assert "malformed" in body["error"]["message"]
    finally:
        await runner.cleanup()


async def test_one_clients_slow_urls_do_not_delay_another_clients_search_by_url(
        tmp_path: Path, model_path: Path, image_host: str) -> None:
    release = asyncio.Event()
    arrived = 0

    async def slow(_: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        await release.wait()
        return web.Response(body=make_image(1), content_type="image/jpeg")

    runner = await serve_static([web.get("/slow.jpg", slow)], host="127.0.0.2")
    slow_url = f"http://127.0.0.2:{runner_port(runner)}/slow.jpg"
    settings = standalone_settings(
        tmp_path, model_path, api_keys=["key-a", "key-b"],
        fetch=FetchSettings(allow_networks=[ip_network("127.0.0.2/32")], timeout_s=20))
    try:
        async with gateway_client(settings, tmp_path) as client:
            # Client A holds more slow fetches than there are slots in all.
            hogs = [asyncio.create_task(client.post(
                "/v1/search", json={"url": slow_url}, headers={"X-API-Key": "key-a"}))
                for _ in range(36)]

            async def hogging() -> bool:
                return arrived >= 8

            await wait_for(hogging, 30, "client A's fetches to start")
            started = time.monotonic()
            resp = await client.post("/v1/search", json={"url": f"{image_host}/img/3.jpg"},
                                     headers={"X-API-Key": "key-b"})
            waited = time.monotonic() - started
            assert resp.status == 200, await resp.text()
            assert waited < 5, waited
            release.set()
            answers = await asyncio.gather(*hogs)
            assert {a.status for a in answers} == {200}
    finally:
        release.set()
        await runner.cleanup()
