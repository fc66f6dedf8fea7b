"""The search service over a real embedded index, over real sockets; RemoteIndex against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from elastichash.codes import to_hex, to_words
from elastichash.errors import Unavailable, UnsupportedQuery
from elastichash.index.base import Document, Failure, Index, SearchQuery
from elastichash.index.remote import RemoteIndex
from elastichash.settings import IndexSettings
from search_service.app import create_app
from search_service.config import SearchServiceSettings


def docs(n: int) -> list[Document]:
    codes = np.random.default_rng(7).integers(0, 256, (n, 32), dtype=np.uint8)
    return [
        Document(
            f"doc{i}",
            c.tobytes(),
            c[:8].tobytes(),
            source=f"http://img/{i}.jpg",
            metadata={"title": f"t{i}"},
        )
        for i, c in enumerate(codes)
    ]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = SearchServiceSettings(index=IndexSettings(data_dir=tmp_path / "idx"))
    srv = TestServer(create_app(settings))
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def remote(server: TestServer) -> AsyncIterator[RemoteIndex]:
    idx = RemoteIndex(str(server.make_url("")))
    await idx.open()
    yield idx
    await idx.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_settings_read_nested_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EH_SEARCH_INDEX__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EH_SEARCH_INDEX__STRATEGY", "exact")
    s = SearchServiceSettings()
    assert (s.index.data_dir, s.index.strategy, s.port) == (tmp_path, "exact", 8081)


async def test_bulk_then_search_by_hex_and_by_words(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    ds = docs(50)
    body = {
        "documents": [
            {
                "id": d.id,
                "code": to_hex(d.code),
                "short": to_hex(d.short),
                "source": d.source,
                "metadata": d.metadata,
            }
            for d in ds
        ]
    }
    body["documents"].append({"id": "broken", "code": "zz", "short": to_hex(ds[0].short)})
    async with http.post(server.make_url("/v1/documents/_bulk"), json=body) as r:
        out = await r.json()
    assert r.status == 200
    assert out["errors"] is True
    assert [i["ok"] for i in out["items"]] == [True] * 50 + [False]
    q = ds[3]
    for query in ({"code": to_hex(q.code)}, {"words": to_words(q.code)}):
        for strategy in ("exact", "two_stage"):
            req = {**query, "short": to_hex(q.short), "k": 3, "strategy": strategy}
            async with http.post(server.make_url("/v1/search"), json=req) as r:
                res = await r.json()
            assert r.status == 200, res
            top = res["results"][0]
            assert (top["id"], top["distance"], top["source"], top["metadata"]) == (
                "doc3",
                0,
                "http://img/3.jpg",
                {"title": "t3"},
            )
            assert res["strategy"] == strategy
            # two_stage ranks only MIH candidates: random codes rarely share a subcode.
            assert (
                len(res["results"]) == 3 if strategy == "exact" else 1 <= len(res["results"]) <= 3
            )
            assert {"total", "candidates", "took_ms"} <= set(res)


@pytest.mark.parametrize(
    ("req", "field", "code"),
    [
        ({"code": "ab", "short": "00" * 8}, "code", "invalid_input"),
        ({"short": "00" * 8}, "code", "invalid_input"),
        ({"words": [1, 2, 3]}, "words", "invalid_input"),
        ({"code": "00" * 32}, "short", "invalid_input"),
        ({"code": "00" * 32, "short": "xyz"}, "short", "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "k": 0}, "k", "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "k": 1001}, "k", "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "max_distance": 300}, "max_distance",
         "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "offset": -2}, "offset", "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "strategy": "fuzzy"}, "strategy",
         "invalid_input"),
        ({"code": "00" * 32, "short": "00" * 8, "strategy": "dense_bit"}, "strategy",
         "unsupported_query"),
    ],
)
async def test_bad_search_requests_are_400_naming_the_field(
    server: TestServer, http: aiohttp.ClientSession, req: dict[str, object], field: str,
    code: str,
) -> None:
    async with http.post(server.make_url("/v1/search"), json=req) as r:
        body = await r.json()
    assert r.status == 400
    assert body["error"]["field"] == field
    assert body["error"]["code"] == code


async def test_documents_thumbnails_failures_stats_and_probes(
    server: TestServer, remote: RemoteIndex, http: aiohttp.ClientSession
) -> None:
    d = Document(
        "pic1", bytes(range(32)), bytes(8), thumbnail=b"\xff\xd8\xff fake jpeg", metadata={"a": 1}
    )
    assert [r.ok for r in await remote.upsert([d])] == [True]
    async with http.get(server.make_url("/v1/documents/pic1")) as r:
        body = await r.json()
    assert body["code"] == to_hex(d.code)
    assert body["has_thumbnail"] is True
    assert "thumbnail" not in body
    async with http.get(server.make_url("/v1/documents/pic1/thumbnail")) as r:
        assert r.status == 200
        assert r.content_type == "image/jpeg"
        assert await r.read() == d.thumbnail
    async with http.get(server.make_url("/v1/documents/nope/thumbnail")) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    async with http.post(
        server.make_url("/v1/failures"),
        json={"failures": [{"id": "x1", "reason": "corrupt", "message": "bad", "at": 5}]},
    ) as r:
        assert r.status == 200
    async with http.get(server.make_url("/v1/failures"), params={"limit": "5"}) as r:
        assert [f["id"] for f in (await r.json())["failures"]] == ["x1"]
    async with http.get(server.make_url("/v1/failures"), params={"limit": "0"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["field"] == "limit"
    async with http.get(server.make_url("/v1/stats")) as r:
        stats = await r.json()
    assert stats["count"] == 1
    assert stats["backend"] == "embedded"
    for path in ("/healthz", "/readyz"):
        async with http.get(server.make_url(path)) as r:
            assert r.status == 200
    async with http.get(server.make_url("/metrics")) as r:
        text = await r.text()
    assert "eh_search_http_requests_total" in text
    assert "eh_search_documents 1.0" in text
    async with http.delete(server.make_url("/v1/documents/pic1")) as r:
        assert r.status == 200
    async with http.delete(server.make_url("/v1/documents/pic1")) as r:
        assert r.status == 404


async def test_remote_index_round_trips_through_the_service(remote: RemoteIndex) -> None:
    assert isinstance(remote, Index)
    assert await remote.ready()
    ds = docs(30)
    ds[0] = Document(
        ds[0].id, ds[0].code, ds[0].short, thumbnail=b"jpegbytes", thumbnail_url="http://t/0"
    )
    assert all(r.ok for r in await remote.upsert(ds))
    assert await remote.get("doc0") == ds[0]
    assert await remote.get("missing") is None
    assert await remote.existing(["doc0", "missing", "doc1", "doc0"]) == {"doc0", "doc1"}
    assert await remote.existing([]) == set()
    res = await remote.search(SearchQuery(
            code=ds[4].code, short=ds[4].short, k=5, strategy="exact"
        ))
    assert res.hits[0].id == "doc4"
    assert res.total == 30
    assert res.strategy == "exact"
    with pytest.raises(UnsupportedQuery) as exc:
        await remote.search(SearchQuery(code=ds[4].code, short=ds[4].short, strategy="dense_bit"))
    assert exc.value.field == "strategy"
    assert [r.ok for r in await remote.delete(["doc4", "doc4x"])] == [True, False]
    assert await remote.count() == 29
    await remote.record_failures([Failure("bad1", "truncated", "cut short", "u", 3.0)])
    assert await remote.get_failure("bad1") == Failure("bad1", "truncated", "cut short", "u", 3.0)
    assert await remote.get_failure("none") is None
    assert [f.id for f in await remote.recent_failures(5)] == ["bad1"]


async def test_remote_index_maps_a_dead_service_to_unavailable() -> None:
    idx = RemoteIndex("http://127.0.0.1:9", timeout=2)
    await idx.open()
    try:
        assert await idx.ready() is False
        with pytest.raises(Unavailable):
            await idx.search(SearchQuery(code=bytes(32), short=bytes(8)))
    finally:
        await idx.close()
