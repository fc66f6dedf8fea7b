"""Fixtures for the tests of the stand-in itself (``test_es_server.py``): its URL, the raw
Elasticsearch client, and a fresh backend index on it. Built on ``tests.engines``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch

from elastichash.index.es import EngineIndex
from tests.engines import Engine, drop, make_index

pytest_plugins = ["tests.engines"]


@pytest.fixture(scope="session")
def es_url(stand_in: Engine) -> str:
    return stand_in.url


@pytest.fixture
async def es_index(stand_in: Engine) -> AsyncIterator[EngineIndex]:
    idx = make_index(stand_in)
    await idx.open()
    yield idx
    await drop(idx)
    await idx.close()


@pytest.fixture
async def es_client(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(es_url, request_timeout=10, max_retries=0)
    yield client
    await client.close()
