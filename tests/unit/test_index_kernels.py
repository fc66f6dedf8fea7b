"""The search kernels and the in-memory table against a brute-force numpy reference.

Codes are drawn from few bits so that distances tie in large groups: the exact path's heap
then cuts through tie sets (its second, range scan must fetch all of them) and ordering by id
decides every page. Deletes, replacements, the unmerged delta, merges and compaction all
run through the same reference checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from elastichash.codes import hamming_many
from elastichash.index import kernels, mih
from elastichash.index.base import Document, SearchQuery
from elastichash.index.code_table import TIE_MARGIN, Candidates, CodeTable, Snapshot
from elastichash.index.embedded import EmbeddedIndex

U8 = npt.NDArray[np.uint8]


def tie_heavy(n: int, rng: np.random.Generator, random_bytes: int = 2) -> U8:
    """Codes that differ only in their first ``random_bytes`` bytes: distances 0..8*that."""
    codes = np.zeros((n, 32), np.uint8)
    codes[:, :random_bytes] = rng.integers(0, 256, (n, random_bytes), dtype=np.uint8)
    return codes


def shorts_near(n: int, rng: np.random.Generator, query_short: U8) -> U8:
    """Short codes a few bits from the query's, so some but not all are MIH candidates."""
    bits = np.unpackbits(np.broadcast_to(query_short, (n, 8)), axis=1)
    flips = rng.random((n, 64)) < rng.uniform(0.02, 0.3, (n, 1))
    return np.packbits(bits ^ flips, axis=1)


def ref_distances(q: U8, codes: U8) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = np.bitwise_count(codes ^ q).sum(axis=1, dtype=np.int64)
    return out


def ref_mih_candidates(q_short: U8, shorts: U8) -> npt.NDArray[np.bool_]:
    """Codes sharing at least one 16-bit subcode within radius 2 of the query's."""
    qs = q_short.view(">u2").astype(np.int64)
    ss = shorts.view(">u2").astype(np.int64)
    out: npt.NDArray[np.bool_] = (np.bitwise_count(ss ^ qs) <= 2).any(axis=1)
    return out


def check(
    c: Candidates,
    dist: npt.NDArray[np.int64],
    eligible: npt.NDArray[np.bool_],
    need: int,
    max_distance: int | None,
) -> None:
    """Candidates = every eligible code up to the need-th distance, ties included."""
    ok = eligible & (dist <= max_distance) if max_distance is not None else eligible
    assert c.total == int(ok.sum())
    assert np.array_equal(c.dists, dist[c.positions])
    if not ok.any():
        assert c.positions.size == 0
        return
    boundary = np.sort(dist[ok])[min(need, int(ok.sum())) - 1]
    expected = np.flatnonzero(ok & (dist <= boundary))
    assert np.array_equal(np.sort(c.positions), expected)


class Model:
    """A CodeTable together with the plain arrays it should behave like."""

    def __init__(self, codes: U8, shorts: U8) -> None:
        n = codes.shape[0]
        self.table = CodeTable(np.arange(n, dtype=np.int64), codes, shorts)
        self.codes, self.shorts = codes.copy(), shorts.copy()
        self.alive = np.ones(n, bool)

    @property
    def snap(self) -> Snapshot:
        return self.table.snapshot

    def apply(self, removed: npt.NDArray[np.int64], codes: U8, shorts: U8) -> None:
        n = self.codes.shape[0]
        new_rows = np.arange(n, n + codes.shape[0], dtype=np.int64)
        self.table.publish(self.table.apply(removed, new_rows, codes, shorts))
        self.alive[removed] = False
        self.codes = np.concatenate([self.codes, codes])
        self.shorts = np.concatenate([self.shorts, shorts])
        self.alive = np.concatenate([self.alive, np.ones(codes.shape[0], bool)])

    def positions_to_rows(self, c: Candidates) -> Candidates:
        rows = self.snap.rows[c.positions]
        return Candidates(rows, c.dists, c.total, c.scanned)

    def verify(self, q: U8, q_short: U8, rng: np.random.Generator) -> None:
        dist = ref_distances(q, self.codes)
        cand = ref_mih_candidates(q_short, self.shorts) & self.alive
        for need in (1, 10, 100, 1000):
            for max_distance in (None, int(rng.integers(0, 17)), 256):
                got = CodeTable.exact(self.snap, q, need, max_distance)
                assert got.scanned == self.snap.n_alive  # deleted slots are no candidates
                check(self.positions_to_rows(got), dist, self.alive, need, max_distance)
                got = CodeTable.two_stage(self.snap, q, q_short.tobytes(), need, max_distance)
                assert got.scanned == int(cand.sum())
                check(self.positions_to_rows(got), dist, cand, need, max_distance)


def test_popcount_kernels_match_numpy() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    codes[0] = 0
    codes[1] = 255  # a distance of 256 must not overflow the folded counts
    q = np.zeros(32, np.uint8)
    want = hamming_many(q, codes)
    assert want[1] == 256
    for use_faiss in (True, False):
        assert np.array_equal(kernels.distances(q, codes, use_faiss=use_faiss), want)
    pos = rng.permutation(5000)[:700].astype(np.uint32)
    assert np.array_equal(kernels.distances_at(q, codes, pos), want[pos])


