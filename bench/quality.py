"""Retrieval quality of the default model vs perceptual hashes, in one run.

    python bench/quality.py DIR [--model PATH] [--limit N] [--out bench/results/quality.json]

DIR holds a labels.csv (path,label) or one subfolder per label. Reports:
- mAP@10 and mAP@100 of Hamming ranking (every image queries all others; AP over the top k,
  relevant = same label; ties broken by image order), for the long (256-bit) and short
  (64-bit) codes, and for pHash and dHash (64-bit, imagehash) as baselines;
- near-duplicate recall@10: each image transformed (50% resize, JPEG q30, 80% centre crop,
  5 degree rotation, colour jitter, horizontal flip) queries the originals and must find its
  own original in the top 10;
- bit balance of the long and short codes on this data (mean |P(bit=1) - 0.5|).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elastichash.model.encoder import Encoded, Encoder  # noqa: E402
from elastichash.settings import ImageLimits, ModelSettings  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def load_dataset(root: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    labels_csv = root / "labels.csv"
    if labels_csv.exists():
        with labels_csv.open() as fh:
            rows = [(root / r["path"], r["label"]) for r in csv.DictReader(fh)]
    else:
        rows = sorted((p, p.parent.name) for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
    rows = rows[:limit] if limit else rows
    return [p for p, _ in rows], [lab for _, lab in rows]


def _jpeg(im: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _crop80(im: Image.Image) -> Image.Image:
    w, h = im.size
    dw, dh = round(w * 0.1), round(h * 0.1)
    return im.crop((dw, dh, w - dw, h - dh))


def _jitter(im: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    b, c, s = rng.uniform(0.8, 1.2, 3)
    im = ImageEnhance.Brightness(im).enhance(float(b))
    im = ImageEnhance.Contrast(im).enhance(float(c))
    return ImageEnhance.Color(im).enhance(float(s))


TRANSFORMS: dict[str, Callable[[Image.Image, int], bytes]] = {
    "resize_50": lambda im, _: _jpeg(
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC)
    ),
    "jpeg_q30": lambda im, _: _jpeg(im, 30),
    "crop_80": lambda im, _: _jpeg(_crop80(im)),
    "rotate_5": lambda im, _: _jpeg(im.rotate(5, resample=Image.Resampling.BILINEAR)),
    "colour_jitter": lambda im, seed: _jpeg(_jitter(im, seed)),
    "hflip": lambda im, _: _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
}


def ranks_by_hamming(queries: np.ndarray, base: np.ndarray, exclude_self: bool) -> np.ndarray:
    """(Q, N) indices of ``base`` sorted by Hamming distance (stable: ties by index)."""
    q = np.unpackbits(queries, axis=1).astype(np.int32)
    b = np.unpackbits(base, axis=1).astype(np.int32)
    dist = q @ (1 - b).T + (1 - q) @ b.T
    if exclude_self:
        np.fill_diagonal(dist, 10**6)
    return np.argsort(dist, axis=1, kind="stable")


def mean_ap(order: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = order[:, :k]
    rel = (labels[top] == labels[:, None]).astype(np.float64)
    prec = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    ap = (prec * rel).sum(axis=1) / np.maximum(rel.sum(axis=1), 1)
    return float(ap.mean())


def perceptual(datas: list[bytes]) -> dict[str, np.ndarray]:
    import imagehash

    out: dict[str, list[np.ndarray]] = {"phash": [], "dhash": []}
    for data in datas:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        for name, fn in (("phash", imagehash.phash), ("dhash", imagehash.dhash)):
            out[name].append(np.packbits(fn(im).hash.flatten()))
    return {k: np.stack(v) for k, v in out.items()}


def encode_all(encoder: Encoder, datas: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    res = encoder.encode_bytes(datas)
    bad = [i for i, r in enumerate(res) if not isinstance(r, Encoded)]
    if bad:
        raise SystemExit(f"{len(bad)} images failed to encode, first: {res[bad[0]]}")
    good = [r for r in res if isinstance(r, Encoded)]
    return (
        np.stack([np.frombuffer(r.code, np.uint8) for r in good]),
        np.stack([np.frombuffer(r.short, np.uint8) for r in good]),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/quality.json")
    args = ap.parse_args(argv)

    paths, label_list = load_dataset(args.dir, args.limit)
    labels = np.array(label_list)
    datas = [p.read_bytes() for p in paths]
    encoder = Encoder.load(ModelSettings(path=args.model), ImageLimits())
    t0 = time.perf_counter()
    long, short = encode_all(encoder, datas)
    encode_s = time.perf_counter() - t0
    base = {"long_256": long, "short_64": short, **perceptual(datas)}

    results: dict[str, Any] = {
        "images": len(paths),
        "labels": len(set(label_list)),
        "model": encoder.spec.fingerprint,
        "methods": {},
    }
    for name, c in base.items():
        order = ranks_by_hamming(c, c, exclude_self=True)
        results["methods"][name] = {
            "mAP@10": mean_ap(order, labels, 10),
            "mAP@100": mean_ap(order, labels, 100),
            "near_dup_recall@10": {},
        }
    originals = [Image.open(io.BytesIO(d)).convert("RGB") for d in datas]
    for tname, fn in TRANSFORMS.items():
        tdatas = [fn(im, i) for i, im in enumerate(originals)]
        tlong, tshort = encode_all(encoder, tdatas)
        queries = {"long_256": tlong, "short_64": tshort, **perceptual(tdatas)}
        for name, q in queries.items():
            order = ranks_by_hamming(q, base[name], exclude_self=False)[:, :10]
            hit = (order == np.arange(len(q))[:, None]).any(axis=1)
            results["methods"][name]["near_dup_recall@10"][tname] = float(hit.mean())
    for m in results["methods"].values():
        r = m["near_dup_recall@10"]
        r["mean"] = float(np.mean(list(r.values())))
    for name, c in (("long_256", long), ("short_64", short)):
        bal = np.unpackbits(c, axis=1).mean(axis=0)
        results["methods"][name]["bit_balance_mean_abs_dev"] = float(np.abs(bal - 0.5).mean())
    results["encode_images_per_s"] = len(datas) / encode_s
    results["load_average"] = os.getloadavg()[0]
    encoder.close()

    cols = ["mAP@10", "mAP@100", *TRANSFORMS, "mean"]
    print(f"{len(paths)} images, {results['labels']} labels, model {results['model']}")
    print(f"{'method':<10}" + "".join(f"{c:>14}" for c in cols))
    for name, m in results["methods"].items():
        vals = [
            m["mAP@10"],
            m["mAP@100"],
            *[m["near_dup_recall@10"][t] for t in [*TRANSFORMS, "mean"]],
        ]
        print(f"{name:<10}" + "".join(f"{v:>14.3f}" for v in vals))
    ref = results["methods"]["phash"]["mAP@10"]
    print(
        f"long-code mAP@10 / pHash mAP@10 = {results['methods']['long_256']['mAP@10'] / ref:.2f}x"
    )
    for name in ("long_256", "short_64"):
        print(
            f"{name} bit balance: mean |P(1) - 0.5| = "
            f"{results['methods'][name]['bit_balance_mean_abs_dev']:.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
