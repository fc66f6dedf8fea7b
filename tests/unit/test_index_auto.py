"""The 'auto' strategy: full ranking for small collections, MIH for large ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elastichash import codes
from elastichash.index import base
from elastichash.index.base import Document, SearchQuery
from elastichash.index.embedded import EmbeddedIndex


async def test_auto_ranks_a_small_index_fully_and_switches_to_two_stage_above_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    longs = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    shorts = longs[:, :8]
    index = EmbeddedIndex(tmp_path / "i", strategy="auto")
    await index.open()
    try:
        await index.upsert([Document(f"d{i}", longs[i].tobytes(), shorts[i].tobytes())
                            for i in range(50)])
        q, qs = longs[0].tobytes(), shorts[0].tobytes()
        small = await index.search(SearchQuery(code=q, short=qs, k=50))
        assert small.strategy == "exact"
        assert len(small.hits) == 50  # random codes: MIH alone would find almost none
        assert [h.distance for h in small.hits] == sorted(
            int(d) for d in codes.hamming_many(q, longs))
        monkeypatch.setattr(base, "AUTO_EXACT_MAX", 10)
        large = await index.search(SearchQuery(code=q, short=qs, k=50))
        assert large.strategy == "two_stage"
        assert large.hits[0].id == "d0"
        assert len(large.hits) < 50
    finally:
        await index.close()
