"""HTTP handlers of the search service. The JSON shapes live in ``elastichash.index.service_json``
(shared with its client, ``RemoteIndex``)."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from elastichash.errors import InvalidInput, NotFound, Unavailable
from elastichash.index import binding, service_json
from elastichash.index import duplicates as dup
from elastichash.index.base import SCAN_BATCH
from elastichash.index.schema import MAX_SOURCE_CHARS
from elastichash.serving.body import Body
from search_service.keys import INDEX_KEY, METRICS_KEY, SEARCHES_KEY, SETTINGS_KEY

__all__ = ["add_routes"]

MAX_FAILURES_LIMIT = 1000
MAX_SCAN_PAGE = 10_000


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body, read under the service's limits (bytes counted as they
    arrive, a stalled or trickling body cut off with a 408)."""
    settings = request.app[SETTINGS_KEY]
    body = await Body(request, settings.max_body_bytes, settings.body).json()
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    return body


async def search(request: web.Request) -> web.Response:
    # Writes give way while it runs (for at most EH_SEARCH_SEARCH_PRIORITY_S each), from the
    # start of its request: its callers (the gateway, tools) send whole bodies at once.
    with request.app[SEARCHES_KEY]:
        query = service_json.query_from_json(await _json_body(request))
        result = await request.app[INDEX_KEY].search(query)
    metrics = request.app[METRICS_KEY]
    metrics.search_seconds.labels(result.strategy).observe(result.took_ms / 1000.0)
    metrics.candidates.labels(result.strategy).observe(result.candidates)
    return web.json_response(service_json.result_to_json(result))


async def duplicates(request: web.Request) -> web.Response:
    result = await request.app[INDEX_KEY].duplicates(
        max_distance=_query_int(
            request, "max_distance", dup.DEFAULT_DISTANCE, dup.MAX_JOIN_DISTANCE, lo=0
        ),
        offset=_query_int(request, "offset", 0, 1 << 31, lo=0),
        limit=_query_int(request, "limit", dup.DEFAULT_LIMIT, dup.MAX_LIMIT),
    )
    return web.json_response(service_json.duplicates_to_json(result))


async def capabilities(request: web.Request) -> web.Response:
    return web.json_response((await request.app[INDEX_KEY].capabilities()).to_json())


async def bind_model(request: web.Request) -> web.Response:
    """Bind the index to the caller's model (the gateway's, at its start): record it in an
    index that holds no model's codes yet, refuse another (409 ``model_mismatch``)."""
    body = await _json_body(request)
    fields = [body.get(k) for k in ("name", "spec_name", "fingerprint")]
    if not all(isinstance(v, str) and 0 < len(v) <= 1000 for v in fields):
        raise InvalidInput("give the model's name, spec_name and fingerprint as strings",
                           field="body")
    name, spec_name, fingerprint = (str(v) for v in fields)
    index = request.app[INDEX_KEY]
    bind = getattr(index, "bind_model", None)
    if bind is None:  # a backend that keeps no codes of its own
        return web.json_response({"bound": False})
    await bind(name, binding.ModelRef(spec_name, fingerprint))
    return web.json_response({"bound": True})


async def codes(request: web.Request) -> web.Response:
    """One page of :meth:`Index.scan`: ``size`` records with id > ``after``, in id order."""
    size = _query_int(request, "size", SCAN_BATCH, MAX_SCAN_PAGE)
    after = request.query.get("after")
    page: list[dict[str, Any]] = []
    async with contextlib.aclosing(request.app[INDEX_KEY].scan(batch=size, after=after)) as it:
        async for batch in it:  # one batch is one page; the client's cursor is its last id
            page = [service_json.record_to_json(r) for r in batch]
            break
    return web.json_response({"items": page})


async def bulk(request: web.Request) -> web.Response:
    # A search in flight goes first: decoding and writing a bulk on this event loop (and its
    # commit's threads) would otherwise delay it. Bounded, so indexing is never starved.
    await request.app[SEARCHES_KEY].wait_turn()
    body = await _json_body(request)
    items = body.get("documents")
    if not isinstance(items, list):
        raise InvalidInput("documents must be a list", field="documents")
    limit = request.app[SETTINGS_KEY].max_bulk_documents
    if len(items) > limit:
        raise InvalidInput(f"at most {limit} documents per request", field="documents")
    results: list[dict[str, Any] | None] = [None] * len(items)
    docs, slots = [], []
    for i, item in enumerate(items):
        try:
            docs.append(service_json.document_from_json(item))
            slots.append(i)
        except InvalidInput as exc:
            doc_id = item.get("id") if isinstance(item, dict) else None
            results[i] = {"id": doc_id, "ok": False, "error": exc.message, "transient": False}
    written = await request.app[INDEX_KEY].upsert(docs) if docs else []
    for slot, res in zip(slots, written, strict=True):
        results[slot] = service_json.write_result_to_json(res)
    metrics = request.app[METRICS_KEY]
    ok = sum(1 for r in results if r and r["ok"])
    metrics.documents_written.labels("ok").inc(ok)
    metrics.documents_written.labels("error").inc(len(results) - ok)
    return web.json_response({"items": results, "errors": ok != len(results)})


async def _ids(request: web.Request) -> list[str]:
    """The body's ``ids``: a list of strings, else 400."""
    ids = (await _json_body(request)).get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("ids must be a list of strings", field="ids")
    return ids


