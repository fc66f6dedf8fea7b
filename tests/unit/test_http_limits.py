"""What a hostile client can do to the HTTP layer, and what it gets: body caps counted as the
bytes arrive (chunked or not), stalled bodies cut off, idle and surplus connections closed,
malformed HTTP answered in JSON, a client that hangs up counted as 499, not 500."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from elastichash.settings import BodySettings, ServerSettings
from gateway.app import create_app
from gateway.state import SETTINGS
from tests.imagegen import make_image
from tests.rawhttp import (
    assert_per_client_cap,
    assert_stalled_body_is_a_408,
    chunked,
    closed_within,
    on_socket,
    raw,
)
from tests.standalone import (
    gateway_client,
    standalone_factory,
    standalone_settings,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

BOUNDARY = "eh-test-boundary"


def multipart(files: list[tuple[str, bytes]], name: str = "file") -> bytes:
    out = bytearray()
    for filename, data in files:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


MP = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture
async def small_caps(tmp_path: Path, model_path: Path) -> AsyncIterator[TestClient]:
    settings = standalone_settings(tmp_path, model_path, max_request_bytes=200_000,
                                   max_json_bytes=10_000)
    async with gateway_client(settings, tmp_path) as c:
        yield c


async def test_a_chunked_upload_over_the_request_cap_is_refused_as_it_is_read(
        small_caps: TestClient) -> None:
    files = [(f"f{i}.jpg", make_image(i, size=(320, 240))) for i in range(40)]
    body = multipart(files)
    assert len(body) > 250_000
    resp = await small_caps.post("/v1/images", data=chunked(body), headers=MP)
    answer = await resp.json()
    # Images read before the cap was hit are queued and named; the rest is refused.
    assert resp.status in (202, 413), answer
    if resp.status == 202:
        assert answer["errors"][-1]["code"] == "payload_too_large"
    else:
        assert answer["error"]["code"] == "payload_too_large"
    accepted = answer.get("images", [])
    assert sum(len(d) for _, d in files[:len(accepted)]) <= 200_000


async def test_a_chunked_json_body_over_its_cap_is_a_413(small_caps: TestClient) -> None:
    body = json.dumps({"urls": [f"http://example.com/{'x' * 50}/{i}.jpg"
                                for i in range(400)]}).encode()
    assert len(body) > 10_000
    resp = await small_caps.post("/v1/images", data=chunked(body, 1000),
                                 headers={"Content-Type": "application/json"})
    assert resp.status == 413, await resp.text()
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_search_by_upload_takes_one_file_and_caps_the_request(
        small_caps: TestClient) -> None:
    image = make_image(1)
    resp = await small_caps.post("/v1/search", data=multipart([("a.jpg", image)] * 30),
                                 headers=MP)
    assert resp.status == 400
    assert "one 'file'" in (await resp.json())["error"]["message"]
    # Many parts of another name are cut off at the part limit, not read to the end.
    resp = await small_caps.post("/v1/search", data=chunked(
        multipart([("k", b"5")] * 1000, name="k")), headers=MP)
    assert resp.status == 400
    assert "parts" in (await resp.json())["error"]["message"]
    cap = small_caps.app[SETTINGS].limits.max_bytes + 64 * 1024
    big = multipart([("a.jpg", image + b"\0" * cap)])
    resp = await small_caps.post("/v1/search", data=chunked(big), headers=MP)
    assert resp.status == 413


@pytest.fixture
async def served(tmp_path: Path, model_path: Path) -> AsyncIterator[tuple[str, int]]:
    """The gateway on a real socket through the same runner `serve` uses."""
    settings = standalone_settings(
        tmp_path, model_path, body=BodySettings(idle_timeout_s=1.0),
        server=ServerSettings(keepalive_timeout_s=1.0, max_connections_per_client=8))
    async with on_socket(create_app(settings, standalone_factory(tmp_path)),
                         settings.server) as served:
        yield served


async def test_a_stalled_body_is_cut_off_with_a_408(served: tuple[str, int]) -> None:
    head = (f"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n").encode()
    await assert_stalled_body_is_a_408(
        *served, head + multipart([("a.jpg", b"\xff\xd8\xff")])[:80])


async def test_idle_and_surplus_connections_are_closed_and_others_still_served(
        served: tuple[str, int]) -> None:
    host, port = served
    idle = [await raw(host, port, b"") for _ in range(12)]
    # Over the per-client cap: closed at once; the rest when the keep-alive timeout ends.
    for reader, _ in idle:
        assert await closed_within(reader, 8) == b""
    # Another client address is served meanwhile and after.
    async with aiohttp.ClientSession() as session, session.get(
            f"http://{host}:{port}/healthz") as resp:
        assert resp.status == 200
    for _, writer in idle:
        writer.close()


async def test_the_per_client_cap_leaves_other_clients_their_connections(
        served: tuple[str, int]) -> None:
    await assert_per_client_cap(*served, 8)


async def test_a_malformed_http_request_gets_the_json_error_shape(
        served: tuple[str, int]) -> None:
    host, port = served
    reader, writer = await raw(host, port, b"POST /v1/images HTTP/1.1\r\nHost: x\r\n"
                                            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    answer = await closed_within(reader, 8)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), answer[:300]
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "bad_request"
    writer.close()


async def test_a_client_that_hangs_up_mid_upload_is_a_499_not_a_500(
        served: tuple[str, int]) -> None:
    host, port = served
    head = (f"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n").encode()
    _, writer = await raw(host, port, head + multipart([("a.jpg", make_image(3))])[:2000])
    await asyncio.sleep(0)  # let the server start reading the body
    writer.transport.abort()

    async def counted() -> bool:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{host}:{port}/metrics") as resp:
            text = await resp.text()
        return 'route="/v1/images",status="499"' in text

    await wait_for(counted, 10, "the hang-up to be counted as 499")
    async with aiohttp.ClientSession() as session, session.get(
            f"http://{host}:{port}/metrics") as resp:
        assert 'status="500"' not in await resp.text()


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_non_zero(
        tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        exe = Path(sys.executable).with_name("elastichash")
        env = {k: v for k, v in os.environ.items() if k != "MAKELEVEL"}
        done = subprocess.run([str(exe), "serve", "--port", str(port), "--data",
                               str(tmp_path)], capture_output=True, text=True, timeout=60,
                              env=env)
        assert done.returncode == 2  # as for every role: restarting later may work
        assert f"port {port} on 127.0.0.1 is in use; try `--port 9000`" in done.stderr
        assert "Traceback" not in done.stderr
        assert "serving" not in done.stderr
        made = subprocess.run([str(exe), "serve", "--port", str(port), "--data",
                               str(tmp_path)], capture_output=True, text=True, timeout=60,
                              env={**env, "MAKELEVEL": "1"})
        assert "try `make run PORT=9000`" in made.stderr
    finally:
        holder.close()
