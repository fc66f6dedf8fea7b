"""Ingest, status, delete, thumbnail and failure endpoints."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import HttpUrl, TypeAdapter, ValidationError

from elastichash.aio import gather_bounded
from elastichash.errors import (
    Conflict,
    ElasticHashError,
    InvalidInput,
    NotFound,
    PartlyAccepted,
    PayloadTooLarge,
    RequestTimeout,
    http_status,
)
from elastichash.ids import check_id, content_id
from elastichash.index.filters import INGEST_FIELDS, ingest_metadata
from elastichash.index.incoming import skipped_duplicate_of
from elastichash.index.schema import all_sources, hit_values
from elastichash.pipeline import IngestItem
from elastichash.serving.body import Body
from elastichash.validate import inspect_image
from elastichash.web_errors import close_after, error_response
from gateway.http import check_off_loop, client_key, json_model
from gateway.schemas import (
    AcceptedImage,
    FailureOut,
    FailuresResponse,
    ImageStatus,
    IngestResponse,
    IngestUrlsRequest,
    ItemError,
)
from gateway.state import BACKLOG, COMPONENTS, FETCHER, METRICS, PENDING, SEARCHES, SETTINGS

log = logging.getLogger(__name__)

# Files are handed to the pipeline in groups, so a 1,000-file upload never sits in memory whole.
SUBMIT_GROUP_FILES = 32
SUBMIT_GROUP_BYTES = 64 * 1024 * 1024
FETCH_CONCURRENCY = 8
# Sources appended at once for re-uploaded images (a request each to a remote index).
ADD_SOURCE_CONCURRENCY = 8
MAX_FIELD_PARTS = 16  # album, taken_at and tags fields in one upload request


def thumbnail_url(image_id: str, external: str | None) -> str:
    return external or f"/v1/images/{image_id}/thumbnail"


@dataclass
class _Group:
    """Images not yet handed to the pipeline, and which of their ids are content ids: one
    object, so that the two are always taken (and started afresh) together."""

    # None in place of the item: already indexed, answered but not queued.
    items: list[tuple[IngestItem | None, AcceptedImage]] = field(default_factory=list)
    by_content: set[str] = field(default_factory=set)
    nbytes: int = 0


class _Batch:
    """Collects accepted items and errors; flushes to the pipeline in bounded groups.

    An image is listed as accepted only once the pipeline took it: when a later group
    cannot be submitted (spool full, broker down), the answer still names every image
    queued so far, and gives each image of the failed group the reason."""

    def __init__(self, request: web.Request) -> None:
        self.app = request.app
        self.group = _Group()  # not yet handed to the pipeline
        self.accepted: list[AcceptedImage] = []
        self.errors: list[ItemError] = []
        self.failure: ElasticHashError | None = None

    def error(self, exc: ElasticHashError, *, filename: str | None = None,
              url: str | None = None) -> None:
        self.app[METRICS].rejected.labels(exc.code).inc()
        self.errors.append(ItemError(filename=filename, url=url, code=exc.code,
                                     message=exc.message))

    async def add(self, data: bytes, *, given_id: str | None, source: str | None,
                  filename: str | None = None, url: str | None = None,
                  fields: dict[str, Any] | None = None) -> None:
        settings = self.app[SETTINGS]
        try:
            # Header parse and hashing of up to max_bytes: off the event loop when large.
            info = await check_off_loop(inspect_image, data, settings.limits.max_pixels)
            image_id = check_id(given_id) if given_id else info.content_id
        except ElasticHashError as exc:
            self.error(exc, filename=filename, url=url)
            return
        accepted = AcceptedImage(id=image_id, filename=filename, url=url,
                                 status_url=f"/v1/images/{image_id}")
        group = self.group
        if given_id is None:
            group.by_content.add(image_id)
        # Derived fields next to the client's collection fields: all filterable.
        metadata: dict[str, Any] = {
            **(fields or {}), "width": info.width, "height": info.height,
            "format": info.content_type.removeprefix("image/"), "ingested_at": time.time()}
        if filename:
            metadata["filename"] = filename
        group.items.append((IngestItem(image_id, data, source, metadata, info.content_type),
                            accepted))
        group.nbytes += len(data)
        if len(group.items) >= SUBMIT_GROUP_FILES or group.nbytes >= SUBMIT_GROUP_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self.group.items:
            return
        taken, self.group = self.group, _Group()
        group = await self._skip_indexed(taken)
        to_queue = [it for it, _ in group if it is not None]
        if self.failure is None and to_queue:
            await self.app[SEARCHES].wait_turn()  # a search in flight goes first
            try:
                await self.app[COMPONENTS].pipeline.submit(to_queue)
            except PartlyAccepted as exc:
                took = set(exc.accepted)
                self._accepted([g for g in group if g[0] is None or g[0].id in took])
                group = [g for g in group if g[0] is not None and g[0].id not in took]
                self.failure = exc
            except ElasticHashError as exc:
                self.failure = exc
        if self.failure is not None:
            # This group, and any after it, is refused as a whole (the pipeline takes all
            # of a group or none of it); what was queued before stays in the answer.
            for _, acc in group:
                self.error(self.failure, filename=acc.filename, url=acc.url)
            return
        self._accepted(group)

    def _accepted(self, group: list[tuple[IngestItem | None, AcceptedImage]]) -> None:
        self.accepted.extend(acc for _, acc in group)
        queued = [it for it, _ in group if it is not None]
        pending = self.app[PENDING]
        for it in queued:
            pending.add(it.id, it.source)
        self.app[METRICS].ingested.inc(len(queued))

    async def _skip_indexed(self, taken: _Group) -> list[tuple[IngestItem | None, AcceptedImage]]:
        """Images whose bytes are indexed already (a content id) are answered so, and their
        source is appended to the document's sources instead of queueing a copy that replaces
        it. One lookup for the group: a lookup per image would cost the index a request each.

        The sources are added concurrently (ADD_SOURCE_CONCURRENCY at a time), one call per
        image as before, each image's error in the answer; the sources of one id are added in
        upload order, one after the other, as the engine's append is a versioned read-modify-
        write that two at once would make retry."""
        comp = self.app[COMPONENTS]
        group = taken.items
        ids = [it.id for it, _ in group if it is not None and it.id in taken.by_content
               and not comp.pipeline.is_queued(it.id)]
        found = await comp.index.existing(ids) & set(ids) if ids else set()
        if not found:
            return group
        by_id: dict[str, list[tuple[int, str]]] = {}  # id -> (place in group, source)
        for n, (it, _) in enumerate(group):
            if it is not None and it.id in found and it.source:
                by_id.setdefault(it.id, []).append((n, it.source))

        async def add_sources(
                item: tuple[str, list[tuple[int, str]]]) -> list[tuple[int, ElasticHashError]]:
            doc_id, sources = item
            failed = []
            for n, source in sources:
                try:
                    await comp.index.add_source(doc_id, source)
                except ElasticHashError as exc:
                    failed.append((n, exc))
            return failed

        failed = dict(f for fs in await gather_bounded(add_sources, list(by_id.items()),
                                                       ADD_SOURCE_CONCURRENCY) for f in fs)
        out: list[tuple[IngestItem | None, AcceptedImage]] = []
        for n, (it, acc) in enumerate(group):
            if it is None or it.id not in found:
                out.append((it, acc))
            elif n in failed:
                self.error(failed[n], filename=acc.filename, url=acc.url)
            else:
                out.append((None, acc.model_copy(update={"status": "indexed"})))
        return out

    @property
    def flushed(self) -> bool:
        return bool(self.accepted)

    def response(self) -> web.Response:
        body = IngestResponse(images=self.accepted, errors=self.errors)
        if self.accepted or not self.errors:
            # 202 when something was queued; 200 when every image was indexed already.
            queued = any(a.status == "queued" for a in self.accepted) or not self.accepted
            return json_model(body, status=202 if queued else 200)
        if self.failure is not None:
            retry_after = getattr(self.failure, "retry_after", None)
            return error_response(http_status(self.failure), self.failure.code,
                                  f"no image accepted: {self.failure.message}",
                                  retry_after=retry_after,
                                  errors=[e.model_dump() for e in self.errors])
        codes = {e.code for e in self.errors}
        first = self.errors[0]
        status = 400
        if len(codes) == 1:
            status = {"payload_too_large": 413, "unsupported_media_type": 415,
                      "bad_image": 422}.get(first.code, 400)
        return error_response(status, first.code if len(codes) == 1 else "invalid_input",
                              f"no image accepted: {first.message}",
                              errors=[e.model_dump() for e in self.errors])


async def post_images(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    # Before reading the body: a client told to come back later should not upload first.
    await request.app[BACKLOG].check(request.app[COMPONENTS].pipeline)
    batch = _Batch(request)
    if request.content_type == "multipart/form-data":
        # Each file may come with an 'id' field; one 'source' field; the collection fields
        # (a few, 'tags' perhaps repeated).
        body = Body(request, settings.max_request_bytes, settings.body,
                    max_parts=2 * settings.max_files_per_request + 2 + MAX_FIELD_PARTS)
        try:
            await _multipart_ingest(request, body, batch)
        except (InvalidInput, RequestTimeout) as exc:
            if not batch.flushed:
                raise
            # Some images are already queued: say which, and what stopped the rest.
            batch.error(exc)
            if isinstance(exc, RequestTimeout):
                await batch.flush()
                return await close_after(request, batch.response())
    elif request.content_type == "application/json":
        body = Body(request, settings.max_json_bytes, settings.body)
        urls = IngestUrlsRequest.model_validate(await body.json())
        shared = ingest_metadata(urls.album, urls.tags, urls.taken_at)
        pairs: list[tuple[str, str | None, dict[str, Any]]] = [
            (u, None, shared) for u in urls.urls or []]
        pairs += [(i.url, i.id, {**shared, **ingest_metadata(i.album, i.tags, i.taken_at)})
                  for i in urls.items or []]
        if len(pairs) > settings.max_urls_per_request:
            raise InvalidInput(f"at most {settings.max_urls_per_request} URLs per request",
                               field="urls")
        await _url_ingest(request, batch, _well_formed(batch, pairs))
    else:
        raise InvalidInput("send multipart/form-data with 'file' parts, or JSON with 'urls'")
    await batch.flush()
    return batch.response()


async def _multipart_ingest(request: web.Request, body: Body, batch: _Batch) -> None:
    """Files in order; an ``id`` field names the file part that follows it."""
    settings = request.app[SETTINGS]
    given_id: str | None = None
    source: str | None = None
    given: dict[str, Any] = {}
    files = 0
    async for part in body.multipart():
        if part.name == "file":
            files += 1
            if files > settings.max_files_per_request:
                raise InvalidInput(
                    f"at most {settings.max_files_per_request} files per request", field="file")
            filename = part.filename or f"file-{files}"
            # Between files, a search in flight goes first: reading, hashing and publishing
            # uploads on this event loop would otherwise delay its every step.
            await request.app[SEARCHES].wait_turn()
            data = await body.read_part(part, settings.limits.max_bytes)
            if data is None:
                batch.error(PayloadTooLarge(
                    f"{filename} is over the {settings.limits.max_bytes}-byte limit"),
                    filename=filename)
            else:
                await batch.add(data, given_id=given_id, source=source or filename,
                                filename=filename, fields=ingest_metadata(**given))
            given_id = None
        elif part.name == "id":
            if given_id is not None:
                raise InvalidInput("two 'id' fields in a row: each 'id' names the file part "
                                   "that follows it", field="id")
            given_id = check_id(await body.field(part))
        elif part.name == "source":
            source = await body.field(part) or None
        elif part.name in INGEST_FIELDS:  # for the files that follow; tags may repeat
            value = await body.field(part)
            if part.name == "tags" and given.get("tags"):
                value = f"{given['tags']},{value}"
            given[part.name] = value or None
            ingest_metadata(**given)  # a bad value is refused before any file is read
        else:
            raise InvalidInput(f"unknown form field {part.name!r}", field=part.name)
    if given_id is not None:
        raise InvalidInput("an 'id' field must come before the file part it names", field="id")
    if files == 0:
        raise InvalidInput("no 'file' part in the upload", field="file")


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _well_formed(batch: _Batch, pairs: list[tuple[str, str | None, dict[str, Any]]]
                 ) -> list[tuple[str, str | None, dict[str, Any]]]:
    """The pairs whose URL is a well-formed http(s) URL (normalised); each other one is an
    entry in the answer's errors, naming it, and the rest are still fetched."""
    kept = []
    for url, given, fields in pairs:
        try:
            kept.append((str(_HTTP_URL.validate_python(url)), given, fields))
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            batch.error(InvalidInput(f"malformed URL {url[:200]}: {why}", field="url"), url=url)
    return kept


