"""Retrieval quality of the built-in models (or any) vs perceptual hashes, in one run.

    python bench/quality.py DIR [--models efficientnet-lite0,visual] [--limit N]
                                [--out bench/results/quality.json]

DIR holds a labels.csv (path,label) or one subfolder per label. Reports, per model:
- mAP@10 and mAP@100 of Hamming ranking (every image queries all others; AP over the top k,
  relevant = same label; ties broken by image order), for the long (256-bit) and short
  (64-bit) codes, and for pHash and dHash (64-bit, imagehash) as baselines;
- near-duplicate recall@10: each image transformed (50% resize, JPEG q30, 80% centre crop,
  5 degree rotation, colour jitter, horizontal flip) queries the originals and must find its
  own original in the top 10;
- bit balance of the long and short codes on this data (mean |P(bit=1) - 0.5|);
- per-label P@10 of the long code;
- mAP@10 of the embedded index's ``two_stage`` (MIH) search against its ``exact`` one;
- for models with class scores: the top ImageNet class of the first photos of each label,
  and, for labels that are also words, the precision of the first 20 results of a search by
  that word (relevant = same label).
"""

from __future__ import annotations

import argparse
import csv
import io
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

from bench.report import table, write_result  # noqa: E402
from elastichash.model.encoder import Encoded, Encoder  # noqa: E402
from elastichash.settings import ImageLimits, ModelSettings  # noqa: E402

SAMPLES_PER_LABEL = 3

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


def encode_full(encoder: Encoder, datas: list[bytes]) -> list[Encoded]:
    res = encoder.encode_bytes(datas)
    bad = [i for i, r in enumerate(res) if not isinstance(r, Encoded)]
    if bad:
        raise SystemExit(f"{len(bad)} images failed to encode, first: {res[bad[0]]}")
    return [r for r in res if isinstance(r, Encoded)]


