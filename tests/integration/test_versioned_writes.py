"""Every backend keeps the newer upload of an id, whatever order the writes arrive in, appends
the sources of re-uploaded bytes, and stores the large-view preview with the document: the
embedded index (SQLite), the engine (the stand-in and the real one, external versions) and
the search service's HTTP API in front of either."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from elastichash.index.base import Document, Failure, Index, SearchQuery, WriteResult
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.remote import RemoteIndex
from elastichash.index.schema import MAX_SOURCES
from search_service.app import create_app
from search_service.config import SearchServiceSettings
from tests.engines import Engine, drop, make_index

OLD, NEW = 1_700_000_000_000_000_000, 1_700_000_000_000_000_500


def doc(seed: int, version: int, *, source: str = "a.jpg",
        preview: bytes | None = None) -> Document:
    code = np.random.default_rng(seed).integers(0, 256, 32, dtype=np.uint8).tobytes()
    return Document("img", code, code[:8], source=source, sources=(source,),
                    thumbnail=b"\xff\xd8thumb%d" % seed, preview=preview, version=version)


def cut_short(version: int) -> Document:
    """A copy of ``img`` that no backend can write: its long code is cut short."""
    return Document("img", b"\x01" * 5, b"\x01" * 8, version=version)


def outcomes(results: list[WriteResult]) -> list[str]:
    assert [r.id for r in results] == ["img"] * len(results)
    return ["refused" if not r.ok and not r.transient else "transient" if not r.ok
            else "superseded" if r.superseded else "written" for r in results]


async def held(index: Index) -> tuple[bytes, int]:
    got = await index.get("img")
    assert got is not None
    return got.code, got.version


@pytest.fixture(params=["embedded", "stand-in", "real engine", "search service"])
def backend(request: pytest.FixtureRequest) -> tuple[str, Engine | None]:
    if request.param in ("stand-in", "real engine"):
        return request.param, request.getfixturevalue(
            "stand_in" if request.param == "stand-in" else "real_engine")
    return request.param, None


@pytest.fixture
async def index(backend: tuple[str, Engine | None], tmp_path: Path) -> AsyncIterator[Index]:
    kind, engine = backend
    if engine is None:
        embedded = EmbeddedIndex(tmp_path / "idx")
        if kind == "embedded":
            await embedded.open()
            yield embedded
            await embedded.close()
            return
        server = TestServer(create_app(SearchServiceSettings(), index=embedded))
        await server.start_server()
        remote = RemoteIndex(str(server.make_url("")))
        await remote.open()
        yield remote
        await remote.close()
        await server.close()
        return
    idx = make_index(engine)
    await idx.open()
    yield idx
    await drop(idx)
    await idx.close()


async def test_an_older_upload_written_last_does_not_replace_the_newer_one(index: Index) -> None:
    new, old = doc(1, NEW, source="new.jpg"), doc(2, OLD, source="old.jpg")
    [first] = await index.upsert([new])
    assert first.ok
    assert not first.superseded
    [late] = await index.upsert([old])
    assert late.ok
    assert late.superseded
    kept = await index.get("img")
    assert kept is not None
    assert (kept.code, kept.source, kept.version, kept.thumbnail) == (
        new.code, "new.jpg", NEW, new.thumbnail)
    # A redelivery of the newer upload is written again (equal versions), a newer one wins.
    assert not (await index.upsert([new]))[0].superseded
    newest = doc(3, NEW + 1, source="newest.jpg")
    assert not (await index.upsert([newest]))[0].superseded
    got = await index.get("img")
    assert got is not None
    assert got.code == newest.code


async def test_a_superseded_write_leaves_the_failure_record_of_the_newer_upload(
        index: Index) -> None:
    await index.upsert([doc(1, NEW)])
    await index.record_failures([Failure("img", "corrupt", "newest upload was cut short",
                                         "c.jpg", 1e9)])
    await index.upsert([doc(2, OLD)])
    failure = await index.get_failure("img")
    assert failure is not None
    assert failure.reason == "corrupt"


async def test_a_failure_of_an_older_upload_after_the_newer_was_indexed_is_left_out(
        index: Index) -> None:
    await index.upsert([doc(1, NEW)])
    await index.record_failures([Failure("img", "corrupt", "older upload", "o.jpg", 1e9, OLD)])
    assert await index.get_failure("img") is None  # the latest upload is the indexed one
    await index.record_failures([Failure("img", "corrupt", "newer upload", "n.jpg", 1e9,
                                         NEW + 1)])
    failure = await index.get_failure("img")
    assert failure is not None
    assert (failure.message, failure.version) == ("newer upload", NEW + 1)


async def test_the_failure_of_a_newer_upload_outlives_the_write_of_an_older_one(
        index: Index) -> None:
    await index.record_failures([Failure("img", "corrupt", "newer upload", "n.jpg", 1e9, NEW)])
    await index.record_failures([Failure("img", "truncated", "older", "o.jpg", 1e9, OLD)])
    older = doc(2, OLD)
    assert not (await index.upsert([older]))[0].superseded  # the best image there is
    failure = await index.get_failure("img")
    assert failure is not None
    assert failure.message == "newer upload"  # still what happened to the latest upload
    await index.upsert([doc(3, NEW + 1)])  # a newer upload indexed: the failure is history
    assert await index.get_failure("img") is None


async def test_the_newer_of_two_versions_in_one_batch_wins(index: Index) -> None:
    new, old = doc(1, NEW), doc(2, OLD)
    results = await index.upsert([new, old])
    assert all(r.ok for r in results)
    got = await index.get("img")
    assert got is not None
    assert got.code == new.code


async def test_an_unversioned_write_replaces_whatever_is_stored(index: Index) -> None:
    await index.upsert([doc(1, NEW)])
    plain = doc(2, 0)
    assert not (await index.upsert([plain]))[0].superseded
    got = await index.get("img")
    assert got is not None
    assert got.code == plain.code


async def test_a_superseded_write_is_not_searchable(index: Index) -> None:
    new, old = doc(1, NEW), doc(2, OLD)
    await index.upsert([new])
    await index.upsert([old])
    if hasattr(index, "refresh"):
        await index.refresh()
    query = SearchQuery(code=old.code, short=old.short, k=5, strategy="exact")
    hits = (await index.search(query)).hits
    assert [h.id for h in hits] == ["img"]
    assert hits[0].distance == int(np.unpackbits(
        np.frombuffer(bytes(a ^ b for a, b in zip(old.code, new.code, strict=True)),
                      np.uint8)).sum())


async def test_a_source_is_appended_once_and_the_first_is_kept(index: Index) -> None:
    await index.upsert([doc(1, NEW, source="first.jpg")])
    assert await index.add_source("img", "second.jpg")
    assert await index.add_source("img", "second.jpg")  # already there: kept once
    assert await index.add_source("img", "https://example.org/third.jpg")
    got = await index.get("img")
    assert got is not None
    assert got.source == "first.jpg"
    assert got.sources == ("first.jpg", "second.jpg", "https://example.org/third.jpg")
    assert got.version == NEW  # appending is no new upload: an older one still loses
    assert (await index.upsert([doc(2, OLD)]))[0].superseded
    assert not await index.add_source("missing", "x.jpg")


async def test_sources_are_capped_keeping_the_first_and_the_latest(index: Index) -> None:
    await index.upsert([doc(1, NEW, source="first.jpg")])
    for i in range(MAX_SOURCES + 5):
        await index.add_source("img", f"copy-{i}.jpg")
    got = await index.get("img")
    assert got is not None
    assert len(got.sources) == MAX_SOURCES
    assert got.sources[0] == "first.jpg"
    assert got.sources[-1] == f"copy-{MAX_SOURCES + 4}.jpg"


async def test_the_preview_is_stored_with_its_upload_and_replaced_with_it(index: Index) -> None:
    await index.upsert([doc(1, NEW, preview=b"\xff\xd8preview-new")])
    assert await index.get_preview("img") == b"\xff\xd8preview-new"
    await index.upsert([doc(2, OLD, preview=b"\xff\xd8preview-old")])  # superseded
    assert await index.get_preview("img") == b"\xff\xd8preview-new"
    await index.upsert([doc(3, NEW + 1)])  # a newer upload without one (a small image)
    assert await index.get_preview("img") is None
    assert await index.get_preview("missing") is None


async def test_a_read_leaves_the_preview_out_and_appending_a_source_keeps_it(
        index: Index) -> None:
    await index.upsert([doc(1, NEW, preview=b"\xff\xd8preview")])
    got = await index.get("img")
    assert got is not None
    assert got.preview is None  # large: read on its own
    assert got.thumbnail is not None
    assert await index.add_source("img", "again.jpg")
    assert await index.get_preview("img") == b"\xff\xd8preview"


async def test_an_invalid_copy_of_an_id_fails_alone_and_the_valid_copy_beside_it_is_written(
        index: Index) -> None:
    # As if written one by one: the invalid copy is refused whichever side it is on, and it
    # neither hides the valid copy nor takes on its result.
    valid = doc(1, OLD)
    results = await index.upsert([valid, cut_short(NEW)])
    assert outcomes(results) == ["written", "refused"]
    assert "code must be 32 bytes" in (results[1].error or "")
    assert await held(index) == (valid.code, OLD)
    later = doc(2, NEW)
    assert outcomes(await index.upsert([cut_short(NEW + 1), later])) == ["refused", "written"]
    assert await held(index) == (later.code, NEW)


async def test_the_copies_of_an_id_a_batch_does_not_write_are_reported_superseded(
        index: Index) -> None:
    # The copy written is the one written last in order, unless an earlier one is newer; the
    # others are acknowledged as superseded, never as written.
    old, new = doc(1, OLD), doc(2, NEW)
    assert outcomes(await index.upsert([old, new])) == ["superseded", "written"]
    assert await held(index) == (new.code, NEW)
    newer, late = doc(3, NEW + 2), doc(4, NEW + 1)
    assert outcomes(await index.upsert([newer, late])) == ["written", "superseded"]
    assert await held(index) == (newer.code, NEW + 2)
    twin, redelivered = doc(5, NEW + 3), doc(6, NEW + 3)  # equal versions: the last one
    assert outcomes(await index.upsert([twin, redelivered])) == ["superseded", "written"]
    assert await held(index) == (redelivered.code, NEW + 3)
    # Every copy older than the stored one: all superseded, the stored one stays.
    assert outcomes(await index.upsert([doc(7, OLD), doc(8, NEW)])) == [
        "superseded", "superseded"]
    assert await held(index) == (redelivered.code, NEW + 3)
    # An invalid newest copy changes nothing for the valid ones.
    kept = doc(10, NEW + 5)
    assert outcomes(await index.upsert([doc(9, NEW + 4), kept, cut_short(NEW + 6)])) == [
        "superseded", "written", "refused"]
    assert await held(index) == (kept.code, NEW + 5)


async def test_an_unversioned_copy_in_a_batch_replaces_the_copies_before_it(
        index: Index) -> None:
    # As an unversioned write replaces whatever is stored, so it does within a batch.
    plain = doc(2, 0)
    assert outcomes(await index.upsert([doc(1, NEW), plain])) == ["superseded", "written"]
    assert await held(index) == (plain.code, 0)
    upload = doc(4, NEW + 5)
    assert outcomes(await index.upsert([doc(3, 0), upload])) == ["superseded", "written"]
    assert await held(index) == (upload.code, NEW + 5)
