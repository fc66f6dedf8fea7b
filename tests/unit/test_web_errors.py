"""The one error middleware both HTTP services use: JSON errors with stable codes, the same
Retry-After on every 503/507, and one observation per request for the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from elastichash.errors import InsufficientStorage, InvalidInput, NotFound, Unavailable
from elastichash.web_errors import error_middleware


class Body(BaseModel):
    k: int


def _raise(exc: BaseException) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    return handler


async def _pydantic(request: web.Request) -> web.Response:
    Body.model_validate({"k": "not a number"})
    return web.Response()


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, list[tuple[str, int]]]]:
    seen: list[tuple[str, int]] = []
    app = web.Application(client_max_size=1024,
                          middlewares=[error_middleware(lambda r, s, _t: seen.append((r, s)))])
    for path, exc in {
        "/busy": Unavailable("index down"),
        "/busy-hint": Unavailable("broker blocked", retry_after=2.5),
        "/full": InsufficientStorage("spool full"),
        "/bad": InvalidInput("k must be positive", field="k"),
        "/missing": NotFound("no such image", field="id"),
        "/boom": RuntimeError("bug"),
    }.items():
        app.router.add_get(path, _raise(exc))
    app.router.add_get("/pydantic", _pydantic)

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app.router.add_post("/echo", echo)
    async with TestClient(TestServer(app)) as c:
        yield c, seen


@pytest.mark.parametrize(("path", "status", "code", "field", "retry_after"), [
    ("/busy", 503, "unavailable", None, "1"),
    ("/busy-hint", 503, "unavailable", None, "3"),
    ("/full", 507, "insufficient_storage", None, "1"),
    ("/bad", 400, "invalid_input", "k", None),
    ("/pydantic", 400, "invalid_input", "k", None),
    ("/missing", 404, "not_found", "id", None),
    ("/nowhere", 404, "not_found", None, None),
    ("/boom", 500, "internal_error", None, None),
])
async def test_every_error_is_json_with_a_stable_code_and_retry_after_where_it_helps(
    client: tuple[TestClient, list[tuple[str, int]]], path: str, status: int, code: str,
    field: str | None, retry_after: str | None,
) -> None:
    c, seen = client
    resp = await c.get(path)
    body = await resp.json()
    assert resp.status == status
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    assert resp.headers.get("Retry-After") == retry_after
    assert seen[-1][1] == status


async def test_an_over_size_body_is_413_saying_which_limit(
    client: tuple[TestClient, list[tuple[str, int]]],
) -> None:
    c, seen = client
    resp = await c.post("/echo", data=b"x" * 4096)
    body = await resp.json()
    assert resp.status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert "1024" in body["error"]["message"]
    assert seen[-1] == ("/echo", 413)
