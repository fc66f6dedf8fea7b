"""Concurrent search against the standalone server (``elastichash serve`` as a subprocess).

    python bench/serve.py [DIR] [--images N] [--requests 400] [--out bench/results/serve.json]

Indexes DIR (or N generated images), then measures search-by-id and search-by-upload at 1,
8 and 32 concurrent clients: requests/s, p50 and p99 latency. ``GET /healthz`` at the same
concurrency is the reference: the cost of the HTTP round trip alone on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import table, write_result


def gen_image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr).resize((320, 240), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def load_images(folder: Path | None, n: int) -> list[bytes]:
    if folder is None:
        return [gen_image(s) for s in range(n)]
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)[:n]
    return [p.read_bytes() for p in files]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, proc: subprocess.Popen[bytes], within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            try:
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("server not ready in time")


async def ingest(base: str, images: list[bytes]) -> list[str]:
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:
        for i in range(0, len(images), 50):
            form = aiohttp.FormData()
            for j, data in enumerate(images[i:i + 50]):
                form.add_field("file", data, filename=f"{i + j}.jpg", content_type="image/jpeg")
            async with http.post(f"{base}/v1/images", data=form) as r:
                body = await r.json()
                ids += [img["id"] for img in body["images"]]
        pending = set(ids)
        deadline = time.monotonic() + 600
        while pending and time.monotonic() < deadline:
            for i in list(pending)[:64]:
                async with http.get(f"{base}/v1/images/{i}") as r:
                    if (await r.json())["status"] != "queued":
                        pending.discard(i)
            await asyncio.sleep(0.1)
    return ids


async def load(base: str, kind: str, concurrency: int, total: int, ids: list[str],
               images: list[bytes]) -> dict[str, Any]:
    rng = random.Random(concurrency)
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in counter:
            t0 = time.perf_counter()
            if kind == "healthz":
                req = http.get(f"{base}/healthz")
            elif kind == "by_id":
                req = http.post(f"{base}/v1/search", json={"id": rng.choice(ids), "k": 24})
            else:
                form = aiohttp.FormData()
                form.add_field("file", rng.choice(images), filename="q.jpg",
                               content_type="image/jpeg")
                form.add_field("k", "24")
                req = http.post(f"{base}/v1/search", data=form)
            async with req as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"kind": kind, "concurrency": concurrency, "requests": len(latencies),
            "errors": errors, "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    images = load_images(args.dir, args.images)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        exe = Path(sys.executable).with_name("elastichash")
        # Started once, before any timing: a blocking Popen here costs nothing measured.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [str(exe), "serve", "--port", str(port), "--data", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_ready(base, proc)
            t0 = time.perf_counter()
            ids = await ingest(base, images)
            ingest_s = time.perf_counter() - t0
            rows = []
            for kind in ("healthz", "by_id", "by_upload"):
                for c in (1, 8, 32):
                    n = args.requests if kind != "by_upload" else max(args.requests // 4, 64)
                    rows.append(await load(base, kind, c, n, ids, images))
        finally:
            proc.terminate()
            proc.wait(60)
    return {"images": len(images), "ingest_s": ingest_s, "rows": rows,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", type=Path, default=None)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--out", type=Path, default=Path("bench/results/serve.json"))
    args = p.parse_args()
    result = asyncio.run(run(args))
    ref = {r["concurrency"]: r for r in result["rows"] if r["kind"] == "healthz"}
    print(f"{result['images']} images indexed through HTTP in {result['ingest_s']:.1f} s "
          f"({result['images'] / result['ingest_s']:.0f} images/s)")
    for r in result["rows"]:
        r["rps_vs_healthz"] = r["rps"] / ref[r["concurrency"]]["rps"]
    print(table(
        [("kind", "<10"), ("clients", ">7"), ("req/s", ">9.1f"), ("p50 ms", ">8.2f"),
         ("p99 ms", ">8.2f"), ("errors", ">6"), ("vs healthz", ">10.2f")],
        [(r["kind"], r["concurrency"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"],
          r["rps_vs_healthz"]) for r in result["rows"]]))
    write_result("serve", result, path=args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
