"""``elastichash reindex`` with previews read one at a time (the reference: what it did before)
and ``PREVIEW_READS`` at a time, alternated in the same run on the same index.

    python bench/reindex.py [--images 200] [--rounds 2] [--preview-side 1024]
                            [--out bench/results/reindex.json]

Builds an embedded index of generated images under a temporary directory (each document with
a 256 px thumbnail, which reindex re-encodes with the built-in efficientnet-lite0 model, and
a preview), then times whole reindex runs and, apart, the preview-reading phase alone (every
preview of the index read through ``gather_bounded`` at each setting). Prints the table and
the ratios; writes the table as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import table, write_result  # noqa: E402
from elastichash.aio import gather_bounded  # noqa: E402
from elastichash.index import reindex as reindex_mod  # noqa: E402
from elastichash.index.base import Document  # noqa: E402
from elastichash.index.embedded import EmbeddedIndex  # noqa: E402
from elastichash.model.contract import load_spec  # noqa: E402
from elastichash.model.registry import ensure_builtin  # noqa: E402
from tests.imagegen import make_image  # noqa: E402

MODEL = "efficientnet-lite0"


async def fill(root: Path, n: int, preview_side: int) -> int:
    """n documents whose source file is gone: reindex reads their thumbnails. Returns the
    bytes of previews stored."""
    spec = load_spec(ensure_builtin(MODEL, root / "models"))
    codes = np.random.default_rng(1).integers(0, 256, (n, 32), dtype=np.uint8)
    index = EmbeddedIndex(root / "index")
    await index.open()
    stored = 0
    try:
        await index.bind_model(MODEL, spec)
        for start in range(0, n, 50):
            docs = []
            for i in range(start, min(n, start + 50)):
                preview = make_image(i, (preview_side, preview_side * 3 // 4))
                stored += len(preview)
                docs.append(Document(f"img{i:05d}", codes[i].tobytes(), codes[i][:8].tobytes(),
                                     source=f"gone/{i}.jpg", preview=preview,
                                     thumbnail=make_image(i, (256, 192))))
            results = await index.upsert(docs)
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    finally:
        await index.close()
    return stored


async def read_previews(root: Path, limit: int) -> float:
    index = EmbeddedIndex(root / "index")
    await index.open()
    try:
        ids = [r.id async for batch in index.scan(batch=reindex_mod.BATCH) for r in batch]
        t0 = time.perf_counter()
        for s in range(0, len(ids), reindex_mod.BATCH):  # a batch at a time, as reindex reads
            previews = await gather_bounded(index.get_preview, ids[s:s + reindex_mod.BATCH],
                                            limit)
            assert all(previews)
        return time.perf_counter() - t0
    finally:
        await index.close()


async def one_reindex(root: Path, limit: int) -> float:
    reindex_mod.PREVIEW_READS = limit
    t0 = time.perf_counter()
    report = await reindex_mod.reindex(root, MODEL, progress=False)
    took = time.perf_counter() - t0
    assert not report.failed, report.failed[:5]
    assert report.backup is not None
    shutil.rmtree(report.backup)
    return took


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--preview-side", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    settings = (("one at a time (before)", 1), (f"{reindex_mod.PREVIEW_READS} at a time",
                                                reindex_mod.PREVIEW_READS))
    with tempfile.TemporaryDirectory(prefix="eh-bench-reindex-") as tmp:
        root = Path(tmp)
        stored = await fill(root, args.images, args.preview_side)
        whole: dict[int, list[float]] = {limit: [] for _, limit in settings}
        reads: dict[int, list[float]] = {limit: [] for _, limit in settings}
        await one_reindex(root, 1)  # warm-up: the first run loads the model cold
        for n in range(args.rounds):  # alternated, so both see the same machine load
            for _, limit in settings[::-1] if n % 2 else settings:
                reads[limit].append(await read_previews(root, limit))
                whole[limit].append(await one_reindex(root, limit))
    rows = [(name, statistics.median(whole[limit]), statistics.median(reads[limit]) * 1000)
            for name, limit in settings]
    columns = [("previews read", "<24"), ("reindex s (median)", ">18.2f"),
               ("preview reads ms (median)", ">25.1f")]
    print(f"{args.images} images, previews {args.preview_side} px "
          f"({stored / args.images / 1024:.0f} KiB each), {args.rounds} alternated rounds, "
          f"{os.cpu_count()} CPUs")
    print(table(columns, rows))
    ratio_whole, ratio_reads = rows[0][1] / rows[1][1], rows[0][2] / rows[1][2]
    print(f"before/after: reindex {ratio_whole:.2f}x, preview reads {ratio_reads:.2f}x")
    write_result("reindex", {
        "images": args.images, "preview_side": args.preview_side, "rounds": args.rounds,
        "preview_kib": stored / args.images / 1024, "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rows": [{"previews_read": name, "limit": limit, "reindex_s": whole[limit],
                  "preview_reads_s": reads[limit]} for name, limit in settings],
        "ratio_reindex": ratio_whole, "ratio_preview_reads": ratio_reads,
    }, path=args.out)


if __name__ == "__main__":
    asyncio.run(main())
