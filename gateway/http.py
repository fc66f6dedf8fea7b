"""HTTP plumbing of the gateway: the shared error middleware, API keys, JSON responses."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from elastichash.errors import Unauthorized
from elastichash.web_errors import Handler, error_middleware
from gateway.metrics import Metrics


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def make_middlewares(metrics: Metrics, api_keys: list[str]) -> list[Any]:
    keys = frozenset(api_keys)

    @web.middleware
    async def api_keys_required(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (keys and request.method in ("POST", "DELETE", "PUT") and _is_write(request)
                and request.headers.get("X-API-Key") not in keys):
            raise Unauthorized("this endpoint needs a valid X-API-Key header")
        return await handler(request)

    # Outermost first: errors (and metrics) cover the key check too.
    return [error_middleware(metrics.observe), api_keys_required]


def client_key(request: web.Request, api_keys: list[str]) -> str:
    """Who is asking, for fair shares: a valid API key, else the peer address (a made-up key
    buys no extra share)."""
    key = request.headers.get("X-API-Key")
    if key and key in api_keys:
        return f"key:{key}"
    return f"addr:{request.remote}"


def _is_write(request: web.Request) -> bool:
    # Search is a POST but reads only: it stays open like GETs.
    return not request.path.startswith("/v1/search")
