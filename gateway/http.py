"""HTTP plumbing: JSON errors with stable codes, API keys, request metrics."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError

from elastichash.errors import (
    ElasticHashError,
    InvalidInput,
    Unauthorized,
    Unavailable,
    http_status,
    validation_message,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, message: str, field: str | None = None, *,
    retry_after: float | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "field": field}}
    body.update(extra)
    headers = {}
    if retry_after is not None or status in (503, 507):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    return web.json_response(body, status=status, headers=headers)


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


async def read_json(request: web.Request) -> Any:
    """The JSON body; anything a client can send that is not JSON is a 400, never a 500
    (unknown charsets, bad content encodings, absurd nesting or integer sizes)."""
    try:
        return await request.json(loads=json.loads)
    except (ValueError, RecursionError, LookupError, HttpProcessingError,
            web_protocol.RequestPayloadError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None


async def multipart_guard(work: Awaitable[T]) -> T:
    """Run a multipart-reading coroutine; a malformed body is the client's error (400)."""
    try:
        return await work
    except ValidationError:
        raise
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
        raise InvalidInput(f"malformed multipart body: {exc}") from None


async def read_part_capped(part: BodyPartReader, cap: int) -> bytes | None:
    """The part's bytes, or None (after discarding the rest) when it exceeds ``cap``."""
    buf = bytearray()
    while chunk := await part.read_chunk(256 * 1024):
        buf += chunk
        if len(buf) > cap:
            while await part.read_chunk(256 * 1024):
                pass
            return None
    return bytes(buf)


async def read_field(part: BodyPartReader) -> str:
    value = await read_part_capped(part, 4096)
    if value is None:
        raise InvalidInput(f"form field {part.name!r} is over 4096 bytes", field=part.name)
    return value.decode("utf-8", "replace").strip()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eh_gateway_requests_total", "HTTP requests", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "eh_gateway_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested = Counter(
            "eh_gateway_images_accepted_total", "images accepted for indexing",
            registry=self.registry,
        )
        self.rejected = Counter(
            "eh_gateway_images_rejected_total", "images refused at the gateway", ["code"],
            registry=self.registry,
        )


def make_middlewares(metrics: Metrics, api_keys: list[str]) -> list[Any]:
    keys = frozenset(api_keys)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        start = time.perf_counter()
        status = 500
        try:
            if (keys and request.method in ("POST", "DELETE", "PUT") and _is_write(request)
                    and request.headers.get("X-API-Key") not in keys):
                raise Unauthorized("this endpoint needs a valid X-API-Key header")
            resp = await handler(request)
            status = resp.status
            return resp
        except ElasticHashError as exc:
            status = http_status(exc)
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.path, exc.message)
            retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
            return error_response(status, exc.code, exc.message, exc.field,
                                  retry_after=retry_after)
        except ValidationError as exc:
            status = 400
            msg, field = validation_message(exc)
            return error_response(400, "invalid_input", msg, field)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
                exc.status, "http_error"
            )
            return error_response(exc.status, code, exc.reason)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error")
        finally:
            metrics.requests.labels(name, str(status)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)

    return [errors]


def _is_write(request: web.Request) -> bool:
    # Search is a POST but reads only: it stays open like GETs.
    return not request.path.startswith("/v1/search")
