"""Search by words plus a filter on the embedded index: the vectorised filter against the
former path that built a Python set of every row passing the filter, in the same run.

    .venv/bin/python bench/words_filter.py [--n 200000] [--queries 15] [--quick]

A synthetic collection of ``--n`` documents with random codes, model labels and an album:
half carry a dog class (the word "dog" names 118 ImageNet classes), 1% an elephant class
(2 classes), the rest other classes; the album is "a" or "b" for 60% of the documents
(the broad filter) and "rare" for 1% (the narrow one). Each case (word x filter, with and
without a code) first checks that both paths answer identically (hits, distances, order,
totals, on a first and a later page), then times both alternated query by query (median ms)
and takes each one's peak traced allocation for one query (tracemalloc, numpy included).

The former path (``old_search``) is kept here only, as it was before the change: the label
rows as a list of (row, score) tuples, the passing rows of the whole snapshot as a set.
Writes bench/results/words_filter_<n>.json (``--quick``: 20,000 documents, 5 queries,
words_filter_20000_quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import table, write_result
from elastichash.index import filters
from elastichash.index.base import Document, Hit, SearchQuery, SearchResult
from elastichash.index.code_table import Candidates, Snapshot
from elastichash.index.embedded import EmbeddedIndex
from elastichash.model.labels import vocabulary

WORDS = ("dog", "elephant")
FILTERS = {"broad": {"album": ["a", "b"]}, "narrow": {"album": "rare"}}
BATCH = 5000


def collection(n: int, seed: int) -> tuple[list[Document], dict[str, float]]:
    """The documents, and the share of them each word and each filter names."""
    rng = np.random.default_rng(seed)
    v = vocabulary()
    dogs, elephants = sorted(v.lookup("dog") or ()), sorted(v.lookup("elephant") or ())
    others = sorted(set(v.lookup("entity") or ()) - set(dogs) - set(elephants))
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    pick, album = rng.random(n), rng.random(n)
    scores = rng.random((n, 2))
    docs = []
    shares = {"dog": float(np.mean(pick < 0.5)),
              "elephant": float(np.mean((pick >= 0.5) & (pick < 0.51))),
              "broad": float(np.mean(album < 0.6)),
              "narrow": float(np.mean((album >= 0.6) & (album < 0.61)))}
    for i in range(n):
        group = dogs if pick[i] < 0.5 else elephants if pick[i] < 0.51 else others
        first = group[int(scores[i, 0] * 1e6) % len(group)]
        second = others[int(scores[i, 1] * 1e6) % len(others)]
        labels = [{"id": first, "name": first, "score": round(float(scores[i, 0]), 3)},
                  {"id": second, "name": second, "score": round(float(scores[i, 1]) / 2, 3)}]
        a = "a" if album[i] < 0.3 else "b" if album[i] < 0.6 else "rare" if album[i] < 0.61 \
            else "c"
        code = codes[i].tobytes()
        docs.append(Document(f"img{i:08d}", code, code[:8],
                             metadata={"labels": labels, "album": a}))
    return docs, shares


def old_search(idx: EmbeddedIndex, query: SearchQuery) -> Callable[[], SearchResult]:
    """The words path before the change (one reader-thread call), for the same index."""
    classes, _, _ = vocabulary().resolve(query.text or "")
    code = query.code
    clauses = filters.parse(query.filter) if query.filter is not None else None
    store = idx._store

    def rows_with_labels(labels: list[str]) -> list[tuple[int, float]]:
        return [(int(r), float(sc)) for r, sc in store.reader().execute(
            "SELECT d.row, MAX(l.score) AS best FROM labels l JOIN docs d ON d.row = l.row"
            " WHERE l.label IN (SELECT value FROM json_each(?)) GROUP BY d.row"
            " ORDER BY best DESC, d.id", (json.dumps(labels),)).fetchall()]

    def run() -> SearchResult:
        t0 = time.perf_counter()
        matched = rows_with_labels(sorted(classes)) if classes else []
        if clauses is not None and matched:

            def passing_rows(snap: Snapshot, _last: bool) -> set[int]:
                mask = idx._filter_mask(snap, clauses) & snap.alive[: snap.n]
                return set(snap.rows[: snap.n][mask].tolist())

            passing = idx._in_view(passing_rows)
            matched = [m for m in matched if m[0] in passing]
        if code is None:
            page = matched[query.offset : query.offset + query.k]
            fields = store.fields_for([r for r, _ in page])
            hits = [Hit(f.id, 0, **f.fields)
                    for r, _ in page if (f := fields.get(r)) is not None]
            return SearchResult(hits, len(matched), len(matched),
                                (time.perf_counter() - t0) * 1000.0, "words")

        def ranked(snap: Snapshot, last: bool) -> SearchResult:
            rows = np.array([r for r, _ in matched], np.int64)
            pos = np.flatnonzero(np.isin(snap.rows[: snap.n], rows) & snap.alive[: snap.n])
            q = np.frombuffer(code, np.uint8)
            dists = np.unpackbits(snap.codes[pos] ^ q, axis=1).sum(axis=1).astype(np.int32)
            if query.max_distance is not None:
                keep = dists <= query.max_distance
                pos, dists = pos[keep], dists[keep]
            cands = Candidates(pos.astype(np.int64), dists, int(pos.size), int(pos.size))
            hits = idx._page(snap, cands, query.offset, query.k, last)
            return SearchResult(hits, cands.scanned, cands.total,
                                (time.perf_counter() - t0) * 1000.0, "words+exact")

        return idx._in_view(ranked)

    return run


def answer(r: SearchResult) -> tuple[Any, ...]:
    return (r.hits, r.total, r.candidates, r.strategy)


async def measure(idx: EmbeddedIndex, base: dict[str, Any], queries: int) -> dict[str, Any]:
    """One case: both paths' answers compared on three pages, then timed and traced."""

    def query(offset: int = 0, **kw: Any) -> SearchQuery:
        return SearchQuery(**base, k=20, offset=offset, **kw)

    def new(q: SearchQuery) -> Callable[[], Awaitable[SearchResult]]:
        return lambda: idx.search(q)

    def old(q: SearchQuery) -> Callable[[], Awaitable[SearchResult]]:
        return lambda: idx._run(idx._readers, old_search(idx, q))

    pages = [query(), query(37)] + ([query(max_distance=120)] if "code" in base else [])
    for q in pages:
        if answer(await new(q)()) != answer(await old(q)()):
            raise SystemExit(f"the paths differ on {q}")
    times: dict[str, list[float]] = {"old": [], "new": []}
    total = 0
    for i in range(queries):
        for name, make in (("old", old), ("new", new))[:: 1 if i % 2 else -1]:
            call = make(query())
            t = time.perf_counter()
            total = (await call()).total
            times[name].append((time.perf_counter() - t) * 1000.0)
    peak = {}
    for name, make in (("old", old), ("new", new)):
        call = make(query())
        tracemalloc.start()
        await call()
        peak[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"total": total, "identical": True,
            "old_ms": round(med["old"], 2), "new_ms": round(med["new"], 2),
            "speedup": round(med["old"] / med["new"], 2),
            "old_peak_kib": round(peak["old"] / 1024), "new_peak_kib": round(peak["new"] / 1024)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=15, help="timed queries per path and case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="20,000 documents, 5 queries")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries = 20_000, 5
    docs, shares = collection(args.n, args.seed)
    qcode = np.random.default_rng(args.seed + 1).integers(0, 256, 32, dtype=np.uint8).tobytes()
    rows: list[list[Any]] = []
    out: dict[str, Any] = {"n": args.n, "queries": args.queries, "shares": shares,
                           "cases": []}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        idx = EmbeddedIndex(Path(tmp))
        await idx.open()
        t = time.perf_counter()
        for s in range(0, args.n, BATCH):
            await idx.upsert(docs[s : s + BATCH])
        out["write_s"] = round(time.perf_counter() - t, 1)
        del docs
        await idx.search(SearchQuery(text="dog", filter=FILTERS["broad"]))  # build the columns
        for word in WORDS:
            for fname, spec in FILTERS.items():
                for with_code in (False, True):
                    base: dict[str, Any] = {"text": word, "filter": spec}
                    if with_code:
                        base.update(code=qcode, short=qcode[:8])
                    case = {"word": word, "word_share": round(shares[word], 4),
                            "filter": fname, "filter_share": round(shares[fname], 4),
                            "code": with_code, **await measure(idx, base, args.queries)}
                    out["cases"].append(case)
                    rows.append([word, fname, "yes" if with_code else "no", case["total"],
                                 case["old_ms"], case["new_ms"], case["speedup"],
                                 case["old_peak_kib"], case["new_peak_kib"]])
        await idx.close()
    print(f"{args.n} documents (written in {out['write_s']} s), median of {args.queries} "
          "alternated queries per path; answers identical on every case (3 pages each)")
    print(table([("word", "<9"), ("filter", "<7"), ("code", "<5"), ("total", ">7"),
                 ("old ms", ">8.2f"), ("new ms", ">8.2f"), ("old/new", ">8.2f"),
                 ("old peak KiB", ">13"), ("new peak KiB", ">13")], rows))
    path = write_result(f"words_filter_{args.n}", out, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