async def _url_ingest(request: web.Request, batch: _Batch,
                      pairs: list[tuple[str, str | None, dict[str, Any]]]) -> None:
    """Fetch with bounded concurrency and hand each image on as it arrives, so at most
    FETCH_CONCURRENCY bodies (plus one submit group) are in memory at once."""
    fetcher = request.app[FETCHER]
    client = client_key(request, request.app[SETTINGS].api_keys)
    sem = asyncio.Semaphore(FETCH_CONCURRENCY)
    order = asyncio.Lock()

    async def one(url: str, given: str | None, fields: dict[str, Any]) -> None:
        async with sem:
            await request.app[SEARCHES].wait_turn()  # a search in flight goes first
            try:
                data = await fetcher.fetch(url, client)
            except ElasticHashError as exc:
                batch.error(exc, url=url)
                return
            except Exception as exc:
                # Whatever one URL does, the request still answers for every other URL.
                log.warning("fetching %s failed unexpectedly: %r", url[:200], exc)
                batch.error(InvalidInput(f"fetching {url[:200]} failed: {type(exc).__name__}",
                                         field="url"), url=url)
                return
            async with order:
                await batch.add(data, given_id=given, source=url, url=url, fields=fields)

    await asyncio.gather(*(one(u, g, f) for u, g, f in pairs))


