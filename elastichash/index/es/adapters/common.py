"""What the two adapters share: one wrapper that turns a client's exceptions into the
protocol's (each adapter says how, in :meth:`AdapterBase.translate`), the answers that mean
"not there" (404, an index that already exists, an unhealthy cluster), and the calls whose
form is the same in both clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from elastichash.index.es.client import EngineApiError, EngineUnreachable

T = TypeVar("T")


class AdapterBase:
    """An :class:`~elastichash.index.es.client.EngineClient` over ``self._client``, an engine's
    async Python client; subclasses add the calls whose form differs."""

    kind: str
    url: str
    _client: Any

    def translate(self, exc: Exception) -> Exception | None:
        """The protocol's exception for one the client raised; None lets it through."""
        raise NotImplementedError

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def _run(self, call: Awaitable[T]) -> T:
        async with self._call():
            return await call

    async def _missing_is_none(self, call: Awaitable[T]) -> T | None:
        try:
            return await self._run(call)
        except EngineApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _created(self, call: Awaitable[Any]) -> bool:
        """False where the index exists already (another process made it first)."""
        try:
            await self._run(call)
        except EngineApiError as exc:
            if exc.error_type == "resource_already_exists_exception":
                return False
            raise
        return True

    async def _status(self, call: Awaitable[Any]) -> str | None:
        """The cluster's health status, None where it does not answer well."""
        try:
            resp = await self._run(call)
        except (EngineApiError, EngineUnreachable):
            return None
        return str(resp.get("status"))

    async def get_script(self, script_id: str) -> str | None:
        resp = await self._missing_is_none(self._client.get_script(id=script_id))
        return None if resp is None else (resp.get("script") or {}).get("source")

    async def exists(self, index: str) -> bool:
        return bool(await self._run(self._client.indices.exists(index=index)))

    async def alias_targets(self, alias: str) -> list[str]:
        async with self._call():
            if not await self._client.indices.exists_alias(name=alias):
                return []
            return list((await self._client.indices.get_alias(name=alias)).keys())

    async def get_mapping(self, index: str) -> dict[str, Any]:
        return dict(await self._run(self._client.indices.get_mapping(index=index)))

    async def put_mapping(self, index: str, body: dict[str, Any]) -> None:
        await self._run(self._client.indices.put_mapping(index=index, body=body))

    async def get_settings(self, index: str) -> dict[str, Any]:
        return dict(await self._run(self._client.indices.get_settings(index=index)))

    async def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._run(self._client.search(index=index, body=body)))

    async def get(self, index: str, doc_id: str,
                  excludes: Sequence[str] = ()) -> dict[str, Any] | None:
        resp = await self._missing_is_none(self._client.get(
            index=index, id=doc_id, **(self.source_excludes(excludes) if excludes else {})))
        return None if resp is None else dict(resp["_source"])

    def source_excludes(self, fields: Sequence[str]) -> dict[str, Any]:
        """The keyword arguments that leave ``fields`` out of a returned ``_source``."""
        raise NotImplementedError

    async def index_stats(self, index: str) -> dict[str, Any]:
        resp = await self._run(self._client.indices.stats(index=index, metric="docs,store"))
        return dict(resp["_all"]["primaries"])
