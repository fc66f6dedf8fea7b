"""HTTP plumbing of the gateway: the shared error middleware, API keys, JSON responses, image
checks off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from elastichash.errors import Unauthorized
from elastichash.web_errors import Handler, error_middleware
from gateway.metrics import Metrics

T = TypeVar("T")

# An image's header check and content hash, up to this size, run on the event loop: about
# 0.05 ms for a 7 kB JPEG, 0.3 ms for 170 kB, less than handing them to a thread costs, and a
# busy machine's thread wake-up added milliseconds to each search (larger ones: a thread).
INLINE_CHECK_BYTES = 256 * 1024


async def check_off_loop(fn: Callable[[bytes, int], T], data: bytes, max_pixels: int,
                         executor: Executor | None = None) -> T:
    """``fn(data, max_pixels)``: inline for a small image, else in ``executor`` (default: the
    loop's)."""
    if len(data) <= INLINE_CHECK_BYTES:
        return fn(data, max_pixels)
    return await asyncio.get_running_loop().run_in_executor(executor, fn, data, max_pixels)


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
