"""Labels and search by words: WordNet expansion, the embedded label index, words + code."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastichash.index.base import Document
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.query import SearchQuery
from elastichash.model.labels import class_names, vocabulary

ELEPHANT = "n02504458"  # African bush elephant
TUSKER = "n01871265"
BEAGLE = "n02088364"
PUG = "n02110958"
BUS = "n04487081"  # trolleybus
SCHOOL_BUS = "n04146614"
CAB = "n02930766"


def test_words_name_every_class_below_them_in_wordnet() -> None:
    v = vocabulary()
    dogs = v.lookup("dog")
    assert dogs is not None
    assert len(dogs) >= 100
    assert {BEAGLE, PUG} <= dogs
    vehicles = v.lookup("vehicle")
    assert vehicles is not None
    assert {BUS, SCHOOL_BUS, CAB} <= vehicles
    assert BEAGLE not in vehicles
    assert v.lookup("dogs") == dogs  # simple plurals
    assert v.lookup("buses") == v.lookup("bus")
    assert v.lookup("xyzzy") is None


def test_a_text_of_several_terms_reports_the_unknown_ones() -> None:
    classes, known, unknown = vocabulary().resolve("elephant, xyzzy")
    assert ELEPHANT in classes
    assert known == ["elephant"]
    assert unknown == ["xyzzy"]


def test_the_shipped_class_names_fit_the_default_models_1000_scores() -> None:
    names = class_names("imagenet-1k.txt", 1000)
    assert names.ids[0] == "n01440764"
    assert names.names[0] == "tench"
    assert list(names.ids) == sorted(names.ids)
    with pytest.raises(Exception, match="names 1000 classes"):
        class_names("imagenet-1k.txt", 10)


def _doc(i: int, labels: list[tuple[str, float]], bits: int) -> Document:
    code = (bits.to_bytes(1, "big") * 32)
    meta = {"labels": [{"id": c, "name": c, "score": s} for c, s in labels]}
    return Document(f"img{i}", code, code[:8], metadata=meta)


@pytest.fixture
async def index(tmp_path: Path) -> EmbeddedIndex:
    idx = EmbeddedIndex(tmp_path / "index")
    await idx.open()
    await idx.upsert([
        _doc(1, [(ELEPHANT, 0.9), (TUSKER, 0.05)], 0x00),
        _doc(2, [(BEAGLE, 0.6)], 0x01),
        _doc(3, [(PUG, 0.8)], 0x03),
        _doc(4, [(BUS, 0.7)], 0x07),
        _doc(5, [(CAB, 0.3), (BEAGLE, 0.2)], 0x0F),
        _doc(6, [], 0xFF),
    ])
    yield idx  # type: ignore[misc]
    await idx.close()


async def test_words_find_images_by_label_score_and_broader_words(index: EmbeddedIndex) -> None:
    res = await index.search(SearchQuery(text="elephant"))
    assert [h.id for h in res.hits] == ["img1"]
    assert res.hits[0].metadata["labels"][0]["id"] == ELEPHANT
    res = await index.search(SearchQuery(text="dog"))
    assert [h.id for h in res.hits] == ["img3", "img2", "img5"]  # by label score
    res = await index.search(SearchQuery(text="vehicle"))
    assert [h.id for h in res.hits] == ["img4", "img5"]
    res = await index.search(SearchQuery(text="dog", k=1, offset=1))
    assert [h.id for h in res.hits] == ["img2"]
    assert res.total == 3


async def test_an_unknown_word_finds_nothing(index: EmbeddedIndex) -> None:
    res = await index.search(SearchQuery(text="xyzzy"))
    assert res.hits == []
    assert res.total == 0


async def test_words_and_a_code_rank_by_hamming_among_the_labelled(index: EmbeddedIndex) -> None:
    code = bytes([0x0F]) * 32
    res = await index.search(SearchQuery(text="dog", code=code, short=code[:8]))
    assert [h.id for h in res.hits] == ["img5", "img3", "img2"]
    assert [h.distance for h in res.hits] == [0, 64, 96]


async def test_words_with_a_filter_keep_only_the_labelled_images_that_pass(
        index: EmbeddedIndex) -> None:
    await index.upsert([Document("img7", bytes(32), bytes(8), metadata={
        "labels": [{"id": BEAGLE, "name": BEAGLE, "score": 0.7}], "album": "park"})])
    res = await index.search(SearchQuery(text="dog", filter={"album": "park"}))
    assert [h.id for h in res.hits] == ["img7"]
    assert res.total == 1
    code = bytes([0x0F]) * 32
    res = await index.search(SearchQuery(text="dog", code=code, short=code[:8],
                                         filter={"album": ["park", "none"]}))
    assert [(h.id, h.distance) for h in res.hits] == [("img7", 128)]


async def test_words_with_a_filter_count_and_page_only_live_images_that_pass(
        tmp_path: Path) -> None:
    idx = EmbeddedIndex(tmp_path / "index")
    await idx.open()
    try:
        def doc(i: int, album: str) -> Document:
            code = bytes([i]) * 32
            return Document(f"p{i}", code, code[:8], metadata={
                "labels": [{"id": BEAGLE, "name": BEAGLE, "score": 1.0 - i / 100}],
                "album": album})

        code = bytes(32)
        words = SearchQuery(text="dog", code=code, short=code[:8], filter={"album": "park"})
        assert (await idx.search(words)).total == 0  # nothing in memory yet
        await idx.upsert([doc(i, "park" if i % 2 == 0 else "home") for i in range(12)])
        await idx.upsert([_doc(99, [(PUG, 0.99)], 0x00)])  # labelled, but in no album
        await idx.delete(["p4"])
        await idx.upsert([doc(6, "home"), doc(8, "park")])  # old rows dead; p8 passes again
        live = ["p0", "p2", "p8", "p10"]  # best score first
        res = await idx.search(SearchQuery(text="dog", filter={"album": "park"}, k=2))
        assert ([h.id for h in res.hits], res.total) == (live[:2], 4)
        res = await idx.search(SearchQuery(text="dog", filter={"album": "park"}, k=2, offset=2))
        assert ([h.id for h in res.hits], res.total) == (live[2:], 4)
        res = await idx.search(words)
        distance = {i: 32 * bin(int(i[1:])).count("1") for i in live}  # byte i, 32 times
        by_distance = sorted(live, key=lambda i: (distance[i], i))
        assert [(h.id, h.distance) for h in res.hits] == [(i, distance[i]) for i in by_distance]
        assert (res.total, res.candidates) == (4, 4)
        res = await idx.search(words.model_copy(update={"max_distance": 32}))
        assert ([h.id for h in res.hits], res.total) == (["p0", "p2", "p8"], 3)
    finally:
        await idx.close()


async def test_replacing_or_deleting_an_image_drops_its_old_labels(index: EmbeddedIndex) -> None:
    await index.upsert([_doc(2, [(BUS, 0.5)], 0x01)])
    assert "img2" not in [h.id for h in (await index.search(SearchQuery(text="dog"))).hits]
    assert "img2" in [h.id for h in (await index.search(SearchQuery(text="bus"))).hits]
    await index.delete(["img4"])
    assert [h.id for h in (await index.search(SearchQuery(text="bus"))).hits] == ["img2"]


async def test_the_gateway_returns_labels_and_searches_by_words(
    tmp_path: Path, semantic_model: Path,
) -> None:
    from tests.imagegen import make_image
    from tests.standalone import (
        form_with_files,
        gateway_client,
        standalone_settings,
        wait_indexed,
    )

    datas = [make_image(500 + i, (320, 240)) for i in range(3)]
    async with gateway_client(standalone_settings(tmp_path, semantic_model), tmp_path) as client:
        resp = await client.post("/v1/images", data=form_with_files(
            [(f"{i}.jpg", d, "image/jpeg") for i, d in enumerate(datas)]))
        ids = [img["id"] for img in (await resp.json())["images"]]
        statuses = await wait_indexed(client, ids, within_s=120)
        labels = statuses[ids[0]]["metadata"]["labels"]
        assert 1 <= len(labels) <= 5
        assert all(lab["score"] >= 0.05 for lab in labels)
        assert [lab["score"] for lab in labels] == sorted(
            (lab["score"] for lab in labels), reverse=True)
        top = labels[0]["name"]

        resp = await client.post("/v1/search", json={"text": top})
        body = await resp.json()
        assert resp.status == 200, body
        assert ids[0] in [r["id"] for r in body["results"]]
        assert all(any(lab["name"] == top for lab in r["metadata"]["labels"])
                   for r in body["results"])
        assert body["hint"] is None

        resp = await client.post("/v1/search", json={"text": top, "id": ids[0]})
        body = await resp.json()
        assert body["results"][0]["id"] == ids[0]
        assert body["results"][0]["distance"] == 0

        resp = await client.post("/v1/search", json={"text": "xyzzy"})
        body = await resp.json()
        assert resp.status == 200
        assert body["results"] == []
        assert "xyzzy" in body["hint"]


async def test_a_store_from_before_the_label_table_gets_it_filled_on_open(tmp_path: Path) -> None:
    import sqlite3

    from elastichash.index.embedded import DB_NAME

    idx = EmbeddedIndex(tmp_path / "index")
    await idx.open()
    await idx.upsert([_doc(1, [(ELEPHANT, 0.9)], 0x00), _doc(2, [], 0x01)])
    await idx.close()
    conn = sqlite3.connect(tmp_path / "index" / DB_NAME)  # back to schema 3: no label table
    conn.execute("DROP TABLE labels")
    conn.execute("ALTER TABLE docs DROP COLUMN version")  # nor the later version columns
    conn.execute("ALTER TABLE failures DROP COLUMN version")
    conn.execute("DELETE FROM schema_migrations WHERE version >= 4")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    idx = EmbeddedIndex(tmp_path / "index")
    await idx.open()
    try:
        res = await idx.search(SearchQuery(text="elephant"))
        assert [h.id for h in res.hits] == ["img1"]
    finally:
        await idx.close()
