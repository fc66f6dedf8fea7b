"""aiohttp application of the search service: factory, lifespan, error mapping, entry point."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from elastichash.errors import ElasticHashError, Unavailable, http_status
from elastichash.index.base import Index
from elastichash.index.factory import make_index
from elastichash.roles import Role, run_role
from search_service import routes
from search_service.config import SearchServiceSettings
from search_service.keys import INDEX_KEY, METRICS_KEY, SETTINGS_KEY
from search_service.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    try:
        resp = await handler(request)
    except ElasticHashError as exc:
        resp = error_response(http_status(exc), exc.code, exc.message, exc.field)
        if isinstance(exc, Unavailable) and exc.retry_after:
            resp.headers["Retry-After"] = str(int(exc.retry_after))
    except web.HTTPRequestEntityTooLarge as exc:
        resp = error_response(413, "payload_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = error_response(
            exc.status, "not_found" if exc.status == 404 else "http_error", exc.reason
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        resp = error_response(500, "internal_error", "internal error")
    metrics.requests.labels(route, str(resp.status)).inc()
    return resp


def create_app(settings: SearchServiceSettings, *, index: Index | None = None) -> web.Application:
    """The app over ``index`` (default: the one ``settings.index`` describes), opened and
    closed with the app."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[errors_middleware])
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = Metrics()
    idx = index if index is not None else make_index(settings.index)
    app[INDEX_KEY] = idx

    async def index_ctx(app: web.Application) -> AsyncIterator[None]:
        started = time.monotonic()
        await idx.open()
        log.info(
            "search service ready: %d documents (%.2fs)",
            await idx.count(),
            time.monotonic() - started,
        )
        yield
        await idx.close()

    app.cleanup_ctx.append(index_ctx)
    routes.add_routes(app)
    return app


ROLE = Role(
    command="search-service",
    summary="run the search service",
    description=(
        "Serve search over an index (the embedded index, or Elasticsearch / OpenSearch): "
        "the gateway and the indexer workers reach the index through it."
    ),
    env_prefix="EH_SEARCH_",
    settings=SearchServiceSettings,
    example_setting="INDEX__BACKEND",
    data_note=(
        "It decides where the embedded index lives unless EH_SEARCH_INDEX__DATA_DIR (or "
        "--data) is set."
    ),
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path,
                        help="embedded index directory (EH_SEARCH_INDEX__DATA_DIR)")


def _apply(args: argparse.Namespace, settings: SearchServiceSettings) -> None:
    if args.data:
        settings.index.data_dir = args.data


def _serve(settings: SearchServiceSettings) -> None:
    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                shutdown_timeout=settings.shutdown_timeout_s, print=None)


def main(argv: list[str] | None = None) -> int:
    return run_role(ROLE, argv, _serve, _add_arguments, _apply)
