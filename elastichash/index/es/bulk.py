"""Bulk writes with per-item outcomes: only failed items are retried, and every input id gets
exactly one ``WriteResult`` so callers can ack exactly what was written.

The actions, their NDJSON form, the chunking and the mapping of item answers to results are
I/O-free; :func:`run_bulk` sends chunks through :meth:`EngineClient.bulk` and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from elastichash.index.base import WriteResult
from elastichash.index.es.client import EngineApiError, EngineClient, EngineUnreachable

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

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2**attempt))


@dataclass(frozen=True)
class Action:
    """One bulk item. ``source`` may be pre-serialised JSON text (large generated bodies)."""

    op: str  # index | delete
    index: str
    id: str
    source: dict[str, Any] | str | None = None
    # Writes through an alias: never let the engine auto-create an index of the alias's name
    # (a bulk racing the cluster state's recovery after a full restart otherwise fails with
    # invalid_index_name_exception, a permanent error, for items that only had to wait).
    require_alias: bool = False
    # > 0: an external version; the write is refused (and reported superseded) when the
    # stored document's version is higher. Equal is written: a redelivered message.
    version: int = 0

    def lines(self) -> str:
        meta: dict[str, Any] = {"_index": self.index, "_id": self.id}
        if self.require_alias:
            meta["require_alias"] = True
        if self.version:
            meta["version"] = self.version
            meta["version_type"] = "external_gte"
        head = json.dumps({self.op: meta})
        if self.source is None:
            return head + "\n"
        body = self.source if isinstance(self.source, str) else json.dumps(
            self.source, separators=(",", ":")
        )
        return head + "\n" + body + "\n"


def chunks(actions: Iterable[Action], policy: BulkPolicy) -> Iterator[list[tuple[Action, str]]]:
    """Actions with their NDJSON lines, cut by count and by bytes."""
    chunk: list[tuple[Action, str]] = []
    size = 0
    for action in actions:
        text = action.lines()
        if chunk and (len(chunk) >= policy.chunk_size or size + len(text) > policy.max_chunk_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((action, text))
        size += len(text)
    if chunk:
        yield chunk


def _error_text(info: dict[str, Any]) -> str:
    err = info.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'error')}: {err.get('reason', '')}"
    if err is not None:
        return str(err)
    return str(info.get("result") or f"status {info.get('status')}")


def item_result(doc_id: str, info: dict[str, Any], versioned: bool = False) -> WriteResult:
    """The result of one item of a bulk response (``info`` is the item's inner object)."""
    status = int(info.get("status", 500))
    if 200 <= status < 300:
        return WriteResult(id=doc_id, ok=True)
    if status == 404 and info.get("result") == "not_found":
        return WriteResult(id=doc_id, ok=False, error="not_found")
    err = info.get("error")
    if (versioned and status == 409 and isinstance(err, dict)
            and err.get("type") == "version_conflict_engine_exception"):
        # The engine holds a newer upload of the id: nothing to write, nothing lost.
        return WriteResult(id=doc_id, ok=True, superseded=True)
    # A write block lifts (a reindex behind the alias, disk flood stage): requeue, not drop.
    # A missing alias under require_alias comes back too (the cluster state recovering).
    blocked = isinstance(err, dict) and err.get("type") in (
        "cluster_block_exception", "index_not_found_exception")
    transient = status in TRANSIENT_STATUSES or blocked
    return WriteResult(id=doc_id, ok=False, error=_error_text(info), transient=transient)


def unanswered(actions: Iterable[Action], why: str, transient: bool) -> dict[str, WriteResult]:
    return {
        a.id: WriteResult(id=a.id, ok=False, error=f"unavailable: {why}", transient=transient)
        for a in actions
    }


async def run_bulk(
    client: EngineClient, actions: list[Action], policy: BulkPolicy
) -> dict[str, WriteResult]:
    """Send ``actions`` (unique ids) and return one result per id.

    Items answered with a transient status are sent again, alone, up to ``max_retries``
    times with capped exponential backoff; so is a whole request answered with one. Items
    the engine never answered for (connection lost, timeout) are transient failures and are
    not sent again: the caller decides (an indexer requeues them).
    """
    results: dict[str, WriteResult] = {}
    todo = list(chunks(actions, policy))
    for n, chunk in enumerate(todo):
        pending = chunk
        attempt = 0
        while pending:
            try:
                resp = await client.bulk("".join(text for _, text in pending))
            except EngineUnreachable as exc:
                log.warning("bulk aborted after %d of %d items: %s",
                            len(results), len(actions), exc)
                rest = [a for a, _ in pending] + [a for c in todo[n + 1:] for a, _ in c]
                results.update(unanswered(rest, str(exc), transient=True))
                return _done(results, len(actions))
            except EngineApiError as exc:
                transient = exc.status in TRANSIENT_STATUSES
                if transient and attempt < policy.max_retries:
                    await asyncio.sleep(policy.backoff(attempt))
                    attempt += 1
                    continue
                results.update(unanswered((a for a, _ in pending), str(exc), transient))
                break
            retry: list[tuple[Action, str]] = []
            for (action, text), item in zip(pending, resp["items"], strict=True):
                (_op, info), = item.items()
                result = item_result(action.id, info, versioned=action.version > 0)
                status = int(info.get("status", 500))
                if status in TRANSIENT_STATUSES and attempt < policy.max_retries:
                    retry.append((action, text))
                else:
                    results[action.id] = result
            pending = retry
            if pending:
                await asyncio.sleep(policy.backoff(attempt))
                attempt += 1
    return _done(results, len(actions))


def _done(results: dict[str, WriteResult], total: int) -> dict[str, WriteResult]:
    failed = sum(not r.ok and r.error != "not_found" for r in results.values())
    if failed:
        log.info("bulk: %d of %d items failed", failed, total)
    return results


def in_order(ids: Iterable[str], by_id: dict[str, WriteResult]) -> list[WriteResult]:
    """Input order, one result per input position (a repeated id shares its final result)."""
    return [by_id[i] for i in ids]
