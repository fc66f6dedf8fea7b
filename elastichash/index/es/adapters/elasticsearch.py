"""The engine protocol over ``elasticsearch-py`` 8 (async)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch, UnsupportedProductError

from elastichash.index.es.adapters.common import AdapterBase
from elastichash.index.es.client import EngineApiError, EngineUnreachable, WrongEngine


def api_error(exc: ApiError) -> EngineApiError:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error")
    if isinstance(err, dict):
        return EngineApiError(exc.status_code, str(err.get("type", "error")),
                              str(err.get("reason", "")))
    return EngineApiError(exc.status_code, str(err or exc.message), str(exc))


class Adapter(AdapterBase):
    kind = "elasticsearch"
    _client: AsyncElasticsearch

    def __init__(self, url: str, *, request_timeout_s: float = 30.0) -> None:
        self.url = url
        self._client = AsyncElasticsearch(
            url, request_timeout=request_timeout_s, max_retries=2, retry_on_timeout=True
        )

    def source_excludes(self, fields: Sequence[str]) -> dict[str, Any]:
        return {"source_excludes": list(fields)}

    def translate(self, exc: Exception) -> Exception | None:
        if isinstance(exc, UnsupportedProductError):
            version = (exc.body.get("version") or {}) if isinstance(exc.body, dict) else {}
            found = str(version.get("distribution") or "a server that is not Elasticsearch")
            return WrongEngine(self.url, found, str(version.get("number", "")), "Elasticsearch")
        if isinstance(exc, ApiError):
            return api_error(exc)
        if isinstance(exc, TransportError):
            return EngineUnreachable(f"Elasticsearch at {self.url}: {exc}")
        return None

    async def info(self) -> dict[str, Any]:
        return dict(await self._run(self._client.info()))

    async def put_script(self, script_id: str, source: str) -> None:
        await self._run(self._client.put_script(
            id=script_id, script={"lang": "painless", "source": source}))

    async def create_index(self, index: str, body: dict[str, Any]) -> bool:
        return await self._created(self._client.indices.create(index=index, **body))

    async def delete_index(self, index: str) -> None:
        await self._run(self._client.indices.delete(index=index, ignore_unavailable=True))

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        await self._run(self._client.indices.put_settings(index=index, settings=settings))

    async def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        await self._run(self._client.indices.update_aliases(actions=actions))

    async def reindex(self, source: str, dest: str) -> dict[str, Any]:
        return dict(await self._run(self._client.reindex(
            source={"index": source}, dest={"index": dest},
            wait_for_completion=True, refresh=True,
        )))

    async def bulk(self, ndjson: str) -> dict[str, Any]:
        # No transport retries: a timed-out bulk may have been applied, and a delete sent again
        # would come back not_found. The caller retries per item.
        # The NDJSON serializer sends a str body as it is (typed as a list of dicts only).
        once = self._client.options(max_retries=0, retry_on_timeout=False)
        return dict(await self._run(once.bulk(operations=ndjson)))  # type: ignore[arg-type]

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        resp = await self._run(self._client.count(index=index, query=query))
        return int(resp["count"])

    async def refresh(self, indices: Sequence[str]) -> None:
        await self._run(self._client.indices.refresh(index=list(indices)))

    async def health(self, timeout_s: float) -> str | None:
        return await self._status(self._client.options(
            request_timeout=timeout_s, max_retries=0).cluster.health())

    async def close(self) -> None:
        await self._client.close()
