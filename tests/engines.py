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
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from elastichash.index.es import EngineIndex
from elastichash.index.es.bootstrap import Layout
from elastichash.index.es.bulk import BulkPolicy
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
