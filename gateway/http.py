"""HTTP plumbing: JSON errors with stable codes, API keys, request metrics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError

from elastichash.errors import (
    ElasticHashError,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    http_status,
    validation_message,
)

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499
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


async def close_after(request: web.Request, resp: web.Response) -> web.Response:
    """Send ``resp`` and close the connection at once: a stalled client gets no lingering
    (aiohttp otherwise waits up to 10 s for the rest of an unread body)."""
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )




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
            resp = error_response(status, exc.code, exc.message, exc.field,
                                  retry_after=retry_after)
            if isinstance(exc, RequestTimeout):
                return await close_after(request, resp)
            # An unread rest of an over-size body: aiohttp reads and drops it for at most
            # 10 s (so the client can read the answer), then closes.
            return resp
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
        except ConnectionError as exc:
            # The client went away mid-request (nginx's 499): its doing, not a server error.
            status = CLIENT_CLOSED
            log.info("%s %s: client closed the connection (%s)", request.method, request.path,
                     exc)
            return web.Response(status=CLIENT_CLOSED)
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