async def bulk_delete(request: web.Request) -> web.Response:
    ids = await _ids(request)
    results = await request.app[INDEX_KEY].delete(ids)
    return web.json_response({"items": [service_json.write_result_to_json(r) for r in results]})


async def existing(request: web.Request) -> web.Response:
    ids = await _ids(request)
    limit = request.app[SETTINGS_KEY].max_bulk_documents
    if len(ids) > limit:
        raise InvalidInput(f"at most {limit} ids per request", field="ids")
    found = await request.app[INDEX_KEY].existing(ids)
    return web.json_response({"ids": sorted(found)})


async def get_document(request: web.Request) -> web.Response:
    doc = await request.app[INDEX_KEY].get(request.match_info["id"])
    if doc is None:
        raise NotFound(f"no document {request.match_info['id']!r}", field="id")
    with_thumb = "thumbnail" in request.query.getall("include", [])
    # The preview is large: read it from /preview.
    return web.json_response(
        service_json.document_to_json(doc, thumbnail=with_thumb, preview=False))


async def add_source(request: web.Request) -> web.Response:
    """Append a source to a document: the same bytes uploaded under another name."""
    source = (await _json_body(request)).get("source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE_CHARS:
        raise InvalidInput(f"source must be a string of 1 to {MAX_SOURCE_CHARS} characters",
                           field="source")
    doc_id = request.match_info["id"]
    if not await request.app[INDEX_KEY].add_source(doc_id, source):
        raise NotFound(f"no document {doc_id!r}", field="id")
    return web.json_response({"id": doc_id, "ok": True})


async def delete_document(request: web.Request) -> web.Response:
    doc_id = request.match_info["id"]
    (res,) = await request.app[INDEX_KEY].delete([doc_id])
    if not res.ok:
        raise NotFound(f"no document {doc_id!r}", field="id")
    return web.json_response(service_json.write_result_to_json(res))


async def get_thumbnail(request: web.Request) -> web.Response:
    doc = await request.app[INDEX_KEY].get(request.match_info["id"])
    if doc is None or doc.thumbnail is None:
        raise NotFound(f"no thumbnail for {request.match_info['id']!r}", field="id")
    return web.Response(
        body=doc.thumbnail,
        content_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=86400"},
    )


async def get_preview(request: web.Request) -> web.Response:
    data = await request.app[INDEX_KEY].get_preview(request.match_info["id"])
    if data is None:
        raise NotFound(f"no preview for {request.match_info['id']!r}", field="id")
    return web.Response(body=data, content_type="image/jpeg")


async def record_failures(request: web.Request) -> web.Response:
    body = await _json_body(request)
    items = body.get("failures")
    if not isinstance(items, list):
        raise InvalidInput("failures must be a list", field="failures")
    failures = [service_json.failure_from_json(f) for f in items]
    await request.app[SEARCHES_KEY].wait_turn()  # a search in flight goes first
    await request.app[INDEX_KEY].record_failures(failures)
    return web.json_response({"recorded": len(failures)})


def _query_int(request: web.Request, name: str, default: int, hi: int, *, lo: int = 1) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}", field=name)
    return value


async def list_failures(request: web.Request) -> web.Response:
    limit = _query_int(request, "limit", 50, MAX_FAILURES_LIMIT)
    failures = await request.app[INDEX_KEY].recent_failures(limit)
    return web.json_response({"failures": [service_json.failure_to_json(f) for f in failures]})


async def get_failure(request: web.Request) -> web.Response:
    failure = await request.app[INDEX_KEY].get_failure(request.match_info["id"])
    if failure is None:
        raise NotFound(f"no failure recorded for {request.match_info['id']!r}", field="id")
    return web.json_response(service_json.failure_to_json(failure))


async def stats(request: web.Request) -> web.Response:
    return web.json_response(await request.app[INDEX_KEY].stats())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        ready = await request.app[INDEX_KEY].ready()
    except Exception:  # a dependency check must answer, not raise
        ready = False
    if not ready:
        raise Unavailable("the index is not ready", retry_after=1)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS_KEY]
    with contextlib.suppress(Exception):  # metrics must render while the index is down
        m.documents.set(await request.app[INDEX_KEY].count())
    resp = web.Response(body=generate_latest(m.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/search", search)
    app.router.add_get("/v1/duplicates", duplicates)
    app.router.add_get("/v1/capabilities", capabilities)
    app.router.add_get("/v1/codes", codes)
    app.router.add_put("/v1/model", bind_model)
    app.router.add_post("/v1/documents/_bulk", bulk)
    app.router.add_post("/v1/documents/_delete", bulk_delete)
    app.router.add_post("/v1/documents/_existing", existing)
    app.router.add_get("/v1/documents/{id}", get_document)
    app.router.add_delete("/v1/documents/{id}", delete_document)
    app.router.add_post("/v1/documents/{id}/_sources", add_source)
    app.router.add_get("/v1/documents/{id}/thumbnail", get_thumbnail)
    app.router.add_get("/v1/documents/{id}/preview", get_preview)
    app.router.add_post("/v1/failures", record_failures)
    app.router.add_get("/v1/failures", list_failures)
    app.router.add_get("/v1/failures/{id}", get_failure)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
