"""The engine protocol over ``opensearch-py`` (async). Its calls take ``body=`` forms and raise
``TransportError`` with ``status_code`` ``'N/A'`` when there was no answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OsConnectionError
from opensearchpy.exceptions import TransportError

from elastichash.index.es.adapters.common import AdapterBase
from elastichash.index.es.client import EngineApiError, EngineUnreachable, WrongEngine


def api_error(exc: TransportError) -> EngineApiError:
    info = exc.info if isinstance(exc.info, dict) else {}
    err = info.get("error")
    if isinstance(err, dict):
        return EngineApiError(int(exc.status_code), str(err.get("type", "error")),
                              str(err.get("reason", "")))
    return EngineApiError(int(exc.status_code), str(exc.error), str(err or exc))


class Adapter(AdapterBase):
    kind = "opensearch"
    _client: AsyncOpenSearch

    def __init__(self, url: str, *, request_timeout_s: float = 30.0) -> None:
        self.url = url
        self._client = AsyncOpenSearch(
            url, timeout=request_timeout_s, max_retries=2, retry_on_timeout=True
        )
        # For bulk and health: no transport retries (see ``bulk``), short health checks.
        self._once = AsyncOpenSearch(url, timeout=request_timeout_s, max_retries=0)

    def source_excludes(self, fields: Sequence[str]) -> dict[str, Any]:
        return {"params": {"_source_excludes": ",".join(fields)}}

    def translate(self, exc: Exception) -> Exception | None:
        if isinstance(exc, OsConnectionError):  # includes timeouts
            return EngineUnreachable(f"OpenSearch at {self.url}: {exc}")
        if isinstance(exc, TransportError):
            if not isinstance(exc.status_code, int):
                return EngineUnreachable(f"OpenSearch at {self.url}: {exc}")
            return api_error(exc)
        return None

    async def info(self) -> dict[str, Any]:
        info = dict(await self._run(self._client.info()))
        version = info.get("version") or {}
        if version.get("distribution") != "opensearch":
            raise WrongEngine(self.url, "elasticsearch", str(version.get("number", "")),
                              "OpenSearch")
        return info

    async def put_script(self, script_id: str, source: str) -> None:
        await self._run(self._client.put_script(
            id=script_id, body={"script": {"lang": "painless", "source": source}}))

    async def create_index(self, index: str, body: dict[str, Any]) -> bool:
        return await self._created(self._client.indices.create(index=index, body=body))

    async def delete_index(self, index: str) -> None:
        await self._run(self._client.indices.delete(
            index=index, params={"ignore_unavailable": "true"}))

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        await self._run(self._client.indices.put_settings(index=index, body=settings))

    async def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        await self._run(self._client.indices.update_aliases(body={"actions": actions}))

    async def reindex(self, source: str, dest: str) -> dict[str, Any]:
        return dict(await self._run(self._client.reindex(
            body={"source": {"index": source}, "dest": {"index": dest}},
            params={"wait_for_completion": "true", "refresh": "true"},
        )))

    async def bulk(self, ndjson: str) -> dict[str, Any]:
        # No transport retries: a timed-out bulk may have been applied, and a delete sent again
        # would come back not_found. The caller retries per item.
        return dict(await self._run(self._once.bulk(body=ndjson)))

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        resp = await self._run(self._client.count(
            index=index, body=None if query is None else {"query": query}))
        return int(resp["count"])

    async def refresh(self, indices: Sequence[str]) -> None:
        await self._run(self._client.indices.refresh(index=",".join(indices)))

    async def health(self, timeout_s: float) -> str | None:
        return await self._status(
            self._once.cluster.health(params={"request_timeout": timeout_s}))

    async def close(self) -> None:
        await self._client.close()
        await self._once.close()
