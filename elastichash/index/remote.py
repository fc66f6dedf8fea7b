"""``Index`` over the search service's HTTP API.

Used by the gateway and the indexer workers in distributed mode when the search service owns
an embedded index. Errors map onto ``elastichash.errors``: no connection, timeouts and 5xx are
:class:`Unavailable` (retry later), 400 is :class:`InvalidInput` with the server's field, and a
404 on a single document is ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from elastichash.errors import (
    InvalidInput,
    ModelMismatch,
    NotFound,
    Unavailable,
    UnsupportedQuery,
)
from elastichash.index import service_json
from elastichash.index.base import (
    SCAN_BATCH,
    Capabilities,
    CodeRecord,
    Document,
    DuplicatesResult,
    Failure,
    SearchQuery,
    SearchResult,
    UpsertPlan,
    WriteResult,
)
from elastichash.index.binding import ModelIdentity

log = logging.getLogger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]
BULK_CHUNK = 2000  # documents per bulk request; the service accepts up to 10,000
BULK_BYTES = 16 * 1024 * 1024  # and bytes: the service accepts bodies up to 64 MiB


def _chunks(bodies: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Bulk requests of at most BULK_CHUNK documents and about BULK_BYTES (previews make a
    document a few hundred KB)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for body in bodies:
        n = sum(len(v) for v in body.values() if isinstance(v, str)) + 1024
        if chunk and (len(chunk) >= BULK_CHUNK or size + n > BULK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(body)
        size += n
    if chunk:
        yield chunk


class RemoteIndex:
    def __init__(
        self,
        base_url: str,
        *,
        session_factory: SessionFactory | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._factory = session_factory
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = (
                self._factory() if self._factory else aiohttp.ClientSession(timeout=self._timeout)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_preview(self, doc_id: str) -> bytes | None:
        if self._session is None:
            raise Unavailable("the remote index is not open")
        url = f"{self.base_url}/v1/documents/{quote(doc_id, safe='')}/preview"
        try:
            async with self._session.get(url, timeout=self._timeout) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise Unavailable(f"search service GET preview: {resp.status}")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"search service {url} unreachable: {exc!r}") from exc

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        if self._session is None:
            raise Unavailable("the remote index is not open")
        url = self.base_url + path
        try:
            async with self._session.request(
                method, url, json=json, params=params, timeout=self._timeout
            ) as resp:
                if resp.status == 404 and missing_ok:
                    return None
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
                if resp.status < 400:
                    return body
                err = body.get("error", {}) if isinstance(body, dict) else {}
                detail = err.get("message", resp.reason)
                message = f"search service {method} {path}: {resp.status} {detail}"
                if resp.status == 404:
                    raise NotFound(message, field=err.get("field"))
                if err.get("code") == ModelMismatch.code:
                    raise ModelMismatch(str(detail))  # names both models and what to do
                if 400 <= resp.status < 500 and resp.status != 429:
                    # Keep the service's stable code where the client knows it.
                    cls = UnsupportedQuery if err.get("code") == UnsupportedQuery.code else (
                        InvalidInput)
                    raise cls(message, field=err.get("field"))
                retry = resp.headers.get("Retry-After")
                raise Unavailable(
                    message, retry_after=float(retry) if retry and retry.isdigit() else None
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"search service {url} unreachable: {exc!r}") from exc

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        # Split here as the service would: an invalid copy cannot be sent at all, and one
        # copy per id keeps the batch's outcome whole when it takes several requests.
        plan = UpsertPlan.of(docs)
        written: dict[str, WriteResult] = {}
        for chunk in _chunks([service_json.document_to_json(d) for d in plan.writes]):
            body = await self._call("POST", "/v1/documents/_bulk", json={"documents": chunk})
            written.update((d["id"], service_json.write_result_from_json(item))
                           for d, item in zip(chunk, body["items"], strict=True))
        return plan.results(written)

    async def add_source(self, doc_id: str, source: str) -> bool:
        body = await self._call(
            "POST", f"/v1/documents/{quote(doc_id, safe='')}/_sources",
            json={"source": source}, missing_ok=True,
        )
        return body is not None

    async def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        body = await self._call("POST", "/v1/documents/_delete", json={"ids": list(ids)})
        return [service_json.write_result_from_json(i) for i in body["items"]]

    async def get(self, doc_id: str) -> Document | None:
        body = await self._call(
            "GET",
            f"/v1/documents/{quote(doc_id, safe='')}",
            params={"include": "thumbnail"},
            missing_ok=True,
        )
        return None if body is None else service_json.document_from_json(body)

    async def existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for s in range(0, len(ids), BULK_CHUNK):
            body = await self._call(
                "POST", "/v1/documents/_existing", json={"ids": list(ids[s : s + BULK_CHUNK])}
            )
            found.update(str(i) for i in body["ids"])
        return found

    async def search(self, query: SearchQuery) -> SearchResult:
        # The service checks the query against its index's capabilities: one check, there.
        body = await self._call("POST", "/v1/search", json=query.to_json())
        return service_json.result_from_json(body)

    async def bind_model(self, name: str, spec: ModelIdentity) -> None:
        """Bind the service's index to this model (``ModelMismatch`` for another one)."""
        await self._call("PUT", "/v1/model", json={
            "name": name, "spec_name": spec.name, "fingerprint": spec.fingerprint})

    async def capabilities(self) -> Capabilities:
        return Capabilities.from_json(await self._call("GET", "/v1/capabilities"))

    async def scan(
        self, *, batch: int = SCAN_BATCH, after: str | None = None
    ) -> AsyncGenerator[list[CodeRecord], None]:
        while True:
            params = {"size": str(batch)} | ({"after": after} if after is not None else {})
            body = await self._call("GET", "/v1/codes", params=params)
            records = [service_json.record_from_json(r) for r in body["items"]]
            if not records:
                return
            yield records
            after = records[-1].id

    async def duplicates(
        self, *, max_distance: int = 8, offset: int = 0, limit: int = 20
    ) -> DuplicatesResult:
        params = {"max_distance": str(max_distance), "offset": str(offset), "limit": str(limit)}
        body = await self._call("GET", "/v1/duplicates", params=params)
        return service_json.duplicates_from_json(body)

    async def record_failures(self, failures: Sequence[Failure]) -> None:
        items = [service_json.failure_to_json(f) for f in failures]
        await self._call("POST", "/v1/failures", json={"failures": items})

    async def get_failure(self, doc_id: str) -> Failure | None:
        body = await self._call("GET", f"/v1/failures/{quote(doc_id, safe='')}", missing_ok=True)
        return None if body is None else service_json.failure_from_json(body)

    async def recent_failures(self, limit: int = 50) -> list[Failure]:
        body = await self._call("GET", "/v1/failures", params={"limit": str(limit)})
        return [service_json.failure_from_json(f) for f in body["failures"]]

    async def count(self) -> int:
        return int((await self.stats())["count"])

    async def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._call("GET", "/v1/stats")
        return body

    async def ready(self) -> bool:
        try:
            await self._call("GET", "/readyz")
        except (Unavailable, InvalidInput, NotFound):
            return False
        return True
