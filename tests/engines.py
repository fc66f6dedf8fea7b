"""The search engines the backend tests run against (their fixtures are in ``tests/conftest.py``).

- the stand-in: the protocol test server (``tests/esserver``), speaking Elasticsearch 8, kept
  for the fault injection a real engine cannot do;
- the real engine: OpenSearch started by the test command (``scripts/engine.sh``, its URL in
  ``.services/engine.url``), or any engine named by ``OPENSEARCH_URL`` / ``ES_URL``.

Tests that need the real engine are skipped when none is configured, except in CI
(``CI=true``), where a missing engine fails them: the backend must be proven on Lucene.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elastichash.index.base import Document
from elastichash.index.es import EngineIndex
from elastichash.index.es.bootstrap import Layout
from elastichash.index.es.bulk import BulkPolicy
from elastichash.index.remote import RemoteIndex
from tests.esserver.server import EsTestServer

URL_FILE = Path(__file__).resolve().parent.parent / ".services" / "engine.url"
NBS_INDEX = "eh-test-nbs"
FAST_RETRIES = BulkPolicy(max_retries=3, initial_backoff_s=0.01, max_backoff_s=0.05)


@dataclass(frozen=True)
class Engine:
    kind: str  # elasticsearch | opensearch: the adapter to talk to it with
    url: str
    server: EsTestServer | None = None  # the stand-in, for fault injection

    @property
    def real(self) -> bool:
        return self.server is None


def configured() -> tuple[str, str] | None:
    """(kind, url) of the real engine: ES_URL, OPENSEARCH_URL, or the test command's node."""
    if os.environ.get("ES_URL"):
        return "elasticsearch", os.environ["ES_URL"].rstrip("/")
    if os.environ.get("OPENSEARCH_URL"):
        return "opensearch", os.environ["OPENSEARCH_URL"].rstrip("/")
    if URL_FILE.is_file():
        kind, url = URL_FILE.read_text().split()
        return kind, url.rstrip("/")
    return None


def missing_engine(what: str) -> None:
    msg = (f"{what}: no real search engine (run `make services`, or set OPENSEARCH_URL or "
           f"ES_URL)")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


async def drop(idx: EngineIndex) -> None:
    for name in (*sorted(await idx.client.alias_targets(idx.names.alias)), idx.names.concrete,
                 idx.names.failures):
        await idx.client.delete_index(name)


def make_index(engine: Engine, **kwargs: object) -> EngineIndex:
    kwargs.setdefault("bulk", FAST_RETRIES)
    kwargs.setdefault("layout", Layout(refresh_interval="-1"))
    return EngineIndex(engine.url, f"eh-test-{uuid.uuid4().hex[:10]}", kind=engine.kind,
                       nbs_index=NBS_INDEX, **kwargs)  # type: ignore[arg-type]


_WARM: set[str] = set()


def warm(engine: Engine) -> Engine:
    """Build the shared neighbours index once per engine (65,536 documents)."""
    if engine.url not in _WARM:
        async def build() -> None:
            idx = make_index(engine)
            await idx.open()
            await drop(idx)
            await idx.close()

        asyncio.run(build())
        _WARM.add(engine.url)
    return engine


@contextlib.asynccontextmanager
async def through_search_service(idx: EngineIndex) -> AsyncIterator[RemoteIndex]:
    """The wiring of docker-compose: a search service serving ``idx``'s index (its own
    EngineIndex on the same alias), and the RemoteIndex a gateway would talk to it with."""
    from aiohttp.test_utils import TestServer

    from search_service.app import create_app
    from search_service.config import SearchServiceSettings

    served = EngineIndex(idx.url, idx.names.alias, kind=idx.kind, nbs_index=idx.names.nbs)
    async with TestServer(create_app(SearchServiceSettings(), index=served)) as server:
        remote = RemoteIndex(str(server.make_url("/")).rstrip("/"))
        await remote.open()
        try:
            yield remote
        finally:
            await remote.close()


@contextlib.asynccontextmanager
async def older_index(
    engine: Engine, field: str, docs: list[Document],
    before_write: Callable[[EngineIndex], Awaitable[None]] | None = None,
) -> AsyncIterator[tuple[EngineIndex, str]]:
    """An index made by an older release whose mapping (and documents) lacked ``field``,
    holding ``docs``; yields (the index opened again by this release, the older concrete
    index), then deletes both."""
    from elastichash.index.es import bootstrap as es_bootstrap
    from elastichash.index.es import query as es_query

    old_mapping, old_source = es_bootstrap.retrieval_mapping, es_query.document_source

    def mapping_without(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = old_mapping(*args, **kwargs)
        del out["properties"][field]
        return out

    def source_without(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = old_source(*args, **kwargs)
        out.pop(field, None)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(es_bootstrap, "retrieval_mapping", mapping_without)
        patch.setattr(es_query, "document_source", source_without)
        first = make_index(engine)
        await first.open()
        if before_write is not None:
            await before_write(first)
        assert all(r.ok for r in await first.upsert(docs))
        await first.close()
    second = EngineIndex(engine.url, first.names.alias, kind=engine.kind,
                         nbs_index=first.names.nbs, layout=first.layout, bulk=first.bulk)
    await second.open()
    try:
        yield second, first.concrete
    finally:
        await second.client.delete_index(first.concrete)
        await drop(second)
        await second.close()
