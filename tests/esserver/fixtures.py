"""Fixtures for the Elasticsearch tests: the protocol test server (or a live cluster when
``ES_URL`` is set), a session-wide neighbours index, and a fresh backend per test.
Load with ``pytest_plugins = ["tests.esserver.fixtures"]`` so session fixtures are shared."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from elasticsearch import AsyncElasticsearch

from elastichash.index.es import ElasticsearchIndex
from tests.esserver.server import EsTestServer
from tests.esserver.support import ES_URL, FAST_RETRIES, LIVE, NBS_INDEX, drop, make_index


@pytest.fixture(scope="session")
def es_server() -> Iterator[EsTestServer | None]:
    if LIVE:
        yield None
        return
    server = EsTestServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def es_url(es_server: EsTestServer | None) -> str:
    if ES_URL:
        return ES_URL
    assert es_server is not None
    return es_server.url


@pytest.fixture(scope="session")
def nbs_index(es_url: str) -> str:
    """Build the shared neighbours index once (65,536 documents): later bootstraps reuse it."""

    async def build() -> None:
        idx = ElasticsearchIndex(es_url, f"eh-test-warmup-{uuid.uuid4().hex[:8]}",
                                 nbs_index=NBS_INDEX, bulk=FAST_RETRIES)
        await idx.open()
        await drop(idx)
        await idx.close()

    asyncio.run(build())
    return NBS_INDEX


@pytest.fixture
async def es_index(
    es_url: str, nbs_index: str, es_server: EsTestServer | None
) -> AsyncIterator[ElasticsearchIndex]:
    idx = make_index(es_url, nbs_index)
    await idx.open()
    yield idx
    if es_server is not None:
        es_server.faults.clear()
    await drop(idx)
    await idx.close()


@pytest.fixture
async def es_client(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(es_url, request_timeout=10, max_retries=0)
    yield client
    await client.close()
