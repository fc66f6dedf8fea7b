"""What near-duplicate groups cost on Elasticsearch/OpenSearch, per million documents.

The engine backend lists groups from one ``Index.scan()`` pass (``search_after`` pages of
10,000 documents, codes only), the same self-join as the embedded index on the client, then
the page's documents by id. This indexes ``--n`` codes (the generator of
``bench/duplicates.py``: clustered, with planted near-duplicates) into a fresh index on
``--url``, times one listing (first page of 20 groups) split into scan / join / fetch, checks
the groups against the embedded backend's, and extrapolates linearly to 1M documents (the scan
and the join are linear in n; the page fetch is not).

Usage: .venv/bin/python bench/duplicates_engine.py --url http://127.0.0.1:9200 \\
           --engine opensearch [--n 100000] [--distance 8]
Writes bench/results/duplicates_engine_<n>.json. Deletes the index it made.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from duplicates import plant
from search import SHORT_BITS, generate

from bench.report import write_result
from elastichash.codes import select_bits
from elastichash.index import duplicates as dup
from elastichash.index.base import Document
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.es import EngineIndex
from elastichash.index.es.bootstrap import Layout


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    n, d = args.n, args.distance
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, (max(1, n // 100), 32), dtype=np.uint8)
    codes = generate(n, centres, 0.1, args.seed + 1)
    plant(codes, n // 20, 10, args.seed + 2)
    shorts = select_bits(codes, SHORT_BITS)
    docs = [Document(f"img{i:08d}", codes[i].tobytes(), shorts[i].tobytes(),
                     metadata={"width": 640, "height": 480}) for i in range(n)]
    index = EngineIndex(args.url, f"eh-bench-dupes-{uuid.uuid4().hex[:8]}", kind=args.engine,
                        layout=Layout(refresh_interval="-1"), request_timeout_s=120)
    await index.open()
    out: dict[str, Any] = {"n": n, "max_distance": d, "engine": args.engine}
    try:
        t = time.perf_counter()
        for s in range(0, n, 5000):
            res = await index.upsert(docs[s : s + 5000])
            assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
        await index.refresh()
        out["index_s"] = time.perf_counter() - t

        t = time.perf_counter()
        ids: list[str] = []
        raw = bytearray()
        pages = 0
        async for batch in index.scan(batch=dup.SCAN_PAGE):
            pages += 1
            for rec in batch:
                ids.append(rec.id)
                raw += rec.code
        out["scan_s"] = time.perf_counter() - t
        out["scan_requests"] = pages + 1  # the last, empty page ends the scan
        t = time.perf_counter()
        join = dup.self_join(np.frombuffer(bytes(raw), np.uint8).reshape(-1, 32), d)
        groups = dup.groups(join)
        out["join_s"] = time.perf_counter() - t
        t = time.perf_counter()
        listing = await index.duplicates(max_distance=d, limit=20)
        out["listing_s"] = time.perf_counter() - t  # scan + join + fetch of one page
        out["groups"] = listing.total
        out["pairs"] = listing.pairs
        assert listing.total == len(groups)

        with tempfile.TemporaryDirectory() as tmp:
            emb = EmbeddedIndex(Path(tmp))
            await emb.open()
            for s in range(0, n, 5000):
                await emb.upsert(docs[s : s + 5000])
            want = await emb.duplicates(max_distance=d, limit=20)
            await emb.close()
        out["parity"] = (want.groups == listing.groups
                         and (want.total, want.pairs) == (listing.total, listing.pairs))
        per_m = 1_000_000 / n
        out["per_million"] = {
            "scan_s": out["scan_s"] * per_m,
            "join_s": out["join_s"] * per_m,
            "listing_s": out["listing_s"] * per_m,
            "scan_requests": int(np.ceil(1_000_000 / dup.SCAN_PAGE)) + 1,
        }
    finally:
        for name in (*sorted(await index.client.alias_targets(index.names.alias)),
                     index.names.concrete, index.names.failures):
            await index.client.delete_index(name)
        await index.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", required=True)
    ap.add_argument("--engine", choices=("elasticsearch", "opensearch"), default="opensearch")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--distance", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = asyncio.run(measure(args))
    pm = out["per_million"]
    print(f"{args.engine} at {args.url}: n={out['n']:,} D={out['max_distance']}:"
          f" indexed in {out['index_s']:.1f}s; scan {out['scan_s']:.2f}s"
          f" ({out['scan_requests']} requests), join {out['join_s']:.2f}s, one listing"
          f" {out['listing_s']:.2f}s; {out['groups']:,} groups, {out['pairs']:,} pairs;"
          f" same page as the embedded backend: {out['parity']}")
    print(f"per million documents: scan ~{pm['scan_s']:.0f}s in {pm['scan_requests']} requests,"
          f" join ~{pm['join_s']:.1f}s, listing ~{pm['listing_s']:.0f}s")
    write_result(f"duplicates_engine_{out['n']}", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
