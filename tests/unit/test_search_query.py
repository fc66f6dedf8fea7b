"""One search query, validated once: the same request gets the same answer on every backend
(embedded, Elasticsearch protocol server, the search service) and through every door (the
Index call, the search service's HTTP API, the gateway); and every backend scans its codes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from elastichash.cli.standalone import open_local
from elastichash.errors import ElasticHashError, InvalidInput, http_status
from elastichash.index import filters
from elastichash.index.base import CodeRecord, Document, Index, SearchQuery
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.query import MAX_WINDOW, STRATEGIES, Capabilities, QueryParams
from elastichash.index.remote import RemoteIndex
from elastichash.settings import IndexSettings
from gateway.app import create_app as gateway_app
from gateway.config import GatewaySettings
from gateway.openapi import build_openapi
from gateway.schemas import SearchRequest
from gateway.state import Components
from search_service.app import create_app as service_app
from search_service.config import SearchServiceSettings
from tests.engines import Engine, drop
from tests.engines import make_index as make_es_index
from tests.standalone import standalone_settings

pytestmark = pytest.mark.timeout(180)

Answer = tuple[int, str | None]  # HTTP status, error code
Door = Callable[[dict[str, Any]], Awaitable[Answer]]


def make_docs(n: int, seed: int = 3) -> list[Document]:
    codes = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    return [Document(f"d{i:04d}", c.tobytes(), c[:8].tobytes()) for i, c in enumerate(codes)]


# Each request names k where the window matters: the gateway's default k (24) is its own.
CASES: list[dict[str, Any]] = [
    {"k": 5},
    {"k": 1000},
    {"k": 0},
    {"k": 1001},
    {"k": 10, "offset": MAX_WINDOW - 10},
    {"k": 10, "offset": MAX_WINDOW - 9},
    {"k": 1, "offset": 100_000},
    {"k": 5, "offset": -1},
    {"k": 5, "max_distance": 0},
    {"k": 5, "max_distance": 256},
    {"k": 5, "max_distance": 257},
    {"k": 5, "strategy": "exact"},
    {"k": 5, "strategy": "two_stage"},
    {"k": 5, "strategy": "auto"},
    {"k": 5, "strategy": "fuzzy"},
    {"k": 5, "strategy": "dense_bit"},
    {"k": 5, "text": "a red bicycle"},
    {"k": 5, "filter": {"source": "x"}},
    {"k": 5, "filter": {"colour": "x"}},
    {"k": 5, "colour": "red"},
]


def expected(case: dict[str, Any], caps: Capabilities) -> Answer:
    """The one answer every door of a backend with ``caps`` must give."""
    try:
        QueryParams.parse(case)
    except InvalidInput:
        return 400, "invalid_input"
    if case.get("strategy", caps.default_strategy) not in caps.strategies:
        return 400, "unsupported_query"
    if ("text" in case and not caps.text) or ("filter" in case and not caps.filter):
        return 400, "unsupported_query"
    if "filter" in case:
        try:
            filters.parse(case["filter"])
        except InvalidInput:
            return 400, "invalid_input"
    return 200, None


def index_door(index: Index, code: str, short: str) -> Door:
    async def ask(case: dict[str, Any]) -> Answer:
        try:
            await index.search(SearchQuery.parse({**case, "code": code, "short": short}))
        except ElasticHashError as exc:
            return http_status(exc), exc.code
        return 200, None

    return ask


def http_door(session: ClientSession, url: str, code: str, short: str) -> Door:
    async def ask(case: dict[str, Any]) -> Answer:
        async with session.post(url, json={**case, "code": code, "short": short}) as r:
            body = await r.json()
        return r.status, (body.get("error") or {}).get("code")

    return ask


@asynccontextmanager
async def gateway_over(index: Index, data: Path, model: Path) -> AsyncIterator[TestClient]:
    settings: GatewaySettings = standalone_settings(data, model)

    @asynccontextmanager
    async def components(cfg: GatewaySettings) -> AsyncIterator[Components]:
        async with open_local(cfg.model, cfg.limits, cfg.index, data / "spool") as local:
            yield Components(local.pipeline, index, "under-test")

    async with TestClient(TestServer(gateway_app(settings, components))) as client:
        yield client


def _engine(request: pytest.FixtureRequest) -> Engine | None:
    # Resolved here, outside the event loop, and only for the engine's parameters.
    if "elasticsearch" not in str(request.param):
        return None
    engine: Engine = request.getfixturevalue("stand_in")
    return engine


@pytest.fixture(params=["embedded", "elasticsearch"])
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, Engine | None]:
    return request.param, _engine(request)


@pytest.fixture(params=["embedded", "remote", "elasticsearch"])
def scan_kind(request: pytest.FixtureRequest) -> tuple[str, Engine | None]:
    return request.param, _engine(request)


@pytest.fixture
async def backend(
    backend_kind: tuple[str, Engine | None], tmp_path: Path
) -> AsyncIterator[Index]:
    _, engine = backend_kind
    idx: Index = EmbeddedIndex(tmp_path / "emb") if engine is None else make_es_index(engine)
    await idx.open()
    await idx.upsert(make_docs(40))
    if isinstance(idx, EngineIndex):
        await idx.refresh()
    yield idx
    if isinstance(idx, EngineIndex):
        await idx.open()  # the search service under test closed it with its app
        await drop(idx)
    await idx.close()


async def test_the_same_request_gets_the_same_answer_through_every_door(
    backend: Index, tmp_path: Path, model_path: Path,
) -> None:
    doc = make_docs(1)[0]
    code, short = doc.code.hex(), doc.short.hex()
    caps = await backend.capabilities()
    settings = SearchServiceSettings(index=IndexSettings(data_dir=tmp_path / "unused"))
    service = TestServer(service_app(settings, index=backend))
    await service.start_server()
    remote = RemoteIndex(str(service.make_url("")))
    await remote.open()
    try:
        assert await remote.capabilities() == Capabilities(
            caps.strategies, caps.default_strategy, caps.filter, caps.text
        )
        async with ClientSession() as session, \
                gateway_over(backend, tmp_path / "g1", model_path) as direct_gw, \
                gateway_over(remote, tmp_path / "g2", model_path) as remote_gw:
            doors: dict[str, Door] = {
                "index": index_door(backend, code, short),
                "service": http_door(session, str(service.make_url("/v1/search")), code, short),
                "remote index": index_door(remote, code, short),
                "gateway": http_door(session, str(direct_gw.make_url("/v1/search")), code, short),
                "gateway via service": http_door(
                    session, str(remote_gw.make_url("/v1/search")), code, short
                ),
            }
            for case in CASES:
                answers = {name: await ask(case) for name, ask in doors.items()}
                want = expected(case, caps)
                assert answers == dict.fromkeys(doors, want), case
    finally:
        await remote.close()
        await service.close()


async def test_a_page_is_identical_on_the_embedded_and_engine_backends(
    tmp_path: Path, stand_in: Engine,
) -> None:
    docs = make_docs(60)
    emb = EmbeddedIndex(tmp_path / "emb")
    es = make_es_index(stand_in)
    await emb.open()
    await es.open()
    try:
        await emb.upsert(docs)
        await es.upsert(docs)
        await es.refresh()
        for strategy in ("exact", "two_stage"):
            q = SearchQuery(code=docs[7].code, short=docs[7].short, k=7, offset=3,
                            strategy=strategy)
            a, b = await emb.search(q), await es.search(q)
            assert [(h.id, h.distance) for h in a.hits] == [(h.id, h.distance) for h in b.hits]
            assert a.total == b.total
    finally:
        await drop(es)
        await emb.close()
        await es.close()


async def test_scan_yields_every_code_once_in_id_order_in_batches(
    scan_kind: tuple[str, Engine | None], tmp_path: Path,
) -> None:
    door, engine = scan_kind
    docs = make_docs(257, seed=11)
    emb = EmbeddedIndex(tmp_path / "emb")
    service: TestServer | None = None
    index: Index
    if engine is not None:
        index = make_es_index(engine)
    elif door == "remote":
        settings = SearchServiceSettings(index=IndexSettings(data_dir=tmp_path / "unused"))
        service = TestServer(service_app(settings, index=emb))
        await service.start_server()
        index = RemoteIndex(str(service.make_url("")))
    else:
        index = emb
    await index.open()
    try:
        assert [b async for b in index.scan(batch=50)] == []  # empty index: no batch
        await index.upsert(docs)
        await index.delete(["d0003"])
        if isinstance(index, EngineIndex):
            await index.refresh()
        batches = [b async for b in index.scan(batch=50)]
        assert [len(b) for b in batches] == [50, 50, 50, 50, 50, 6]
        got = [r for b in batches for r in b]
        want = sorted(CodeRecord(d.id, d.code, d.short) for d in docs if d.id != "d0003")
        assert got == want
        resumed = [r async for b in index.scan(batch=100, after="d0199") for r in b]
        assert resumed == [r for r in want if r.id > "d0199"]
    finally:
        if isinstance(index, EngineIndex):
            await drop(index)
        await index.close()
        if service is not None:
            await service.close()
        await emb.close()


def test_a_query_is_checked_once_with_common_limits_and_named_fields() -> None:
    code, short = bytes(32), bytes(8)
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"k": 0}, "k"),
        ({"k": 1001}, "k"),
        ({"k": 10, "offset": MAX_WINDOW - 9}, "offset"),
        ({"max_distance": 257}, "max_distance"),
        ({"offset": -1}, "offset"),
        ({"k": True}, "k"),  # JSON true is not the integer 1
        ({"offset": False}, "offset"),
        ({"max_distance": True}, "max_distance"),
        ({"strategy": "x"}, "strategy"),
        ({"code": bytes(31)}, "code"),
        ({"short": "123"}, "short"),
        ({"short": None}, None),  # a code needs its short code
        ({"code": None, "short": None}, None),  # nothing to search by
        ({"colour": "red"}, "colour"),
    ]
    for change, field in cases:
        with pytest.raises(InvalidInput) as exc:
            SearchQuery.parse({"code": code, "short": short, **change})
        assert exc.value.field == field, change
    with pytest.raises(ValidationError):
        SearchQuery(code=code, short=short, k=0)
    q = SearchQuery(code=code, short=short, k=3, offset=MAX_WINDOW - 3, strategy="exact")
    assert SearchQuery.parse(q.to_json()) == q
    assert q.to_json() == {"k": 3, "offset": MAX_WINDOW - 3, "strategy": "exact",
                           "code": "00" * 32, "short": "00" * 8}
    assert SearchQuery(text="a red bicycle").code is None  # words alone are a query


def test_capabilities_refuse_what_a_backend_does_not_serve() -> None:
    caps = Capabilities(frozenset({"exact"}), "exact", why_not=(("two_stage", "not here"),))
    q = SearchQuery(code=bytes(32), short=bytes(8))
    assert caps.check(q) == "exact"
    with pytest.raises(InvalidInput, match="not here") as exc:
        caps.check(q.model_copy(update={"strategy": "two_stage"}))
    assert (exc.value.code, exc.value.field) == ("unsupported_query", "strategy")
    with pytest.raises(InvalidInput) as exc:
        caps.check(SearchQuery(text="cat"))
    assert (exc.value.code, exc.value.field) == ("unsupported_query", "text")
    assert Capabilities.from_json(caps.to_json()) == Capabilities(frozenset({"exact"}), "exact")


def test_strategy_names_and_query_fields_come_from_one_model() -> None:
    doc = build_openapi()
    form = doc["paths"]["/v1/search"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = form["schema"]["properties"]
    assert set(props) == {"file"} | set(QueryParams.model_fields)
    assert props["k"]["maximum"] == 1000
    assert set(props["strategy"]["anyOf"][0]["enum"]) == set(STRATEGIES)
    assert set(SearchRequest.model_fields) >= set(QueryParams.model_fields)


async def test_gateway_paging_stops_at_the_result_window(
    tmp_path: Path, model_path: Path,
) -> None:
    index = EmbeddedIndex(tmp_path / "emb")
    await index.open()
    try:
        docs = make_docs(MAX_WINDOW + 5)
        await index.upsert(docs)
        body = {"code": docs[0].code.hex(), "short": docs[0].short.hex(), "k": 10,
                "strategy": "exact"}
        async with gateway_over(index, tmp_path / "g", model_path) as gw:
            inside = await (await gw.post("/v1/search", json={**body, "offset": 9980})).json()
            last = await (await gw.post("/v1/search", json={**body, "offset": 9985})).json()
            past = await gw.post("/v1/search", json={**body, "offset": last["offset"] + 10})
        assert (inside["total"], inside["next_offset"]) == (MAX_WINDOW + 5, 9990)
        assert len(last["results"]) == 10
        assert last["next_offset"] is None  # 9995 + 10 would pass the window
        assert past.status == 400
    finally:
        await index.close()
