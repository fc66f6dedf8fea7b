"""Fixtures shared by the three test folders, and the folder markers.

The tests are split by what they need: ``unit/`` runs in one process (in-process servers, the
models the project builds), ``integration/`` talks to RabbitMQ, a search engine, containers or
runs the services as subprocesses, ``browser/`` drives headless Chromium. Each test gets its
folder's name as a marker (``pytest -m unit``). Fixtures are reached only through the
``conftest.py`` files: here the ones more than one folder uses, in a folder's own
``conftest.py`` the ones only it uses. Helpers that are not fixtures (images, the engines, the
stand-in, the broker, the service processes) are plain modules beside this file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from elastichash.index.es import EngineIndex
from tests.engines import Engine, configured, drop, make_index, missing_engine, warm
from tests.esserver.server import EsTestServer
from tests.standalone import gateway_client, standalone_settings

TESTS = Path(__file__).resolve().parent
FOLDERS = ("unit", "integration", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in FOLDERS:
            item.add_marker(folder)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model, built once per session, before any service process starts (so none
    races to build it)."""
    from elastichash.model.default import ensure_default_model

    return ensure_default_model(tmp_path_factory.mktemp("model") / "default.onnx")


@pytest.fixture
async def client(tmp_path: Path, model_path: Path) -> AsyncIterator[TestClient]:
    """The standalone gateway in-process: real model, embedded index and spool under
    ``tmp_path``. A module that needs other settings defines its own ``client``."""
    async with gateway_client(standalone_settings(tmp_path, model_path), tmp_path) as c:
        yield c


@pytest.fixture(scope="session")
def stand_in() -> Iterator[Engine]:
    """The protocol stand-in (``tests/esserver``), in-process, for fault injection."""
    server = EsTestServer().start()
    yield warm(Engine("elasticsearch", server.url, server))
    server.stop()


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    """The real engine the test command started (or ``OPENSEARCH_URL`` / ``ES_URL``)."""
    found = configured()
    if found is None:
        missing_engine("real engine")
    assert found is not None
    return warm(Engine(*found))


@pytest.fixture
async def engine_index(engine: Engine) -> AsyncIterator[EngineIndex]:
    """A fresh index on ``engine`` (a fixture the test module or class provides)."""
    idx = make_index(engine)
    await idx.open()
    yield idx
    if engine.server is not None:
        engine.server.faults.clear()
    await drop(idx)
    await idx.close()
