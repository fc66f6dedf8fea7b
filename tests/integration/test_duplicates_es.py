"""Near-duplicate groups on the engine backend (the protocol stand-in, and the real engine
of the test command): the same groups, keepers, matrices and counts as the embedded backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from tests.datasets import planted_docs
from tests.engines import Engine


@pytest.fixture(params=["stand-in", "real engine"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(
        "stand_in" if request.param == "stand-in" else "real_engine"
    )
    return found


async def test_groups_equal_the_embedded_backends(
    engine_index: EngineIndex, tmp_path: Path
) -> None:
    es_index = engine_index
    docs, _ = planted_docs(300, 21)
    embedded = EmbeddedIndex(tmp_path / "idx")
    await embedded.open()
    try:
        await embedded.upsert(docs)
        assert all(r.ok for r in await es_index.upsert(docs))
        await es_index.refresh()
        for d, offset, limit in ((8, 0, 200), (11, 3, 4), (3, 0, 200)):
            got = await es_index.duplicates(max_distance=d, offset=offset, limit=limit)
            want = await embedded.duplicates(max_distance=d, offset=offset, limit=limit)
            assert got.groups == want.groups, f"D={d}"
            assert (got.total, got.images, got.pairs) == (want.total, want.images, want.pairs)
        gone = want.groups[0].members[0].id
        await es_index.delete([gone])
        await embedded.delete([gone])
        await es_index.refresh()
        got = await es_index.duplicates(max_distance=8, limit=200)
        want = await embedded.duplicates(max_distance=8, limit=200)
        assert got.groups == want.groups
    finally:
        await embedded.close()