@pytest.mark.parametrize("use_faiss", [True, False])
def test_knn_range_and_count_kernels_match_brute_force(use_faiss: bool) -> None:
    rng = np.random.default_rng(2)
    codes = tie_heavy(4000, rng)
    q = tie_heavy(1, rng)[0]
    d = ref_distances(q, codes)
    for radius in (-1, 0, 3, 8, 16):
        pos, dist = kernels.within(q, codes, radius, use_faiss=use_faiss)
        assert np.array_equal(pos, np.flatnonzero(d <= radius))
        assert np.array_equal(dist, d[pos])
        assert kernels.count_within(q, codes, radius, use_faiss=use_faiss) == int(
            (d <= radius).sum()
        )
    dist, ids = kernels.knn(q, codes, 50, use_faiss=use_faiss)
    assert np.array_equal(dist, np.sort(d)[:50])
    assert np.array_equal(dist, d[ids])


def test_mih_unique_is_sorted_and_distinct() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 1000):
        found = rng.integers(0, 300, size).astype(np.uint32)
        assert np.array_equal(mih.unique(found), np.unique(found))


def test_exact_fetches_a_tie_set_larger_than_the_heap_margin() -> None:
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    q = codes[0].copy()
    tied = rng.permutation(np.arange(1, 3000))[: 4 * TIE_MARGIN]
    codes[tied] = q ^ np.eye(32, dtype=np.uint8)[0]  # all at distance 1
    model = Model(codes, codes[:, :8].copy())
    got = CodeTable.exact(model.snap, q, 10, None)
    assert got.positions.size == 1 + tied.size  # the query's own code and every tie
    check(got, ref_distances(q, codes), model.alive, 10, None)


def test_table_matches_the_reference_through_deletes_appends_merge_and_compaction() -> None:
    rng = np.random.default_rng(5)
    q_short = rng.integers(0, 256, 8, dtype=np.uint8)
    queries = [tie_heavy(1, rng)[0] for _ in range(3)]
    n = 3000
    model = Model(tie_heavy(n, rng), shorts_near(n, rng, q_short))

    def new(m: int) -> tuple[U8, U8]:
        return tie_heavy(m, rng), shorts_near(m, rng, q_short)

    # (stage, positions removed, codes appended)
    stages: list[tuple[str, npt.NDArray[np.int64], int]] = [
        ("built", np.zeros(0, np.int64), 0),
        ("deleted", rng.choice(n, 300, replace=False), 0),
        ("delta", rng.choice(n, 50, replace=False), 2000),
        ("compacted", np.zeros(0, np.int64), 10),  # removes 1,100 live codes, below
        ("merged", np.zeros(0, np.int64), 70_000),
    ]
    for name, removed, added in stages:
        if name == "compacted":
            removed = np.flatnonzero(model.alive)[:1100]
        if name != "built":
            model.apply(removed, *new(added))
        snap = model.snap
        if name == "delta":
            assert snap.n > snap.base_n
            assert snap.dead.size
        if name == "compacted":
            assert snap.dead.size == 0
            assert snap.n == snap.n_alive
        if name == "merged":
            assert snap.base_n == snap.n
        for q in queries:
            model.verify(q, q_short, rng)


async def test_pages_follow_the_reference_ranking_with_ties_by_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    n = 1500
    q_short = rng.integers(0, 256, 8, dtype=np.uint8)
    codes, shorts = tie_heavy(n, rng, 1), shorts_near(n, rng, q_short)
    ids = [f"doc-{v:06d}" for v in rng.permutation(1_000_000)[:n]]  # id order != row order
    docs = {
        i: Document(i, c.tobytes(), s.tobytes()) for i, c, s in zip(ids, codes, shorts, strict=True)
    }
    idx = EmbeddedIndex(tmp_path / "idx")
    await idx.open()
    try:
        for s in range(0, n, 500):
            await idx.upsert([docs[i] for i in ids[s : s + 500]])
        gone = ids[::7]
        await idx.delete(gone)
        for i in gone:
            del docs[i]
        for i in ids[1::5]:  # replaced with a new code
            new = Document(
                i, tie_heavy(1, rng, 1)[0].tobytes(), shorts_near(1, rng, q_short)[0].tobytes()
            )
            docs[i] = new
        await idx.upsert([docs[i] for i in ids[1::5] if i in docs])
        q = tie_heavy(1, rng, 1)[0]
        all_codes = np.frombuffer(b"".join(d.code for d in docs.values()), np.uint8)
        all_shorts = np.frombuffer(b"".join(d.short for d in docs.values()), np.uint8)
        dist = ref_distances(q, all_codes.reshape(-1, 32))
        cand = ref_mih_candidates(q_short, all_shorts.reshape(-1, 8))
        for strategy, eligible in (("exact", np.ones(len(docs), bool)), ("two_stage", cand)):
            want = sorted((int(d), i) for d, i, e in zip(dist, docs, eligible, strict=True) if e)
            got: list[tuple[int, str]] = []
            for offset in range(0, 330, 110):
                res = await idx.search(SearchQuery(
                    code=q.tobytes(), short=q_short.tobytes(), k=110, offset=offset,
                    strategy=strategy,
                ))
                assert res.total == len(want)
                got += [(h.distance, h.id) for h in res.hits]
            assert got == want[:330], strategy
    finally:
        await idx.close()
