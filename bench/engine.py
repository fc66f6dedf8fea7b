"""ElasticHash's latency table on a real engine (OpenSearch 2.19, ``scripts/engine.sh``).

N clustered codes (the generator of ``bench/search.py``: ``--clusters`` centres, n/100 by
default, each bit flipped with probability ``--flip``; queries are fresh draws, not in the
index) are bulk-loaded through the project's own indexer path (``EngineIndex.upsert``, the
call the indexer worker makes, in batches of ``--batch`` with ``--concurrency`` in flight),
refreshed and force-merged to one segment. Then, for k = 10, 100, 1000, query by query in
round-robin so that the noise of a shared machine falls on all alike:

- engine ``two_stage``: the terms lookup of the 4 subcodes' radius-2 neighbours (stage 1) and the
  stored painless Hamming script over the candidates (stage 2), ElasticHash's query;
- engine ``exact``: the stored script over every document (what the paper compares with);
- the embedded backend's ``two_stage`` and ``exact`` on the same codes.

Engine requests are the bodies the backend builds (``index/es/query.py``), sent over one
keep-alive HTTP connection, so the wall time is the engine's plus one local round trip; the
engine's own ``took`` is reported beside it. Recall@k of ``two_stage`` is measured against the
engine's ``exact`` answer and is tie-aware: the share of returned hits whose distance is <= the
exact k-th distance. ``--profile`` adds the engine's ``"profile": true`` breakdown of one query
of each kind, and ``--variants`` tries what the engine offers (request cache, the neighbour
lists sent inline instead of looked up, two shards, ``index.codec: best_compression``).

Usage: .venv/bin/python bench/engine.py [--n 1000000] [--queries 200] [--url URL] [--quick]
Without ``--url`` it starts its own node (``scripts/engine.sh`` on port ``--port``, 19500) and
stops it at the end. Writes bench/results/engine_<n>.json (``--quick``: engine_<n>_quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import table, write_result  # noqa: E402
from bench.search import SHORT_BITS, U8, generate, pct  # noqa: E402
from elastichash.codes import neighbours, select_bits, subcodes  # noqa: E402
from elastichash.errors import Unavailable  # noqa: E402
from elastichash.index.base import Document, SearchQuery  # noqa: E402
from elastichash.index.embedded import EmbeddedIndex  # noqa: E402
from elastichash.index.es import EngineIndex  # noqa: E402
from elastichash.index.es import query as q  # noqa: E402
from elastichash.index.es.bootstrap import Layout  # noqa: E402
from elastichash.index.es.bulk import BulkPolicy  # noqa: E402
from elastichash.index.es.mapping import SUBCODE_FIELDS  # noqa: E402
from elastichash.index.es.neighbours import subcode_term  # noqa: E402

KS = (10, 100, 1000)
NBS = "eh-bench-nbs"
PAPER = {  # ElasticHash (arXiv 2305.04710), ~7M images, Elasticsearch, i7-4771
    "images": 7_000_000,
    "two_stage_ms": {"10": 36.1, "1000": 55.2},
    "exact_ms": 111.8,
    "speedup_k10": 3.1,
}


class Http:
    """One keep-alive connection to the engine; JSON in, JSON out."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.timeout = u.hostname or "127.0.0.1", u.port or 9200, timeout_s
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()  # a dropped keep-alive connection: reconnect once
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        out = json.loads(raw) if raw else {}
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:500]!r}")
        return out