async def get_image(request: web.Request) -> web.Response:
    """The state of the latest upload of an id: queued (a newer upload waits, even while an
    older one is indexed), failed (also when an older upload stays indexed: a successful
    write clears an id's failure record, so a record beside a document is newer than it),
    or indexed."""
    image_id = check_id(request.match_info["id"])
    comp = request.app[COMPONENTS]
    pending = request.app[PENDING]
    doc = await comp.index.get(image_id)
    failure = await comp.index.get_failure(image_id)
    queued = comp.pipeline.is_queued(image_id)
    if queued is None:  # distributed: the gateway's own memory of what it accepted
        submitted = pending.submitted_at(image_id)
        queued = (doc is None and submitted is not None
                  and (failure is None or failure.at < submitted))
    # The document's fields (the field table's in_hits ones) pass as a mapping, as generated.
    if queued:
        queued_fields = {"source": pending.source(image_id)}
        return json_model(ImageStatus(id=image_id, status="queued", **queued_fields))
    pending.discard(image_id)
    if failure is not None:
        kept = " (the image indexed earlier under this id is kept)" if doc is not None else ""
        of = skipped_duplicate_of(failure)
        thumb = thumbnail_url(image_id, doc.thumbnail_url) if doc else None
        failed_fields = {"source": failure.source, "thumbnail_url": thumb}
        return json_model(ImageStatus(
            id=image_id, status="failed" if of is None else "skipped", reason=failure.reason,
            message=failure.message + kept, duplicate_of=of, **failed_fields))
    if doc is not None:
        of = doc.metadata.get("duplicate_of")
        fields = {**hit_values(doc), "thumbnail_url": thumbnail_url(image_id, doc.thumbnail_url)}
        return json_model(ImageStatus(
            id=image_id, status="indexed", duplicate_of=of if isinstance(of, str) else None,
            sources=all_sources(doc.sources, doc.source), **fields))
    raise NotFound(f"no image with id {image_id}")


