"""Inputs the search service must refuse with a 400, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from elastichash.errors import InvalidInput
from elastichash.ids import check_id
from elastichash.index.embedded import EmbeddedIndex
from search_service.app import create_app
from search_service.config import SearchServiceSettings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(SearchServiceSettings(), index=EmbeddedIndex(tmp_path / "i"))
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize("failure", [
    {"id": "a", "reason": "corrupt", "message": "m", "source": {"x": 1}},
    {"id": "a", "reason": "corrupt", "message": "m", "at": float("nan")},
    {"id": "a", "reason": "corrupt", "message": "m", "at": 10**400},
    {"id": "a", "reason": "corrupt", "message": "m", "at": True},
])
async def test_malformed_failure_records_are_400(client: TestClient,
                                                 failure: dict[str, Any]) -> None:
    import json

    body = json.dumps({"failures": [failure]}, allow_nan=True)
    resp = await client.post("/v1/failures", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    good = {"id": "a", "reason": "corrupt", "message": "m", "source": None, "at": 1.5}
    resp = await client.post("/v1/failures", json={"failures": [good]})
    assert resp.status == 200


async def test_absurdly_nested_json_is_400(client: TestClient) -> None:
    resp = await client.post("/v1/search", data=b"[" * 100_000 + b"]" * 100_000,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400


def test_an_id_with_a_trailing_newline_is_refused() -> None:
    assert check_id("abc") == "abc"
    with pytest.raises(InvalidInput):
        check_id("abc\n")
