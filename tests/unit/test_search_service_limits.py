"""The search service serves through the gateway's runner and body reader (elastichash.serving):
bodies counted as they arrive (chunked too), a stalled body cut off with a 408, idle and
surplus connections closed, and a port in use named in one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from elastichash.index.embedded import EmbeddedIndex
from elastichash.settings import BodySettings, ServerSettings
from search_service.app import create_app
from search_service.config import SearchServiceSettings
from tests.rawhttp import (
    assert_per_client_cap,
    assert_stalled_body_is_a_408,
    chunked,
    on_socket,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
CAP = 64 * 1024


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """The search service over an embedded index on a real socket, through the runner its
    `search-service` command uses."""
    settings = SearchServiceSettings(
        max_body_bytes=CAP, body=BodySettings(idle_timeout_s=1.0),
        server=ServerSettings(keepalive_timeout_s=1.0, max_connections_per_client=8))
    app = create_app(settings, index=EmbeddedIndex(tmp_path / "idx"))
    async with on_socket(app, settings.server) as served:
        yield served


async def test_a_chunked_bulk_body_over_the_cap_is_refused_as_it_arrives(
        served: tuple[str, int]) -> None:
    host, port = served
    docs = [{"id": f"d{i}", "code": "ab" * 32, "short": "cd" * 8, "source": "x" * 1000}
            for i in range(200)]  # about 220 KB against a 64 KiB cap, without a length
    body = json.dumps({"documents": docs}).encode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{host}:{port}/v1/documents/_bulk", data=chunked(body),
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "payload_too_large"
        async with http.get(f"http://{host}:{port}/v1/stats") as resp:
            assert (await resp.json())["count"] == 0  # nothing of it was written
        small = json.dumps({"documents": docs[:5]}).encode()
        async with http.post(f"http://{host}:{port}/v1/documents/_bulk", data=chunked(small),
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            assert not (await resp.json())["errors"]


async def test_a_stalled_body_is_cut_off_with_a_408(served: tuple[str, int]) -> None:
    head = (b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n")
    await assert_stalled_body_is_a_408(*served, head + b'{"code": "')


async def test_idle_and_surplus_connections_are_closed_and_others_still_served(
        served: tuple[str, int]) -> None:
    await assert_per_client_cap(*served, 8)


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "search_service", "--data", str(tmp_path / "idx")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "EH_SEARCH_HOST": "127.0.0.1",
                 "EH_SEARCH_PORT": str(port), "HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert f"port {port} is in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "idx").exists()  # refused before the index was opened