def start_engine(port: int, heap: str) -> str:
    env = {**os.environ, "EH_ENGINE_HEAP": heap}
    out = subprocess.run(
        [str(ROOT / "scripts/engine.sh"), "start", "--http-port", str(port),
         "--transport-port", str(port + 100)],
        env=env, check=True, capture_output=True, text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def stop_engine(port: int) -> None:
    subprocess.run([str(ROOT / "scripts/engine.sh"), "stop", "--http-port", str(port)],
                   check=False, capture_output=True)


async def load(
    url: str, name: str, codes: U8, shorts: U8, *, shards: int, batch: int, concurrency: int
) -> dict[str, Any]:
    """Bulk-load through ``EngineIndex.upsert``; returns the rate and the load's timings."""
    idx = EngineIndex(url, name, kind="opensearch", nbs_index=NBS, request_timeout_s=120,
                      layout=Layout(shards, 0, "-1"), bulk=BulkPolicy(chunk_size=batch))
    await idx.open()  # builds the shared neighbours index once (not timed)
    took: list[int] = []
    send = idx.client.bulk

    async def timed_bulk(ndjson: str) -> dict[str, Any]:  # the engine's own time per request
        resp = await send(ndjson)
        took.append(int(resp.get("took", 0)))
        return resp

    idx.client.bulk = timed_bulk  # type: ignore[method-assign]
    n = len(codes)
    sem = asyncio.Semaphore(concurrency)
    failed = retried = 0

    async def one(s: int) -> None:
        nonlocal failed, retried
        docs = [Document(f"img{i:08d}", codes[i].tobytes(), shorts[i].tobytes())
                for i in range(s, min(n, s + batch))]
        async with sem:
            for _attempt in range(5):  # as an indexer would: transient failures again
                try:
                    results = await idx.upsert(docs)
                except Unavailable:
                    retried += len(docs)
                    continue
                docs = [d for d, r in zip(docs, results, strict=True) if not r.ok and r.transient]
                failed += sum(not r.ok and not r.transient for r in results)
                if not docs:
                    break
                retried += len(docs)
            failed += len(docs)

    t = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(0, n, batch)))
    load_s = time.perf_counter() - t
    await idx.refresh()
    refresh_s = time.perf_counter() - t - load_s
    concrete = idx.names.concrete
    await idx.close()
    if failed:
        raise RuntimeError(f"{failed} of {n} codes were not written")
    return {"load_s": load_s, "refresh_s": refresh_s, "codes_per_s": n / load_s,
            "retried_items": retried, "bulk_requests": len(took),
            "engine_bulk_took_s": sum(took) / 1000.0, "concrete": concrete}


def force_merge(es: Http, index: str) -> float:
    t = time.perf_counter()
    es.call("POST", f"/{index}/_forcemerge?max_num_segments=1")
    # refresh_interval is -1: without a refresh, searches would still see the old segments.
    es.call("POST", f"/{index}/_refresh")
    return time.perf_counter() - t


def store_stats(es: Http, index: str) -> dict[str, Any]:
    prim = es.call("GET", f"/{index}/_stats/store,docs,segments")["_all"]["primaries"]
    return {"store_bytes": prim["store"]["size_in_bytes"], "docs": prim["docs"]["count"],
            "segments": prim["segments"]["count"]}


def inline_body(code: bytes, short: bytes, k: int) -> dict[str, Any]:
    """two_stage with the neighbour lists sent in the request instead of looked up."""
    body = q.two_stage_body(code, short, NBS, k=k, offset=0, max_distance=None)
    should = [
        {"terms": {f: [subcode_term(v) for v in neighbours(int(s))]}}
        for f, s in zip(SUBCODE_FIELDS, subcodes(short), strict=True)
    ]
    filt = body["query"]["function_score"]["query"]["constant_score"]["filter"]
    filt["bool"]["should"] = should
    return body


def profile_summary(resp: dict[str, Any]) -> dict[str, Any]:
    """Per-shard query time, its slowest parts, rewrite and collector time (ms)."""
    shards = []
    for shard in resp["profile"]["shards"]:
        search = shard["searches"][0]
        top = search["query"][0]
        parts = sorted(
            ((k, v / 1e6) for k, v in top["breakdown"].items()
             if not k.endswith("_count") and v), key=lambda kv: -kv[1]
        )[:6]
        children = [
            {"type": c["type"], "description": c["description"][:120],
             "time_ms": c["time_in_nanos"] / 1e6}
            for c in top.get("children", [])
        ]
        shards.append({
            "query_type": top["type"],
            "query_ms": top["time_in_nanos"] / 1e6,
            "top_breakdown_ms": dict(parts),
            "children": children,
            "rewrite_ms": search["rewrite_time"] / 1e6,
            "collector_ms": sum(c["time_in_nanos"] for c in search["collector"]) / 1e6,
        })
    return {"took_ms": resp["took"], "shards": shards}


