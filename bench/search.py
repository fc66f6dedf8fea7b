"""Search benchmark of the embedded index against FAISS and a plain numpy scan.

Synthetic clustered codes (the generator): ``--clusters`` random 256-bit centres; each code
takes a uniformly chosen centre and flips every bit independently with probability
``--flip`` (default 0.1, so a code is ~25.6 bits from its centre and ~2*25.6*(1-0.1)... bits
from its cluster mates). Queries are fresh draws from the same process (not in the index).
The short code is the 64 bits at positions 0, 4, 8, ..., 252 (a fixed, balanced selection).

Recall@k is tie-aware: the share of returned hits whose distance is <= the exact k-th distance.
``exact`` and faiss ``IndexBinaryFlat`` (k=100 and k=10) are timed round-robin, query by query,
so the noise of this shared machine falls on both alike; compare their ratio, not raw times.

Usage: .venv/bin/python bench/search.py --n 1000000 [--queries 1000] [--write-n 1000000] [--quick]
Writes bench/results/search_<n>.json (``--quick``: search_<n>_quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import table, write_result
from elastichash.codes import hamming_many, select_bits
from elastichash.index import filters
from elastichash.index.base import Document, SearchQuery
from elastichash.index.code_table import CodeTable
from elastichash.index.embedded import EmbeddedIndex

SHORT_BITS = list(range(0, 256, 4))
U8 = npt.NDArray[np.uint8]


def generate(n: int, centres: U8, flip: float, seed: int, chunk: int = 1 << 20) -> U8:
    rng = np.random.default_rng(seed)
    out = np.empty((n, 32), np.uint8)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        noise = np.packbits(rng.random((m, 256), dtype=np.float32) < flip, axis=1)
        out[s : s + m] = centres[rng.integers(0, len(centres), m)] ^ noise
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p))


def recall(got: list[int], exact_kth: int, k: int) -> float:
    return sum(1 for d in got[:k] if d <= exact_kth) / k


async def write_bench(codes: U8, shorts: U8, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        idx = EmbeddedIndex(Path(tmp))
        await idx.open()
        t = time.perf_counter()
        for s in range(0, n, 5000):
            docs = [
                Document(f"img{i:08d}", codes[i].tobytes(), shorts[i].tobytes())
                for i in range(s, min(n, s + 5000))
            ]
            await idx.upsert(docs)
        rate = n / (time.perf_counter() - t)
        await idx.close()
        idx = EmbeddedIndex(Path(tmp))
        t = time.perf_counter()
        await idx.open()
        open_s = time.perf_counter() - t
        stats = await idx.stats()
        q = codes[0]
        lat = {}
        for strategy in ("exact", "two_stage"):
            ts = []
            for j in range(200):
                qc = codes[(j * 7919) % n]
                t = time.perf_counter()
                await idx.search(SearchQuery(
                    code=qc.tobytes(), short=shorts[(j * 7919) % n].tobytes(), k=10,
                    strategy=strategy,
                ))
                ts.append((time.perf_counter() - t) * 1000)
            lat[strategy] = pct(ts, 50)
        del q
        await idx.close()
    return {
        "write_n": n,
        "write_codes_per_s": rate,
        "open_s": open_s,
        "bytes_per_code_after_open": stats["memory_bytes"] / n,
        "full_path_p50_ms_exact": lat["exact"],
        "full_path_p50_ms_two_stage": lat["two_stage"],
    }


# (label, filter, share of the codes it keeps) over the synthetic fields of filtered_rows().
FILTERED = (
    ("1%", {"album": "a7"}, 0.01),
    ("10%", {"album": [f"a{i}" for i in range(10, 20)]}, 0.10),
    ("90%", {"width": {"gte": 100}}, 0.90),
)


def filtered_rows(snap: Any, codes: U8, queries: U8, qshorts: U8, nq: int) -> dict[str, Any]:
    """Filtered search next to unfiltered, on the same table: synthetic collection fields
    (``album`` = a<i % 100>, ``width`` = i % 1000) in the filter columns, then for each
    filter the mask (per query, as a search computes it) and the ranking, ``exact`` and
    ``two_stage``, timed round-robin with unfiltered ``exact``. Recall@100 of filtered exact
    against a numpy ranking of the codes that pass (1.0 means exact)."""
    n = codes.shape[0]
    t = time.perf_counter()
    columns = filters.Columns()
    columns.extend((i, None, {"album": f"a{i % 100}", "width": i % 1000}) for i in range(n))
    build_s = time.perf_counter() - t
    rows_ = snap.rows[: snap.n]
    assert np.array_equal(rows_, np.arange(n)), "the table's rows are 0..n-1"
    out: dict[str, Any] = {"columns_build_s": build_s, "queries": nq, "rows": {}}
    for label, spec, share in FILTERED:
        clauses = filters.parse(spec)
        lat: dict[str, list[float]] = {"mask": [], "exact": [], "two_stage": [], "unfiltered": []}
        recalls = []
        kept = 0
        for j in range(nq):
            q = queries[j]
            t0 = time.perf_counter()
            mask = columns.mask_for(rows_, clauses)
            t1 = time.perf_counter()
            c = CodeTable.exact_filtered(snap, q, 100, None, mask)
            t2 = time.perf_counter()
            CodeTable.two_stage(snap, q, qshorts[j].tobytes(), 100, None, mask)
            t3 = time.perf_counter()
            CodeTable.exact(snap, q, 100, None)
            t4 = time.perf_counter()
            lat["mask"].append((t1 - t0) * 1000)
            lat["exact"].append((t2 - t0) * 1000)
            lat["two_stage"].append((t3 - t2 + t1 - t0) * 1000)
            lat["unfiltered"].append((t4 - t3) * 1000)
            kept = int(mask.sum())
            truth = np.sort(hamming_many(q, codes[mask]))[:100]
            got = np.sort(c.dists)[:100]
            recalls.append(float(np.mean(got <= truth[-1])) if truth.size else 1.0)
        row = {name: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for name, v in lat.items()}
        row.update(share=kept / n, expected_share=share,
                   recall_at_100_exact=float(np.mean(recalls)))
        out["rows"][label] = row
        print("filtered", label, row, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--numpy-queries", type=int, default=100, help="the slow numpy peer runs fewer")
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--flip", type=float, default=0.1)
    ap.add_argument(
        "--write-n", type=int, default=None, help="codes written to SQLite (default min(n, 1M))"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--filtered-queries", type=int, default=200,
                    help="queries per filtered row (0: no filtered rows)")
    ap.add_argument(
        "--quick", action="store_true", help="200 queries, 200k codes written, 20 numpy queries"
    )
    args = ap.parse_args()
    if args.quick:
        args.queries, args.numpy_queries = min(args.queries, 200), min(args.numpy_queries, 20)
        args.write_n = min(args.n, 200_000) if args.write_n is None else args.write_n
    n, nq = args.n, args.queries
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, (args.clusters, 32), dtype=np.uint8)
    t = time.perf_counter()
    codes = generate(n, centres, args.flip, args.seed + 1)
    queries = generate(nq, centres, args.flip, args.seed + 2)
    shorts = np.concatenate(
        [select_bits(codes[s : s + (1 << 20)], SHORT_BITS) for s in range(0, n, 1 << 20)]
    )
    qshorts = select_bits(queries, SHORT_BITS)
    print(f"generated {n} codes in {time.perf_counter() - t:.1f}s", flush=True)
    out: dict[str, Any] = {
        "n": n,
        "queries": nq,
        "clusters": args.clusters,
        "flip": args.flip,
        "faiss_threads": faiss.omp_get_max_threads(),
    }

    write_n = min(n, args.write_n if args.write_n is not None else 1_000_000)
    if write_n:
        out["store"] = asyncio.run(write_bench(codes, shorts, write_n))
        print(out["store"], flush=True)

    t = time.perf_counter()
    code_table = CodeTable(np.arange(n, dtype=np.int64), codes, shorts)
    snap = code_table.snapshot
    out["build_s"] = time.perf_counter() - t
    out["bytes_per_code"] = snap.nbytes / n
    del shorts

    ks = (10, 100)
    rows: dict[str, dict[str, Any]] = {}

    def asked(name: str) -> int:
        return 10 if name.endswith("k=10") else 100

    def run(*methods: tuple[str, Any], count: int) -> None:
        """Time ``methods`` round-robin, query by query, so that the load of this shared
        machine falls on all of them alike; each answers with its k=100 list."""
        lat: dict[str, list[float]] = {m: [] for m, _ in methods}
        cands: dict[str, list[int]] = {m: [] for m, _ in methods}
        rec: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m, _ in methods}
        for j in range(count):
            for name, fn in methods:
                t0 = time.perf_counter()
                dists, nc = fn(j)
                lat[name].append((time.perf_counter() - t0) * 1000)
                cands[name].append(nc)
                for k in ks:
                    if k <= asked(name):
                        rec[name][k].append(recall(dists, exact_kth[j][k], k))
        for name, _ in methods:
            rows[name] = {
                "p50_ms": pct(lat[name], 50),
                "p99_ms": pct(lat[name], 99),
                "mean_ms": float(np.mean(lat[name])),
                "recall@10": float(np.mean(rec[name][10])),
                "recall@100": float(np.mean(rec[name][100])) if rec[name][100] else None,
                "candidates": float(np.mean(cands[name])),
                "queries": count,
            }
            print(name, rows[name], flush=True)

    # Ground truth: exact distances of the k-th neighbour per query (faiss flat, k=100).
    flat = faiss.IndexBinaryFlat(256)
    flat.add(codes)
    dq, _ = flat.search(queries, 100)
    exact_kth = [{10: int(dq[j, 9]), 100: int(dq[j, 99])} for j in range(nq)]

    def ours(strategy: str, k: int) -> Any:
        def f(j: int) -> tuple[list[int], int]:
            if strategy == "exact":
                c = CodeTable.exact(snap, queries[j], k, None)
            else:
                c = CodeTable.two_stage(snap, queries[j], qshorts[j].tobytes(), k, None)
            return sorted(c.dists.tolist())[:k], c.scanned

        return f

    def flat_fn(k: int) -> Any:
        return lambda j: (flat.search(queries[j : j + 1], k)[0][0].tolist(), n)

    # exact and its reference interleaved; two_stage on its own (a stream of MIH queries, as
    # a search service running the default strategy sees them).
    run(
        ("embedded exact", ours("exact", 100)),
        ("faiss IndexBinaryFlat", flat_fn(100)),
        ("embedded exact k=10", ours("exact", 10)),
        ("faiss IndexBinaryFlat k=10", flat_fn(10)),
        count=nq,
    )
    run(
        ("embedded two_stage", ours("two_stage", 100)),
        ("embedded two_stage k=10", ours("two_stage", 10)),
        count=nq,
    )
    flat.reset()  # free its copy of the codes

    short_all = np.concatenate(
        [select_bits(codes[s : s + (1 << 20)], SHORT_BITS) for s in range(0, n, 1 << 20)]
    )
    t = time.perf_counter()
    mh = faiss.IndexBinaryMultiHash(64, 4, 16)
    mh.nflip = 2
    mh.add(short_all)
    out["multihash_build_s"] = time.perf_counter() - t
    del short_all

    def mh_fn(j: int) -> tuple[list[int], int]:
        _, _, ids = mh.range_search(qshorts[j : j + 1], 65)
        d = hamming_many(queries[j], codes[ids])
        top = np.sort(d)[:100] if d.size > 100 else np.sort(d)
        return top.tolist(), int(ids.size)

    run(("faiss MultiHash(4x16, nflip 2) + re-rank", mh_fn), count=nq)
    mh.reset()

    def np_fn(j: int) -> tuple[list[int], int]:
        d = hamming_many(queries[j], codes)
        part = np.argpartition(d, 99)[:100]
        return np.sort(d[part]).tolist(), n

    run(("numpy scan (bitwise_count)", np_fn), count=min(nq, args.numpy_queries))
    out["results"] = rows
    if args.filtered_queries:
        out["filtered"] = filtered_rows(snap, codes, queries, qshorts,
                                        min(nq, args.filtered_queries))
    flat_p50 = rows["faiss IndexBinaryFlat"]["p50_ms"]
    out["exact_vs_flat_p50"] = rows["embedded exact"]["p50_ms"] / flat_p50
    out["exact_vs_flat_p50_k10"] = (
        rows["embedded exact k=10"]["p50_ms"] / rows["faiss IndexBinaryFlat k=10"]["p50_ms"]
    )
    out["two_stage_vs_exact_p50"] = (
        rows["embedded two_stage"]["p50_ms"] / rows["embedded exact"]["p50_ms"]
    )
    out["elastichash_published_mean_ms_7m"] = 36.0

    print(f"\nn={n:,}  queries={nq}  clusters={args.clusters}  flip={args.flip}")
    print(table(
        [("method", "<44"), ("p50 ms", ">8.2f"), ("p99 ms", ">8.2f"), ("R@10", ">6.3f"),
         ("R@100", ">6.3f"), ("cand/q", ">10.0f")],
        [(name, r["p50_ms"], r["p99_ms"], r["recall@10"], r["recall@100"], r["candidates"])
         for name, r in rows.items()]))
    out["two_stage_vs_exact_p50_k10"] = (
        rows["embedded two_stage k=10"]["p50_ms"] / rows["embedded exact k=10"]["p50_ms"]
    )
    print(
        f"exact / IndexBinaryFlat p50: {out['exact_vs_flat_p50']:.2f}x (k=100),"
        f" {out['exact_vs_flat_p50_k10']:.2f}x (k=10);"
        f" two_stage / exact p50: {out['two_stage_vs_exact_p50']:.2f}x (k=100),"
        f" {out['two_stage_vs_exact_p50_k10']:.2f}x (k=10);"
        f" memory {out['bytes_per_code']:.1f} B/code; ElasticHash published 36 ms mean at ~7M"
    )
    if "store" in out:
        st = out["store"]
        print(
            f"store: {st['write_n']:,} codes written at {st['write_codes_per_s']:,.0f} codes/s;"
            f" reopened in {st['open_s']:.2f}s; {st['bytes_per_code_after_open']:.1f} B/code;"
            f" full path (SQLite fields, k=10) p50 exact {st['full_path_p50_ms_exact']:.2f} ms,"
            f" two_stage {st['full_path_p50_ms_two_stage']:.2f} ms"
        )
    if "filtered" in out:
        print(f"\nfiltered (p50 ms, {out['filtered']['queries']} queries; mask included;"
              f" columns built in {out['filtered']['columns_build_s']:.1f}s)")
        print(table(
            [("filter", "<8"), ("share", ">6.3f"), ("mask", ">7.2f"), ("exact", ">7.2f"),
             ("2-stage", ">8.2f"), ("unfilt.", ">8.2f"), ("R@100", ">6.3f")],
            [(label, r["share"], r["mask"]["p50_ms"], r["exact"]["p50_ms"],
              r["two_stage"]["p50_ms"], r["unfiltered"]["p50_ms"], r["recall_at_100_exact"])
             for label, r in out["filtered"]["rows"].items()]))
    write_result(f"search_{n}", out, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
