"""Search by uploaded image, URL, stored id or raw code; and index stats."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from elastichash import codes
from elastichash.errors import InvalidInput, NotFound, PayloadTooLarge
from elastichash.ids import check_id
from elastichash.index.base import Hit
from elastichash.index.query import MAX_WINDOW, SearchQuery
from elastichash.index.schema import hit_values
from elastichash.pipeline import QueryCode
from elastichash.serving.body import Body
from elastichash.validate import check_image_bytes
from gateway.http import check_off_loop, client_key, json_model
from gateway.ingest import thumbnail_url
from gateway.schemas import (
    DuplicateGroupOut,
    DuplicatesParams,
    DuplicatesResponse,
    QueryInfo,
    ResultItem,
    SearchParams,
    SearchRequest,
    SearchResponse,
    StatsResponse,
)
from gateway.state import COMPONENTS, FETCHER, QUERY_POOL, SEARCHES, SETTINGS

log = logging.getLogger(__name__)

# A search query in JSON is a URL, an id or a code and a few numbers.
SEARCH_JSON_MAX = 64 * 1024


async def _multipart_query(request: web.Request) -> tuple[bytes, SearchParams]:
    settings = request.app[SETTINGS]
    limits = settings.limits
    # One file and a few short fields: the request cap is the file cap plus room for those.
    body = Body(request, limits.max_bytes + 64 * 1024, settings.body,
                max_parts=1 + len(SearchParams.model_fields))
    data: bytes | None = None
    fields: dict[str, Any] = {}
    async for part in body.multipart():
        if part.name == "file":
            if data is not None:
                raise InvalidInput("search takes one 'file' part", field="file")
            data = await body.read_part(part, limits.max_bytes)
            if data is None:
                raise PayloadTooLarge(f"query image is over the {limits.max_bytes}-byte limit")
        elif part.name in SearchParams.model_fields:
            value = await body.field(part)
            if value and part.name == "filter":  # a JSON object in a form field
                try:
                    fields["filter"] = json.loads(value)
                except ValueError:
                    raise InvalidInput("filter must be a JSON object", field="filter") from None
            elif value:
                fields[part.name] = value
        else:
            raise InvalidInput(f"unknown form field {part.name!r}", field=part.name)
    if data is None:
        raise InvalidInput("no 'file' part in the search upload", field="file")
    return data, SearchParams.model_validate(fields)


async def _encode(request: web.Request, data: bytes) -> QueryCode:
    # Uploads in this process give way while a query is encoded and searched (searches
    # first, within a bound); not while its body or URL arrives, which a client paces.
    with request.app[SEARCHES]:
        await check_off_loop(check_image_bytes, data, request.app[SETTINGS].limits.max_pixels,
                             request.app[QUERY_POOL])
        return await request.app[COMPONENTS].pipeline.encode_query(data)


async def post_search(request: web.Request) -> web.Response:
    start = time.perf_counter()
    comp = request.app[COMPONENTS]
    settings = request.app[SETTINGS]
    query_id: str | None = None
    params: SearchParams
    query: QueryCode | None = None
    if request.content_type == "multipart/form-data":
        data, params = await _multipart_query(request)
        query = await _encode(request, data)
    elif request.content_type == "application/json":
        body = params = SearchRequest.model_validate(
            await Body(request, SEARCH_JSON_MAX, settings.body).json())
        if body.id is not None:
            query_id = check_id(body.id)
            doc = await comp.index.get(query_id)
            if doc is None:
                raise NotFound(f"no image with id {query_id}", field="id")
            query = QueryCode(doc.code, doc.short)
        elif body.code is not None:
            try:
                code = codes.from_hex(body.code, codes.LONG_BITS)
            except codes.CodeError as exc:
                raise InvalidInput(str(exc), field="code") from None
            if body.short is not None:
                try:
                    short = codes.from_hex(body.short, codes.SHORT_BITS)
                except codes.CodeError as exc:
                    raise InvalidInput(str(exc), field="short") from None
            else:
                short = comp.pipeline.short_of(code)
            query = QueryCode(code, short)
        elif body.url is not None:
            data = await request.app[FETCHER].fetch(
                str(body.url), client_key(request, settings.api_keys))
            query = await _encode(request, data)
    else:
        raise InvalidInput("send JSON (url, id, code and/or text) or multipart/form-data "
                           "with a 'file'")

    # The fields were validated with the request; the query only adds the codes.
    search_query = SearchQuery(
        **(params.params() | {"strategy": params.strategy or settings.index.strategy}),
        code=query.code if query else None, short=query.short if query else None)
    hint = None
    if params.text is not None:
        from elastichash.model.labels import unknown_words_hint, vocabulary

        classes, _, unknown = vocabulary().resolve(params.text)
        hint = unknown_words_hint(unknown)
        if not classes:  # nothing to search for: an empty page, not an error
            # ... where the index serves words at all: the same answer on every backend
            (await comp.index.capabilities()).check(search_query)
            return json_model(SearchResponse(
                results=[], total=0, candidates=0,
                took_ms=round((time.perf_counter() - start) * 1000, 3), strategy="words",
                k=params.k, offset=params.offset, next_offset=None, hint=hint,
                query=QueryInfo(id=query_id, code=codes.to_hex(query.code) if query else None,
                                short=codes.to_hex(query.short) if query else None)))
    with request.app[SEARCHES]:
        result = await comp.index.search(search_query)
    end = params.offset + len(result.hits)
    return json_model(SearchResponse(
        results=[_item(h) for h in result.hits],
        total=result.total, candidates=result.candidates,
        took_ms=round((time.perf_counter() - start) * 1000, 3), strategy=result.strategy,
        k=params.k, offset=params.offset,
        # No next page past the result window: that request would be refused.
        next_offset=(end if result.hits and end < result.total
                     and end + params.k <= MAX_WINDOW else None), hint=hint,
        query=QueryInfo(id=query_id, code=codes.to_hex(query.code) if query else None,
                        short=codes.to_hex(query.short) if query else None)))


def _item(h: Hit) -> ResultItem:
    fields = hit_values(h)  # the field table's in_hits fields; thumbnails served by us
    fields["thumbnail_url"] = thumbnail_url(h.id, h.thumbnail_url)
    return ResultItem(id=h.id, distance=h.distance, **fields)


async def get_duplicates(request: web.Request) -> web.Response:
    params = DuplicatesParams.model_validate(dict(request.query))
    res = await request.app[COMPONENTS].index.duplicates(
        max_distance=params.max_distance, offset=params.offset, limit=params.limit)
    end = params.offset + len(res.groups)
    return json_model(DuplicatesResponse(
        groups=[DuplicateGroupOut(keeper=g.keeper, members=[_item(h) for h in g.members],
                                  distances=g.distances) for g in res.groups],
        total=res.total, images=res.images, pairs=res.pairs, max_distance=res.max_distance,
        offset=params.offset, limit=params.limit,
        next_offset=end if res.groups and end < res.total else None,
        took_ms=round(res.took_ms, 3)))


# /v1/stats answers within about this long whatever its dependencies do: a figure that is not
# ready by then is null and named in "unavailable" (a dashboard must not hang on an outage).
STATS_BUDGET_S = 0.8


async def get_stats(request: web.Request) -> web.Response:
    comp = request.app[COMPONENTS]
    settings = request.app[SETTINGS]
    figures = await _within(
        STATS_BUDGET_S,
        count=comp.index.count(),
        index=comp.index.stats(),
        queued=comp.pipeline.backlog(),
    )
    stats = figures.get("index")
    return json_model(StatsResponse(
        count=figures.get("count"), model=comp.pipeline.model_info(),
        backend=comp.backend, strategy=settings.index.strategy, mode=settings.mode,
        queued=figures.get("queued"),
        index=_jsonable(stats) if isinstance(stats, dict) else {},
        unavailable=sorted(k for k, v in figures.items() if v is None)))


async def _within(budget_s: float, **calls: Awaitable[Any]) -> dict[str, Any]:
    """Run the calls at once; each one's result, or None when it failed or was not done
    within the budget (those are cancelled)."""
    tasks = {name: asyncio.ensure_future(call) for name, call in calls.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=budget_s)
    for task in pending:
        task.cancel()
    out: dict[str, Any] = {}
    for name, task in tasks.items():
        if task in done and not task.cancelled() and task.exception() is None:
            out[name] = task.result()
        else:
            if task in done and not task.cancelled():
                log.info("stats: %s unavailable: %r", name, task.exception())
            out[name] = None
    return out


def _jsonable(stats: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool, type(None)))}