async def run_queries(
    es: Http, alias: str, emb: EmbeddedIndex, queries: U8, qshorts: U8, *, extra: bool
) -> dict[str, Any]:
    names = ["engine two_stage", "engine exact", "embedded two_stage", "embedded exact"]
    if extra:
        names += ["engine two_stage request_cache", "engine two_stage inline terms"]
    lat: dict[str, dict[int, list[float]]] = {m: {k: [] for k in KS} for m in names}
    took: dict[str, dict[int, list[float]]] = {m: {k: [] for k in KS} for m in names}
    rec: dict[int, dict[int, list[float]]] = {k: {r: [] for r in (10, 100) if r <= k} for k in KS}
    cands: list[int] = []
    parity = {"exact": 0, "two_stage": 0, "compared": 0}

    def engine(body: dict[str, Any], params: str = "") -> tuple[list[int], list[str], float, int]:
        t0 = time.perf_counter()
        resp = es.call("POST", f"/{alias}/_search{params}", body)
        wall = (time.perf_counter() - t0) * 1000
        hits, _total = q.hits_from_response(resp)
        return [h.distance for h in hits], [h.id for h in hits], wall, resp["took"]

    for j in range(len(queries)):
        code, short = queries[j].tobytes(), qshorts[j].tobytes()
        for k in KS:
            got: dict[str, list[int]] = {}
            ids: dict[str, list[str]] = {}
            for m in names:
                if m == "engine two_stage":
                    d, i, w, tk = engine(q.two_stage_body(code, short, NBS, k=k, offset=0,
                                                          max_distance=None))
                elif m == "engine exact":
                    d, i, w, tk = engine(q.exact_body(code, k=k, offset=0, max_distance=None))
                elif m == "engine two_stage request_cache":
                    body = q.two_stage_body(code, short, NBS, k=k, offset=0, max_distance=None)
                    engine(body, "?request_cache=true")  # fill the cache, then time a repeat
                    d, i, w, tk = engine(body, "?request_cache=true")
                elif m == "engine two_stage inline terms":
                    d, i, w, tk = engine(inline_body(code, short, k))
                else:
                    strategy = m.split()[1]
                    t0 = time.perf_counter()
                    res = await emb.search(SearchQuery(code=code, short=short, k=k,
                                                       strategy=strategy))
                    w = (time.perf_counter() - t0) * 1000
                    d, i, tk = [h.distance for h in res.hits], [h.id for h in res.hits], w
                    if strategy == "two_stage" and k == KS[0]:
                        cands.append(res.candidates)
                lat[m][k].append(w)
                took[m][k].append(tk)
                got[m], ids[m] = d, i
            exact = got["engine exact"]
            for r in rec[k]:
                kth = exact[r - 1]
                rec[k][r].append(sum(1 for x in got["engine two_stage"][:r] if x <= kth) / r)
            parity["compared"] += 1
            parity["exact"] += got["embedded exact"] == exact and ids["embedded exact"] == ids[
                "engine exact"]
            parity["two_stage"] += (got["embedded two_stage"] == got["engine two_stage"]
                                    and ids["embedded two_stage"] == ids["engine two_stage"])
        if (j + 1) % 25 == 0:
            print(f"  {j + 1}/{len(queries)} queries", flush=True)

    rows: dict[str, Any] = {}
    for m in names:
        rows[m] = {
            str(k): {"p50_ms": pct(lat[m][k], 50), "p99_ms": pct(lat[m][k], 99),
                     "mean_ms": float(np.mean(lat[m][k])),
                     "took_p50_ms": pct(took[m][k], 50), "took_mean_ms": float(np.mean(took[m][k]))}
            for k in KS
        }
    recall = {str(k): {f"recall@{r}": float(np.mean(v)) for r, v in rec[k].items()} for k in KS}
    return {"rows": rows, "recall": recall, "embedded_candidates_mean": float(np.mean(cands)),
            "parity_with_embedded": parity}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n, nq = args.n, args.queries
    args.clusters = args.clusters or max(1, n // 100)
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, (args.clusters, 32), dtype=np.uint8)
    codes = generate(n, centres, args.flip, args.seed + 1)
    queries = generate(nq, centres, args.flip, args.seed + 2)
    shorts = select_bits(codes, SHORT_BITS)
    qshorts = select_bits(queries, SHORT_BITS)
    out: dict[str, Any] = {"n": n, "queries": nq, "clusters": args.clusters, "flip": args.flip,
                           "ks": list(KS), "shards": args.shards, "batch": args.batch,
                           "concurrency": args.concurrency, "paper": PAPER}
    es = Http(args.url)
    info = es.call("GET", "/")
    out["engine"] = f"{info['version']['distribution']} {info['version']['number']}"
    name = f"eh-bench-{n}"
    for stale in (f"{name}-v1", f"{name}-failures"):
        es.call("DELETE", f"/{stale}?ignore_unavailable=true")
    print(f"loading {n} codes into {out['engine']} ...", flush=True)
    out["load"] = await load(args.url, name, codes, shorts, shards=args.shards,
                             batch=args.batch, concurrency=args.concurrency)
    concrete = out["load"].pop("concrete")
    out["force_merge_s"] = force_merge(es, concrete)
    st = store_stats(es, concrete)
    out["store"] = {**st, "bytes_per_code": st["store_bytes"] / n}
    print(f"  {out['load']['codes_per_s']:,.0f} codes/s, merged in {out['force_merge_s']:.1f}s,"
          f" {out['store']['bytes_per_code']:.1f} B/code on disk", flush=True)

    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        emb = EmbeddedIndex(Path(tmp))
        await emb.open()
        for s in range(0, n, 5000):
            await emb.upsert([Document(f"img{i:08d}", codes[i].tobytes(), shorts[i].tobytes())
                              for i in range(s, min(n, s + 5000))])
        # Warm-up: the script compiles, caches and page cache fill (not counted).
        for j in range(min(5, nq)):
            es.call("POST", f"/{name}/_search", q.exact_body(queries[j].tobytes(), k=10,
                                                             offset=0, max_distance=None))
        print(f"timing {nq} queries x k={KS} round-robin ...", flush=True)
        out.update(await run_queries(es, name, emb, queries, qshorts, extra=args.variants))
        await emb.close()

    if args.profile:
        code, short = queries[0].tobytes(), qshorts[0].tobytes()
        prof = {}
        for label, body in (
            ("two_stage", q.two_stage_body(code, short, NBS, k=10, offset=0, max_distance=None)),
            ("exact", q.exact_body(code, k=10, offset=0, max_distance=None)),
            ("two_stage inline terms", inline_body(code, short, 10)),
        ):
            prof[label] = profile_summary(es.call("POST", f"/{name}/_search",
                                                  {**body, "profile": True}))
        out["profile_k10"] = prof
    if args.codec:
        out["codec"] = try_codec(es, concrete, n)
    if not args.keep:
        for idx in (concrete, f"{name}-failures"):
            es.call("DELETE", f"/{idx}?ignore_unavailable=true")
    return out


