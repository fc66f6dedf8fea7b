"""aiohttp application of the search service: factory, lifespan, error mapping, entry point."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from elastichash.index.base import Index
from elastichash.index.factory import make_index
from elastichash.priority import QueryFirst
from elastichash.roles import Role, run_role
from elastichash.web_errors import error_middleware
from search_service import routes
from search_service.config import SearchServiceSettings
from search_service.keys import INDEX_KEY, METRICS_KEY, SEARCHES_KEY, SETTINGS_KEY
from search_service.metrics import Metrics

log = logging.getLogger(__name__)


def create_app(settings: SearchServiceSettings, *, index: Index | None = None) -> web.Application:
    """The app over ``index`` (default: the one ``settings.index`` describes), opened and
    closed with the app."""
    metrics = Metrics()
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[error_middleware(metrics.observe)])
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[SEARCHES_KEY] = QueryFirst(settings.search_priority_s, waited=metrics.search_wait,
                                   in_flight=metrics.searches_in_flight)
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
    from elastichash.serving.server import run

    def announce(url: str) -> None:
        log.info("search service serving %s", url)

    run(create_app(settings), settings.host, settings.port, settings.server,
        shutdown_timeout=settings.shutdown_timeout_s, announce=announce)


def main(argv: list[str] | None = None) -> int:
    return run_role(ROLE, argv, _serve, _add_arguments, _apply)
