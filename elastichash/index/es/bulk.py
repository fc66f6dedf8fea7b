"""Bulk writes with per-item outcomes: only failed items are retried, and every input id gets
exactly one ``WriteResult`` so callers can ack exactly what was written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.helpers import async_streaming_bulk

from elastichash.index.base import WriteResult

log = logging.getLogger(__name__)

# Statuses worth retrying: overload (429) and gateway/availability errors.
TRANSIENT_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class BulkPolicy:
    max_retries: int = 3
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0  # caps initial * 2**attempt
    chunk_size: int = 500
    max_chunk_bytes: int = 16 * 1024 * 1024


def _error_text(info: dict[str, Any]) -> str:
    err = info.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'error')}: {err.get('reason', '')}"
    if err is not None:
        return str(err)
    return str(info.get("result") or f"status {info.get('status')}")


def item_result(doc_id: str, ok: bool, info: dict[str, Any]) -> WriteResult:
    if ok:
        return WriteResult(id=doc_id, ok=True)
    status = info.get("status")
    if status == 404 and info.get("result") == "not_found":
        return WriteResult(id=doc_id, ok=False, error="not_found")
    err = info.get("error")
    # A write block lifts (a reindex behind the alias, disk flood stage): requeue, not drop.
    blocked = isinstance(err, dict) and err.get("type") == "cluster_block_exception"
    transient = status in TRANSIENT_STATUSES or blocked
    return WriteResult(id=doc_id, ok=False, error=_error_text(info), transient=transient)


async def run_bulk(
    client: AsyncElasticsearch,
    actions: list[dict[str, Any]],
    policy: BulkPolicy,
    **bulk_params: Any,
) -> dict[str, WriteResult]:
    """Send ``actions`` (unique ``_id``s) and return one result per id.

    Items the cluster never answered for (connection lost, timeout) are transient failures.
    """
    results: dict[str, WriteResult] = {}
    try:
        async for ok, item in async_streaming_bulk(
            # The helper retries failed items itself. Transport-level retries would re-send a
            # whole bulk after a timeout: harmless for index actions, but a delete that did
            # happen would come back not_found. Unanswered items become transient failures.
            client.options(max_retries=0, retry_on_timeout=False),
            actions,
            chunk_size=policy.chunk_size,
            max_chunk_bytes=policy.max_chunk_bytes,
            max_retries=policy.max_retries,
            initial_backoff=policy.initial_backoff_s,
            max_backoff=policy.max_backoff_s,
            retry_on_status=TRANSIENT_STATUSES,
            raise_on_error=False,
            raise_on_exception=False,
            yield_ok=True,
            **bulk_params,
        ):
            (_op, info), = item.items()
            doc_id = str(info.get("_id"))
            results[doc_id] = item_result(doc_id, ok, info)
    except (TransportError, ApiError) as exc:
        # Connection lost or timed out (after the client's own retries): nothing more is known.
        transient = not isinstance(exc, ApiError) or exc.status_code in TRANSIENT_STATUSES
        log.warning("bulk aborted after %d of %d items: %s", len(results), len(actions), exc)
        for action in actions:
            doc_id = str(action["_id"])
            if doc_id not in results:
                results[doc_id] = WriteResult(
                    id=doc_id, ok=False, error=f"unavailable: {exc}", transient=transient
                )
    failed = sum(not r.ok and r.error != "not_found" for r in results.values())
    if failed:
        log.info("bulk: %d of %d items failed", failed, len(actions))
    return results


def in_order(ids: Iterable[str], by_id: dict[str, WriteResult]) -> list[WriteResult]:
    """Input order, one result per input position (a repeated id shares its final result)."""
    return [by_id[i] for i in ids]
