"""The near-duplicate self-join and its groups against a brute-force all-pairs reference.

Codes are random, clustered (cluster mates far apart) and tie-heavy, each with planted
near-duplicates: copies of other rows with 0..12 distinct bits flipped, some of them copies of
copies (chains), some exact copies. Pairs right at the distance limit and just past it make a
missing or extra pair show; groups are checked against a union-find over the brute-force pairs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from elastichash.errors import InvalidInput
from elastichash.index import duplicates as dup
from tests.datasets import brute_groups, brute_pairs, plant

U8 = npt.NDArray[np.uint8]


def random_codes(n: int, rng: np.random.Generator) -> U8:
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def clustered_codes(n: int, rng: np.random.Generator) -> U8:
    centres = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    noise = np.packbits(rng.random((n, 256)) < 0.1, axis=1)
    out: U8 = centres[rng.integers(0, 20, n)] ^ noise
    return out


def few_bits_codes(n: int, rng: np.random.Generator) -> U8:
    """Codes that differ only in 14 bits spread over all four words: huge buckets, many
    pairs at every distance, many identical codes."""
    codes = np.zeros((n, 32), np.uint8)
    for byte in (0, 9, 17, 30):
        codes[:, byte] = rng.integers(0, 256, n, dtype=np.uint8) & rng.choice([0x0F, 0x70, 0x7])
    return codes


GENERATORS = {"random": random_codes, "clustered": clustered_codes, "few_bits": few_bits_codes}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("seed", [1, 2])
def test_self_join_finds_exactly_the_brute_force_pairs_at_every_distance(
    kind: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    codes = plant(GENERATORS[kind](600, rng), rng, 250)
    for d in range(dup.MAX_JOIN_DISTANCE + 1):
        truth = brute_pairs(codes, d)
        join = dup.self_join(codes, d, block=2053)  # small blocks: many block boundaries
        left, right, dists = join.expand()
        got = list(zip(left.tolist(), right.tolist(), dists.tolist(), strict=True))
        assert got == truth, f"{kind} seed {seed} D={d}"
        assert join.pair_count() == len(truth)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_groups_are_the_connected_components_of_the_pairs(kind: str) -> None:
    rng = np.random.default_rng(7)
    codes = plant(GENERATORS[kind](500, rng), rng, 300)
    for d in (0, 4, 8, 11):
        truth = brute_groups(len(codes), brute_pairs(codes, d))
        got = [g.tolist() for g in dup.groups(dup.self_join(codes, d))]
        assert got == truth, f"{kind} D={d}"


def test_a_chain_is_one_group_though_its_ends_are_far_apart() -> None:
    rng = np.random.default_rng(3)
    codes = np.repeat(random_codes(1, rng), 6, axis=0)
    for i in range(1, 6):  # each link flips 5 new bits: neighbours 5 apart, ends 25 apart
        codes[i:, i * 2] ^= np.uint8(0b11111)
    codes = np.concatenate([codes, random_codes(50, rng)])
    join = dup.self_join(codes, 5)
    assert [g.tolist() for g in dup.groups(join)] == [[0, 1, 2, 3, 4, 5]]
    assert dup.distance_matrix(codes[[0, 5]]).tolist() == [[0, 25], [25, 0]]


def test_many_identical_codes_collapse_instead_of_pairing_quadratically() -> None:
    rng = np.random.default_rng(4)
    codes = np.concatenate([np.repeat(random_codes(1, rng), 3000, axis=0), random_codes(10, rng)])
    join = dup.self_join(codes, 8)
    assert join.candidates == 0  # one representative: nothing to verify
    assert join.pair_count() == 3000 * 2999 // 2
    assert [g.size for g in dup.groups(join)] == [3000]


def test_chunks_partition_the_code_and_keys_read_their_bits() -> None:
    rng = np.random.default_rng(5)
    for d in range(dup.MAX_JOIN_DISTANCE + 1):
        chunks = dup.chunks_for(d)
        assert len(chunks) == d + 1
        masks = np.array([c.mask() for c in chunks])
        # Disjoint: no bit in two chunks.
        total = sum(int(np.bitwise_count(m).sum()) for m in masks)
        assert total == int(np.bitwise_count(np.bitwise_or.reduce(masks, axis=0)).sum())
        words = random_codes(64, rng).view(np.uint64)
        for c, m in zip(chunks, masks, strict=True):
            other = words ^ (~m & rng.integers(0, 2**63, words.shape, dtype=np.uint64))
            # Changing bits outside the chunk keeps the key; changing one inside changes it.
            assert np.array_equal(c.key(words), c.key(other))
            w = int(np.flatnonzero(m)[0])
            flipped = words.copy()
            flipped[:, w] ^= np.uint64(int(m[w]) & -int(m[w]))  # the chunk's lowest bit there
            assert not np.any(c.key(words) == c.key(flipped))


def test_distances_outside_the_supported_range_are_refused() -> None:
    with pytest.raises(InvalidInput):
        dup.check_distance(12)
    with pytest.raises(InvalidInput):
        dup.check_distance(-1)
    with pytest.raises(InvalidInput):
        dup.self_join(np.zeros((3, 31), np.uint8), 4)


def test_an_empty_or_single_table_has_no_groups() -> None:
    for n in (0, 1):
        join = dup.self_join(np.zeros((n, 32), np.uint8), 8)
        assert join.pair_count() == 0
        assert dup.groups(join) == []
