"""The aiohttp application: routes for exactly the REST endpoints the backend uses.

Every response carries ``X-Elastic-Product: Elasticsearch`` (the 8.x client refuses a server
without it). Unknown query parameters, body fields and routes are 400s, as in Elasticsearch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.esserver import handlers as h
from tests.esserver.errors import EsError
from tests.esserver.faults import ERROR_TYPES, Faults
from tests.esserver.headers import negotiate, response_type
from tests.esserver.state import Cluster

Handler = Callable[[web.Request], Awaitable[tuple[int, Any]]]
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster", Cluster)
FAULTS: web.AppKey[Faults] = web.AppKey("faults", Faults)
LOG: web.AppKey[list[tuple[str, str]]] = web.AppKey("log", list)
GLOBAL_PARAMS = {"pretty", "human", "error_trace"}
MAX_CONTENT = 100 * 1024 * 1024  # http.max_content_length


def _respond(status: int, body: Any, version: int | None, head: bool) -> web.Response:
    headers = {"X-Elastic-Product": "Elasticsearch"}
    if head:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**headers, "Content-Type": response_type(version)},
    )


def route(fn: Handler, params: set[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        faults = request.app[FAULTS]
        request.app[LOG].append((request.method, request.path_qs))
        if faults.outage:
            if request.transport is not None:
                request.transport.abort()  # the client sees a dropped connection
            raise web.HTTPServiceUnavailable()
        head = request.method == "HEAD"
        version: int | None = None
        try:
            fault = faults.take_request(request.method, request.path)
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status:
                etype, reason = ERROR_TYPES.get(fault.status, ("exception", "injected"))
                raise EsError(fault.status, etype, reason)
            has_body = request.can_read_body
            try:
                version = negotiate(request.headers.get("Accept"),
                                    request.headers.get("Content-Type"), has_body)
            except EsError as err:
                if err.status == 406:
                    ctype = request.headers.get("Content-Type")
                    return _respond(406, {"error": f"Content-Type header [{ctype}] is not "
                                          "supported", "status": 406}, None, head)
                raise
            for key in request.query:
                if key not in params | GLOBAL_PARAMS:
                    raise EsError(400, "illegal_argument_exception",
                                  f"request [{request.path}] contains unrecognized parameter: "
                                  f"[{key}]")
            status, body = await fn(request)
            return _respond(status, body, version, head)
        except EsError as err:
            return _respond(err.status, err.body(), version, head)

    return handle


async def _no_handler(request: web.Request) -> web.Response:
    try:  # media types are checked before routing, as in Elasticsearch's RestController
        negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"),
                  request.can_read_body)
    except EsError as err:
        if err.status != 406:
            return _respond(err.status, err.body(), None, request.method == "HEAD")
    return _respond(400, {"error": f"no handler found for uri [{request.path}] and method "
                          f"[{request.method}]", "status": 400}, None, request.method == "HEAD")


def create_app(cluster: Cluster, faults: Faults, log: list[tuple[str, str]]) -> web.Application:
    app = web.Application(client_max_size=MAX_CONTENT)
    app[CLUSTER] = cluster
    app[FAULTS] = faults
    app[LOG] = log
    r = app.router
    doc_params = {"realtime", "refresh", "routing", "_source", "_source_excludes",
                  "_source_includes", "stored_fields", "version", "preference"}
    table: list[tuple[str, str, Handler, set[str]]] = [
        ("GET", "/", h.root, set()),
        ("HEAD", "/", h.root, set()),
        ("GET", "/_cluster/health", h.health, {"timeout", "wait_for_status", "level", "local",
                                               "master_timeout"}),
        ("GET", "/_scripts/{id}", h.get_script, {"master_timeout"}),
        ("PUT", "/_scripts/{id}", h.put_script, {"timeout", "master_timeout", "context"}),
        ("POST", "/_scripts/{id}", h.put_script, {"timeout", "master_timeout", "context"}),
        ("DELETE", "/_scripts/{id}", h.delete_script, {"timeout", "master_timeout"}),
        ("POST", "/_bulk", h.bulk_any, h.BULK_PARAMS),
        ("POST", "/_reindex", h.reindex, h.REINDEX_PARAMS),
        ("POST", "/_aliases", h.update_aliases, {"timeout", "master_timeout"}),
        ("PUT", "/_bulk", h.bulk_any, h.BULK_PARAMS),
        ("HEAD", "/_alias/{name}", h.get_alias, h.ALIAS_PARAMS),
        ("GET", "/_alias/{name}", h.get_alias, h.ALIAS_PARAMS),
        ("POST", "/{index}/_bulk", h.bulk_any, h.BULK_PARAMS),
        ("PUT", "/{index}/_bulk", h.bulk_any, h.BULK_PARAMS),
        ("POST", "/{index}/_refresh", h.refresh, h.MULTI_PARAMS),
        ("GET", "/{index}/_refresh", h.refresh, h.MULTI_PARAMS),
        ("POST", "/{index}/_search", h.search, h.SEARCH_PARAMS),
        ("GET", "/{index}/_search", h.search, h.SEARCH_PARAMS),
        ("POST", "/{index}/_count", h.count, h.MULTI_PARAMS),
        ("GET", "/{index}/_count", h.count, h.MULTI_PARAMS),
        ("GET", "/{index}/_stats", h.stats, {"level"}),
        ("GET", "/{index}/_stats/{metric}", h.stats, {"level"}),
        ("GET", "/{index}/_mapping", h.get_mapping, h.MULTI_PARAMS),
        ("PUT", "/{index}/_mapping", h.put_mapping, h.MULTI_PARAMS | {"timeout",
                                                                      "master_timeout"}),
        ("GET", "/{index}/_settings", h.get_settings, {"flat_settings", "include_defaults"}),
        ("PUT", "/{index}/_settings", h.put_settings, {"timeout", "master_timeout",
                                                       "preserve_existing"}),
        ("GET", "/{index}/_doc/{id}", h.get_doc, doc_params),
        ("HEAD", "/{index}/_doc/{id}", h.get_doc, doc_params),
        ("DELETE", "/{index}/_doc/{id}", h.delete_doc, {"refresh", "routing", "timeout"}),
        ("PUT", "/{index}", h.create_index, {"timeout", "master_timeout",
                                             "wait_for_active_shards"}),
        ("HEAD", "/{index}", h.exists_index, h.MULTI_PARAMS),
        ("DELETE", "/{index}", h.delete_index, h.MULTI_PARAMS | {"timeout", "master_timeout"}),
    ]
    for method, path, fn, params in table:
        r.add_route(method, path, route(fn, params))
    r.add_route("*", "/{tail:.*}", _no_handler)
    return app
