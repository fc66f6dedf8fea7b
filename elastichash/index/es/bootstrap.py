"""Idempotent creation of everything the backend needs on a cluster.

Each step reads first and writes only what is missing or different, so a second bootstrap
issues no writes; concurrent bootstraps race safely (creation conflicts are accepted).
All I/O goes through :class:`~elastichash.index.es.client.EngineClient`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from elastichash.errors import ElasticHashError, Unavailable
from elastichash.index.es.bulk import Action, BulkPolicy, run_bulk
from elastichash.index.es.client import EngineClient
from elastichash.index.es.mapping import (
    FAILURES_MAPPING,
    ID_FIELD,
    Names,
    failures_settings,
    has_dense_bit,
    mapping_changes,
    next_concrete,
    retrieval_mapping,
    retrieval_settings,
)
from elastichash.index.es.neighbours import NBS_DOCS, NBS_MAPPING, nbs_actions, nbs_settings
from elastichash.index.es.query import document_from_source, document_source
from elastichash.index.es.script import DENSE_BIT_FIELD, HAMMING_SCRIPT_ID, HAMMING_SCRIPT_SOURCE

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
) -> tuple[str, bool]:
    """Create the retrieval index behind its alias, or move its documents to a new versioned
    index when the mapping generated from the field table changed; return (the index behind
    the alias, whether it maps the bit vector)."""
    behind = await client.alias_targets(names.alias)
    if behind:
        if len(behind) != 1:
            raise ElasticHashError(f"alias {names.alias} points at {behind}, expected one index")
        current = behind[0]
        mapping = (await client.get_mapping(current))[current]["mappings"]
        bits = has_dense_bit({current: {"mappings": mapping}})
        wanted = retrieval_mapping(bits)
        changed = mapping_changes(mapping, wanted)
        if not changed:
            return current, bits
        target = next_concrete(names.alias, current)
        log.warning("mapping of %s changed (%s): reindexing into %s",
                    current, ", ".join(changed), target)
        if mapping.get("_meta"):  # what the index records about itself (its model) moves too
            wanted = {**wanted, "_meta": mapping["_meta"]}
        await reindex_behind_alias(client, names.alias, current, target, wanted, layout)
        return target, bits
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
    return names.concrete, has_dense_bit(await client.get_mapping(names.alias))


async def reindex_behind_alias(
    client: EngineClient,
    alias: str,
    current: str,
    target: str,
    mappings: dict[str, Any],
    layout: Layout,
) -> None:
    """Copy ``current`` into a new ``target`` with ``mappings`` and swap the alias in one
    atomic action. ``current`` is write-blocked meanwhile (writes fail and are retried, none
    is lost) and kept afterwards for rollback; delete it once the new index serves."""
    await client.put_settings(current, {"index.blocks.write": True})
    # Reindex reads through a scroll: only refreshed documents would be copied.
    await client.refresh([current])
    settings = retrieval_settings(layout.shards, layout.replicas, layout.refresh_interval)
    if not await _create(client, target, mappings=mappings, settings=settings):
        # Left write-blocked: the process that created the target swaps the alias when done.
        raise Unavailable(f"{target} exists: another process is reindexing {current} into it "
                          f"(or a reindex was cut short: delete {target} and start again)")
    try:
        resp = await client.reindex(current, target)
        if resp.get("failures"):
            raise ElasticHashError(f"reindex {current} -> {target} failed: "
                                   f"{resp['failures'][:3]}")
        await rederive(client, target)
        await client.update_aliases([
            {"remove": {"index": current, "alias": alias}},
            {"add": {"index": target, "alias": alias, "is_write_index": True}},
        ])
    except BaseException:
        await client.delete_index(target)
        await client.put_settings(current, {"index.blocks.write": False})
        raise
    log.info("alias %s now on %s (%d documents); %s kept, write-blocked",
             alias, target, int(resp.get("total", 0)), current)


REDERIVE_BATCH = 500


async def rederive(client: EngineClient, index: str) -> None:
    """Rewrite every document of ``index`` (just filled by a reindex, refreshed, not yet
    behind the alias) from its own ``_source``, so the values derived at write time (the
    filter object, which an older mapping lacked) match the current code."""
    after: str | None = None
    while True:
        body: dict[str, Any] = {"query": {"match_all": {}}, "size": REDERIVE_BATCH,
                                "sort": [{ID_FIELD: {"order": "asc"}}], "track_total_hits": False}
        if after is not None:
            body["search_after"] = [after]
        hits = (await client.search(index, body))["hits"]["hits"]
        if not hits:
            break
        actions = [
            Action("index", index, h["_id"], document_source(
                doc := document_from_source(h["_id"], h["_source"]),
                dense_bit=DENSE_BIT_FIELD in h["_source"]), version=doc.version)
            for h in hits
        ]
        failed = [r for r in (await run_bulk(client, actions, BulkPolicy())).values() if not r.ok]
        if failed:
            raise ElasticHashError(f"rewriting {index}: {len(failed)} documents failed, "
                                   f"first: {failed[0].error}")
        after = hits[-1]["_id"]
    await client.refresh([index])


async def ensure_failures(client: EngineClient, names: Names, layout: Layout) -> None:
    if not await client.exists(names.failures):
        await _create(
            client,
            names.failures,
            mappings=FAILURES_MAPPING,
            settings=failures_settings(layout.replicas),
        )
        return
    have = (await client.get_mapping(names.failures))[names.failures]["mappings"]
    missing = {name: spec for name, spec in FAILURES_MAPPING["properties"].items()
               if name not in (have.get("properties") or {})}
    if missing:  # fields added since the index was made: adding a field needs no reindex
        await client.put_mapping(names.failures, {"properties": missing})
