"""One document schema: the field table drives the engine mapping, the SQLite columns and the
JSON body shared by the search service and the AMQP messages; stored schemas evolve (SQLite
migrations, a reindex behind the engine alias) so a data directory made today still opens."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from elastichash.index import store
from elastichash.index.base import Document, Hit, SearchQuery
from elastichash.index.embedded import DB_NAME, EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.es import mapping as es_mapping
from elastichash.index.schema import FIELDS, DocumentBody, FieldSpec
from elastichash.index.service_json import document_from_json, document_to_json
from elastichash.messages import IndexDoc, decode_index
from tests.engines import Engine, drop, make_index

# The layout release 1 wrote, copied here on purpose: this is the data directory a user has
# today, and it must keep opening.
RELEASE_1_SQL = """
CREATE TABLE docs (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    code BLOB NOT NULL,
    short BLOB NOT NULL,
    source TEXT,
    thumbnail_url TEXT,
    metadata TEXT,
    has_thumb INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE thumbs (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE failures (
    id TEXT PRIMARY KEY, reason TEXT NOT NULL, message TEXT NOT NULL, source TEXT, at REAL NOT NULL
);
CREATE INDEX failures_at ON failures(at);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
"""


def make_docs(n: int, *, later_fields: bool = True) -> list[Document]:
    """``later_fields``: with the fields release 1 did not have (sources, version)."""
    codes = np.random.default_rng(5).integers(0, 256, (n, 32), dtype=np.uint8)
    return [
        Document(f"doc{i:03d}", c.tobytes(), c[:8].tobytes(), source=f"/photos/{i}.jpg",
                 metadata={"i": i}, thumbnail=b"\xff\xd8jpeg" if i % 2 else None,
                 sources=(f"/photos/{i}.jpg", f"/copies/{i}.jpg") if i % 2 and later_fields
                 else (), version=1_700_000_000_000_000_000 + i if later_fields else 0)
        for i, c in enumerate(codes)
    ]


def release_1_data_dir(path: Path, docs: list[Document]) -> None:
    path.mkdir(parents=True)
    conn = sqlite3.connect(path / DB_NAME)
    conn.executescript(RELEASE_1_SQL)
    for d in docs:
        conn.execute(
            "INSERT INTO docs(id, code, short, source, thumbnail_url, metadata, has_thumb)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (d.id, d.code, d.short, d.source, None, f'{{"i": {d.metadata["i"]}}}',
             d.thumbnail is not None),
        )
        if d.thumbnail is not None:
            conn.execute("INSERT INTO thumbs VALUES (?, ?)", (d.id, d.thumbnail))
    conn.execute("INSERT INTO failures VALUES ('bad', 'corrupt', 'cut short', 'x.jpg', 1.5)")
    conn.commit()
    conn.close()


def versions(path: Path) -> tuple[list[int], str]:
    conn = sqlite3.connect(path / DB_NAME)
    try:
        applied = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        meta = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
    finally:
        conn.close()
    return applied, meta


async def test_a_release_1_data_dir_is_migrated_and_keeps_every_document(tmp_path: Path) -> None:
    docs = make_docs(30, later_fields=False)
    release_1_data_dir(tmp_path / "idx", docs)
    index = EmbeddedIndex(tmp_path / "idx")
    await index.open()
    try:
        assert await index.count() == 30
        assert [await index.get(d.id) for d in docs] == docs
        assert (await index.get_failure("bad")) is not None
        hit = (await index.search(SearchQuery(code=docs[4].code, short=docs[4].short, k=1))).hits
        assert hit == [Hit("doc004", 0, "/photos/4.jpg", None, {"i": 4})]
        await index.upsert([Document("new", docs[0].code, docs[0].short, source="after")])
        assert await index.count() == 31
    finally:
        await index.close()
    assert versions(tmp_path / "idx") == (list(range(1, store.SCHEMA_VERSION + 1)),
                                          str(store.SCHEMA_VERSION))
    again = EmbeddedIndex(tmp_path / "idx")  # a second open migrates nothing
    await again.open()
    assert (await again.get("new")) is not None
    await again.close()
    assert versions(tmp_path / "idx")[0] == list(range(1, store.SCHEMA_VERSION + 1))


async def test_a_new_data_dir_and_a_migrated_one_have_the_same_schema(tmp_path: Path) -> None:
    release_1_data_dir(tmp_path / "old", [])
    for name in ("old", "new"):
        idx = EmbeddedIndex(tmp_path / name)
        await idx.open()
        await idx.close()

    def layout(name: str) -> list[tuple[str, str]]:
        conn = sqlite3.connect(tmp_path / name / DB_NAME)
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                            " ORDER BY name").fetchall()
        conn.close()
        return [(n, " ".join((sql or "").replace("IF NOT EXISTS ", "").split())) for n, sql in rows]

    assert layout("old") == layout("new")


async def test_a_data_dir_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    idx = EmbeddedIndex(tmp_path / "idx")
    await idx.open()
    await idx.upsert(make_docs(2))
    await idx.close()
    conn = sqlite3.connect(tmp_path / "idx" / DB_NAME)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema 99, newer than"):
        await EmbeddedIndex(tmp_path / "idx").open()
    assert versions(tmp_path / "idx")[0][-1] == 99


def test_a_new_field_row_becomes_a_column_and_an_index_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_1_data_dir(tmp_path / "idx", make_docs(3, later_fields=False))
    monkeypatch.setattr(store, "COLUMNS",
                        (*store.COLUMNS, FieldSpec("camera", "keyword", filterable=True)))
    conn = store.connect(tmp_path / "idx" / DB_NAME)
    try:
        store.migrate(conn, tmp_path / "idx")
        columns = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(docs)")}
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(docs)")}
        count = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    finally:
        conn.close()
    assert columns["camera"] == "TEXT"
    assert "docs_camera" in indexes
    assert count == 3


def test_the_field_table_the_records_and_the_json_body_agree() -> None:
    doc_fields = {f.name for f in dataclasses.fields(Document)}
    hit_fields = {f.name for f in dataclasses.fields(Hit)}
    for spec in FIELDS:
        assert spec.name in doc_fields, spec
        assert spec.name in DocumentBody.model_fields, spec
        assert (spec.name in hit_fields) == spec.in_hits, spec
    props = es_mapping.retrieval_mapping(dense_bit=False)["properties"]
    assert {s.name for s in FIELDS} <= set(props)
    # Today's mapping, unchanged: existing engine indices need no reindex on upgrade.
    assert [props[n] for n in ("source", "thumbnail_url", "metadata", "thumbnail")] == [
        {"type": "keyword", "index": False, "doc_values": False},
        {"type": "keyword", "index": False, "doc_values": False},
        {"type": "object", "enabled": False},
        {"type": "binary"},
    ]


def test_the_search_service_json_and_the_index_message_are_one_body() -> None:
    doc = dataclasses.replace(make_docs(2)[1], preview=b"\xff\xd8large")
    body = document_to_json(doc)
    message = IndexDoc.of(doc).model_dump_json().encode()
    parsed = decode_index(message)
    assert isinstance(parsed, IndexDoc)
    assert parsed.document() == document_from_json(body) == doc
    common = DocumentBody.model_fields.keys()
    assert {k: body[k] for k in common} == {k: parsed.model_dump()[k] for k in common}
    # The integer spelling of the codes (ElasticHash's words and subcodes) reads the same.
    ints = {k: v for k, v in body.items() if k not in ("code", "short")}
    ints["subcodes"] = [int.from_bytes(doc.short[i:i + 2], "big") for i in range(0, 8, 2)]
    assert document_from_json(ints) == doc


@pytest.fixture(params=["stand-in", "real engine"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(
        "stand_in" if request.param == "stand-in" else "real_engine"
    )
    return found


async def test_an_engine_mapping_change_reindexes_behind_the_alias(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = make_docs(25)
    first = make_index(engine)
    await first.open()
    concrete = first.concrete
    try:
        await first.upsert(docs)
        await first.close()
        # The filters work will make fields filterable: a mapping type change.
        changed = tuple(dataclasses.replace(f, filterable=True) if f.name == "source" else f
                        for f in FIELDS)
        monkeypatch.setattr(es_mapping, "FIELDS", changed)
        second = EngineIndex(engine.url, first.names.alias, kind=engine.kind,
                             nbs_index=first.names.nbs, layout=first.layout, bulk=first.bulk)
        await second.open()
        try:
            assert second.concrete == f"{first.names.alias}-v2" != concrete
            got = await second.client.get_mapping(first.names.alias)
            assert list(got) == [second.concrete]
            props = got[second.concrete]["mappings"]["properties"]
            assert props["source"] == {"type": "keyword"}
            await second.refresh()
            assert await second.count() == 25
            assert [await second.get(d.id) for d in docs] == docs
            res = await second.search(SearchQuery(code=docs[3].code, short=docs[3].short, k=1))
            assert [h.id for h in res.hits] == ["doc003"]
            assert (await second.upsert(make_docs(26)[25:]))[0].ok  # writes go to the new one
            old = await second.client.get_settings(concrete)
            assert old[concrete]["settings"]["index"]["blocks"]["write"] == "true"
        finally:
            await second.close()
        third = EngineIndex(engine.url, first.names.alias, kind=engine.kind,
                            nbs_index=first.names.nbs)
        await third.open()  # same table: nothing to move
        assert third.concrete == f"{first.names.alias}-v2"
        await third.client.delete_index(concrete)
        await drop(third)
        await third.close()
    finally:
        await first.close()
