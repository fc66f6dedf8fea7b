"""Fixtures of the unit tests: the built-in semantic model, and the stand-in engine's URL, raw
Elasticsearch client and a fresh backend index on it (for the tests of the stand-in itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from elastichash.index.es import EngineIndex
from tests.engines import Engine, drop, make_index


@pytest.fixture(scope="session")
def semantic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in semantic model, built once per test session (about 15 s, no download)."""
    from elastichash.model.registry import ensure_builtin

    return ensure_builtin("efficientnet-lite0", tmp_path_factory.mktemp("semantic"))


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