def encode_all(encoder: Encoder, datas: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    good = encode_full(encoder, datas)
    return (
        np.stack([np.frombuffer(r.code, np.uint8) for r in good]),
        np.stack([np.frombuffer(r.short, np.uint8) for r in good]),
    )


def per_label_p10(order: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    rel = labels[order[:, :10]] == labels[:, None]
    return {str(lab): float(rel[labels == lab].mean()) for lab in sorted(set(labels))}


def index_strategies(encoded: list[Encoded], labels: np.ndarray) -> dict[str, Any]:
    """mAP@10 through the real embedded index, exact vs two_stage (MIH), and words search."""
    import asyncio
    import tempfile

    from elastichash.index.embedded import EmbeddedIndex
    from elastichash.index.query import SearchQuery
    from elastichash.pipeline import IngestItem, ingest_record

    async def go(root: Path) -> dict[str, Any]:
        index = EmbeddedIndex(root)
        await index.open()
        try:
            docs = [ingest_record(IngestItem(f"{i:05d}", b""), r, 0.0)
                    for i, r in enumerate(encoded)]
            await index.upsert(docs)  # type: ignore[arg-type]
            out: dict[str, Any] = {}
            for strategy in ("exact", "two_stage"):
                orders = []
                for i, r in enumerate(encoded):
                    res = await index.search(SearchQuery(code=r.code, short=r.short, k=11,
                                                         strategy=strategy))
                    ids = [int(h.id) for h in res.hits if int(h.id) != i][:10]
                    orders.append(ids + [i] * (10 - len(ids)))  # short lists count as misses
                out[strategy] = mean_ap(np.array(orders), labels, 10)
            out["words"] = await words_precision(index, labels)
            return out
        finally:
            await index.close()

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(go(Path(tmp)))


async def words_precision(index: Any, labels: np.ndarray) -> dict[str, float]:
    """Precision of the first 20 results of a search by each label that is also a word."""
    from elastichash.index.query import SearchQuery
    from elastichash.model.labels import vocabulary

    caps = await index.capabilities()
    if not caps.text:
        return {}
    vocab = vocabulary()
    out: dict[str, float] = {}
    for lab in sorted(set(labels)):
        word = str(lab).rstrip("s") if vocab.lookup(str(lab)) is None else str(lab)
        if vocab.lookup(word) is None:
            continue
        res = await index.search(SearchQuery(text=word, k=20))
        hits = [int(h.id) for h in res.hits]
        out[str(lab)] = float(np.mean([labels[h] == lab for h in hits])) if hits else 0.0
    return out


def top_classes(encoded: list[Encoded], labels: np.ndarray, paths: list[Path]) -> list[Any]:
    rows = []
    for lab in sorted(set(labels)):
        for i in np.flatnonzero(labels == lab)[:SAMPLES_PER_LABEL]:
            top = encoded[i].labels
            rows.append({"label": str(lab), "file": paths[i].name,
                         "top": [(t.name, t.score) for t in top[:1]]})
    return rows


def evaluate(model: str, datas: list[bytes], labels: np.ndarray, paths: list[Path],
             hashes: dict[str, np.ndarray], t_hashes: dict[str, dict[str, np.ndarray]],
             originals: list[Image.Image],
             transforms: dict[str, Callable[[Image.Image, int], bytes]],
             picked: list[int]) -> dict[str, Any]:
    encoder = Encoder.load(ModelSettings(model=model), ImageLimits())
    t0 = time.perf_counter()
    encoded = encode_full(encoder, datas)
    encode_s = time.perf_counter() - t0
    long = np.stack([np.frombuffer(r.code, np.uint8) for r in encoded])
    short = np.stack([np.frombuffer(r.short, np.uint8) for r in encoded])
    base = {"long_256": long, "short_64": short, **hashes}
    out: dict[str, Any] = {"model": encoder.spec.fingerprint, "methods": {}}
    for name, c in base.items():
        order = ranks_by_hamming(c, c, exclude_self=True)
        out["methods"][name] = {
            "mAP@10": mean_ap(order, labels, 10),
            "mAP@100": mean_ap(order, labels, 100),
            "near_dup_recall@10": {},
        }
        if name == "long_256":
            out["per_label_P@10"] = per_label_p10(order, labels)
    for tname, fn in transforms.items():
        tlong, tshort = encode_all(encoder, [fn(originals[i], i) for i in picked])
        for name, q in {"long_256": tlong, "short_64": tshort, **t_hashes[tname]}.items():
            order = ranks_by_hamming(q, base[name], exclude_self=False)[:, :10]
            hit = (order == np.array(picked)[:, None]).any(axis=1)
            out["methods"][name]["near_dup_recall@10"][tname] = float(hit.mean())
    for m in out["methods"].values():
        r = m["near_dup_recall@10"]
        r["mean"] = float(np.mean(list(r.values()))) if r else float("nan")
    for name, c in (("long_256", long), ("short_64", short)):
        bal = np.unpackbits(c, axis=1).mean(axis=0)
        out["methods"][name]["bit_balance_mean_abs_dev"] = float(np.abs(bal - 0.5).mean())
    out["index"] = index_strategies(encoded, labels)
    out["top_class"] = top_classes(encoded, labels, paths)
    out["encode_images_per_s"] = len(datas) / encode_s
    encoder.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--models", default="efficientnet-lite0,visual",
                    help="comma-separated built-in names or ONNX paths")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-near-dup", action="store_true",
                    help="skip the six transforms (mAP, per-label and index figures only)")
    ap.add_argument("--near-dup-every", type=int, default=1,
                    help="transform only every n-th image (each still queries all originals)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/quality.json")
    args = ap.parse_args(argv)

    paths, label_list = load_dataset(args.dir, args.limit)
    labels = np.array(label_list)
    datas = [p.read_bytes() for p in paths]
    originals = [Image.open(io.BytesIO(d)).convert("RGB") for d in datas]
    hashes = perceptual(datas)
    transforms = {} if args.no_near_dup else TRANSFORMS
    picked = list(range(0, len(originals), max(1, args.near_dup_every)))
    t_hashes = {t: perceptual([fn(originals[i], i) for i in picked])
                for t, fn in transforms.items()}
    results: dict[str, Any] = {
        "images": len(paths),
        "labels": len(set(label_list)),
        "near_dup_queries": len(picked) if transforms else 0,
        "models": {m: evaluate(m, datas, labels, paths, hashes, t_hashes, originals, transforms,
                               picked)
                   for m in args.models.split(",")},
        "load_average": os.getloadavg()[0],
    }
    cols = ["mAP@10", "mAP@100", *transforms, "mean"]
    print(f"{len(paths)} images, {results['labels']} labels")
    columns = [("model", "<20"), ("method", "<10"), *((c, ">14.3f") for c in cols)]
    lines = []
    shown_hashes = False
    for mname, res in results["models"].items():
        for name, m in res["methods"].items():
            if name in hashes and shown_hashes:
                continue
            vals = [m["mAP@10"], m["mAP@100"],
                    *[m["near_dup_recall@10"][t] for t in [*transforms, "mean"]]]
            who = "-" if name in hashes else mname
            lines.append((who, name, *vals))
        shown_hashes = True
    print(table(columns, lines))
    ref = results["models"][next(iter(results["models"]))]["methods"]["phash"]["mAP@10"]
    for mname, res in results["models"].items():
        m = res["methods"]
        print(f"\n{mname} ({res['model']}):"
              f" long mAP@10 / pHash = {m['long_256']['mAP@10'] / ref:.2f}x;"
              f" bit balance long {m['long_256']['bit_balance_mean_abs_dev']:.3f}"
              f" short {m['short_64']['bit_balance_mean_abs_dev']:.3f};"
              f" index mAP@10 exact {res['index']['exact']:.3f}"
              f" two_stage {res['index']['two_stage']:.3f}")
        print("  P@10 per label: " + ", ".join(
            f"{k} {v:.2f}" for k, v in res["per_label_P@10"].items()))
        if res["index"]["words"]:
            print("  words P@20: " + ", ".join(
                f"{k} {v:.2f}" for k, v in res["index"]["words"].items()))
        if any(r["top"] for r in res["top_class"]):
            print("  top ImageNet class: " + "; ".join(
                f"{r['label']}/{r['file']}: {r['top'][0][0]} {r['top'][0][1]:.2f}"
                for r in res["top_class"] if r["top"]))
    write_result("quality", results, path=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