async def delete_image(request: web.Request) -> web.Response:
    image_id = check_id(request.match_info["id"])
    comp = request.app[COMPONENTS]
    [result] = await comp.index.delete([image_id])
    if not result.ok:
        if result.error != "not_found":
            raise InvalidInput(f"could not delete {image_id}: {result.error}")
        if comp.pipeline.is_queued(image_id) or image_id in request.app[PENDING]:
            raise Conflict(f"image {image_id} is still queued; delete it once it is indexed")
        raise NotFound(f"no image with id {image_id}")
    return web.Response(status=204)


async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    image_id = check_id(request.match_info["id"])
    doc = await request.app[COMPONENTS].index.get(image_id)
    if doc is None:
        raise NotFound(f"no image with id {image_id}")
    if doc.thumbnail:
        # Ids can be uploaded again with other bytes: caches revalidate (a 304 when the
        # thumbnail is unchanged) instead of keeping an old picture for a day.
        etag = f'"{content_id(doc.thumbnail)}"'
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=doc.thumbnail, content_type="image/jpeg", headers=headers)
    if doc.thumbnail_url:
        raise web.HTTPFound(doc.thumbnail_url)
    raise NotFound(f"image {image_id} has no thumbnail")


async def get_preview(request: web.Request) -> web.StreamResponse:
    """The large-view JPEG where one is stored (an image larger than its thumbnail, made by
    the encoder in either mode), else the thumbnail's address."""
    image_id = check_id(request.match_info["id"])
    index = request.app[COMPONENTS].index
    data = await index.get_preview(image_id)
    if data is None:
        doc = await index.get(image_id)
        if doc is None:
            raise NotFound(f"no image with id {image_id}")
        raise web.HTTPFound(thumbnail_url(image_id, doc.thumbnail_url))
    etag = f'"{content_id(data)}"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


async def get_failures(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise InvalidInput("limit must be an integer", field="limit") from None
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000", field="limit")
    failures = await request.app[COMPONENTS].index.recent_failures(limit)
    return json_model(FailuresResponse(failures=[
        FailureOut(id=f.id, reason=f.reason, message=f.message, source=f.source, at=f.at)
        for f in failures]))
