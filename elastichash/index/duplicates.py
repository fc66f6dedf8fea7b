"""Near-duplicate groups: the self-join of a code table at Hamming distance <= D (D <= 11).

Why not the MIH lookup of a search, once per code: the four 16-bit subcode tables with radius
2 put every code's 548 neighbour buckets (1/120 of the space) in front of it, so on 1M codes
with spread-out subcodes the self-join verifies ~4e9 candidate pairs (``bench/duplicates.py``
counts them exactly from the bucket sizes) -- far beyond the 60 s budget of numpy on two
cores. The pigeonhole argument that makes MIH complete works better when turned around for a
join: split the *256-bit* code into ``m >= D + 1`` disjoint chunks; two codes within distance
D differ in at most D chunks, so among any D + 1 chunks at least one is *identical*. Exact
buckets of wide keys (28 bits for D = 8, 21 for D = 11) are tiny, so a chunk's candidate pairs
are nearly all true ones: on 1M clustered codes a few million pairs are verified in all,
instead of billions. It needs no short code (also right for models that emit ``code64``
themselves, where the short code is not a subset of the long one).

Steps, all vectorised:

1. Identical codes collapse onto one representative (a lexicographic sort of the 4 words), so
   10,000 copies of one image cost one row, not 50 million pairs.
2. Per probed chunk: sort the representatives by the chunk's key, enumerate the pairs inside
   each bucket of two or more (a CSR expansion, in blocks of bounded size), verify them on all
   256 bits, and keep a pair only in the first chunk where it is identical (its XOR is zero on
   no earlier probed chunk), so no pair is reported twice and no global ``unique`` is needed.
3. Single-linkage groups: union-find over the pairs (hooking roots to the smaller label and
   pointer jumping, vectorised), identical copies joined to their representative.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.codes import LONG_BITS, LONG_BYTES, NUM_WORDS
from elastichash.errors import InvalidInput
from elastichash.index.base import DuplicateGroup, DuplicatesResult, Hit, Index, hit_of
from elastichash.index.kernels import popcount_rows

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]

MAX_JOIN_DISTANCE = 11  # the API's limit; the join itself is complete for any D < 256
DEFAULT_DISTANCE = 8
DEFAULT_LIMIT = 20
MAX_LIMIT = 200  # groups per page
MATRIX_MAX = 64  # members up to which a group carries its pairwise distance matrix
PAIR_BLOCK = 1 << 20  # candidate pairs verified per step: ~70 MB of gathered rows at most
MIN_CHUNKS = NUM_WORDS  # never wider than a 64-bit word, so a key is one uint64
WORD = 64


@dataclass(frozen=True)
class Chunk:
    """Bits [start, stop) of the code, numbered across the four native-order uint64 words."""

    start: int
    stop: int

    def key(self, words: U64) -> U64:
        """The chunk's bits of each row of ``words`` (m, 4) as one uint64."""
        w0, w1 = self.start // WORD, (self.stop - 1) // WORD
        if w0 == w1:
            width = self.stop - self.start
            col = np.ascontiguousarray(words[:, w0])
            left = np.left_shift(col, np.uint64(self.start - WORD * w0))
            return np.right_shift(left, np.uint64(WORD - width))
        high_width = WORD * w1 - self.start
        low_width = self.stop - WORD * w1
        high = np.right_shift(
            np.left_shift(words[:, w0], np.uint64(self.start - WORD * w0)),
            np.uint64(WORD - high_width),
        )
        low = np.right_shift(words[:, w1], np.uint64(WORD - low_width))
        out: U64 = np.bitwise_or(np.left_shift(high, np.uint64(low_width)), low)
        return out

    def mask(self) -> U64:
        """(4,) uint64 with ones on the chunk's bits, in the same numbering as :meth:`key`."""
        out = np.zeros(NUM_WORDS, np.uint64)
        for w in range(NUM_WORDS):
            lo, hi = max(self.start, WORD * w), min(self.stop, WORD * (w + 1))
            if lo < hi:
                ones = (1 << (hi - lo)) - 1
                out[w] = ones << (WORD * (w + 1) - hi)
        return out


