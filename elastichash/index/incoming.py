"""Screening incoming images for near-duplicates of images already indexed (ingest option).

With ``duplicate_distance`` set, every image about to be written is looked up in the index
(k = 2, within that distance, strategy ``auto``: exact up to 100,000 images, MIH above, which
finds every code within 64-bit distance 11 and so every near-duplicate for D <= 11 when the
short code is 64 of the long code's bits) and against the images before it in the same batch.
A match other than the image itself is its ``duplicate_of``. Policy ``keep`` (default) writes
the image with ``duplicate_of`` and ``duplicate_distance`` in its metadata; ``skip`` does not
write it and records a failure with reason ``duplicate`` instead, which the image status shows
as ``skipped`` with the same ``duplicate_of``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from elastichash.index.base import Document, Failure, Index
from elastichash.index.query import SearchQuery

DUPLICATE_REASON = "duplicate"
_MESSAGE = re.compile(r"^near-duplicate of (\S+) at distance (\d+)$")


@dataclass(frozen=True)
class DuplicatePolicy:
    max_distance: int | None = None  # None: do not screen
    skip: bool = False

    @property
    def active(self) -> bool:
        return self.max_distance is not None


def skip_message(of: str, distance: int) -> str:
    return f"near-duplicate of {of} at distance {distance}"


def skipped_duplicate_of(failure: Failure) -> str | None:
    """The id a skipped image duplicates, from its failure record (None for other failures)."""
    if failure.reason != DUPLICATE_REASON:
        return None
    m = _MESSAGE.match(failure.message)
    return m.group(1) if m else None


async def _nearest_indexed(index: Index, doc: Document, d: int) -> tuple[str, int] | None:
    res = await index.search(SearchQuery(code=doc.code, short=doc.short, k=2, max_distance=d))
    others = [h for h in res.hits if h.id != doc.id]
    return (others[0].id, others[0].distance) if others else None


async def screen(
    index: Index, docs: Sequence[Document], policy: DuplicatePolicy
) -> tuple[list[Document], list[Failure]]:
    """(documents to write, failure records of skipped ones), in input order."""
    if policy.max_distance is None or not docs:
        return list(docs), []
    d = policy.max_distance
    found = await asyncio.gather(*(_nearest_indexed(index, doc, d) for doc in docs))
    codes = np.frombuffer(b"".join(doc.code for doc in docs), np.uint8).reshape(len(docs), -1)
    words = codes.view(np.uint64)
    out: list[Document] = []
    skipped: list[Failure] = []
    written: list[int] = []  # batch positions that will be in the index
    now = time.time()
    for i, doc in enumerate(docs):
        best = found[i]
        if written:
            dist = np.bitwise_count(words[written] ^ words[i]).sum(axis=1)
            j = int(np.argmin(dist))
            peer = docs[written[j]]
            if dist[j] <= d and peer.id != doc.id and (best is None or dist[j] < best[1]):
                best = (peer.id, int(dist[j]))
        if best is None:
            out.append(doc)
            written.append(i)
        elif policy.skip:
            skipped.append(Failure(doc.id, DUPLICATE_REASON, skip_message(*best), doc.source, now,
                                   doc.version))
        else:
            meta = {**doc.metadata, "duplicate_of": best[0], "duplicate_distance": best[1]}
            out.append(replace(doc, metadata=meta))
            written.append(i)
    return out, skipped
