"""Data sets with known answers, shared by the unit tests of the embedded index and the
integration tests that ask the engines the same questions: planted near-duplicates with their
brute-force pairs and groups, and documents with collection fields with the filters to try and
the brute-force check of a filter."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.codes import select_bits
from elastichash.index import filters
from elastichash.index.base import Document

U8 = npt.NDArray[np.uint8]
SHORT = list(range(0, 256, 4))


def plant(codes: U8, rng: np.random.Generator, count: int, max_flips: int = 12) -> U8:
    codes = codes.copy()
    n = codes.shape[0]
    for _ in range(count):
        src, dst = rng.integers(0, n, 2)
        codes[dst] = codes[src]
        bits = rng.choice(256, int(rng.integers(0, max_flips + 1)), replace=False)
        for b in bits:
            codes[dst, b // 8] ^= np.uint8(1 << (7 - b % 8))
    return codes


def brute_pairs(codes: U8, d: int) -> list[tuple[int, int, int]]:
    bits = np.unpackbits(codes, axis=1).astype(np.float32)  # BLAS; exact for these sizes
    dist = (bits @ (1 - bits).T + (1 - bits) @ bits.T).astype(np.int32)
    i, j = np.nonzero(np.triu(dist <= d, 1))
    return [(int(a), int(b), int(dist[a, b])) for a, b in zip(i, j, strict=True)]


def brute_groups(n: int, pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        parent[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for x in range(n):
        members.setdefault(find(x), []).append(x)
    out = [m for m in members.values() if len(m) > 1]
    out.sort(key=lambda m: (-len(m), m[0]))
    return out


def planted_docs(n: int, seed: int) -> tuple[list[Document], U8]:
    rng = np.random.default_rng(seed)
    codes = plant(rng.integers(0, 256, (n, 32), dtype=np.uint8), rng, n // 3)
    shorts = select_bits(codes, SHORT)
    docs = [
        Document(
            f"img{i:04d}",
            codes[i].tobytes(),
            shorts[i].tobytes(),
            source=f"/photos/{i}.jpg",
            metadata={"width": int(100 + i % 7 * 10), "height": 100, "ingested_at": 1e9 + i},
        )
        for i in range(n)
    ]
    return docs, codes


ALBUMS = [f"album-{i}" for i in range(20)]
TAGS = ["beach", "city", "night", "people", "snow"]
N = 1500


def make_docs(rng: np.random.Generator) -> list[Document]:
    # Few distinct bits: many ties, so ordering by id and the boundary ties matter.
    codes = np.zeros((N, 32), np.uint8)
    codes[:, :3] = rng.integers(0, 256, (N, 3), dtype=np.uint8)
    shorts = select_bits(codes, SHORT)
    docs = []
    for i in range(N):
        meta: dict[str, Any] = {
            "album": ALBUMS[int(rng.integers(0, len(ALBUMS)))],
            "tags": [t for t in TAGS if rng.random() < 0.3],
            "width": int(rng.integers(100, 4000)),
            "height": 480,
            "taken_at": f"2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
            "ingested_at": 1.7e9 + i,
        }
        if i % 7 == 0:
            del meta["album"]  # a document without the field never passes a clause on it
        docs.append(Document(f"d{i:05d}", codes[i].tobytes(), shorts[i].tobytes(),
                             source=f"cam{i % 3}", metadata=meta))
    return docs


def passes(doc: Document, spec: dict[str, Any]) -> bool:
    for c in filters.parse(spec):
        values = filters.field_values(c.field, doc.source, doc.metadata)
        if c.kind == "keyword":
            ok = any(v in c.terms for v in values)
        else:
            ok = any((v > c.lo if c.lo_open else v >= c.lo)
                     and (v < c.hi if c.hi_open else v <= c.hi) for v in values)
        if not ok:
            return False
    return True


FILTERS: list[dict[str, Any]] = [
    {"album": "album-3"},  # ~4%: selective
    {"album": ["album-1", "album-2"], "tags": "night"},
    {"tags": ["beach", "snow"], "taken_at": {"gte": "2024-06-01", "lt": "2024-09-01"}},
    {"width": {"gte": 300}},  # ~95%: broad
    {"width": {"gt": 1000, "lte": 3000}, "source": ["cam0", "cam2"]},
    {"ingested_at": {"gte": 1.7e9 + 500}},
    {"album": "no-such-album"},
    {"height": 480},
]
