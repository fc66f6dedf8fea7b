"""Idempotent creation of everything the backend needs on a cluster.

Each step reads first and writes only what is missing or different, so a second bootstrap
issues no writes; concurrent bootstraps race safely (creation conflicts are accepted).
All I/O goes through :class:`~elastichash.index.es.client.EngineClient`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from elastichash.errors import ElasticHashError
from elastichash.index.es.bulk import BulkPolicy, run_bulk
from elastichash.index.es.client import EngineClient
from elastichash.index.es.mapping import (
    FAILURES_MAPPING,
    Names,
    failures_settings,
    has_dense_bit,
    retrieval_mapping,
    retrieval_settings,
)
from elastichash.index.es.neighbours import NBS_DOCS, NBS_MAPPING, nbs_actions, nbs_settings
from elastichash.index.es.script import HAMMING_SCRIPT_ID, HAMMING_SCRIPT_SOURCE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    shards: int = 1
    replicas: int = 0
    refresh_interval: str = "1s"


async def _create(client: EngineClient, index: str, **body: object) -> bool:
    """Create an index; False when it already exists (a concurrent bootstrap won)."""
    created = await client.create_index(index, dict(body))
    if created:
        log.info("created index %s", index)
    return created


async def ensure_script(client: EngineClient) -> None:
    if await client.get_script(HAMMING_SCRIPT_ID) == HAMMING_SCRIPT_SOURCE:
        return
    await client.put_script(HAMMING_SCRIPT_ID, HAMMING_SCRIPT_SOURCE)
    log.info("stored script %s", HAMMING_SCRIPT_ID)


async def _nbs_complete(client: EngineClient, index: str) -> tuple[bool, bool]:
    """(write-blocked, holds all 65,536 documents)."""
    settings = await client.get_settings(index)
    blocked = any(
        str(body.get("settings", {}).get("index", {}).get("blocks", {}).get("write")) == "true"
        for body in settings.values()
    )
    return blocked, await client.count(index) == NBS_DOCS


async def ensure_nbs(client: EngineClient, index: str, policy: BulkPolicy) -> None:
    if await client.exists(index):
        # Built indices were refreshed before being blocked, so the count is final.
        blocked, complete = await _nbs_complete(client, index)
        if blocked and complete:
            return
        if blocked:  # an earlier build was cut short after blocking: unblock and finish it
            await client.put_settings(index, {"index.blocks.write": False})
    else:
        await _create(client, index, mappings=NBS_MAPPING, settings=nbs_settings())
    log.info("building neighbours index %s (%d documents)", index, NBS_DOCS)
    bulk_policy = BulkPolicy(
        max_retries=policy.max_retries,
        initial_backoff_s=policy.initial_backoff_s,
        max_backoff_s=policy.max_backoff_s,
        chunk_size=4096,
    )
    results = await run_bulk(client, list(nbs_actions(index)), bulk_policy)
    failed = [r for r in results.values() if not r.ok]
    if failed:
        raise ElasticHashError(
            f"neighbours index {index}: {len(failed)} documents failed, first: {failed[0].error}"
        )
    await client.refresh([index])
    await client.put_settings(index, {"index.blocks.write": True})
    log.info("neighbours index %s built and write-blocked", index)


async def ensure_retrieval(
    client: EngineClient, names: Names, layout: Layout, dense_bit: bool
) -> bool:
    """Create the retrieval index behind its alias; return whether it maps the bit vector."""
    if not await client.alias_targets(names.alias):
        if await client.exists(names.alias):
            raise ElasticHashError(
                f"{names.alias} is a concrete index, not an alias; reindex it into "
                f"{names.concrete} and put the alias {names.alias} in front of it"
            )
        await _create(
            client,
            names.concrete,
            mappings=retrieval_mapping(dense_bit),
            settings=retrieval_settings(layout.shards, layout.replicas, layout.refresh_interval),
            aliases={names.alias: {"is_write_index": True}},
        )
    return has_dense_bit(await client.get_mapping(names.alias))


async def ensure_failures(client: EngineClient, names: Names, layout: Layout) -> None:
    if not await client.exists(names.failures):
        await _create(
            client,
            names.failures,
            mappings=FAILURES_MAPPING,
            settings=failures_settings(layout.replicas),
        )
