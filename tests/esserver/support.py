"""Helpers shared by the Elasticsearch tests (the fixtures live in ``fixtures.py``)."""

from __future__ import annotations

import os
import uuid

import pytest

from elastichash.index.es import ElasticsearchIndex
from elastichash.index.es.bootstrap import Layout
from elastichash.index.es.bulk import BulkPolicy

ES_URL = os.environ.get("ES_URL")
LIVE = bool(ES_URL)
NBS_INDEX = "eh-test-nbs"
needs_test_server = pytest.mark.skipif(LIVE, reason="fault injection needs the test server")
FAST_RETRIES = BulkPolicy(max_retries=3, initial_backoff_s=0.01, max_backoff_s=0.05)


async def drop(idx: ElasticsearchIndex) -> None:
    await idx.client.indices.delete(
        index=[idx.names.concrete, idx.names.failures], ignore_unavailable=True
    )


def make_index(es_url: str, nbs: str, **kwargs: object) -> ElasticsearchIndex:
    kwargs.setdefault("bulk", FAST_RETRIES)
    kwargs.setdefault("layout", Layout(refresh_interval="-1"))
    return ElasticsearchIndex(es_url, f"eh-test-{uuid.uuid4().hex[:10]}", nbs_index=nbs,
                              **kwargs)  # type: ignore[arg-type]
