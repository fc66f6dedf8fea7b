"""Search by words on the engine backend, and the model an engine index is bound to.

Parity: the same documents in the embedded index and in an engine give the same ranked ids,
distances and totals for words alone (by best label score, ties by id), words with a code
(Hamming distance among the labelled, ``max_distance``), words with a filter, and paging;
on the stand-in and on the real engine. An index made before the label field existed gains
it, values included, through the reindex-behind-alias path, and keeps its model record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elastichash.errors import ModelMismatch
from elastichash.index.base import Document, SearchQuery
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.es import query as es_query
from elastichash.index.es.mapping import LABEL_SCORES
from elastichash.model.labels import vocabulary
from tests.engines import Engine, drop, make_index, older_index, through_search_service

N = 400
DOGS = ["n02088364", "n02110958", "n02099601", "n02106662"]  # beagle, pug, golden, shepherd
VEHICLES = ["n04487081", "n04146614", "n02930766", "n03594945"]  # trolleybus, school bus, cab, jeep
ELEPHANTS = ["n02504458", "n01871265"]  # African elephant, tusker
OTHERS = ["n07747607", "n03000134", "n09472597", "n04592741"]  # orange, fence, volcano, wing
CLASSES = DOGS + VEHICLES + ELEPHANTS + OTHERS
ALBUMS = ["a", "b", "c"]
WORDS = ["dog", "vehicle", "elephant", "beagle", "dog, bus", "animal", "pug or cab",
         "school bus", "volcano", "xyzzy", "dog, xyzzy"]


@pytest.fixture(params=["stand-in", "real engine"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(
        "stand_in" if request.param == "stand-in" else "real_engine")
    return found


def make_docs(rng: np.random.Generator) -> list[Document]:
    """Labelled documents with many ties: scores from a coarse grid for every third document
    (ties by id decide), codes with few distinct bits (ties by distance)."""
    docs = []
    for i in range(N):
        n = int(rng.integers(0, 6))
        picked = rng.choice(len(CLASSES), size=n, replace=False)
        labels = []
        for c in picked:
            score = (float(rng.choice([0.25, 0.5, 0.75])) if i % 3 == 0
                     else round(float(rng.uniform(0.05, 1.0)), 4))
            labels.append({"id": CLASSES[c], "name": CLASSES[c], "score": score})
        labels.sort(key=lambda lab: -lab["score"])
        code = np.zeros(32, np.uint8)
        code[:2] = rng.integers(0, 256, 2, dtype=np.uint8)
        meta: dict[str, Any] = {"labels": labels, "album": ALBUMS[i % 3]}
        docs.append(Document(f"w{i:04d}", code.tobytes(), code[:8].tobytes(),
                             source=f"{i}.jpg", metadata=meta))
    return docs


def reference(docs: list[Document], text: str, code: bytes | None = None,
              album: str | None = None, max_distance: int | None = None) -> list[tuple[int, str]]:
    """(distance, id) of every match, ranked: best label score then id, or distance then id."""
    classes, _, _ = vocabulary().resolve(text)
    ranked: list[tuple[Any, str]] = []
    for d in docs:
        scores = [lab["score"] for lab in d.metadata["labels"] if lab["id"] in classes]
        if not scores or (album is not None and d.metadata["album"] != album):
            continue
        if code is None:
            ranked.append(((-max(scores), 0), d.id))
        else:
            dist = int(np.bitwise_count(np.frombuffer(d.code, np.uint8)
                                        ^ np.frombuffer(code, np.uint8)).sum())
            if max_distance is None or dist <= max_distance:
                ranked.append(((dist, dist), d.id))
    ranked.sort()
    return [(key[1], doc_id) for key, doc_id in ranked]


def _queries(docs: list[Document]) -> list[tuple[SearchQuery, list[tuple[int, str]]]]:
    rng = np.random.default_rng(4)
    out = []
    for i, text in enumerate(WORDS):
        for k, offset in ((10, 0), (7, 5), (1000, 0)):
            out.append((SearchQuery(text=text, k=k, offset=offset),
                        reference(docs, text)[offset: offset + k]))
        q = docs[int(rng.integers(0, N))]
        for max_distance in (None, 6):
            out.append((SearchQuery(text=text, code=q.code, short=q.short, k=20, offset=i % 3,
                                    max_distance=max_distance),
                        reference(docs, text, q.code, max_distance=max_distance)
                        [i % 3: i % 3 + 20]))
        album = ALBUMS[i % 3]
        out.append((SearchQuery(text=text, k=50, filter={"album": album}),
                    reference(docs, text, album=album)[:50]))
        out.append((SearchQuery(text=text, code=q.code, short=q.short, k=50,
                                filter={"album": album}),
                    reference(docs, text, q.code, album=album)[:50]))
    return out


async def test_words_rank_the_same_on_the_engine_as_on_the_embedded_index(
    engine_index: EngineIndex, tmp_path: Path
) -> None:
    docs = make_docs(np.random.default_rng(1))
    assert all(r.ok for r in await engine_index.upsert(docs))
    await engine_index.refresh()
    assert (await engine_index.capabilities()).text
    embedded = EmbeddedIndex(tmp_path / "emb")
    await embedded.open()
    try:
        await embedded.upsert(docs)
        nonempty = 0
        for query, want in _queries(docs):
            got = await engine_index.search(query)
            emb = await embedded.search(query)
            pairs = [(h.distance, h.id) for h in got.hits]
            assert pairs == [(h.distance, h.id) for h in emb.hits] == want, query
            assert (got.total, got.candidates, got.strategy) == (
                emb.total, emb.candidates, emb.strategy), query
            nonempty += bool(pairs)
        assert nonempty > len(WORDS) * 5
        hit = (await engine_index.search(SearchQuery(text="elephant", k=1))).hits[0]
        assert hit.metadata == next(d for d in docs if d.id == hit.id).metadata  # labels back
    finally:
        await embedded.close()


async def test_an_unknown_word_and_a_replaced_label_find_nothing(
    engine_index: EngineIndex,
) -> None:
    docs = make_docs(np.random.default_rng(2))[:30]
    await engine_index.upsert(docs)
    await engine_index.refresh()
    res = await engine_index.search(SearchQuery(text="xyzzy"))
    assert (res.hits, res.total) == ([], 0)
    dog = next(d for d in docs if any(lab["id"] in DOGS for lab in d.metadata["labels"]))
    relabelled = Document(dog.id, dog.code, dog.short, metadata={"labels": [
        {"id": VEHICLES[0], "name": "trolleybus", "score": 0.9}]})
    await engine_index.upsert([relabelled])
    await engine_index.refresh()
    assert dog.id not in [h.id for h in (await engine_index.search(
        SearchQuery(text="dog", k=100))).hits]
    assert (await engine_index.search(SearchQuery(text="trolleybus", k=1))).hits[0].id == dog.id


async def test_an_index_without_label_scores_gains_them_and_keeps_its_model(
    engine: Engine,
) -> None:
    docs = make_docs(np.random.default_rng(3))[:60]
    model = _Model("elastichash-default", "elastichash-default:1:aaaaaaaaaaaa")

    async def bind(idx: EngineIndex) -> None:
        await idx.bind_model("visual", model)

    async with older_index(engine, LABEL_SCORES, docs, before_write=bind) as (second, old):
        assert second.concrete == f"{second.names.alias}-v2" != old
        await second.refresh()
        got = await second.search(SearchQuery(text="dog", k=100))
        assert [(h.distance, h.id) for h in got.hits] == reference(docs, "dog")
        assert await second.model() == ("visual", model.fingerprint)
        await second.bind_model("visual", model)  # the same model: fine


class _Model:
    """What binding reads of a model spec: its contract name and fingerprint."""

    def __init__(self, name: str, fingerprint: str) -> None:
        self.name, self.fingerprint = name, fingerprint


async def test_an_engine_index_refuses_another_models_codes_naming_both(
    engine: Engine,
) -> None:
    visual = _Model("elastichash-default", "elastichash-default:1:aaaaaaaaaaaa")
    lite0 = _Model("efficientnet-lite0", "efficientnet-lite0:1:bbbbbbbbbbbb")
    first = make_index(engine)
    await first.open()
    try:
        assert await first.model() == (None, None)
        await first.bind_model("efficientnet-lite0", lite0)
        await first.upsert(make_docs(np.random.default_rng(5))[:3])
        again = EngineIndex(engine.url, first.names.alias, kind=engine.kind,
                            nbs_index=first.names.nbs)
        await again.open()
        try:
            await again.bind_model("efficientnet-lite0", lite0)
            with pytest.raises(ModelMismatch) as err:
                await again.bind_model("visual", visual)
        finally:
            await again.close()
        message = err.value.message
        assert "'efficientnet-lite0' (efficientnet-lite0:1:bbbbbbbbbbbb)" in message
        assert "'visual' (elastichash-default:1:aaaaaaaaaaaa)" in message
        assert first.names.alias in message
        assert "EH_*_MODEL__MODEL=efficientnet-lite0" in message
        assert await first.model() == ("efficientnet-lite0", lite0.fingerprint)
    finally:
        await drop(first)
        await first.close()


async def test_an_engine_index_with_codes_and_no_record_holds_the_descriptors(
    engine: Engine,
) -> None:
    idx = make_index(engine)
    await idx.open()
    try:
        await idx.upsert(make_docs(np.random.default_rng(6))[:3])
        await idx.refresh()
        with pytest.raises(ModelMismatch, match="holds codes of model 'visual'"):
            await idx.bind_model("efficientnet-lite0",
                                 _Model("efficientnet-lite0", "efficientnet-lite0:1:cc"))
        await idx.bind_model("visual", _Model("elastichash-default", "elastichash-default:1:dd"))
        assert await idx.model() == ("visual", "elastichash-default:1:dd")
    finally:
        await drop(idx)
        await idx.close()


def test_words_alone_rank_by_the_best_label_score_in_a_nested_query() -> None:
    body = es_query.words_request(["n1", "n2"], None, k=5, offset=10, max_distance=3)
    nested = body["query"]["nested"]
    assert (nested["path"], nested["score_mode"]) == (LABEL_SCORES, "max")
    assert body["sort"] == es_query.SORT
    assert "min_score" not in body  # max_distance means nothing without a code
    with_code = es_query.words_request(["n1"], bytes(32), k=5, offset=0, max_distance=3)
    assert with_code["min_score"] == 256 - 3
    assert with_code["query"]["script_score"]["query"]["bool"]["filter"][0] == (
        es_query.labelled(["n1"]))
    src = es_query.document_source(Document("x", bytes(32), bytes(8), metadata={"labels": [
        {"id": "n1", "name": "one", "score": 0.5}, {"name": "no id"}]}), dense_bit=False)
    assert src[LABEL_SCORES] == [{"id": "n1", "score": 0.5}]


async def test_a_gateway_binds_and_searches_an_engine_index_through_the_search_service(
    engine_index: EngineIndex,
) -> None:
    """The wiring of docker-compose: the gateway's RemoteIndex asks the search service to bind
    its engine index (another model is refused with the engine's message, as a 409) and
    searches it by words as directly."""
    lite0 = _Model("efficientnet-lite0", "efficientnet-lite0:1:eeeeeeeeeeee")
    docs = make_docs(np.random.default_rng(7))[:80]
    async with through_search_service(engine_index) as remote:
        await remote.bind_model("efficientnet-lite0", lite0)
        await remote.bind_model("efficientnet-lite0", lite0)
        with pytest.raises(ModelMismatch) as err:
            await remote.bind_model("visual", _Model("elastichash-default", "v:1:ff"))
        assert (await remote.capabilities()).text
        await remote.upsert(docs)
        await engine_index.refresh()
        for query in (SearchQuery(text="dog", k=15, offset=2),
                      SearchQuery(text="vehicle", code=docs[0].code, short=docs[0].short),
                      SearchQuery(text="animal", filter={"album": "b"})):
            got = await remote.search(query)
            want = await engine_index.search(query)
            assert [(h.distance, h.id) for h in got.hits] == [
                (h.distance, h.id) for h in want.hits]
            assert (got.total, got.strategy) == (want.total, want.strategy)
            assert got.hits, query
    assert "holds codes of model 'efficientnet-lite0'" in err.value.message
    assert "'visual' (v:1:ff)" in err.value.message
    assert await engine_index.model() == ("efficientnet-lite0", lite0.fingerprint)
