"""What the large-view preview costs the encoder: the encoder worker's CPU step
(``encoder_worker.encode.encode_batch``: decode, model, thumbnail, and the preview's second
decode) with previews off and on, in the same run.

    python bench/preview_cost.py DIR [--images 256] [--long-side 0] [--batch 16]
                                     [--out bench/results/preview_cost.json]

``--long-side N`` re-encodes every image with N pixels on its long side first (JPEG, quality
90), to see the cost on photos larger than the preview (0: the files as they are).
Prints images/s without and with previews and their ratio; writes the table as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from elastichash.model.encoder import Encoder  # noqa: E402
from elastichash.pipeline import IngestItem  # noqa: E402
from elastichash.settings import ImageLimits, ModelSettings  # noqa: E402
from encoder_worker.encode import encode_batch  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def load(folder: Path, n: int, long_side: int) -> list[IngestItem]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)[:n]
    items = []
    for p in paths:
        data = p.read_bytes()
        im = Image.open(io.BytesIO(data))
        if long_side:
            scale = long_side / max(im.size)
            im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            data = buf.getvalue()
        items.append(IngestItem(p.stem, data, p.name,
                                {"width": im.width, "height": im.height}, "image/jpeg"))
    return items


def rate(encoder: Encoder, items: list[IngestItem], batch: int, preview_px: int,
         limits: ImageLimits) -> tuple[float, int]:
    """(images/s, previews made) over all items, in batches as the worker takes them."""
    made = 0
    started = time.perf_counter()
    for s in range(0, len(items), batch):
        for msg in encode_batch(encoder, items[s:s + batch], preview_px, limits.max_pixels):
            made += getattr(msg, "preview", None) is not None
    return len(items) / (time.perf_counter() - started), made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--long-side", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/preview_cost.json")
    args = ap.parse_args()
    items = load(args.folder, args.images, args.long_side)
    limits = ImageLimits()
    encoder = Encoder.load(ModelSettings(batch_size=args.batch), limits)
    rate(encoder, items[: args.batch], args.batch, 1280, limits)  # warm up
    # Without (the reference) and with previews alternately, best of each: on a shared
    # machine the load changes between runs, and alternating spreads that over both.
    runs: dict[int, list[tuple[float, int]]] = {0: [], 1280: []}
    for _ in range(args.repeats):
        for preview_px in runs:
            runs[preview_px].append(rate(encoder, items, args.batch, preview_px, limits))
    rows = []
    for preview_px, results in runs.items():
        best, made = max(results)
        rows.append({"preview_px": preview_px, "images_per_s": round(best, 1),
                     "previews": made})
    encoder.close()
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    sizes = sorted({(it.metadata["width"], it.metadata["height"]) for it in items})
    print(f"{len(items)} images, sizes {sizes[0]}..{sizes[-1]}, batch {args.batch}, "
          f"{os.cpu_count()} cores")
    print(f"{'preview_px':>10} {'images/s':>9} {'previews':>9}")
    for r in rows:
        print(f"{r['preview_px']:>10} {r['images_per_s']:>9} {r['previews']:>9}")
    print(f"with previews / without: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "images": len(items), "long_side": args.long_side, "batch": args.batch,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "load_1m": os.getloadavg()[0]},
        "rows": rows, "ratio_with_to_without": round(ratio, 3),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
