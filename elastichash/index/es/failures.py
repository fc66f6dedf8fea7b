"""Failure records in their own index: ``_id`` is the image id, so a newer one replaces it."""

from __future__ import annotations

from collections.abc import Sequence

from elastichash.errors import Unavailable
from elastichash.index.base import Failure, WriteResult, latest_by_id
from elastichash.index.es.bulk import Action, BulkPolicy, run_bulk
from elastichash.index.es.client import EngineApiError, EngineClient, EngineUnreachable
from elastichash.index.es.mapping import ID_FIELD, VERSION_FIELD


class FailureStore:
    def __init__(self, client: EngineClient, index: str, policy: BulkPolicy) -> None:
        self._client = client
        self._index = index
        self._policy = policy

    async def record(self, failures: Sequence[Failure]) -> None:
        latest = latest_by_id(failures)
        actions = [
            # The failed upload's sequence is the record's external version: of two failures
            # the newer stays, and only a document at least as new deletes it (clear).
            Action("index", self._index, f.id, {
                ID_FIELD: f.id,
                "reason": f.reason,
                "message": f.message,
                "source": f.source,
                "at": f.at,
                VERSION_FIELD: f.version,
            }, version=f.version)
            for f in latest.values()
        ]
        if not actions:
            return
        results = await run_bulk(self._client, actions, self._policy)
        bad = [r for r in results.values() if not r.ok]
        if bad:
            raise Unavailable(f"{len(bad)} failure records not written: {bad[0].error}")

    async def clear(self, ids: Sequence[str],
                    versions: dict[str, int] | None = None) -> dict[str, WriteResult]:
        """Delete the records of ``ids`` (now indexed). A missing record is fine; a record that
        could not be deleted turns the id's result into a transient failure, so the write is
        retried (idempotently) and the stale record does not outlive it."""
        if not ids or not await self._any():
            return {}
        actions = [Action("delete", self._index, i, version=(versions or {}).get(i, 0))
                   for i in ids]
        results = await run_bulk(self._client, actions, self._policy)
        out: dict[str, WriteResult] = {}
        for doc_id, r in results.items():
            if not r.ok and r.error != "not_found":
                out[doc_id] = WriteResult(
                    id=doc_id,
                    ok=False,
                    error=f"indexed, but its failure record was not removed: {r.error}",
                    transient=True,
                )
        return out

    async def _any(self) -> bool:
        """Whether any record exists. Usually none does, and a batch then costs a refresh of
        an unchanged index and a count instead of a delete per id (half a bulk load's work).
        The refresh makes every record written so far countable."""
        try:
            await self._client.refresh([self._index])
            return await self._client.count(self._index) > 0
        except EngineApiError as exc:
            return exc.status != 404  # no failures index (yet): nothing to clear
        except EngineUnreachable:
            return True  # the deletes then report each id as a transient failure

    async def get(self, doc_id: str) -> Failure | None:
        src = await self._client.get(self._index, doc_id)
        return None if src is None else _failure(src)

    async def recent(self, limit: int = 50) -> list[Failure]:
        resp = await self._client.search(self._index, {
            "query": {"match_all": {}},
            "sort": [{"at": {"order": "desc"}}, {ID_FIELD: {"order": "asc"}}],
            "size": max(0, min(limit, 1000)),
        })
        return [_failure(h["_source"]) for h in resp["hits"]["hits"]]


def _failure(src: dict[str, object]) -> Failure:
    at = src.get("at")
    return Failure(
        id=str(src[ID_FIELD]),
        reason=str(src["reason"]),
        message=str(src.get("message") or ""),
        source=None if src.get("source") is None else str(src["source"]),
        at=float(at) if isinstance(at, (int, float)) else 0.0,
        version=int(src.get(VERSION_FIELD) or 0),  # type: ignore[call-overload]
    )