def try_codec(es: Http, index: str, n: int) -> dict[str, Any]:
    """Store size with ``best_compression``: the index is closed, recoded, merged again."""
    es.call("POST", f"/{index}/_close")
    es.call("PUT", f"/{index}/_settings", {"index": {"codec": "best_compression"}})
    es.call("POST", f"/{index}/_open?wait_for_active_shards=1")
    es.call("GET", f"/_cluster/health/{index}?wait_for_status=yellow&timeout=120s")
    # One segment already: make the merge rewrite it by expunging nothing but forcing a merge
    # through a fresh segment (one extra document, then deleted).
    es.call("PUT", f"/{index}/_doc/codec-probe?refresh=true", {"id": "codec-probe"})
    es.call("DELETE", f"/{index}/_doc/codec-probe?refresh=true")
    t = time.perf_counter()
    es.call("POST", f"/{index}/_forcemerge?max_num_segments=1")
    es.call("POST", f"/{index}/_refresh")  # releases the old segments' files
    st = store_stats(es, index)
    return {"codec": "best_compression", "merge_s": time.perf_counter() - t,
            "bytes_per_code": st["store_bytes"] / n, **st}


def summary(out: dict[str, Any]) -> str:
    rows = out["rows"]
    lines = [f"{out['engine']}, n = {out['n']:,}, {out['queries']} queries per k, shards "
             f"{out['shards']}",
             table([("method", "<34"), ("k", ">5"), ("p50 ms", ">8.2f"), ("p99 ms", ">8.2f"),
                    ("took p50", ">9.2f")],
                   [(m, k, r["p50_ms"], r["p99_ms"], r["took_p50_ms"])
                    for m, per_k in rows.items() for k, r in per_k.items()])]
    for k, r in out["recall"].items():
        lines.append(f"two_stage vs exact, k={k}: " + ", ".join(f"{a} {b:.4f}"
                                                                 for a, b in r.items()))
    for k, v in out["ratios"].items():
        lines.append(f"{k}: {v:.2f}")
    own = out["load"].get("engine_bulk_took_s")
    if own:
        lines.append(f"the engine's own bulk time (sum of took): {own:.1f} s, "
                     f"{out['n'] / own:,.0f} codes/s")
    lines.append(f"bulk load {out['load']['codes_per_s']:,.0f} codes/s; store "
                 f"{out['store']['bytes_per_code']:.1f} bytes/code on disk")
    return "\n".join(lines)


