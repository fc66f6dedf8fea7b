"""The engine protocol over ``opensearch-py`` (async). Its calls take ``body=`` forms and raise
``TransportError`` with ``status_code`` ``'N/A'`` when there was no answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OsConnectionError
from opensearchpy.exceptions import TransportError

from elastichash.index.es.client import EngineApiError, EngineUnreachable, WrongEngine


def api_error(exc: TransportError) -> EngineApiError:
    info = exc.info if isinstance(exc.info, dict) else {}
    err = info.get("error")
    if isinstance(err, dict):
        return EngineApiError(int(exc.status_code), str(err.get("type", "error")),
                              str(err.get("reason", "")))
    return EngineApiError(int(exc.status_code), str(exc.error), str(err or exc))


class Adapter:
    kind = "opensearch"

    def __init__(self, url: str, *, request_timeout_s: float = 30.0) -> None:
        self.url = url
        self._client = AsyncOpenSearch(
            url, timeout=request_timeout_s, max_retries=2, retry_on_timeout=True
        )
        # For bulk and health: no transport retries (see ``bulk``), short health checks.
        self._once = AsyncOpenSearch(url, timeout=request_timeout_s, max_retries=0)

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        try:
            yield
        except OsConnectionError as exc:  # includes timeouts
            raise EngineUnreachable(f"OpenSearch at {self.url}: {exc}") from exc
        except TransportError as exc:
            if not isinstance(exc.status_code, int):
                raise EngineUnreachable(f"OpenSearch at {self.url}: {exc}") from exc
            raise api_error(exc) from exc

    async def info(self) -> dict[str, Any]:
        async with self._call():
            info = dict(await self._client.info())
        version = info.get("version") or {}
        if version.get("distribution") != "opensearch":
            raise WrongEngine(self.url, "elasticsearch", str(version.get("number", "")),
                              "OpenSearch")
        return info

    async def get_script(self, script_id: str) -> str | None:
        try:
            async with self._call():
                resp = await self._client.get_script(id=script_id)
        except EngineApiError as exc:
            if exc.status == 404:
                return None
            raise
        return (resp.get("script") or {}).get("source")

    async def put_script(self, script_id: str, source: str) -> None:
        async with self._call():
            await self._client.put_script(
                id=script_id, body={"script": {"lang": "painless", "source": source}}
            )

    async def exists(self, index: str) -> bool:
        async with self._call():
            return bool(await self._client.indices.exists(index=index))

    async def alias_targets(self, alias: str) -> list[str]:
        async with self._call():
            if not await self._client.indices.exists_alias(name=alias):
                return []
            return list((await self._client.indices.get_alias(name=alias)).keys())

    async def create_index(self, index: str, body: dict[str, Any]) -> bool:
        try:
            async with self._call():
                await self._client.indices.create(index=index, body=body)
        except EngineApiError as exc:
            if exc.error_type == "resource_already_exists_exception":
                return False
            raise
        return True

    async def delete_index(self, index: str) -> None:
        async with self._call():
            await self._client.indices.delete(
                index=index, params={"ignore_unavailable": "true"}
            )

    async def get_mapping(self, index: str) -> dict[str, Any]:
        async with self._call():
            return dict(await self._client.indices.get_mapping(index=index))

    async def put_mapping(self, index: str, body: dict[str, Any]) -> None:
        async with self._call():
            await self._client.indices.put_mapping(index=index, body=body)

    async def get_settings(self, index: str) -> dict[str, Any]:
        async with self._call():
            return dict(await self._client.indices.get_settings(index=index))

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        async with self._call():
            await self._client.indices.put_settings(index=index, body=settings)

    async def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        async with self._call():
            await self._client.indices.update_aliases(body={"actions": actions})

    async def reindex(self, source: str, dest: str) -> dict[str, Any]:
        async with self._call():
            return dict(await self._client.reindex(
                body={"source": {"index": source}, "dest": {"index": dest}},
                params={"wait_for_completion": "true", "refresh": "true"},
            ))

    async def bulk(self, ndjson: str) -> dict[str, Any]:
        # No transport retries: a timed-out bulk may have been applied, and a delete sent again
        # would come back not_found. The caller retries per item.
        async with self._call():
            return dict(await self._once.bulk(body=ndjson))

    async def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._call():
            return dict(await self._client.search(index=index, body=body))

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        async with self._call():
            resp = await self._client.count(
                index=index, body=None if query is None else {"query": query}
            )
        return int(resp["count"])

    async def get(self, index: str, doc_id: str,
                  excludes: Sequence[str] = ()) -> dict[str, Any] | None:
        try:
            async with self._call():
                resp = await self._client.get(
                    index=index, id=doc_id,
                    params={"_source_excludes": ",".join(excludes)} if excludes else None)
        except EngineApiError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(resp["_source"])

    async def refresh(self, indices: Sequence[str]) -> None:
        async with self._call():
            await self._client.indices.refresh(index=",".join(indices))

    async def health(self, timeout_s: float) -> str | None:
        try:
            async with self._call():
                resp = await self._once.cluster.health(params={"request_timeout": timeout_s})
        except (EngineApiError, EngineUnreachable):
            return None
        return str(resp.get("status"))

    async def index_stats(self, index: str) -> dict[str, Any]:
        async with self._call():
            resp = await self._client.indices.stats(index=index, metric="docs,store")
        return dict(resp["_all"]["primaries"])

    async def close(self) -> None:
        await self._client.close()
        await self._once.close()
