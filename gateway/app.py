"""``create_app(settings)``: the gateway's aiohttp application, and ``main()``.

The same app serves standalone and distributed mode; only the components factory differs
(in-process pipeline and embedded index, or the AMQP pipeline and a remote index).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest

from elastichash.priority import QueryFirst
from elastichash.roles import Role, run_role
from gateway import ingest, search
from gateway.backpressure import BacklogGate
from gateway.config import GatewaySettings
from gateway.fetch import Fetcher
from gateway.http import make_middlewares
from gateway.metrics import Metrics
from gateway.openapi import build_openapi
from gateway.pending import PendingSet
from gateway.state import (
    BACKLOG,
    COMPONENTS,
    FETCHER,
    METRICS,
    PENDING,
    QUERY_POOL,
    SEARCHES,
    SETTINGS,
    Components,
    ComponentsFactory,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


@asynccontextmanager
async def distributed_components(settings: GatewaySettings) -> AsyncIterator[Components]:
    """RabbitMQ for ingest and query encoding; the index through its configured backend."""
    from elastichash.index.factory import make_index
    from gateway.pipeline_amqp import AmqpPipeline

    pipeline = AmqpPipeline(settings.amqp, settings.model)
    index = make_index(settings.index)
    await index.open()
    try:
        await pipeline.start()
        try:
            # The index records the model whose codes it holds and refuses another (a remote
            # index: the search service's engine or embedded index does, on this call).
            bind_model = getattr(index, "bind_model", None)
            if bind_model is not None:
                await bind_model(pipeline.model_name, pipeline.spec)
            yield Components(pipeline=pipeline, index=index, backend=settings.index.backend)
        finally:
            await pipeline.stop()
    finally:
        await index.close()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    comp = request.app.get(COMPONENTS)
    checks = {"pipeline": False, "index": False}
    if comp is not None:
        checks["pipeline"] = await comp.pipeline.ready()
        checks["index"] = await comp.index.ready()
    ok = all(checks.values())
    return web.json_response({"status": "ready" if ok else "not_ready", "checks": checks},
                             status=200 if ok else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(), dumps=json.dumps)


async def index_page(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.exists():
        return web.Response(text="elastichash gateway: see /v1/openapi.json",
                            content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data: http: https:; "
            "connect-src 'self'; frame-ancestors 'none'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path == "/" or request.path.startswith("/static/"):
        # Modules are not fingerprinted: revalidate so an upgrade never mixes versions.
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = PAGE_CSP


def create_app(
    settings: GatewaySettings, components: ComponentsFactory | None = None
) -> web.Application:
    """Build the app. No I/O here: the components open in the cleanup context."""
    metrics = Metrics()
    # Multipart bodies are streamed with their own caps; this bounds JSON and form bodies.
    app = web.Application(middlewares=make_middlewares(metrics, settings.api_keys),
                          client_max_size=8 * 1024 * 1024)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[PENDING] = PendingSet(settings.pending_capacity)
    app[BACKLOG] = BacklogGate(settings.max_queued, settings.retry_after_s)
    app[SEARCHES] = QueryFirst(settings.search_priority_s, waited=metrics.search_wait,
                               in_flight=metrics.searches_in_flight)
    factory = components or distributed_components

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        fetcher = Fetcher(settings.fetch)
        await fetcher.open()
        app[FETCHER] = fetcher
        # The query image's check runs on threads of its own, never queued behind the
        # inspections of an ingest flood on the default executor.
        app[QUERY_POOL] = ThreadPoolExecutor(2, "eh-query")
        try:
            async with factory(settings) as comp:
                app[COMPONENTS] = comp
                yield
        finally:
            await fetcher.close()
            app[QUERY_POOL].shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(lifespan)
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/", index_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_post("/v1/images", ingest.post_images)
    app.router.add_get("/v1/images/{id}", ingest.get_image)
    app.router.add_delete("/v1/images/{id}", ingest.delete_image)
    app.router.add_get("/v1/images/{id}/thumbnail", ingest.get_thumbnail)
    app.router.add_get("/v1/images/{id}/preview", ingest.get_preview)
    app.router.add_get("/v1/failures", ingest.get_failures)
    app.router.add_post("/v1/search", search.post_search)
    app.router.add_get("/v1/duplicates", search.get_duplicates)
    app.router.add_get("/v1/stats", search.get_stats)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static", STATIC_DIR, follow_symlinks=False)
    return app


ROLE = Role(
    command="gateway",
    summary="run the REST gateway (distributed mode)",
    description=(
        "Serve the REST API and the web page in distributed mode: ingest goes to the broker "
        "with confirms (202 once confirmed), query images are encoded by the encoder workers "
        "over their own RPC queue, search and status go to the search service."
    ),
    env_prefix="EH_GATEWAY_",
    settings=GatewaySettings,
    example_setting="AMQP__URL",
    data_note=(
        "It decides where built-in models are built and kept unless "
        "EH_GATEWAY_MODEL__MODELS_DIR is set (the gateway reads the model's metadata: bit "
        "selection, fingerprint)."
    ),
)


def _serve(settings: GatewaySettings) -> None:
    from elastichash.serving.server import run

    def announce(url: str) -> None:
        log.info("gateway serving %s", url)

    run(create_app(settings), settings.host, settings.port, settings.server,
        shutdown_timeout=settings.shutdown_timeout_s, announce=announce)


def main(argv: list[str] | None = None) -> int:
    return run_role(ROLE, argv, _serve)