def ratios(out: dict[str, Any]) -> dict[str, float]:
    rows = out["rows"]
    r: dict[str, float] = {}
    for k in KS:
        ex = rows["engine exact"][str(k)]
        ts = rows["engine two_stage"][str(k)]
        r[f"exact/two_stage p50 k={k}"] = ex["p50_ms"] / ts["p50_ms"]
        r[f"exact/two_stage took p50 k={k}"] = ex["took_p50_ms"] / max(ts["took_p50_ms"], 0.5)
        r[f"engine/embedded two_stage p50 k={k}"] = (
            ts["p50_ms"] / rows["embedded two_stage"][str(k)]["p50_ms"])
    r["paper exact/two_stage k=10"] = PAPER["exact_ms"] / PAPER["two_stage_ms"]["10"]
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=None,
                    help="cluster centres (default n/100: 10,000 at 1M, as bench/search.py)")
    ap.add_argument("--flip", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2000, help="documents per upsert call")
    ap.add_argument("--concurrency", type=int, default=2, help="upsert calls in flight")
    ap.add_argument("--url", help="a running engine (default: start one with scripts/engine.sh)")
    ap.add_argument("--port", type=int, default=19500, help="HTTP port of the node it starts")
    ap.add_argument("--heap", default="2g", help="heap of the node it starts")
    ap.add_argument("--profile", action="store_true", help='"profile": true of one query each')
    ap.add_argument("--variants", action="store_true",
                    help="also time request_cache=true (a repeated query) and inline terms")
    ap.add_argument("--codec", action="store_true", help="store size with best_compression")
    ap.add_argument("--keep", action="store_true", help="leave the index in the engine")
    ap.add_argument("--quick", action="store_true", help="10 queries")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.queries = min(args.queries, 10)
    started = None
    if not args.url:
        print(f"starting an engine on port {args.port} ...", flush=True)
        args.url = start_engine(args.port, args.heap)
        started = args.port
    t = time.perf_counter()
    try:
        out = asyncio.run(main_async(args))
    finally:
        if started is not None:
            stop_engine(started)
    out["ratios"] = ratios(out)
    out["wall_s"] = time.perf_counter() - t
    print(summary(out))
    path = write_result(f"engine_{args.n}", out, quick=args.quick, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
