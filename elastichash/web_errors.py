"""One error middleware for every HTTP service (gateway, search service).

Errors leave as JSON ``{"error": {"code", "message", "field"}}`` with the status that
``errors.HTTP_STATUS`` gives the exception; 503 and 507 always carry ``Retry-After`` (the
exception's own hint, else one second), so a client backs off the same way whichever
service answered.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from elastichash.errors import (
    ElasticHashError,
    RequestTimeout,
    Unavailable,
    http_status,
    validation_message,
)

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for a client that went away before the answer
RETRY_STATUSES = (503, 507)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (route, status, seconds) of every request, for the service's metrics
Observer = Callable[[str, int, float], None]
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(
    status: int, code: str, message: str, field: str | None = None, *,
    retry_after: float | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "field": field}}
    body.update(extra)
    headers = {}
    if retry_after is not None or status in RETRY_STATUSES:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    return web.json_response(body, status=status, headers=headers)


async def close_after(request: web.Request, resp: web.Response) -> web.Response:
    """Send ``resp`` and close the connection at once: a stalled client gets no lingering
    (aiohttp otherwise waits up to 10 s for the rest of an unread body)."""
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


def route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def error_middleware(observe: Observer) -> Middleware:
    """The middleware that maps every exception to a JSON error and reports each request."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except ElasticHashError as exc:
            status = http_status(exc)
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.path, exc.message)
            retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
            err = error_response(status, exc.code, exc.message, exc.field,
                                 retry_after=retry_after)
            if isinstance(exc, RequestTimeout):
                return await close_after(request, err)
            # An unread rest of an over-size body: aiohttp reads and drops it for at most
            # 10 s (so the client can read the answer), then closes.
            return err
        except ValidationError as exc:
            status = 400
            msg, field = validation_message(exc)
            return error_response(400, "invalid_input", msg, field)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            # aiohttp's 413 text says which limit was passed; other texts repeat the reason.
            message = exc.text if exc.status == 413 and exc.text else exc.reason
            return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"),
                                  message)
        except ConnectionError as exc:
            # The client went away mid-request: its doing, not a server error.
            status = CLIENT_CLOSED
            log.info("%s %s: client closed the connection (%s)", request.method, request.path,
                     exc)
            return web.Response(status=CLIENT_CLOSED)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error")
        finally:
            observe(route_name(request), status, time.perf_counter() - start)

    return errors
