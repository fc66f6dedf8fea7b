"""Fixtures of the integration tests: the shared RabbitMQ (a unique topology prefix per test,
deleted after), a private RabbitMQ node a test may stop and start, and the services run as
real subprocesses (``tests/distributed.py``)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.broker import (
    BROKER_HOST,
    BROKER_PORT,
    BROKER_URL,
    PrivateBroker,
    port_open,
    rabbitmq_installed,
    wait_amqp,
)
from tests.distributed import Cluster


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The shared broker; tests that need it are skipped (not failed) when none answers."""
    if not port_open(BROKER_HOST, BROKER_PORT):
        pytest.skip(f"no RabbitMQ at {BROKER_HOST}:{BROKER_PORT} (the test command starts one)")
    asyncio.run(wait_amqp(BROKER_URL, 10))
    return BROKER_URL


@pytest.fixture
async def amqp_prefix(rabbitmq_url: str) -> AsyncIterator[str]:
    """A unique topology prefix for one test; its queues and exchanges are deleted after."""
    prefix = f"ehtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    from elastichash.amqp import delete_topology

    await delete_topology(rabbitmq_url, prefix)


@pytest.fixture
async def private_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateBroker]:
    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server not installed")
    broker = PrivateBroker(tmp_path_factory.mktemp("rmq"))
    await broker.start()
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.fixture
def cluster_factory(tmp_path: Path, model_path: Path) -> Iterator[Callable[[str, str], Cluster]]:
    """Makes service clusters (started by the test) that are all stopped after it."""
    made: list[Cluster] = []

    def make(amqp_url: str, prefix: str) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", amqp_url, prefix, model_path)
        c.tmp.mkdir(parents=True)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()


@pytest.fixture
async def index_env() -> AsyncIterator[dict[str, str] | None]:
    """The search service's index settings: a fresh index on the real engine, dropped after
    (None: the embedded index, where no engine is configured, outside CI)."""
    from elastichash.index.es import EngineIndex
    from tests.engines import NBS_INDEX, configured, drop, missing_engine

    found = configured()
    if found is None:
        if os.environ.get("CI"):
            missing_engine("distributed end-to-end")
        yield None
        return
    kind, url = found
    alias = f"eh-test-e2e-{uuid.uuid4().hex[:8]}"
    yield {
        "EH_SEARCH_INDEX__BACKEND": kind,
        "EH_SEARCH_INDEX__ENGINE__URL": url,
        "EH_SEARCH_INDEX__ENGINE__INDEX": alias,
        "EH_SEARCH_INDEX__ENGINE__NBS_INDEX": NBS_INDEX,
        "EH_SEARCH_INDEX__ENGINE__REFRESH_INTERVAL": "200ms",
    }
    idx = EngineIndex(url, alias, kind=kind, nbs_index=NBS_INDEX)
    await idx.open()
    await drop(idx)
    await idx.close()