@cache
def chunks_for(max_distance: int) -> tuple[Chunk, ...]:
    """The D + 1 chunks to probe: ``max(D + 1, 4)`` near-equal slices of the 256 bits (at most
    64 bits each), of which the first D + 1. Any D + 1 disjoint chunks are complete."""
    m = max(max_distance + 1, MIN_CHUNKS)
    base, extra = divmod(LONG_BITS, m)
    out, start = [], 0
    for i in range(m):
        stop = start + base + (1 if i < extra else 0)
        out.append(Chunk(start, stop))
        start = stop
    return tuple(out[: max_distance + 1])


@dataclass(frozen=True)
class Join:
    """Every pair of codes within ``max_distance``, in compact form.

    ``rep[i]`` is the first position holding code ``i``'s exact value; ``left``/``right``
    (left < right) are pairs of *distinct* representatives with their distance ``dists``.
    Identical codes are pairs at distance 0 implied by ``rep``.
    """

    n: int
    max_distance: int
    rep: I64
    left: I64
    right: I64
    dists: I32
    candidates: int  # pairs of representatives whose 256-bit distance was computed

    def multiplicity(self) -> I64:
        out: I64 = np.bincount(self.rep, minlength=self.n).astype(np.int64)
        return out

    def pair_count(self) -> int:
        """Unordered pairs of positions within ``max_distance`` (identical copies included)."""
        mult = self.multiplicity()
        same = int((mult * (mult - 1) // 2).sum())
        return same + int((mult[self.left] * mult[self.right]).sum())

    def expand(self) -> tuple[I64, I64, I32]:
        """All pairs of positions (i < j) with their distances, sorted by (i, j). Can be
        quadratic in the number of identical copies: for tests and benchmarks."""
        order = np.argsort(self.rep, kind="stable")
        mult = self.multiplicity()
        start = np.zeros(self.n + 1, np.int64)
        np.cumsum(mult, out=start[1:])
        members = {int(r): order[start[r] : start[r + 1]] for r in np.flatnonzero(mult)}
        single = (mult[self.left] == 1) & (mult[self.right] == 1)
        li: list[I64] = [self.left[single]]
        ri: list[I64] = [self.right[single]]
        di: list[I32] = [self.dists[single]]
        for r in np.flatnonzero(mult > 1):
            m = members[int(r)]
            a, b = np.triu_indices(m.size, 1)
            li.append(m[a])
            ri.append(m[b])
            di.append(np.zeros(a.size, np.int32))
        rest = np.flatnonzero(~single)
        pairs = zip(
            self.left[rest].tolist(),
            self.right[rest].tolist(),
            self.dists[rest].tolist(),
            strict=True,
        )
        for a, b, d in pairs:
            ma, mb = members[a], members[b]
            li.append(np.repeat(ma, mb.size))
            ri.append(np.tile(mb, ma.size))
            di.append(np.full(ma.size * mb.size, d, np.int32))
        left, right, dists = np.concatenate(li), np.concatenate(ri), np.concatenate(di)
        lo, hi = np.minimum(left, right), np.maximum(left, right)
        order = np.lexsort((hi, lo))
        return lo[order], hi[order], dists[order]


def check_distance(max_distance: int) -> None:
    if not 0 <= max_distance <= MAX_JOIN_DISTANCE:
        raise InvalidInput(
            f"max_distance must be between 0 and {MAX_JOIN_DISTANCE} for duplicates",
            field="max_distance",
        )


def check_page(max_distance: int, offset: int, limit: int) -> None:
    check_distance(max_distance)
    if offset < 0:
        raise InvalidInput("offset must be >= 0", field="offset")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")


def _representatives(words: U64) -> I64:
    """For each row, the first row with the same 256 bits."""
    n = words.shape[0]
    order = np.lexsort(words.T[::-1])
    s = words[order]
    new = np.ones(n, bool)
    if n > 1:
        new[1:] = (s[1:] != s[:-1]).any(axis=1)
    group = np.cumsum(new) - 1
    # Stable lexsort keeps equal rows in position order: a group's first row is its smallest.
    first = order[new]
    rep = np.empty(n, np.int64)
    rep[order] = first[group]
    return rep


def _pairs_in_buckets(sorted_keys: U64, block: int) -> list[tuple[I64, I64]]:
    """Every pair (i < j) of sorted indices with equal keys, in blocks of about ``block``."""
    n = sorted_keys.size
    if n < 2:
        return []
    brk = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate(([0], brk)).astype(np.int64)
    ends = np.concatenate((brk, [n])).astype(np.int64)
    sizes = ends - starts
    multi = sizes > 1
    starts, ends, sizes = starts[multi], ends[multi], sizes[multi]
    if starts.size == 0:
        return []
    # Every element of a bucket of two or more, with how many later elements share its bucket.
    total = int(sizes.sum())
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
    elem = first + np.arange(total, dtype=np.int64)
    partners = np.repeat(ends, sizes) - 1 - elem
    keep = partners > 0
    elem, partners = elem[keep], partners[keep]
    cum = np.cumsum(partners)
    out: list[tuple[I64, I64]] = []
    lo = 0
    while lo < elem.size:
        base = int(cum[lo - 1]) if lo else 0
        hi = int(np.searchsorted(cum, base + block, side="right"))
        hi = max(hi, lo + 1)
        e, p = elem[lo:hi], partners[lo:hi]
        count = int(p.sum())
        left = np.repeat(e, p)
        within = np.arange(count, dtype=np.int64) - np.repeat(np.cumsum(p) - p, p)
        out.append((left, left + 1 + within))
        lo = hi
    return out


def self_join(codes: U8, max_distance: int, *, block: int = PAIR_BLOCK) -> Join:
    """Every pair of rows of ``codes`` (n, 32) within Hamming distance ``max_distance``."""
    if max_distance < 0 or max_distance >= LONG_BITS:
        raise InvalidInput("max_distance must be between 0 and 255", field="max_distance")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] != LONG_BYTES:
        raise InvalidInput(f"codes must be (n, {LONG_BYTES}) bytes", field="codes")
    n = codes.shape[0]
    words: U64 = codes.view(np.uint64)
    empty = np.zeros(0, np.int64)
    if n == 0:
        return Join(0, max_distance, empty, empty, empty, np.zeros(0, np.int32), 0)
    rep = _representatives(words)
    reps = np.flatnonzero(rep == np.arange(n))
    rwords = np.ascontiguousarray(words[reps])
    lefts: list[I64] = []
    rights: list[I64] = []
    dists: list[I32] = []
    candidates = 0
    probed: list[U64] = []
    if max_distance > 0:
        for chunk in chunks_for(max_distance):
            keys = chunk.key(rwords)
            order = np.argsort(keys, kind="stable")
            srt = np.take(rwords, order, axis=0)
            for a, b in _pairs_in_buckets(keys[order], block):
                candidates += a.size
                x = np.take(srt, a, axis=0)
                np.bitwise_xor(x, np.take(srt, b, axis=0), out=x)
                d = popcount_rows(x)
                ok = d <= max_distance
                a, b, d, x = a[ok], b[ok], d[ok], x[ok]
                for mask in probed:  # found already in an earlier chunk where it is identical
                    first = ~(x & mask).any(axis=1)
                    a, b, d, x = a[~first], b[~first], d[~first], x[~first]
                ia, ib = reps[order[a]], reps[order[b]]
                lefts.append(np.minimum(ia, ib))
                rights.append(np.maximum(ia, ib))
                dists.append(d.astype(np.int32))
            probed.append(chunk.mask())
    if lefts:
        left, right, dist = np.concatenate(lefts), np.concatenate(rights), np.concatenate(dists)
    else:
        left, right, dist = empty, empty, np.zeros(0, np.int32)
    return Join(n, max_distance, rep, left, right, dist, candidates)


def components(n: int, left: I64, right: I64) -> I64:
    """Connected-component label (the smallest member) of each of ``n`` nodes."""
    parent = np.arange(n, dtype=np.int64)
    if left.size == 0:
        return parent
    while True:
        pa, pb = parent[left], parent[right]
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        differ = lo != hi
        if not differ.any():
            return parent
        np.minimum.at(parent, hi[differ], lo[differ])  # hook roots onto the smaller label
        while True:  # pointer jumping until every node points at its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up


def groups(join: Join) -> list[I64]:
    """Single-linkage groups of two or more positions, each sorted, biggest group first
    (then by smallest position)."""
    n = join.n
    pos = np.arange(n, dtype=np.int64)
    copies = join.rep != pos
    left = np.concatenate([join.left, pos[copies]])
    right = np.concatenate([join.right, join.rep[copies]])
    if left.size == 0:
        return []
    nodes = np.unique(np.concatenate([left, right]))
    label = components(nodes.size, np.searchsorted(nodes, left), np.searchsorted(nodes, right))
    order = np.lexsort((nodes, label))
    lab = label[order]
    brk = np.flatnonzero(lab[1:] != lab[:-1]) + 1
    out = [nodes[g] for g in np.split(order, brk)]
    out.sort(key=lambda g: (-g.size, int(g[0])))
    return out


def distance_matrix(codes: U8) -> I32:
    """Pairwise 256-bit distances of a few codes (m, 32) -> (m, m)."""
    words = np.ascontiguousarray(codes, dtype=np.uint8).view(np.uint64)
    x = words[:, None, :] ^ words[None, :, :]
    m = words.shape[0]
    out: I32 = popcount_rows(x.reshape(-1, NUM_WORDS)).reshape(m, m)
    return out


def _number(metadata: dict[str, Any], key: str) -> float | None:
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def keeper_key(hit: Hit) -> tuple[float, float, str]:
    """Sort key that puts the image to keep first: the most pixels, then the oldest
    (``ingested_at``, unix seconds, where recorded), then the smallest id."""
    w, h = _number(hit.metadata, "width"), _number(hit.metadata, "height")
    pixels = w * h if w is not None and h is not None else 0.0
    at = _number(hit.metadata, "ingested_at")
    return (-pixels, at if at is not None else math.inf, hit.id)


def group_order(id_groups: Sequence[Sequence[str]]) -> list[int]:
    """Order of groups shared by every backend: biggest first, then by smallest id."""
    return sorted(range(len(id_groups)), key=lambda i: (-len(id_groups[i]), min(id_groups[i])))


def make_group(hits: Sequence[Hit], codes: U8) -> DuplicateGroup:
    """A group from its members (any order) and their codes (same order): the keeper first,
    the others by distance to it, then id; the pairwise matrix in that order."""
    keep = min(range(len(hits)), key=lambda i: keeper_key(hits[i]))
    words = np.ascontiguousarray(codes, dtype=np.uint8).view(np.uint64)
    to_keeper = popcount_rows(words ^ words[keep])
    order = sorted(range(len(hits)), key=lambda i: (i != keep, int(to_keeper[i]), hits[i].id))
    members = [replace(hits[i], distance=int(to_keeper[i])) for i in order]
    matrix = None
    if len(order) <= MATRIX_MAX:
        matrix = distance_matrix(codes[order]).tolist()
    return DuplicateGroup(members, hits[keep].id, matrix)


SCAN_PAGE = 10_000  # records per scan request (Elasticsearch's default result window)


async def groups_from_scan(
    index: Index, max_distance: int, offset: int, limit: int
) -> DuplicatesResult:
    """Duplicate groups of a backend without in-memory code tables (Elasticsearch,
    OpenSearch): one pass of :meth:`Index.scan` (n / 10,000 requests, codes only), the same
    self-join as the embedded index on the client, then the page's documents by id. The
    groups are those of the embedded backend for the same codes by construction."""
    check_page(max_distance, offset, limit)
    t0 = time.perf_counter()
    ids: list[str] = []
    raw = bytearray()
    async for batch in index.scan(batch=SCAN_PAGE):
        for rec in batch:
            ids.append(rec.id)
            raw += rec.code
    codes = np.frombuffer(bytes(raw), np.uint8).reshape(-1, LONG_BYTES)
    join = await asyncio.to_thread(self_join, codes, max_distance)
    found = [[ids[i] for i in g.tolist()] for g in groups(join)]
    order = group_order(found)
    page = [found[i] for i in order[offset : offset + limit]]
    docs = await asyncio.gather(*(index.get(i) for g in page for i in g))
    by_id = {d.id: d for d in docs if d is not None}
    out = []
    for g in page:
        members = [by_id[i] for i in g if i in by_id]  # deleted since the scan: left out
        if len(members) < 2:
            continue
        hits = [hit_of(d, 0) for d in members]
        member_codes = np.frombuffer(b"".join(d.code for d in members), np.uint8)
        out.append(make_group(hits, member_codes.reshape(-1, LONG_BYTES)))
    return DuplicatesResult(
        out,
        len(found),
        sum(len(g) for g in found),
        join.pair_count(),
        max_distance,
        (time.perf_counter() - t0) * 1000.0,
    )
